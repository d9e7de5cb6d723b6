#!/usr/bin/env bash
# fdatasync latency on this machine's disk, for the two ways a log can grow (docs/performance.md,
# item 26): appending (every sync also changes the file's size, so the file system commits its
# journal) and overwriting zeros written ahead (what yunkey_store::Wal does since format 2: the
# size stays, only data is flushed). Writes N records of 300 bytes (about one signature's
# Raft entry), each followed by fdatasync, in a file under DIR; prints median, 90th and 99th
# percentiles and the mean, in ms, for each way, in the order given by ROUNDS.
#
#   scripts/fdatasync-latency.sh [DIR]      # DIR defaults to the current directory
#
# Environment: N (records per round, 1500), ROUNDS (append,zero,zero,append).
set -euo pipefail
DIR=${1:-.}
[ -d "$DIR" ] || { echo "fdatasync-latency: $DIR is not a directory" >&2; exit 2; }
N=${N:-1500} ROUNDS=${ROUNDS:-append,zero,zero,append} DIR=$DIR python3 - <<'PY'
import os, time
n = int(os.environ["N"])
path = os.path.join(os.environ["DIR"], f"fdatasync-latency.{os.getpid()}")
for way in os.environ["ROUNDS"].split(","):
    if way not in ("append", "zero"):
        raise SystemExit(f"fdatasync-latency: unknown way {way!r} (append or zero)")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if way == "zero":
            os.write(fd, b"\0" * (n * 300 + (1 << 20)))
            os.fsync(fd)
            os.lseek(fd, 0, os.SEEK_SET)
        took = []
        for _ in range(n):
            os.write(fd, b"x" * 300)
            t = time.perf_counter()
            os.fdatasync(fd)
            took.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    took.sort()
    ms = lambda q: took[min(len(took) - 1, int(len(took) * q))] * 1e3
    print(f"{way:7} p50 {ms(0.5):.3f}  p90 {ms(0.9):.3f}  p99 {ms(0.99):.3f}  mean {sum(took) / n * 1e3:.3f} ms")
PY
