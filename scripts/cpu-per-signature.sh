#!/usr/bin/env bash
# CPU time per authorized signature, process by process, through 3 coordinators + 4 chips
# (docs/performance.md, "How to run" and items 24, 25). Throughput on a shared 2-core machine
# moves by ±30 % from one minute to the next, and the CPU per signature with it; system calls
# and context switches per signature do not, and the split by process shows which process a
# change moved. Compare two builds one after the other, then in reverse.
#
# It runs scripts/bench-coordinators.sh with one signing level (SIGN_CONCURRENCY, default 64)
# of LEVEL_SECONDS (default 30), and WINDOW seconds (default 8) into the level reads each
# process's CPU time (utime + stime, /proc/PID/stat) at the start and the end of the window.
# With `perf` installed it also counts system calls and context switches per process. Prints
# one line per process: CPU seconds in the window, and CPU µs, system calls and context
# switches per signature (at the level's rate, which the bench prints).
#
# Environment: CARGO_TARGET_DIR (whose release/yunkey is run; built first unless NO_BUILD=1),
# SIGN_CONCURRENCY, SIGN_BATCH (signatures per call, passed on), LEVEL_SECONDS, WINDOW,
# YK_ARGS (flags for every coordinator), KEEP=1
# (keeps the samples; printed).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SC=${SIGN_CONCURRENCY:-64}
LEVEL_SECONDS=${LEVEL_SECONDS:-30}
WINDOW=${WINDOW:-8}
case "$SC" in *,*) echo "cpu-per-signature: give one SIGN_CONCURRENCY level, not $SC" >&2; exit 2 ;; esac
[ "$LEVEL_SECONDS" -ge $((WINDOW + 20)) ] || {
    echo "cpu-per-signature: LEVEL_SECONDS ($LEVEL_SECONDS) must be at least WINDOW + 20 ($((WINDOW + 20)))" >&2
    exit 2
}
OUT=$(mktemp -d "${TMPDIR:-/tmp}/cpu-per-signature.XXXXXX")
trap '[ -n "${KEEP:-}" ] && echo "samples kept in $OUT" >&2 || rm -rf "$OUT"' EXIT

(YUNKEY_ONLY=1 ROUNDS=0 CONCURRENCY=1 SIGN_CONCURRENCY="$SC" SECONDS_PER_LEVEL="$LEVEL_SECONDS" \
    "$ROOT/scripts/bench-coordinators.sh" >"$OUT/bench.out" 2>"$OUT/bench.err") &
bench=$!
# The signing bench starts with ~10 s of set-up (enrolments, devices) and ~6 s of crypto
# ceilings; the window starts 15 s later, well inside the level.
until pgrep -f "bench --users" >/dev/null; do
    kill -0 "$bench" 2>/dev/null || { echo "cpu-per-signature: the bench ended early:" >&2; tail -5 "$OUT/bench.err" >&2; exit 1; }
    sleep 0.2
done
sleep $((LEVEL_SECONDS / 2 + 10 - WINDOW / 2))

name_of() { # PID -> chip-N, coordinator-N or bench
    local c
    c=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
    case "$c" in
        *" chip --id "*) echo "$c" | grep -o "chip-[0-9]*" | head -1 ;;
        *" coordinator "*) echo "coordinator-$(echo "$c" | sed -n 's/.*--node-id \([0-9]*\).*/\1/p')" ;;
        *" bench --users "*) echo bench ;;
        *) return 1 ;;
    esac
}
: >"$OUT/pids"
for pid in $(pgrep -f "release/yunkey"); do
    # Only the yunkey processes themselves (not `timeout` around the bench).
    case "$(readlink "/proc/$pid/exe" 2>/dev/null)" in */yunkey) ;; *) continue ;; esac
    n=$(name_of "$pid") && echo "$pid $n" >>"$OUT/pids"
done
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
while read -r pid _; do cpu "$pid" >"$OUT/cpu0.$pid"; done <"$OUT/pids"
if command -v perf >/dev/null; then
    while read -r pid _; do
        perf stat -e raw_syscalls:sys_enter,context-switches -x, -o "$OUT/perf.$pid" \
            -p "$pid" sleep "$WINDOW" >/dev/null 2>&1 &
    done <"$OUT/pids"
fi
sleep "$WINDOW"
while read -r pid _; do cpu "$pid" >"$OUT/cpu1.$pid"; done <"$OUT/pids"
wait "$bench" || { echo "cpu-per-signature: the bench failed:" >&2; tail -5 "$OUT/bench.err" >&2; exit 1; }

rate=$(grep -o "concurrency $SC: [0-9]*" "$OUT/bench.out" | awk '{print $3}')
grep -E "ceiling|concurrency $SC:" "$OUT/bench.out" | grep -v "WriteProbe\|EnrollUser"
[ -n "$rate" ] && [ "$rate" -gt 0 ] || { echo "cpu-per-signature: no rate at concurrency $SC" >&2; exit 1; }
hz=$(getconf CLK_TCK)
printf '%-14s %8s %10s %10s %10s\n' process "cpu s" "cpu µs/sig" "calls/sig" "cs/sig"
sort -k2 "$OUT/pids" | while read -r pid n; do
    read -r c0 <"$OUT/cpu0.$pid"
    read -r c1 <"$OUT/cpu1.$pid"
    calls=$(awk -F, '$3 == "raw_syscalls:sys_enter" {print $1}' "$OUT/perf.$pid" 2>/dev/null || true)
    switches=$(awk -F, '$3 == "context-switches" {print $1}' "$OUT/perf.$pid" 2>/dev/null || true)
    echo "$n $c0 $c1 ${calls:--} ${switches:--}"
done | awk -v hz="$hz" -v w="$WINDOW" -v r="$rate" '
    function per(v) { return v == "-" ? "-" : sprintf("%.2f", v / w / r) }
    { s = ($3 - $2) / hz; t += s
      printf "%-14s %8.2f %10.1f %10s %10s\n", $1, s, s / w / r * 1e6, per($4), per($5) }
    END { printf "%-14s %8.2f %10.1f\n", "all", t, t / w / r * 1e6 }'
