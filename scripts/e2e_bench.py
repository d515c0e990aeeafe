#!/usr/bin/env python3
"""End-to-end speed through a real broker (issue 15); run it through
scripts/e2e_bench.sh, which builds the release binaries first.

For each run: a fresh mosquitto on a free 127.0.0.1 port, a consumer
(the release `accelwatch run`, or scripts/python_pipeline.py), and the
load generator (examples/loadgen.rs, on --connections connections, one by
default) for --duration seconds. The consumer
is measured, and the CPU the generator and the broker took beside it (all
three share the machine):

- processed samples/s: samples decoded (accelwatch_samples_total, or the
  Python pipeline's count) over the time from the generator's start to the
  last sample processed; offered: what the generator sent per second;
- CPU per 1000 samples: utime + stime of the consumer (/proc/<pid>/stat)
  over the run, divided by the samples processed;
- latency from a frame's arrival to its window's record being published:
  p50 and p99 interpolated in accelwatch_window_latency_seconds' buckets
  (Python: exact), max as the bound of the highest bucket reached;
- peak RSS: VmHWM of /proc/<pid>/status at the end;
- who takes the cores: the CPU seconds of the generator (getrusage of the
  finished child), the broker (over its life) and the consumer, each per
  second of load, in a second table.

Prints one markdown table. `--only json-100,python-json-100` picks runs;
`--repeat N` runs them N times in turn and prints each round's table, each
ratio of the issue's targets round by round, and their medians.
"""

import argparse
import json
import os
import platform
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
ACCELWATCH = os.environ.get("ACCELWATCH_BIN", os.path.join(TARGET, "release", "accelwatch"))
LOADGEN = os.environ.get("LOADGEN_BIN", os.path.join(TARGET, "release", "examples", "loadgen"))
COUNTER = os.environ.get("MQTT_COUNT_BIN", os.path.join(TARGET, "release", "examples", "mqtt_count"))
TICKS = os.sysconf("SC_CLK_TCK")
# The generator's connections (--connections), the devices spread over them:
# one by default. On four, the broker passes more to the daemon but reads
# the feature lines' connection at one packet a turn against four of the
# generator's, and drops most lines (docs/measured.md, "The generator on
# four connections"), so the runs' figures stop being comparable.
DEFAULT_CONNECTIONS = 1
CONNECTIONS = DEFAULT_CONNECTIONS
# The model every consumer serves (--model).
DEFAULT_MODEL = os.path.join(REPO, "models", "demo.onnx")
MODEL = DEFAULT_MODEL
I16_SCALE = 1.0 / 4096.0

