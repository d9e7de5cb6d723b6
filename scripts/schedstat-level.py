#!/usr/bin/env python3
"""Averages of scripts/schedstat-by-process.sh's samples between two moments.

    scripts/schedstat-level.py OUT T0 T1

T0 and T1 are epoch seconds; the samples nearest them bound the window. Prints, per class,
CPU time, run-queue wait and timeslices per second of the window, and the CPU of all classes.
"""
import collections
import sys


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    path, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    samples = collections.defaultdict(dict)
    with open(path) as f:
        for line in f:
            ts, cls, pid, run, wait, slices = line.split()
            samples[float(ts)][(cls, pid)] = (float(run), float(wait), float(slices))
    if not samples:
        sys.exit(f"{path} holds no samples")
    times = sorted(samples)
    a = min(times, key=lambda t: abs(t - t0))
    b = min(times, key=lambda t: abs(t - t1))
    if b <= a:
        sys.exit(f"no window: the samples nearest {t0} and {t1} are {a} and {b}")
    dt = b - a
    sums = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
    for key, after in samples[b].items():
        before = samples[a].get(key)
        if before:
            for i in range(3):
                sums[key[0]][i] += after[i] - before[i]
    total = 0.0
    for cls in ["yk1", "yk2", "yk3", "chip", "bench"]:
        if cls in sums:
            run, wait, slices = sums[cls]
            total += run
            print(f"{cls:5} cpu {run / 1e6 / dt:6.0f} ms/s  wait {wait / 1e6 / dt:6.0f} ms/s  slices {slices / dt:7.0f}/s")
    print(f"window {dt:.2f} s, cpu of all classes {total / 1e6 / dt:.0f} ms/s")


if __name__ == "__main__":
    main()
