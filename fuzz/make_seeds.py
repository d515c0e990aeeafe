#!/usr/bin/env python3
"""The fuzz targets' seed corpora.

usage: fuzz/make_seeds.py [--large-only]

Writes the small seeds into fuzz/seeds/<target>/ (committed: run this again
after changing it and commit the result) and the large ones, which would
make the repository heavy, into fuzz/seeds-large/<target>/ (ignored by git;
scripts/fuzz_soak.sh makes them and runs each once under the RSS limit).
Crash inputs that found a bug are committed by hand as
fuzz/seeds/<target>/crash-*; this script never deletes a file.

The target bodies (src/fuzzing.rs) say how each target reads its bytes:
serial_lines takes [max line, 4 split sizes] before the stream,
serial_frames [channels, max payload, 4 split sizes], mqtt_topic newline-
separated filter, topic, template, device and broker URL, control_http
`<name>?<query>`.
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEEP = 100_000


def write(folder, target, name, data):
    path = os.path.join(HERE, folder, target, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(path, "wb") as f:
        f.write(data)


def small(target, name, data):
    write("seeds", target, name, data)


def large(target, name, data):
    write("seeds-large", target, name, data)


def deep_arrays(n=DEEP):
    return "[" * n + "]" * n


def deep_objects(n=DEEP):
    return '{"a":' * (n - 1) + "{}" + "}" * (n - 1)


def awb1(value_type, channels, samples, t0, interval, body=b""):
    return b"AWB1" + struct.pack("<BBHIdf", 1, value_type, channels, samples, t0, interval) + body


def crc16(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def frame(payload):
    body = struct.pack("<H", len(payload)) + payload
    return b"\xA5\x5A" + body + struct.pack("<H", crc16(body))


def i16s(*values):
    return struct.pack("<%dh" % len(values), *values)


def onnx_metadata(model):
    """The accelwatch metadata_props value of an ONNX file, read with a
    minimal protobuf walk (ModelProto field 14: key 1, value 2)."""

    def varint(b, i):
        shift = value = 0
        while True:
            byte = b[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value, i

    def fields(b):
        i = 0
        while i < len(b):
            key, i = varint(b, i)
            number, wire = key >> 3, key & 7
            if wire == 0:
                value, i = varint(b, i)
            elif wire == 1:
                value, i = b[i : i + 8], i + 8
            elif wire == 2:
                n, i = varint(b, i)
                value, i = b[i : i + n], i + n
            elif wire == 5:
                value, i = b[i : i + 4], i + 4
            else:
                raise ValueError("wire type %d" % wire)
            yield number, value

    for number, value in fields(model):
        if number == 14:
            entry = dict(fields(value))
            if entry.get(1) == b"accelwatch":
                return entry[2]
    raise ValueError("no accelwatch metadata")


def small_seeds():
    j = "decode_json"
    small(j, "sample.json", '{"t": 1000.0, "ax": 0.1, "ay": 0.0, "az": 0.98}')
    small(j, "batch.json", '{"t0": 1000.0, "interval_ms": 20.0, "values": [[1, 2, 3], [4, 5, 6]]}')
    small(j, "array.json", '[{"t": 1, "ax": 1, "ay": 2, "az": 3}, {"t": 2, "ax": 4, "ay": 5, "az": 6}]')
    small(j, "untimed-batch.json", '{"values": [[0.5, -0.5, 1e-3]], "id": "w1"}')
    small(j, "device-int.json", '{"id": 42, "ax": 1, "ay": 2, "az": 3}')
    small(j, "nan.json", '{"ax": NaN, "ay": 0, "az": 1}')
    small(j, "infinity.json", '{"values": [[Infinity, -Infinity, 1]]}')
    small(j, "past-f64.json", '{"ax": 1e400, "ay": -1e400, "az": 123456789012345678901234567890e300}')
    small(j, "past-f32.json", '{"ax": 3.5e38, "ay": 1e-50, "az": -3.4028236e38}')
    small(j, "big-integers.json", '{"t": 18446744073709551616, "ax": -9223372036854775809, "ay": 0, "az": 1}')
    small(j, "duplicate-keys.json", '{"values": [[9,9,9]], "values": [[1,2,3]], "ax": 1, "ax": 2}')
    small(j, "escaped-keys.json", '{"\\u0061x": 1, "a\\u0079": 2, "az": 3, "t": null}')
    small(j, "at-limit.json", '{"values": [%s]}' % ",".join(["[1,2,3]"] * 4096))
    small(j, "over-limit.json", '{"values": [%s]}' % ",".join(["[1,2,3]"] * 4097))
    small(j, "wrong-shapes.json", '[{"ax":1,"ay":2,"az":3}, [1,2,3], "x", null]')
    small(j, "empty-values.json", '{"values": []}')
    small(j, "deep-arrays-100k.json", deep_arrays())
    small(j, "deep-objects-100k.json", deep_objects())
    small(j, "deep-in-extra-100k.json", '{"ax": 1, "ay": 2, "az": 3, "x": %s}' % deep_arrays())
    small(j, "deep-in-values-100k.json", '{"values": [[1,2,3], %s]}' % deep_arrays())

    c = "decode_csv"
    small(c, "timed.csv", "0,1,2,3\n20,4,5,6\n")
    small(c, "untimed.csv", " 1, 2 ,3 \r\n4,5,6\r\n\r\n")
    small(c, "nan-inf.csv", "NaN,1,2\ninf,-inf,1\nInfinity,1,2\n")
    small(c, "past-f64.csv", "1e400,1,2\n1,3.5e38,2\n-1e-400,0,0\n")
    small(c, "field-counts.csv", "1,2\n1,2,3,4,5\n,,\n")
    small(c, "at-limit.csv", "1,2,3\n" * 4096)
    small(c, "over-limit.csv", "1,2,3\n" * 4097)
    small(c, "not-utf8.csv", b"1,2,\xff\xfe\n")

    b = "decode_binary"
    small(b, "i16.bin", awb1(1, 3, 2, 1000.0, 20.0, i16s(1, -2, 4096, 0, 0, -4096)))
    small(b, "f32.bin", awb1(2, 3, 1, float("nan"), 0.0, struct.pack("<3f", 0.5, 1.5, -2.5)))
    header = awb1(1, 3, 1, 0.0, 20.0)
    for n in (0, 1, 4, 5, 6, 8, 12, 20, 23):
        small(b, "truncated-header-%02d.bin" % n, header[:n])
    small(b, "truncated-body.bin", awb1(1, 3, 2, 0.0, 20.0, i16s(1, 2, 3, 4)))
    small(b, "max-samples.bin", awb1(1, 3, 0xFFFFFFFF, 0.0, 20.0, i16s(1, 2, 3)))
    small(b, "max-channels.bin", awb1(2, 0xFFFF, 1, 0.0, 20.0, b"\0" * 12))
    small(b, "nan-value.bin", awb1(2, 3, 1, 0.0, 20.0, struct.pack("<3f", 1.0, float("nan"), 3.0)))
    small(b, "inf-t0.bin", awb1(2, 3, 1, float("inf"), 20.0, struct.pack("<3f", 1, 2, 3)))
    small(b, "zero-interval.bin", awb1(1, 3, 1, 0.0, 0.0, i16s(1, 2, 3)))
    small(b, "nan-interval.bin", awb1(1, 3, 1, 0.0, float("nan"), i16s(1, 2, 3)))
    small(b, "bad-version.bin", b"AWB1\x02" + header[5:] + i16s(1, 2, 3))
    small(b, "bad-type.bin", b"AWB1\x01\x09" + header[6:] + i16s(1, 2, 3))
    small(b, "over-limit.bin", awb1(1, 3, 4097, 0.0, 20.0, b"\0" * (4097 * 6)))

    s = "serial_lines"
    small(s, "csv.txt", b"\x40\x00\x03\x07\x01" + b"0,1,2,3\r\n\n  \r\n20,4,5,6\n1,2,3")
    small(s, "json.txt", b"\xff\x10\x10\x10\x10" + b'{"ax":1,"ay":2,"az":3}\n{"t0":1,"interval_ms":2,"values":[[1,2,3]]}\n')
    small(s, "overlong.txt", b"\x07\x00\x01\x02\x03" + b"1,2,3\n" + b"9" * 40 + b"\n4,5,6\n" + b"9" * 80 + b"\n7,8,9\n")
    small(s, "boot-noise.txt", b"\x20\x05\x05\x05\x05" + b"\x00\xff\xfe\r\r\n\xa5\x5a\n1,2,3\n")

    f = "serial_frames"
    good = [frame(i16s(i, -i, 3 * i, 7, 8, 9)) for i in range(1, 5)]
    small(f, "frames.bin", b"\x02\x20\x00\x01\x02\x03" + b"".join(good))
    bad = bytearray(good[1])
    bad[6] ^= 0x40
    small(f, "garbage-torn-badcrc.bin", b"\x02\x20\x03\x03\x03\x03" + b"boot: hello\r\n\xa5\xa5\x5a" + good[0] + good[1][:9] + good[2] + bytes(bad) + b"\xa5\x5a\x05\x00\x01\x02\x03" + good[3] + b"\xa5\x5a\xff\x7f" + good[0])
    small(f, "one-channel.bin", b"\x00\x08\x00\x00\x00\x00" + frame(i16s(1, 2)) + frame(i16s(3)) + frame(b""))
    small(f, "sync-at-end.bin", b"\x03\xff\x01\x01\x01\x01" + frame(i16s(*range(8))) + b"\xa5")
    small(f, "max-length.bin", b"\x00\xff\x40\x40\x40\x40" + b"\xa5\x5a\xfe\x01" + b"\x00" * 600)

    t = "mqtt_topic"
    small(t, "plain.txt", "sensors/{device}/accel\nsensors/w1/accel\naccelwatch/{device}/features\nw1\nmqtt://localhost:1883")
    small(t, "shared.txt", "$share/fleet/+/site/{device}/#\na/site/d7/x/y\n{device}\na/b+#\n\x00\x7f\nmqtts://broker.example:8883/")
    small(t, "system.txt", "\x01{device}\n$SYS/broker\nx/{device}/{device}\n" + "ü" * 100 + "\nmqtt://user@host")
    small(t, "device-payload.txt", "\x01plant/accel/#\nplant/accel/line1\n/{device}/\n\n\nmqtt://[::1]:99999")

    h = "control_http"
    for name, text in [
        ("calibrate.txt", "calibrate"),
        ("retrain.txt", "retrain?scope=fleet"),
        ("rollback.txt", "rollback?scope=device%3Aw1"),
        ("mark.txt", "mark?label=abnormal&from_ms=1000&to_ms=2000&device=w%2B1"),
        ("mark-nan.txt", "mark?label=normal&from_ms=NaN&to_ms=inf"),
        ("mark-past-f64.txt", "mark?label=normal&from_ms=1e400&to_ms=-1e400"),
        ("bad-escapes.txt", "mark?label=%zz&from_ms=%+1&to_ms=%"),
        ("duplicate.txt", "retrain?scope=a&scope=b"),
        ("unknown.txt", "reboot?now=1"),
    ]:
        small(h, name, text)

    m = "control_mqtt"
    for name, text in [
        ("calibrate.json", '{"command": "calibrate"}'),
        ("retrain.json", '{"command": "retrain", "scope": "group:line1"}'),
        ("mark.json", '{"command": "mark", "label": "abnormal", "from_ms": 1, "to_ms": 2, "device": "w1"}'),
        ("mark-nan.json", '{"command": "mark", "label": "normal", "from_ms": NaN, "to_ms": Infinity}'),
        ("mark-past-f64.json", '{"command": "mark", "label": "normal", "from_ms": 1e400, "to_ms": 2}'),
        ("extra-field.json", '{"command": "rollback", "scope": "fleet", "now": true}'),
        ("deep-arrays-100k.json", '{"command": "mark", "label": %s}' % deep_arrays()),
    ]:
        small(m, name, text)

    g = "config_toml"
    for src in ("configs/default.toml", "configs/serial-sim.toml", "deploy/accelwatch.toml"):
        with open(os.path.join(REPO, src), "rb") as fh:
            small(g, os.path.basename(os.path.dirname(src)) + "-" + os.path.basename(src), fh.read())
    small(g, "nan-inf.toml", "[input]\nsample_rate_hz = nan\nbinary_i16_scale = inf\n[window]\nmax_gap_ms = -inf\n")
    small(g, "past-i64.toml", "[window]\nsize = 99999999999999999999\nhop = 9223372036854775807\n")
    small(g, "huge-window.toml", "[input]\nchannels = [\"a\", \"b\", \"c\"]\n[window]\nsize = 4611686018427387904\nhop = 1\n")
    small(g, "huge-limits.toml", "[input]\nmax_payload_bytes = 18446744073709551615\nmax_samples_per_message = 9223372036854775807\n")
    small(g, "mqtt.toml", '[input]\nkind = "mqtt"\n[input.mqtt]\nurl = "mqtt://localhost"\ntopics = ["$share/g/s/{device}/a"]\n[output.mqtt]\nurl = "mqtts://x:1"\n')
    small(g, "deep-arrays-100k.toml", "a = " + deep_arrays())
    small(g, "deep-tables-100k.toml", "a = " + "{b = " * DEEP + "1" + "}" * DEEP)

    meta = onnx_metadata(open(os.path.join(REPO, "models/demo.onnx"), "rb").read()).decode()
    mm = "model_meta"
    small(mm, "demo.json", meta)
    small(mm, "minimal.json", '{"channels": ["ax","ay","az"], "window": 50, "hop": 25, "sample_rate_hz": 50, "threshold": 0.1}')
    small(mm, "huge-window.json", '{"channels": ["ax","ay","az"], "window": 4611686018427387904, "hop": 1, "sample_rate_hz": 50, "threshold": 0.1, "input_layout": "ntc"}')
    small(mm, "past-f64.json", '{"channels": ["a"], "window": 4, "hop": 1, "sample_rate_hz": 1e400, "threshold": 0.1}')
    small(mm, "neg-elbo.json", '{"channels": ["a"], "window": 4, "hop": 1, "sample_rate_hz": 5, "threshold": 0, "score": {"kind": "neg_elbo", "beta": NaN}, "normalization": {"mean": [0], "std": [0]}}')
    small(mm, "deep-arrays-100k.json", '{"hyperparameters": %s}' % deep_arrays())

    o = "model_onnx"
    demo = open(os.path.join(REPO, "models/demo.onnx"), "rb").read()
    small(o, "demo.onnx", demo)
    small(o, "truncated-100.onnx", demo[:100])
    small(o, "truncated-half.onnx", demo[: len(demo) // 2])
    small(o, "empty-graph.onnx", b"\x08\x07\x3a\x00")


def large_seeds():
    rows = 2_000_000
    large("decode_json", "batch-2m.json", '{"t0": 0, "interval_ms": 20, "values": [%s]}' % ",".join(["[0.01,-0.02,0.98]"] * rows))
    large("decode_json", "array-2m.json", "[%s]" % ",".join(['{"ax":1,"ay":2,"az":3}'] * rows))
    large("decode_csv", "batch-2m.csv", "0.01,-0.02,0.98\n" * rows)
    large("decode_binary", "batch-2m.bin", awb1(1, 3, rows, 0.0, 20.0, b"\0" * (rows * 6)))
    large("decode_json", "deep-arrays-1m.json", deep_arrays(1_000_000))


if __name__ == "__main__":
    if "--large-only" not in sys.argv:
        small_seeds()
    large_seeds()