# name: (consumer, loadgen arguments, more daemon TOML)
RUNS = {
    "json-100": ("accelwatch", ["--format", "json", "--devices", "100", "--batch", "100", "--rate", "0"], ""),
    "binary-100": ("accelwatch", ["--format", "binary", "--devices", "100", "--batch", "100", "--rate", "0"], ""),
    # The same payloads at a fixed 3 M samples/s (30 kHz a device), under
    # what generator, broker and daemon pass together on 2 cores: the CPU
    # per sample of two builds compared at the same load, which flat-out
    # runs (whose offered rate moves by a third) do not give.
    "binary-100-3m": ("accelwatch", ["--format", "binary", "--devices", "100", "--batch", "100", "--rate", "30000"], ""),
    # The 8 M samples/s offered at a fixed rate (80 kHz a device):
    # sustained means all of it processed and every window's line published.
    "binary-100-8m": ("accelwatch", ["--format", "binary", "--devices", "100", "--batch", "100", "--rate", "80000"], ""),
    # The feature lines over several connections (output.mqtt.features_connections):
    # mosquitto reads one packet of a connection per turn of its loop.
    "binary-100-8m-2": ("accelwatch", ["--format", "binary", "--devices", "100", "--batch", "100", "--rate", "80000"],
                        "[output.mqtt]\nfeatures_connections = 2\n"),
    "binary-100-8m-4": ("accelwatch", ["--format", "binary", "--devices", "100", "--batch", "100", "--rate", "80000"],
                        "[output.mqtt]\nfeatures_connections = 4\n"),
    # Up to 32 lines of a device in one message (newline-delimited), the
    # first waiting at most 50 ms: a thirtieth of the broker's packets.
    "binary-100-8m-grouped": ("accelwatch", ["--format", "binary", "--devices", "100", "--batch", "100", "--rate", "80000"],
                              "[output.mqtt]\nfeatures_lines_per_message = 32\nfeatures_linger_ms = 50\n"),
    # Flat out with the lines grouped as above: the single-threaded broker
    # is the limit of the flat-out runs, and the lines are most of its
    # packets.
    "binary-100-grouped": ("accelwatch", ["--format", "binary", "--devices", "100", "--batch", "100", "--rate", "0"],
                           "[output.mqtt]\nfeatures_lines_per_message = 32\nfeatures_linger_ms = 50\n"),
    "json-1000-50hz": ("accelwatch", ["--format", "json", "--devices", "1000", "--batch", "10", "--rate", "50"], ""),
    # More devices than window.max_devices' default (1024) keeps: raised,
    # or the windower would evict a device per message.
    "json-10000-50hz": ("accelwatch", ["--format", "json", "--devices", "10000", "--batch", "10", "--rate", "50"],
                        "[window]\nmax_devices = 10000\n"),
    # One batch a second per device (50 samples of 50 Hz): 100 000 messages
    # a second offered, more than generator and broker send on 2 cores.
    "json-100000-1hz": ("accelwatch", ["--format", "json", "--devices", "100000", "--batch", "50", "--rate", "50"],
                        "[window]\nmax_devices = 100000\n"),
    # No daemon: a consumer that only counts what the broker delivers
    # (examples/mqtt_count.rs), so what generator and broker pass here.
    "count-binary-100": ("count", ["--format", "binary", "--devices", "100", "--batch", "100", "--rate", "0"], ""),
    "python-json-100": ("python", ["--format", "json", "--devices", "100", "--batch", "100", "--rate", "0"], ""),
    # Numbers as Python's json.dumps writes them (17 significant digits),
    # against the 6 decimals of the runs above.
    "json-100-17digits": ("accelwatch", ["--format", "json", "--devices", "100", "--batch", "100", "--rate", "0",
                                         "--digits", "17"], ""),
    "python-json-100-17digits": ("python", ["--format", "json", "--devices", "100", "--batch", "100", "--rate", "0",
                                            "--digits", "17"], ""),
}
LABELS = {
    "json-100": "accelwatch, JSON batches of 100, 100 devices flat out",
    "binary-100": "accelwatch, binary int16 batches of 100, 100 devices flat out",
    "binary-100-3m": "accelwatch, binary int16 batches of 100, 100 devices at 3 M samples/s",
    "binary-100-8m": "accelwatch, binary int16 batches of 100, 100 devices at 8 M samples/s",
    "binary-100-8m-2": "accelwatch, the same at 8 M samples/s, feature lines over 2 connections",
    "binary-100-8m-4": "accelwatch, the same at 8 M samples/s, feature lines over 4 connections",
    "binary-100-8m-grouped": "accelwatch, the same at 8 M samples/s, up to 32 lines of a device a message",
    "binary-100-grouped": "accelwatch, binary int16 batches of 100, 100 devices flat out, up to 32 lines of a device a message",
    "json-1000-50hz": "accelwatch, JSON batches of 10, 1 000 devices at 50 Hz",
    "json-10000-50hz": "accelwatch, JSON batches of 10, 10 000 devices at 50 Hz",
    "json-100000-1hz": "accelwatch, JSON batches of 50 once a second, 100 000 devices at 50 Hz",
    "count-binary-100": "a counting consumer only (no daemon), binary int16 batches of 100, 100 devices flat out",
    "python-json-100": "Python pipeline, JSON batches of 100, 100 devices flat out",
    "json-100-17digits": "accelwatch, JSON batches of 100 with 17-digit numbers, 100 devices flat out",
    "python-json-100-17digits": "Python pipeline, JSON batches of 100 with 17-digit numbers, 100 devices flat out",
}


