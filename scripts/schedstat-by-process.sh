#!/usr/bin/env bash
# Samples, about once a second, each yunkey process's time on a CPU, time runnable but waiting
# in a run queue, and timeslices, summed over its threads (/proc/PID/task/TID/schedstat), for
# docs/performance.md item 35. Run it beside a benchmark; stop it with Ctrl-C or kill.
#
#   scripts/schedstat-by-process.sh OUT      # one line per process per sample:
#                                            # epoch-seconds class pid run-ns wait-ns slices
#   scripts/schedstat-level.py OUT T0 T1     # averages per second between the samples
#                                            # nearest T0 and T1 (epoch seconds)
#
# Classes: yk1, yk2, yk3 (coordinators by --node-id), chip, bench (the `yunkey bench` client).
# A thread that exits takes its counts with it, so a class whose threads come and go (the
# bench client between levels) can read low or negative across that moment.
set -euo pipefail
OUT=${1:?usage: scripts/schedstat-by-process.sh OUT}
: >"$OUT"
while true; do
    ts=$(date +%s.%N)
    for pid in $(pgrep -f "yunkey" || true); do
        args=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
        case "$args" in
        *"--node-id 1 "*) class=yk1 ;;
        *"--node-id 2 "*) class=yk2 ;;
        *"--node-id 3 "*) class=yk3 ;;
        *" chip --id "*) class=chip ;;
        *" bench "*) class=bench ;;
        *) continue ;;
        esac
        cat "/proc/$pid/task/"*/schedstat 2>/dev/null |
            awk -v ts="$ts" -v c="$class" -v p="$pid" '{r += $1; w += $2; s += $3} END {printf "%s %s %s %.0f %.0f %.0f\n", ts, c, p, r, w, s}'
    done >>"$OUT"
    sleep 1
done
