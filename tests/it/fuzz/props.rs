//! Property tests on stable, one group per parser of outside bytes: no
//! panic on arbitrary input (through the fuzz targets' bodies, which
//! assert each parser's promises), and the properties that have an exact
//! answer: round trips, counts, sanitising. Case counts stay small so the
//! suite grows by seconds; the fuzz soak (docs/fuzzing.md) goes deep.

use proptest::collection::vec;
use proptest::prelude::*;

use accelwatch::config::Config;
use accelwatch::control::{ControlCommand, Label};
use accelwatch::decode::{json_sample_count, BinaryHeader, BinaryType, Decoder, Format, Samples};
use accelwatch::fuzzing;
use accelwatch::mqtt::topic::{sanitize_device, DeviceFilter, Template};
use accelwatch::source::serial::framing::{
    encode_samples, BinaryFramer, FrameError, Framed, LineFramer,
};

fn decoder(max_samples: usize) -> Decoder {
    Decoder::new(
        ["ax", "ay", "az"].map(String::from).to_vec(),
        1 << 20,
        max_samples,
    )
}

fn decode(format: Format, payload: &[u8]) -> Result<Samples, String> {
    let mut out = Samples::default();
    decoder(4096)
        .decode(format, payload, &mut out)
        .map(|()| out)
        .map_err(|e| e.to_string())
}

/// A finite f32, written so that it reads back exactly.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        -1e6f32..1e6f32,
        Just(0.0),
        Just(-0.0),
        Just(f32::MAX),
        Just(f32::MIN_POSITIVE)
    ]
}

/// An f64 as a sensor sends it, or of any magnitude (subnormals and
/// values past f32's range included).
fn number() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    prop_oneof![
        6 => -20.0..20.0f64,
        1 => -1e-3..1e-3f64,
        1 => POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO,
        1 => Just(-0.0),
    ]
}

/// Python's `repr` of a float (what `json.dumps` writes): the shortest
/// digits that read back, fixed from 1e-4 up to 1e16, else `1.5e-05`.
fn python_repr(v: f64) -> String {
    let shortest = format!("{v:e}");
    let (mantissa, exp) = shortest.split_once('e').unwrap();
    let exp: i32 = exp.parse().unwrap();
    let sign = if mantissa.starts_with('-') { "-" } else { "" };
    let digits = mantissa.trim_start_matches('-').replace('.', "");
    if (-4..16).contains(&exp) {
        if exp < 0 {
            format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize))
        } else if digits.len() > exp as usize + 1 {
            let (int, frac) = digits.split_at(exp as usize + 1);
            format!("{sign}{int}.{frac}")
        } else {
            let zeros = "0".repeat(exp as usize + 1 - digits.len());
            format!("{sign}{digits}{zeros}.0")
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let point = if rest.is_empty() { "" } else { "." };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{point}{rest}e{exp_sign}{:02}", exp.abs())
    }
}

fn rows() -> impl Strategy<Value = Vec<[f32; 3]>> {
    vec([value(), value(), value()], 1..40)
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..512)
}