def machine():
    """The CPU as /proc/cpuinfo names it, its clock and its widest vector
    extension: figures differ between machines by more than any change
    does (docs/measured.md, "A second machine"), so each table says where
    it was made."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine()
    field = lambda key: next((line.split(":", 1)[1].strip() for line in info.splitlines()
                              if line.startswith(key)), "")
    flags = field("flags").split()
    vector = next((v for v in ("avx512f", "avx2", "sse4_2") if v in flags), "")
    mhz = field("cpu MHz")
    return ", ".join(part for part in (field("model name") or platform.machine(),
                                       f"{float(mhz):.0f} MHz" if mhz else "",
                                       vector.upper().replace("AVX512F", "AVX-512")) if part)


def log_tail(path):
    """The end of a consumer's log, for the error that ends a run: the run's
    work directory, and the log with it, is deleted as the error leaves."""
    with open(path) as log:
        return log.read()[-2000:]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, within=10.0):
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {within} s")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); [0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        kb = int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1))
    return kb / 1024


def http_get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, ""


def scrape(port):
    status, text = http_get(port, "/metrics")
    assert status == 200, f"/metrics answered {status}"
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def family_sum(samples, family):
    return sum(v for k, v in samples.items() if k == family or k.startswith(family + "{"))


STAGES = ["ingest", "to_scorer", "scoring", "to_sink", "sink"]


def latency_buckets(samples, stage=None):
    """[(upper bound, cumulative count)] of the latency histogram, or of
    one stage's part of it (accelwatch_window_stage_seconds)."""
    out = []
    for key, value in samples.items():
        if stage is None:
            m = re.fullmatch(r'accelwatch_window_latency_seconds_bucket\{le="([^"]+)"\}', key)
        elif key.startswith("accelwatch_window_stage_seconds_bucket{") and f'stage="{stage}"' in key:
            m = re.search(r'le="([^"]+)"', key)
        else:
            m = None
        if m:
            out.append((float(m.group(1)), value))
    return sorted(out)


def stage_sum(samples, stage):
    return samples.get(f'accelwatch_window_stage_seconds_sum{{stage="{stage}"}}', 0.0)


def quantile(buckets, q):
    """histogram_quantile: linear within the bucket holding rank q."""
    total = buckets[-1][1]
    if total == 0:
        return float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


def highest_bucket(buckets):
    total = buckets[-1][1]
    if total == 0:
        return float("nan")
    for bound, count in buckets:
        if count >= total:
            return bound
    return float("inf")


def start_broker(work):
    port = free_port()
    conf = os.path.join(work, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    mosquitto = os.environ.get("MOSQUITTO", "mosquitto")
    for d in ("/usr/sbin", "/usr/local/sbin"):
        if mosquitto == "mosquitto" and os.path.exists(os.path.join(d, "mosquitto")):
            mosquitto = os.path.join(d, "mosquitto")
    proc = subprocess.Popen([mosquitto, "-c", conf], stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(work, "mosquitto.log"), "w"))
    wait_port(port)
    return proc, port


BACKEND = "tract"


