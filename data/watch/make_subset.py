#!/usr/bin/env python3
"""Regenerate the shipped subset of the smartwatch recordings.

Usage: python3 data/watch/make_subset.py PATH/TO/watch.csv

Writes, next to this script:
- train-pen.csv: every PEN (pendulum) recording of subjects 1-7, unchanged
  (one `series` per recording): the "normal motion" the demo trains on.
- demo.csv: two simulated live devices (`watch-9`, `watch-10`), each the
  concatenation of real recordings of that subject in the order
  PEN, ABD, PEN, FEL, TRAP, with time made continuous (20 ms steps) and the
  exercise kept as a label column. Subjects 9 and 10 are held out of
  train-pen.csv, so the demo and the tests score unseen people.
"""
import csv
import sys
from collections import defaultdict
from pathlib import Path

CHANNELS = ["ax", "ay", "az", "wx", "wy", "wz"]
TRAIN_SUBJECTS = {str(s) for s in range(1, 8)}
DEMO_SUBJECTS = ["9", "10"]
DEMO_ORDER = ["PEN", "ABD", "PEN", "FEL", "TRAP"]


def main(src: str) -> None:
    here = Path(__file__).resolve().parent
    series = defaultdict(list)
    meta = {}
    with open(src, newline="") as f:
        for row in csv.DictReader(f):
            series[row["series"]].append(row)
            meta[row["series"]] = (row["subject"], row["side"], row["exercise"])

    with open(here / "train-pen.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["series", "subject", "side", "exercise", "t_ms"] + CHANNELS)
        for sid in sorted(series, key=int):
            subject, side, exercise = meta[sid]
            if exercise == "PEN" and subject in TRAIN_SUBJECTS:
                for r in series[sid]:
                    w.writerow([sid, subject, side, exercise, r["t_ms"]] + [r[c] for c in CHANNELS])

    with open(here / "demo.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["device", "t_ms", "exercise"] + CHANNELS)
        for subject in DEMO_SUBJECTS:
            by_exercise = defaultdict(list)
            for sid in sorted(series, key=int):
                if meta[sid][0] == subject:
                    by_exercise[meta[sid][2]].append(sid)
            t = 0
            for exercise in DEMO_ORDER:
                sid = by_exercise[exercise].pop(0)
                for r in series[sid]:
                    w.writerow([f"watch-{subject}", t, exercise] + [r[c] for c in CHANNELS])
                    t += 20


if __name__ == "__main__":
    main(sys.argv[1])
