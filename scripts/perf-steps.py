#!/usr/bin/env python3
"""Splits a coordinator's CPU profile by the step of the sign path each sample is in.

    perf record -F 1999 --call-graph dwarf,16384 -p PID -o OUT -- sleep 5
    perf script -i OUT | scripts/perf-steps.py

Each sample goes to the first step of STEPS (in that order) that any frame of its call
chain names, so a sample in the check of a device's signature counts there even though the
sign path is around it; samples that name none of them are "other". Prints each step's
share of the samples. docs/performance.md, item 33, reads a leader and a follower this way.
"""
import collections
import re
import sys

STEPS = [
    ("verify (device signature)", r"authz::verify_authorization"),
    ("sign path, other", r"yunkey_coordinator::signing::sign"),
    ("SignBatch service", r"service::key::sign_batch|observe_typed"),
    ("apply", r"RaftStateMachine.*::apply|apply_command"),
    ("state machine worker, other", r"openraft::core::sm::worker"),
    ("chip calls", r"chip_batch|chip_client|yunkey_coordinator::chips::"),
    ("replication", r"openraft::replication|yunkey_raft::network"),
    ("log", r"yunkey_raft::log|RaftLogStorage|yunkey_store::wal|group_sync"),
    ("raft core", r"openraft::core"),
    ("batcher", r"yunkey_coordinator::batch"),
    ("h2, hyper, tonic", r"h2::|hyper|tonic"),
    ("TLS", r"rustls"),
    ("Tokio scheduling", r"tokio::runtime"),
]
STEPS = [(name, re.compile(rx)) for name, rx in STEPS]
FRAME = re.compile(r"\s+[0-9a-f]+\s+(.*?)(?:\+0x[0-9a-f]+)?\s+\((.*)\)$")


def main():
    counts = collections.Counter()
    total = 0
    frames = []

    def close():
        nonlocal total
        if not frames:
            return
        total += 1
        step = next((n for n, rx in STEPS if any(rx.search(f) for f in frames)), "other")
        counts[step] += 1
        frames.clear()

    for line in sys.stdin:
        if not line.strip() or line[0] not in " \t":
            close()
            continue
        m = FRAME.match(line.rstrip())
        if m:
            frames.append(m.group(1))
    close()
    if not total:
        sys.exit("perf-steps: no samples with call chains on stdin (perf record --call-graph)")
    print(f"samples {total}")
    for name, n in counts.most_common():
        print(f"{name:30s} {100 * n / total:5.1f} %")


if __name__ == "__main__":
    main()