def daemon_config(work, broker_port, http_port, fmt, client_id="accelwatch-bench", extra=""):
    """The daemon's config; `extra` is appended (more TOML), but for the
    keys under its `[output.mqtt]` header, which go in the config's own
    table of that name (TOML defines a table once)."""
    path = os.path.join(work, "accelwatch.toml")
    output_mqtt = ""
    if "[output.mqtt]\n" in extra:
        before, _, rest = extra.partition("[output.mqtt]\n")
        keys, next_table, after = rest.partition("\n[")
        output_mqtt = keys + "\n"
        extra = before + ("[" + after if next_table else "")
    with open(path, "w") as f:
        f.write(f"""[input]
kind = "mqtt"
binary_i16_scale = {I16_SCALE!r}
[input.mqtt]
url = "mqtt://127.0.0.1:{broker_port}"
client_id = "{client_id}"
topics = ["sensors/{{device}}/accel"]
format = "{fmt}"
[model]
path = "{MODEL}"
watch_interval_ms = 0
backend = "{BACKEND}"
[output]
jsonl = "off"
[output.mqtt]
{output_mqtt}[telemetry]
listen = "127.0.0.1:{http_port}"
{extra}
""")
    return path


def loadgen(broker_port, args, duration):
    """What the generator sent, with the CPU seconds it used ("cpu")."""
    cmd = [LOADGEN, "--port", str(broker_port), "--duration", str(duration),
           "--connections", str(CONNECTIONS), *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    sent = json.loads([l for l in out.stdout.splitlines() if l.startswith("{")][-1])
    sent["cpu"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return sent


def run_accelwatch(work, broker_port, args, duration, extra=""):
    http_port = free_port()
    fmt = args[args.index("--format") + 1]
    config = daemon_config(work, broker_port, http_port, fmt, extra=extra)
    log = open(os.path.join(work, "accelwatch.log"), "w")
    proc = subprocess.Popen([ACCELWATCH, "run", "--config", config, "--log", "warn"],
                            stdout=log, stderr=log, cwd=REPO)
    try:
        deadline = time.time() + 30
        while http_get(http_port, "/readyz")[0] != 200:
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit("accelwatch never got ready:\n" + log_tail(log.name))
            time.sleep(0.1)
        cpu0, m0 = cpu_seconds(proc.pid), scrape(http_port)
        started = time.time()
        sent = loadgen(broker_port, args, duration)
        # Drained once the sample count stands still for half a second.
        last, last_change, still = None, time.time(), 0
        while still < 5 and time.time() - last_change < 30:
            n = scrape(http_port)["accelwatch_samples_total"]
            if n != last:
                last, last_change, still = n, time.time(), 0
            else:
                still += 1
            time.sleep(0.1)
        cpu1, m1, rss = cpu_seconds(proc.pid), scrape(http_port), peak_rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    d = lambda family: family_sum(m1, family) - family_sum(m0, family)
    processed = d("accelwatch_samples_total")
    b0 = dict(latency_buckets(m0))
    buckets = [(bound, count - b0.get(bound, 0)) for bound, count in latency_buckets(m1)]
    stages = {}
    for stage in STAGES:
        s0 = dict(latency_buckets(m0, stage))
        sb = [(bound, count - s0.get(bound, 0)) for bound, count in latency_buckets(m1, stage)]
        if sb and sb[-1][1] > 0:
            stages[stage] = {"p50": quantile(sb, 0.5), "p99": quantile(sb, 0.99),
                             "mean": (stage_sum(m1, stage) - stage_sum(m0, stage)) / sb[-1][1]}
    return {
        "stages": stages,
        "sent": sent,
        "processed": processed,
        "seconds": last_change - started,
        "cpu": cpu1 - cpu0,
        "windows": d("accelwatch_windows_total"),
        "decode_errors": d("accelwatch_decode_errors_total"),
        "publish_dropped": d("accelwatch_mqtt_publish_dropped_total"),
        "alerts": d("accelwatch_alerts_total"),
        "p50": quantile(buckets, 0.5),
        "p99": quantile(buckets, 0.99),
        "max": highest_bucket(buckets),
        "max_bound": True,
        "rss_mb": rss,
    }


def run_python(work, broker_port, args, duration, extra=""):
    proc = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "scripts", "python_pipeline.py"),
         "--port", str(broker_port), "--model", MODEL],
        stdout=subprocess.PIPE, stderr=open(os.path.join(work, "python.log"), "w"), text=True)
    try:
        if proc.stdout.readline().strip() != "ready":
            # A missing module, say: pip install paho-mqtt numpy onnxruntime.
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            raise SystemExit(f"the Python pipeline did not start (exit {proc.returncode}):\n"
                             + log_tail(os.path.join(work, "python.log")))
        cpu0 = cpu_seconds(proc.pid)
        started = time.time()
        sent = loadgen(broker_port, args, duration)
        # Drained once it uses under 5% of a core for half a second.
        before, deadline = cpu_seconds(proc.pid), time.time() + 60
        while time.time() < deadline:
            time.sleep(0.5)
            now = cpu_seconds(proc.pid)
            if now - before < 0.025:
                break
            before = now
        if proc.poll() is not None:
            raise SystemExit(f"the Python pipeline exited with {proc.returncode} during the run:\n"
                             + log_tail(os.path.join(work, "python.log")))
        cpu1, rss = cpu_seconds(proc.pid), peak_rss_mb(proc.pid)
        proc.send_signal(signal.SIGTERM)
        summary = json.loads(proc.stdout.read().strip().splitlines()[-1])
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return {
        "sent": sent,
        "processed": summary["samples"],
        "seconds": summary["last_message_at"] - started,
        "cpu": cpu1 - cpu0,
        "windows": summary["windows"],
        "decode_errors": summary["errors"],
        "publish_dropped": 0,
        "p50": summary["latency_p50_s"],
        "p99": summary["latency_p99_s"],
        "max": summary["latency_max_s"],
        "max_bound": False,
        "rss_mb": rss,
    }