/// Bytes that look like the parser's input: valid seeds with arbitrary
/// bytes spliced in, so that cases get past the first check.
fn near(seed: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    (0..=seed.len(), 0..=seed.len(), bytes()).prop_map(move |(a, b, junk)| {
        let (a, b) = (a.min(b), a.max(b));
        let mut out = seed[..a].to_vec();
        out.extend_from_slice(&junk[..junk.len().min(8)]);
        out.extend_from_slice(&seed[b..]);
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decoders_survive_arbitrary_bytes(data in bytes()) {
        fuzzing::decode_json(&data);
        fuzzing::decode_csv(&data);
        fuzzing::decode_binary(&data);
    }

    #[test]
    fn decoders_survive_near_valid_payloads(
        json in near(br#"{"t0": 100, "interval_ms": 20, "values": [[1,2,3],[4,5,6]]}"#),
        sample in near(br#"[{"t": 1, "ax": 1e308, "ay": -0.0, "az": 3, "id": "w1"}]"#),
        csv in near(b"0,1,2,3\n20,4,5,6\n"),
    ) {
        fuzzing::decode_json(&json);
        fuzzing::decode_json(&sample);
        fuzzing::decode_csv(&csv);
    }

    #[test]
    fn json_batches_decode_to_their_rows_and_counts_agree(
        rows in rows(),
        t0 in proptest::option::of((0u32..1_000_000_000).prop_map(f64::from)),
    ) {
        let values: Vec<String> = rows
            .iter()
            .map(|r| format!("[{:?},{:?},{:?}]", r[0], r[1], r[2]))
            .collect();
        let time = t0.map_or(String::new(), |t| format!("\"t0\": {t:?}, \"interval_ms\": 20, "));
        let payload = format!("{{{time}\"values\": [{}]}}", values.join(","));
        let samples = decode(Format::Json, payload.as_bytes()).unwrap();
        prop_assert_eq!(samples.len(), rows.len());
        prop_assert_eq!(json_sample_count(payload.as_bytes()), rows.len());
        prop_assert_eq!(&samples.values, &rows.concat());
        let expected: Vec<Option<f64>> =
            (0..rows.len()).map(|i| t0.map(|t| t + 20.0 * i as f64)).collect();
        prop_assert_eq!(samples.t_ms, expected);
    }

    /// Numbers as Rust (`{}`, `{:e}`) and Python (`json.dumps`: 17
    /// significant digits, `1e-05`) print them, accelerometer-sized and of
    /// any magnitude: the decoder (the scanner first) gives the f64 that
    /// serde_json gives for each (then as f32), bit for bit, or refuses as
    /// non_finite what an f32 cannot hold.
    #[test]
    fn json_batch_numbers_read_as_serde_json_reads_them(
        numbers in vec((number(), 0..3usize), 3..24),
        t0 in proptest::option::of((0.0..2e12f64, 0..3usize)),
    ) {
        let rows = numbers.len() / 3;
        let print = |(v, style): (f64, usize)| match style {
            0 => format!("{v}"),
            1 => format!("{v:e}"),
            _ => python_repr(v),
        };
        let texts: Vec<String> = numbers[..rows * 3].iter().copied().map(print).collect();
        let values: Vec<String> = texts.chunks(3).map(|r| format!("[{}]", r.join(", "))).collect();
        let t0_text = t0.map(print);
        let time = t0_text
            .as_ref()
            .map_or(String::new(), |t| format!("\"t0\": {t}, \"interval_ms\": 20, "));
        let payload = format!("{{{time}\"values\": [{}]}}", values.join(","));
        fuzzing::decode_json(payload.as_bytes());

        let serde = |text: &str| serde_json::from_str::<f64>(text).unwrap();
        let expected: Vec<f32> = texts.iter().map(|t| serde(t) as f32).collect();
        let mut out = Samples::default();
        let decoded = decoder(4096).decode(Format::Json, payload.as_bytes(), &mut out);
        if expected.iter().all(|v| v.is_finite()) {
            prop_assert!(decoded.is_ok(), "{payload}: {decoded:?}");
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&out.values), bits(&expected), "{}", payload);
            let t0 = t0_text.map(|t| serde(&t));
            let times: Vec<Option<u64>> =
                (0..rows).map(|i| t0.map(|t| (t + 20.0 * i as f64).to_bits())).collect();
            let got: Vec<Option<u64>> = out.t_ms.iter().map(|t| t.map(f64::to_bits)).collect();
            prop_assert_eq!(got, times, "{}", payload);
        } else {
            prop_assert_eq!(decoded.map_err(|e| e.reason()), Err("non_finite"), "{}", payload);
        }
    }

    #[test]
    fn json_sample_arrays_decode_and_counts_agree(rows in rows()) {
        let items: Vec<String> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| format!(
                r#"{{"t": {i}, "az": {:?}, "ax": {:?}, "ay": {:?}, "note": "[{{\"x\"", "n": [[1]]}}"#,
                r[2], r[0], r[1]
            ))
            .collect();
        let payload = format!("[{}]", items.join(", "));
        let samples = decode(Format::Json, payload.as_bytes()).unwrap();
        prop_assert_eq!(samples.len(), rows.len());
        prop_assert_eq!(json_sample_count(payload.as_bytes()), rows.len());
        prop_assert_eq!(&samples.values, &rows.concat());
    }

    #[test]
    fn csv_lines_decode_to_their_values(rows in rows(), timed in any::<bool>()) {
        let text: String = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let t = if timed { format!("{i},") } else { String::new() };
                format!("{t}{:?}, {:?} ,{:?}\r\n", r[0], r[1], r[2])
            })
            .collect();
        let samples = decode(Format::Csv, text.as_bytes()).unwrap();
        prop_assert_eq!(&samples.values, &rows.concat());
        prop_assert_eq!(samples.t_ms.iter().all(Option::is_some), timed);
    }

    #[test]
    fn binary_batches_round_trip(
        ints in vec(any::<i16>(), 1..60),
        floats in vec(value(), 1..60),
        t0 in proptest::option::of(-1e9f64..1e9),
        interval in 0.001f32..1e3,
        cut in any::<prop::sample::Index>(),
    ) {
        for value_type in [BinaryType::I16, BinaryType::F32] {
            let (body, expected): (Vec<u8>, Vec<f32>) = match value_type {
                BinaryType::I16 => {
                    let n = ints.len() / 3 * 3;
                    (ints[..n].iter().flat_map(|v| v.to_le_bytes()).collect(),
                     ints[..n].iter().map(|v| f32::from(*v)).collect())
                }
                BinaryType::F32 => {
                    let n = floats.len() / 3 * 3;
                    (floats[..n].iter().flat_map(|v| v.to_le_bytes()).collect(),
                     floats[..n].to_vec())
                }
            };
            let samples = expected.len() / 3;
            let mut payload = BinaryHeader {
                value_type,
                channels: 3,
                samples: samples as u32,
                t0_ms: t0.unwrap_or(f64::NAN),
                interval_ms: interval,
            }
            .to_bytes()
            .to_vec();
            payload.extend(body);
            let decoded = decode(Format::Binary, &payload);
            if samples == 0 {
                prop_assert!(decoded.unwrap_err().contains("no sample"));
                continue;
            }
            let decoded = decoded.unwrap();
            prop_assert_eq!(&decoded.values, &expected);
            let times: Vec<Option<f64>> = (0..samples)
                .map(|i| t0.map(|t| t + f64::from(interval) * i as f64))
                .collect();
            prop_assert_eq!(decoded.t_ms, times);
            // Every truncation, of the header or the values, is refused whole.
            let end = cut.index(payload.len());
            prop_assert!(decode(Format::Binary, &payload[..end]).is_err());
        }
    }

    #[test]
    fn serial_streams_survive_arbitrary_bytes(data in bytes()) {
        fuzzing::serial_lines(&data);
        fuzzing::serial_frames(&data);
    }

    #[test]
    fn lines_come_back_as_sent(
        lines in vec("[ -~]{0,30}[!-~]", 1..20),
        cuts in vec(1usize..16, 1..8),
    ) {
        let stream = lines.join("\n") + "\n";
        let mut framer = LineFramer::new(64);
        let mut out = Vec::new();
        let mut rest = stream.as_bytes();
        for cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = (*cut).min(rest.len());
            framer.feed(&rest[..n], &mut out);
            rest = &rest[n..];
        }
        let expected: Vec<Framed> =
            lines.iter().map(|l| Framed::Payload(l.as_bytes().to_vec())).collect();
        prop_assert_eq!(out, expected);
    }

    #[test]
    fn frames_come_back_through_garbage(
        frames in vec(vec(any::<i16>(), 1..10), 1..8),
        junk in vec(vec(any::<u8>().prop_filter("no sync", |b| *b != 0xA5), 0..30), 8),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (samples, junk) in frames.iter().zip(&junk) {
            let values: Vec<i16> = samples.iter().flat_map(|v| [*v, v.wrapping_neg(), 7]).collect();
            stream.extend(junk);
            stream.extend(encode_samples(&values));
            expected.push(values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
        }
        let mut framer = BinaryFramer::new(3, 256);
        let mut out = Vec::new();
        framer.feed(&stream, &mut out);
        let got: Vec<Vec<u8>> = out
            .iter()
            .filter_map(|f| match f {
                Framed::Payload(p) => Some(p.clone()),
                Framed::Error(_) => None,
            })
            .collect();
        prop_assert_eq!(got, expected);
        let discarded: usize = out
            .iter()
            .filter_map(|f| match f {
                Framed::Error(e) => Some(FrameError::bytes(e)),
                Framed::Payload(_) => None,
            })
            .sum();
        let noise: usize = junk.iter().take(frames.len()).map(Vec::len).sum();
        prop_assert_eq!(discarded, noise, "every byte of garbage is counted");
    }

    #[test]
    fn topics_survive_arbitrary_text(data in bytes(), text in ".{0,200}") {
        fuzzing::mqtt_topic(&data);
        fuzzing::mqtt_topic(text.as_bytes());
    }

    #[test]
    fn rendered_devices_are_one_clean_level(device in any::<String>()) {
        let topic = Template::parse("plant/{device}/features").unwrap().render(&device);
        let level = topic
            .strip_prefix("plant/")
            .and_then(|t| t.strip_suffix("/features"))
            .unwrap();
        prop_assert!(!level.is_empty() && level.chars().count() <= 64);
        prop_assert!(!level.contains(['/', '+', '#', '\0']));
        prop_assert!(!level.chars().any(char::is_control));
        prop_assert_eq!(sanitize_device(level), level);
        // A clean id from an input topic is published under its own name.
        let filter = DeviceFilter::parse("plant/{device}/accel").unwrap();
        if let Some(id) = filter.device(&format!("plant/{level}/accel")) {
            prop_assert_eq!(id, level);
        }
    }

    #[test]
    fn control_commands_survive_arbitrary_bytes(data in bytes(), query in "[a-z_=&%0-9.+-]{0,60}") {
        fuzzing::control_http(&data);
        fuzzing::control_mqtt(&data);
        fuzzing::control_http(format!("mark?{query}").as_bytes());
    }

    #[test]
    fn marks_round_trip_through_query_and_json(
        // Halves: exact in decimal, so JSON and the query carry the same number.
        from in (-2_000_000_000_000i64..2_000_000_000_000).prop_map(|h| h as f64 / 2.0),
        span in (0u32..2_000_000_000).prop_map(|h| f64::from(h) / 2.0),
        device in proptest::option::of(any::<String>().prop_filter("not empty", |d| !d.is_empty())),
        abnormal in any::<bool>(),
    ) {
        let to = from + span;
        let label = if abnormal { "abnormal" } else { "normal" };
        let mut query = format!("label={label}&from_ms={from:?}&to_ms={to:?}");
        if let Some(device) = &device {
            let escaped: String = device.bytes().map(|b| format!("%{b:02X}")).collect();
            query.push_str(&format!("&device={escaped}"));
        }
        let http = ControlCommand::parse("mark", Some(&query)).unwrap();
        let mut json = serde_json::json!({"command": "mark", "label": label, "from_ms": from, "to_ms": to});
        if let Some(device) = &device {
            json["device"] = device.clone().into();
        }
        let mqtt = ControlCommand::parse_json(json.to_string().as_bytes()).unwrap();
        prop_assert_eq!(&http, &mqtt);
        let ControlCommand::Mark(mark) = http else { panic!("not a mark") };
        prop_assert_eq!(mark.label, if abnormal { Label::Abnormal } else { Label::Normal });
        prop_assert_eq!((mark.from_ms, mark.to_ms, mark.device), (from, to, device));
    }

    #[test]
    fn configs_survive_arbitrary_text(
        text in "([a-z_.]{1,12} = [-0-9a-z\"\\[\\], .]{0,20}\n|\\[[a-z.]{1,14}\\]\n){0,6}",
        data in bytes(),
    ) {
        fuzzing::config_toml(text.as_bytes());
        fuzzing::config_toml(&data);
    }

    #[test]
    fn config_window_settings_are_accepted_exactly_when_valid(
        size in prop_oneof![0usize..2, 16usize..300, Just((1 << 20) + 1), Just(i64::MAX as usize)],
        hop in 0usize..300,
        channels in 1usize..5,
    ) {
        let names: Vec<String> = (0..channels).map(|i| format!("\"c{i}\"")).collect();
        let text = format!(
            "[input]\nchannels = [{}]\n[window]\nsize = {size}\nhop = {hop}\n",
            names.join(", ")
        );
        let valid = (2..=1 << 20).contains(&size) && (1..=size).contains(&hop);
        match Config::from_toml_str(&text) {
            Ok(config) => prop_assert!(valid, "accepted {size}/{hop}: {:?}", config.window),
            Err(error) => prop_assert!(!valid, "refused {size}/{hop}: {error}"),
        }
    }

    #[test]
    fn model_metadata_survives_arbitrary_json(
        data in bytes(),
        doc in near(include_bytes!("../../../fuzz/seeds/model_meta/demo.json")),
    ) {
        fuzzing::model_meta(&data);
        fuzzing::model_meta(&doc);
    }
}

proptest! {
    // Each case that parses runs tract: keep them few.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn model_files_survive_corruption(
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        data in bytes(),
    ) {
        let demo = std::fs::read(crate::common::repo().join("models/demo.onnx")).unwrap();
        let mut corrupted = demo.clone();
        for (at, byte) in &edits {
            let i = at.index(corrupted.len());
            corrupted[i] = *byte;
        }
        fuzzing::model_onnx(&corrupted);
        fuzzing::model_onnx(&demo[..cut.index(demo.len())]);
        fuzzing::model_onnx(&data);
    }
}
