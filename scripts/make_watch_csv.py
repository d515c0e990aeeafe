#!/usr/bin/env python3
"""Make watch.csv, the full smartwatch recording, from its public source.

Usage: python3 scripts/make_watch_csv.py SOURCE OUT.csv

SOURCE is `seglearn/data/watch_dataset.npy` from the Python package
seglearn 1.2.5 (BSD-3-Clause, see data/watch/LICENSE), or the package's
wheel itself, which holds that file:

    python3 -m pip download --no-deps seglearn==1.2.5 -d /tmp/seglearn
    python3 scripts/make_watch_csv.py /tmp/seglearn/seglearn-1.2.5-py3-none-any.whl watch.csv

The values are written unchanged, rounded to 6 decimals; one `series` per
recording in the file's order, `side` 1 = right and 0 = left, the exercise
by its label, `t_ms` in 20 ms steps (50 Hz) from the start of each
recording, CRLF line ends (as Python's csv module writes). Columns:
series,subject,side,exercise,t_ms,ax,ay,az,wx,wy,wz.
Needs numpy only.
"""
import io
import sys
import zipfile

import numpy as np

MEMBER = "seglearn/data/watch_dataset.npy"
PERIOD_MS = 20


def load(source):
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as wheel:
            raw = io.BytesIO(wheel.read(MEMBER))
        return np.load(raw, allow_pickle=True).item()
    return np.load(source, allow_pickle=True).item()


def main(source, out):
    data = load(source)
    channels = list(data["X_labels"])
    assert channels == ["ax", "ay", "az", "wx", "wy", "wz"], channels
    labels = list(data["y_labels"])
    rows = 0
    with open(out, "w", newline="") as f:
        f.write("series,subject,side,exercise,t_ms," + ",".join(channels) + "\r\n")
        for series, values in enumerate(data["X"]):
            subject = int(data["subject"][series])
            side = "right" if int(data["side"][series]) == 1 else "left"
            exercise = labels[int(data["y"][series])]
            head = f"{series},{subject},{side},{exercise}"
            for i, sample in enumerate(values):
                f.write(f"{head},{i * PERIOD_MS}," + ",".join(f"{v:.6f}" for v in sample) + "\r\n")
                rows += 1
    print(f"wrote {out}: {len(data['X'])} recordings, {rows} rows")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[1])
    main(sys.argv[1], sys.argv[2])