def run_count(work, broker_port, args, duration, extra=""):
    """The broker's own pass: every message delivered to a consumer that
    only counts them."""
    proc = subprocess.Popen([COUNTER, "--port", str(broker_port), "--topic", "sensors/+/accel"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(os.path.join(work, "count.log"), "w"),
                            text=True)
    try:
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"mqtt_count did not subscribe; see {work}/count.log")
        cpu0 = cpu_seconds(proc.pid)
        sent = loadgen(broker_port, args, duration)
        summary = json.loads(proc.stdout.readline())
        cpu1, rss = cpu_seconds(proc.pid), peak_rss_mb(proc.pid)
        proc.stdin.close()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    batch = int(args[args.index("--batch") + 1])
    nan = float("nan")
    return {
        "sent": sent,
        "processed": summary["messages"] * batch,
        "seconds": summary["seconds"],
        "cpu": cpu1 - cpu0,
        "windows": 0,
        "decode_errors": 0,
        "publish_dropped": 0,
        "p50": nan,
        "p99": nan,
        "max": nan,
        "max_bound": False,
        "rss_mb": rss,
    }


def ms(seconds, bound=False):
    if seconds != seconds:
        return "–"
    if seconds == float("inf"):
        return "> 1 s"
    return ("≤ " if bound else "") + (f"{seconds * 1e3:.2f} ms" if seconds < 0.1 else f"{seconds * 1e3:.0f} ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=12.0, help="seconds of load per run")
    ap.add_argument("--only", default=",".join(RUNS), help="runs, comma-separated: " + ", ".join(RUNS))
    ap.add_argument("--no-alerts", action="store_true",
                    help="the detector's threshold out of reach ([detector] threshold = 1e30), so a run "
                         "measures the feature path without the alert storms the generator's jumps raise")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of the runs, each run once a round, in turn; the ratios of every "
                         "round and their medians are printed")
    ap.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS,
                    help="the generator's connections, the devices spread over them: mosquitto reads one "
                         "packet of each ready connection a turn of its loop, so on one connection a "
                         "flat-out run offers only what a turn passes")
    ap.add_argument("--model", default=DEFAULT_MODEL,
                    help="the model every consumer serves (the shipped demo model by default; "
                         "a model `accelwatch train` wrote, to see what yours costs)")
    ap.add_argument("--backend", choices=["tract", "ort"], default="tract",
                    help="the daemon's model.backend (ort needs ORT_DYLIB_PATH)")
    opts = ap.parse_args()
    global BACKEND, CONNECTIONS, MODEL
    BACKEND = opts.backend
    if not os.path.isfile(opts.model):
        raise SystemExit(f"--model {opts.model}: no such file")
    MODEL = os.path.abspath(opts.model)
    if opts.connections < 1:
        raise SystemExit("--connections takes 1 or more")
    CONNECTIONS = opts.connections
    if opts.repeat < 1:
        raise SystemExit("--repeat takes 1 or more rounds")
    names = [n for n in opts.only.split(",") if n]
    for n in names:
        if n not in RUNS:
            raise SystemExit(f"no run {n!r}; the runs are {', '.join(RUNS)}")
    rounds = []
    for round_no in range(opts.repeat):
        results = {}
        for name in names:
            consumer, args, extra = RUNS[name]
            if opts.no_alerts:
                extra += "\n[detector]\nthreshold = 1e30\n"
            with tempfile.TemporaryDirectory(prefix="e2e-bench-") as work:
                broker, port = start_broker(work)
                try:
                    run = {"accelwatch": run_accelwatch, "python": run_python, "count": run_count}[consumer]
                    results[name] = r = run(work, port, args, opts.duration, extra)
                    r["broker_cpu"] = cpu_seconds(broker.pid)
                finally:
                    broker.terminate()
                    broker.wait(timeout=10)
            print(f"{name} (round {round_no + 1}): {json.dumps(r)}", file=sys.stderr)
        rounds.append(results)

    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores "
          f"({machine()}), {opts.duration:g} s of load per run; "
          f"generator ({CONNECTIONS} connection{'s' if CONNECTIONS > 1 else ''}), broker and consumer "
          "share the cores."
          + (f" {opts.repeat} rounds, each run once a round, in turn." if opts.repeat > 1 else "") + "\n")
    for round_no, results in enumerate(rounds):
        if opts.repeat > 1:
            print(f"**Round {round_no + 1}**\n")
        print_round(results)
        print()
    if opts.repeat > 1:
        print_ratio_medians(rounds)


