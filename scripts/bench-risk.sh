#!/usr/bin/env bash
# The business transaction module's cost, in one run on this machine (docs/performance.md,
# "Risk and face checks"):
#
#   scripts/bench-risk.sh
#
# 1. builds `yunkey` and `yunkey-face` (release) and fetches the face models;
# 2. starts `yunkey dev` without a risk service and runs `yunkey bench` (authorized signatures
#    through KeyService.Sign at each concurrency level);
# 3. starts `yunkey-face serve` and `yunkey risk serve` (rules that are evaluated on every
#    signature but never fire: a per-transaction limit, a daily total, velocity, a payee
#    block list), restarts the same dev cluster with --risk-endpoint, and runs the same bench;
# 4. runs `yunkey-face bench` on tests/data/faces: the time to embed each photo, and the
#    same-person and different-person distances.
#
# Environment: CONCURRENCY (1,8,32), SECONDS_PER_LEVEL (5), USERS (64), ROUNDS (20, face
# bench), NO_BUILD=1 uses the binaries already built, KEEP=1 keeps the work dir.
# Needs: cargo, libdlib-dev libopenblas-dev liblapack-dev (the face recogniser), python3 with
# pip (scripts/face-models.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONCURRENCY=${CONCURRENCY:-1,8,32}
SECONDS_PER_LEVEL=${SECONDS_PER_LEVEL:-5}
USERS=${USERS:-64}
ROUNDS=${ROUNDS:-20}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release

if [ "${NO_BUILD:-}" != 1 ]; then
    (cd "$ROOT" && cargo build --release -p yunkey -p yunkey-face)
fi
"$ROOT/scripts/face-models.sh" "$TARGET/face-models" >/dev/null

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-risk.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${KEEP:-}" = 1 ]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# Starts `$@` in the background with its stdout in $WORK/$name.out and waits for its
# "endpoint: " line; prints the endpoint.
start() {
    local name=$1; shift
    "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=($!)
    for _ in $(seq 600); do
        if grep -q '^endpoint: ' "$WORK/$name.out" 2>/dev/null; then
            grep -m1 '^endpoint: ' "$WORK/$name.out" | cut -d' ' -f2
            return
        fi
        sleep 0.1
    done
    echo "bench-risk: $name did not start; its log:" >&2
    cat "$WORK/$name.err" >&2
    exit 1
}

stop_last() {
    local pid=${PIDS[-1]}
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true
    unset 'PIDS[-1]'
}

DATA=$WORK/dev
bench() {
    "$BIN/yunkey" --data "$DATA" bench --users "$USERS" --concurrency "$CONCURRENCY" \
        --seconds "$SECONDS_PER_LEVEL"
}

echo "== $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== signatures without a risk service"
start dev "$BIN/yunkey" --data "$DATA" dev --listen 127.0.0.1:0 --metrics off >/dev/null
bench
stop_last

cat >"$WORK/rules.toml" <<'RULES'
format = 1

[[amount_limit]]
name = "amount.EUR.per_transaction"
action = "step_up"
weight = 30
currency = "EUR"
period = "transaction"
above = 1000000

[[amount_limit]]
name = "amount.EUR.day"
action = "deny"
weight = 60
currency = "EUR"
period = "day"
above = 100000000

[[velocity]]
name = "velocity.per_minute"
action = "deny"
weight = 40
max = 10000
window_seconds = 60

[[payee_block]]
name = "payee.blocked"
action = "deny"
weight = 100
payees = ["mule-account-0001"]
RULES

echo "== signatures with the risk check (yunkey risk serve, rules evaluated on each)"
FACE=$(start face "$BIN/yunkey-face" serve --listen 127.0.0.1:0 --tls-dir "$DATA" \
    --models "$TARGET/face-models")
RISK=$(start risk "$BIN/yunkey" risk serve --rules "$WORK/rules.toml" --data "$WORK/risk" \
    --tls-dir "$DATA" --listen 127.0.0.1:0 --face "$FACE")
start dev "$BIN/yunkey" --data "$DATA" dev --listen 127.0.0.1:0 --metrics off \
    --risk-endpoint "$RISK" >/dev/null
bench
stop_last

echo "== face verification (yunkey-face bench, $ROUNDS rounds)"
"$BIN/yunkey-face" bench --models "$TARGET/face-models" --photos "$ROOT/tests/data/faces" \
    --rounds "$ROUNDS"
