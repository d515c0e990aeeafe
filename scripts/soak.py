#!/usr/bin/env python3
"""Soaks through a real broker (issue 18): a fresh mosquitto on a free
127.0.0.1 port, the release `accelwatch run` serving models/demo.onnx over
MQTT, and the load generator (examples/loadgen.rs). Run it through
scripts/soak.sh, which builds the release binaries first.

- `churn`: `--ids` distinct device ids (1 000 000 by default), each sending
  one batch of a window's samples, so every id is windowed, scored and
  judged once and the daemon's per-device state sees a new device per
  message. Prints the daemon's RSS every `--every` ids (100 000) as its
  frame counter passes them, with the devices tracked and evicted; the
  memory must stay flat (bounded by window.max_devices).
- `overload`: `--generators` load generators publish flat out for
  `--duration` seconds (60), at least `--factor` (5) times what the daemon
  takes in that time (its capacity: the generators, the broker and the
  daemon share the machine's cores, so the daemon is made dearer per sample
  instead, with a `window.hop` of `--hop` (1) samples: a window scored and
  published per sample instead of per 64; `window.max_gap_ms` of an hour,
  so the batches the broker drops do not restart the windows). While
  they run, /healthz and /metrics are timed every 0.2 s (each must answer
  in under 100 ms); RSS and the queue depths (accelwatch_queue_depth) are
  sampled. Afterwards, a paced load must be processed in full (it
  recovers without a restart).

Prints the figures and exits non-zero when a bound is broken.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_bench import (ACCELWATCH, LOADGEN, REPO, free_port, http_get, scrape,  # noqa: E402
                       start_broker, family_sum, daemon_config)


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) / 1024


def start_daemon(work, broker_port, fmt, extra=""):
    http_port = free_port()
    path = daemon_config(work, broker_port, http_port, fmt, "accelwatch-soak", extra)
    log = open(os.path.join(work, "accelwatch.log"), "w")
    proc = subprocess.Popen([ACCELWATCH, "run", "--config", path, "--log", "warn"],
                            stdout=log, stderr=log, cwd=REPO)
    deadline = time.time() + 30
    while http_get(http_port, "/readyz")[0] != 200:
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise SystemExit(f"accelwatch never got ready:\n{open(log.name).read()[-2000:]}")
        time.sleep(0.1)
    return proc, http_port


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return None


def loadgen(broker_port, args, wait=True):
    cmd = [LOADGEN, "--port", str(broker_port), *args]
    if wait:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=7200)
        return json.loads([l for l in out.stdout.splitlines() if l.startswith("{")][-1])
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def sent_by(gen):
    """What a generator started with wait=False sent (its JSON line)."""
    out = gen.stdout.read()
    return json.loads([l for l in out.splitlines() if l.startswith("{")][-1])


def churn(opts):
    failures = []
    with tempfile.TemporaryDirectory(prefix="soak-churn-") as work:
        broker, port = start_broker(work)
        proc, http = start_daemon(work, port, "binary")
        try:
            # QoS 1 so the broker does not drop what the daemon reads slower
            # than the generator sends: every id must arrive.
            # One message per id at --per-second messages a second: the
            # per-device rate that spreads --ids devices' batches so.
            rate = 128 * opts.per_second / opts.ids
            gen = loadgen(port, ["--format", "binary", "--devices", str(opts.ids),
                                 "--messages", str(opts.ids), "--batch", "128", "--rate", repr(rate),
                                 "--duration", "86400", "--prefix", "churn-"],
                          wait=False)
            print(f"churn: {opts.ids:,} distinct device ids, one 128-sample binary batch each "
                  f"(a window), {opts.per_second:,} ids a second; window.max_devices = 1024 "
                  f"(the default)")
            print("| ids received | RSS | devices tracked | devices evicted | windows scored |")
            print("|---|---|---|---|---|")
            mark, rows, last_change, last = opts.every, [], time.time(), -1
            while True:
                m = scrape(http)
                frames = family_sum(m, "accelwatch_frames_total")
                if frames != last:
                    last, last_change = frames, time.time()
                while frames >= mark:
                    row = (mark, rss_mb(proc.pid), m.get("accelwatch_devices", 0),
                           m.get("accelwatch_devices_evicted_total", 0),
                           m.get("accelwatch_windows_total", 0))
                    rows.append(row)
                    print(f"| {row[0]:,} | {row[1]:.1f} MB | {row[2]:.0f} | {row[3]:.0f} | {row[4]:.0f} |",
                          flush=True)
                    mark += opts.every
                if frames >= opts.ids or (gen.poll() is not None and time.time() - last_change > 10):
                    break
                time.sleep(0.2)
            gen.wait(timeout=60)
        finally:
            stop(proc)
            broker.terminate()
            broker.wait(timeout=10)
    if len(rows) < 2:
        failures.append(f"only {len(rows)} rows: the daemon received {last:.0f} of {opts.ids} ids")
    else:
        # Flat: after the first mark (allocator and model warm), RSS grows by
        # at most 10% + 4 MB however many more ids come.
        first, peak = rows[0][1], max(r[1] for r in rows)
        print(f"\nRSS at {rows[0][0]:,} ids {first:.1f} MB, peak {peak:.1f} MB, "
              f"at {rows[-1][0]:,} ids {rows[-1][1]:.1f} MB")
        if peak > first * 1.10 + 4 and not opts.smoke:
            failures.append(f"RSS grew from {first:.1f} MB to {peak:.1f} MB")
        if max(r[2] for r in rows) > 1024:
            failures.append("more devices tracked than window.max_devices")
        if rows[-1][0] < opts.ids:
            failures.append(f"the daemon received {last:.0f} of {opts.ids} ids")
    return failures


def overload(opts):
    failures = []
    with tempfile.TemporaryDirectory(prefix="soak-overload-") as work:
        broker, port = start_broker(work)
        proc, http = start_daemon(work, port, "json",
                                  f"[window]\nhop = {opts.hop}\nmax_gap_ms = 3600000.0\n")
        probes = {"/healthz": [], "/metrics": []}
        rss, depth, stop_probing = [], [], threading.Event()

        def probe():
            while not stop_probing.is_set():
                for path in probes:
                    t0 = time.perf_counter()
                    status, text = http_get(http, path)
                    probes[path].append((time.perf_counter() - t0, status))
                    if path == "/metrics" and status == 200:
                        d = [float(v) for v in re.findall(r'^accelwatch_queue_depth\{[^}]*\} (\S+)$', text, re.M)]
                        depth.append(sum(d))
                rss.append((time.time(), rss_mb(proc.pid)))
                time.sleep(0.2)

        prober = threading.Thread(target=probe, daemon=True)
        try:
            idle_rss = rss_mb(proc.pid)
            m0 = scrape(http)
            load_started = time.time()
            prober.start()
            gens = [loadgen(port, ["--format", "json", "--devices", "100", "--batch", "100",
                                   "--rate", "0", "--duration", str(opts.duration),
                                   "--client-id", f"overload-{i}", "--seed", str(i)], wait=False)
                    for i in range(opts.generators)]
            offered = 0
            for g in gens:
                g.wait(timeout=opts.duration + 120)
                offered += sent_by(g)["samples"]
            m1 = scrape(http)
            # Recovery: wait for the backlog to drain, then a paced load
            # must be processed sample for sample.
            last, still = None, 0
            while still < 10:
                n = family_sum(scrape(http), "accelwatch_samples_total")
                still = still + 1 if n == last else 0
                last = n
                time.sleep(0.2)
            stop_probing.set()
            prober.join(timeout=10)
            before = family_sum(scrape(http), "accelwatch_samples_total")
            sent = loadgen(port, ["--format", "json", "--devices", "10", "--batch", "50",
                                  "--rate", "100", "--duration", "3", "--qos", "1",
                                  "--client-id", "recovery"])
            deadline = time.time() + 30
            while time.time() < deadline:
                after = family_sum(scrape(http), "accelwatch_samples_total")
                if after - before >= sent["samples"]:
                    break
                time.sleep(0.2)
            ready = http_get(http, "/readyz")[0]
        finally:
            stop_probing.set()
            code = stop(proc)
            broker.terminate()
            broker.wait(timeout=10)
    processed = family_sum(m1, "accelwatch_samples_total") - family_sum(m0, "accelwatch_samples_total")
    print(f"overload: {opts.generators} generators of JSON batches flat out for {opts.duration:g} s "
          f"against one daemon scoring a window every {opts.hop} samples "
          f"({os.cpu_count()} cores shared by all)")
    factor = offered / max(processed, 1)
    print(f"- offered {offered / opts.duration / 1e6:.2f} M samples/s, processed "
          f"{processed / opts.duration / 1e6:.2f} M samples/s during the load: "
          f"{factor:.1f} times its capacity; the broker dropped the rest")
    if factor < opts.factor and not opts.smoke:
        failures.append(f"offered only {factor:.1f} times what the daemon took (bound {opts.factor:g}): "
                        f"more --generators or a smaller --hop")
    windows = family_sum(m1, "accelwatch_windows_total") - family_sum(m0, "accelwatch_windows_total")
    dropped = (family_sum(m1, "accelwatch_mqtt_publish_dropped_total")
               - family_sum(m0, "accelwatch_mqtt_publish_dropped_total"))
    print(f"- {windows:.0f} windows scored; {dropped:.0f} feature messages dropped at the full "
          f"output queue (counted in accelwatch_mqtt_publish_dropped_total)")
    for path, times in probes.items():
        ok = [t for t, s in times if s == 200]
        worst = max((t for t, _ in times), default=float("nan"))
        p99 = sorted(ok)[int(0.99 * (len(ok) - 1))] if ok else float("nan")
        print(f"- {path}: {len(times)} requests, {len(times) - len(ok)} failed, "
              f"p99 {p99 * 1e3:.1f} ms, max {worst * 1e3:.1f} ms")
        if len(ok) != len(times) or (worst > 0.1 and not opts.smoke):
            failures.append(f"{path}: {len(times) - len(ok)} failed, max {worst * 1e3:.1f} ms (bound 100 ms)")
    # Bounded: the queues fill in the first seconds; after that the memory
    # must not grow (the second half of the load no higher than the first,
    # give or take 10 % + 4 MB of allocator noise).
    half = load_started + opts.duration / 2
    first = max((m for t, m in rss if t < half), default=idle_rss)
    second = max((m for t, m in rss if half <= t < load_started + opts.duration), default=first)
    print(f"- RSS: {idle_rss:.1f} MB before the load, max {first:.1f} MB in its first half, "
          f"{second:.1f} MB in its second, {max(m for _, m in rss):.1f} MB overall")
    if second > first * 1.1 + 4 and not opts.smoke:
        failures.append(f"RSS grew during the load: {first:.1f} MB then {second:.1f} MB")
    print(f"- queued in the pipeline (accelwatch_queue_depth, summed): max {max(depth, default=0):.0f}")
    print(f"- recovery: {after - before:.0f} of {sent['samples']} paced samples processed after "
          f"the load, /readyz {ready}, exit {code}")
    if max(depth, default=0) == 0:
        failures.append("the queues never filled: the load did not overload the daemon")
    if after - before < sent["samples"] or ready != 200:
        failures.append("did not recover")
    if code != 0:
        failures.append(f"exit code {code} after SIGTERM")
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="soak", required=True)
    c = sub.add_parser("churn", help="a million distinct device ids; RSS every 100 000")
    c.add_argument("--ids", type=int, default=1_000_000)
    c.add_argument("--every", type=int, default=100_000)
    c.add_argument("--per-second", type=int, default=10_000, help="ids (messages) a second")
    o = sub.add_parser("overload", help="several generators flat out; responsiveness and recovery")
    o.add_argument("--generators", type=int, default=5)
    o.add_argument("--duration", type=float, default=60.0)
    o.add_argument("--hop", type=int, default=1, help="the daemon's window.hop (128-sample windows)")
    o.add_argument("--factor", type=float, default=5.0,
                   help="the least load offered, in multiples of what the daemon takes")
    for p in (c, o):
        p.add_argument("--smoke", action="store_true",
                       help="a short pass (CI, debug builds): report the timing and memory "
                            "figures, fail only on lost data, no recovery or a bad exit")
    opts = ap.parse_args()
    failures = churn(opts) if opts.soak == "churn" else overload(opts)
    for f in failures:
        print(f"FAILED: {f}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