def rate(r):
    return r["processed"] / max(r["seconds"], 1e-9)


def cost(r):
    return r["cpu"] / max(r["processed"], 1)


# The ratios issue 30's targets are stated in: what each is, how the two
# runs are compared, and the two runs (accelwatch's first).
RATIOS = [
    ("accelwatch / Python on JSON", "throughput", "json-100", "python-json-100"),
    ("accelwatch / Python on JSON", "CPU efficiency", "json-100", "python-json-100"),
    ("accelwatch / Python on JSON with 17-digit numbers", "throughput",
     "json-100-17digits", "python-json-100-17digits"),
    ("accelwatch / Python on JSON with 17-digit numbers", "CPU efficiency",
     "json-100-17digits", "python-json-100-17digits"),
    ("accelwatch, binary against JSON with 6 decimals", "CPU per sample", "binary-100", "json-100"),
    ("accelwatch, 17-digit numbers against 6 decimals", "CPU per sample", "json-100-17digits", "json-100"),
]


def ratio_of(measure, ours, other, results):
    """`measure` of run `ours` against run `other` in one round's
    `results`, or None when either was not run."""
    if ours not in results or other not in results:
        return None
    a, b = results[ours], results[other]
    return {"throughput": rate(a) / rate(b),
            "CPU efficiency": cost(b) / cost(a),
            "CPU per sample": cost(a) / cost(b)}[measure]


def print_ratio_medians(rounds):
    """Each ratio of every round, and their median: the machine's speed
    drifts within minutes, and a ratio within one round (its two runs a
    few seconds apart) is what is compared."""
    lines = []
    for what, measure, ours, other in RATIOS:
        values = [ratio_of(measure, ours, other, results) for results in rounds]
        values = [v for v in values if v is not None]
        if not values:
            continue
        lines.append(f"- {what}: the {measure}: median {statistics.median(values):.2f}× over {len(values)} "
                     f"rounds (round by round: {', '.join(f'{v:.2f}×' for v in values)}; "
                     f"{min(values):.2f}× to {max(values):.2f}×)")
    if lines:
        print("Ratios over the rounds\n")
        print("\n".join(lines))


def print_cores(results):
    """Who took the cores: each process's CPU seconds (the broker's over
    its whole life, the consumer's from its start to the drain) per second
    that the generator sent. A flat-out run is as fast as the three
    together let it be; on 2 cores their sum near 2 says the machine, not
    one of them, set the rate. A consumer that lags behind (the Python
    pipeline) works on after the generator stops, so its figure, and the
    sum, can pass what the cores give in the generator's seconds."""
    print()
    print("Who takes the cores: CPU seconds a second of load (a lagging consumer's drain included)")
    print()
    print("| run | generator | broker | consumer | all |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        seconds = max(r["sent"]["seconds"], 1e-9)
        parts = [r["sent"]["cpu"] / seconds, r["broker_cpu"] / seconds, r["cpu"] / seconds]
        print(f"| {LABELS[name]} | " + " | ".join(f"{p:.2f}" for p in parts) + f" | {sum(parts):.2f} |")


def print_round(results):
    print("| run | offered samples/s | processed samples/s | share | windows | CPU per 1000 samples "
          "| latency p50 | p99 | max | peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        offered = r["sent"]["samples_per_s"]
        per_k = cost(r) * 1e3 * 1e6
        print(f"| {LABELS[name]} | {offered / 1e6:.2f} M | {rate(r) / 1e6:.2f} M "
              f"| {r['processed'] / max(r['sent']['samples'], 1):.0%} | {r['windows']:.0f} "
              f"| {per_k:.0f} µs | {ms(r['p50'])} | {ms(r['p99'])} | {ms(r['max'], r['max_bound'])} "
              f"| {r['rss_mb']:.1f} MB |")
    staged = {n: r for n, r in results.items() if r.get("stages")}
    if staged:
        print()
        print("Where the latency goes (accelwatch_window_stage_seconds): p50 / p99 / mean of each stage, ms")
        print()
        print("| run | " + " | ".join(STAGES) + " |")
        print("|---|" + "---|" * len(STAGES))
        for name, r in staged.items():
            cells = [" / ".join(f"{r['stages'][s][q] * 1e3:.2f}" for q in ("p50", "p99", "mean"))
                     if s in r["stages"] else "-" for s in STAGES]
            print(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    print_cores(results)
    notes = [f"{n}: {r['decode_errors']:.0f} decode errors" for n, r in results.items() if r["decode_errors"]]
    # A line dropped is a line not written: runs compare fairly at like
    # shares only.
    notes += [f"{n}: {r['publish_dropped']:.0f} MQTT publications dropped (output queue full)"
              + (f", {100 * r['publish_dropped'] / r['windows']:.0f} % of the windows' lines" if r.get("windows") else "")
              for n, r in results.items() if r["publish_dropped"]]
    notes += [f"{n}: {r['alerts']:.0f} alerts raised or cleared ({r['alerts'] / r['seconds']:.0f} a second)"
              for n, r in results.items() if r.get("alerts")]
    for what, measure, ours, other in RATIOS:
        value = ratio_of(measure, ours, other, results)
        if value is not None:
            notes.append(f"{what}: the {measure}: {value:.2f}×")
    if notes:
        print()
        for n in notes:
            print(f"- {n}")


if __name__ == "__main__":
    main()
