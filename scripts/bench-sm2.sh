#!/usr/bin/env bash
# SM2 (and P-256 for scale) sign and verify per core, in our chip's primitives beside
# OpenSSL's, in one run on this machine (issue 12):
#
#   scripts/bench-sm2.sh [--seconds N] [--e2e]
#
# 1. builds and runs crates/yunkey-crypto/examples/sig_bench.rs (release, one thread, N
#    seconds per operation; rates per CPU-second of the thread);
# 2. runs `openssl speed -seconds N sm2 ecdsap256` (one process; rates per CPU-second of user
#    time, OpenSSL's default divisor);
# 3. prints them side by side, with the commit, the date, the machine and its load.
#
# What is compared: OpenSSL's `speed sm2` signs and verifies a 20-byte message with
# EVP_DigestSign/Verify and SM3 under the default ID (Z_A and e included), so it stands beside
# our sign_message/verify_message; its `ecdsap256` signs and verifies a 20-byte digest, beside
# our sign_digest (p256) and verify_message (ring; the hot path). All rows of ours follow.
#
# 4. runs crates/yunkey-chip/examples/algorithm_bench.rs: the whole chip sign path for a P-256
#    and an SM2 user, one thread;
# 5. with --e2e, end-to-end signatures through `yunkey dev` for P-256 and SM2 users in the
#    same run (section at the end).
#
# Options: --seconds N (default 3); --e2e (USERS, CONCURRENCY, SECONDS_PER_LEVEL override its
# defaults 32, 1,8,32 and 5). Environment: NO_BUILD=1 uses the example already built; CARGO_TARGET_DIR.
# Needs: cargo, openssl (3.x), awk.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_PER_OP=3
E2E=0
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECONDS_PER_OP=$2; shift 2 ;;
        --e2e) E2E=1; shift ;;
        *) echo "usage: $0 [--seconds N] [--e2e]" >&2; exit 2 ;;
    esac
done
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
EXAMPLE=$TARGET/release/examples/sig_bench

CHIP_EXAMPLE=$TARGET/release/examples/algorithm_bench

if [ "${NO_BUILD:-}" != 1 ]; then
    (cd "$ROOT" && cargo build --quiet --release -p yunkey-crypto --example sig_bench)
    (cd "$ROOT" && cargo build --quiet --release -p yunkey-chip --example algorithm_bench)
fi

commit=$(git -C "$ROOT" rev-parse --short HEAD)
[ -z "$(git -C "$ROOT" status --porcelain -- crates Cargo.toml Cargo.lock)" ] ||
    commit="$commit (with uncommitted changes)"
echo "== bench-sm2: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), commit $commit"
echo "machine: $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
echo "load before: $(uptime | sed 's/.*load average/load average/')"
echo "openssl: $(openssl version); rustc: $(rustc --version | cut -d' ' -f2)"
echo "one thread / one process, ${SECONDS_PER_OP} s per operation, ops per CPU-second"
echo

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-sm2.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

"$EXAMPLE" --seconds "$SECONDS_PER_OP" --tsv >"$WORK/ours.tsv"
openssl speed -mr -seconds "$SECONDS_PER_OP" sm2 ecdsap256 >"$WORK/openssl.mr" 2>/dev/null

# Our rate for the row named $1 (ops per CPU-second).
ours() { awk -F'\t' -v n="$1" '$1 == n { print $2 }' "$WORK/ours.tsv"; }
# OpenSSL's sign/s ($1 = sign) or verify/s ($1 = verify) for SM2 (+F7) or P-256 (+F4).
openssl_sm2() { awk -F: -v f="$1" '$1 == "+F7" { print int(f == "sign" ? $5 : $6) }' "$WORK/openssl.mr"; }
openssl_p256() { awk -F: -v f="$1" '$1 == "+F4" { print int(f == "sign" ? $4 : $5) }' "$WORK/openssl.mr"; }
row() {
    awk -v op="$1" -v a="$2" -v b="$3" -v what="$4" \
        'BEGIN { printf "%-14s %12s %12s %8.2fx   %s\n", op, a, b, (b > 0 ? a / b : 0), what }'
}

printf '%-14s %12s %12s %9s   %s\n' "operation" "ours/s" "OpenSSL/s" "ours/OSSL" "ours is"
row "SM2 sign" "$(ours 'sm2 sign_message')" "$(openssl_sm2 sign)" "sm2::PrivateKey::sign_message"
row "SM2 verify" "$(ours 'sm2 verify_message')" "$(openssl_sm2 verify)" "sm2::PublicKey::verify_message"
row "P-256 sign" "$(ours 'p256 sign_digest (p256)')" "$(openssl_p256 sign)" "ecdsa::PrivateKey::sign_digest"
row "P-256 verify" "$(ours 'p256 verify_message (ring)')" "$(openssl_p256 verify)" "ecdsa::PublicKey::verify_message"
echo
echo "all of ours (ops per CPU-second, ops per wall-second):"
awk -F'\t' '{ printf "  %-36s %8d %8d\n", $1, $2, $3 }' "$WORK/ours.tsv"
echo
echo "the whole chip sign path (ActivationModule::sign_authorized: the device's authorization"
echo "verified, the checks, the replay guard, the record opened, the signature), one thread,"
echo "soft custody, user and device keys of the same algorithm (median of 3 rounds of 2000):"
"$CHIP_EXAMPLE" --tsv | awk -F'\t' '{ printf "  %-36s %8d\n", $1, $2 }'
echo "load after: $(uptime | sed 's/.*load average/load average/')"

# ==============================================================================================
# End-to-end (--e2e): authorized signatures through `yunkey dev` (1 coordinator, 3 soft chips, R
# = 2, on this machine) with `yunkey bench --algorithm p256` and `--algorithm sm2` against the
# same cluster in the same run: enrolment, devices of the users' algorithm, then each
# signature authorized by the device, consumed in the replicated ledger, re-checked and signed
# in a chip. Each prints its own crypto ceiling (2 verifications + 1 signature of its algorithm
# on all cores).
if [ "$E2E" = 1 ]; then
    BIN=$TARGET/release
    if [ "${NO_BUILD:-}" != 1 ]; then
        (cd "$ROOT" && cargo build --quiet --release -p yunkey)
    fi
    DATA=$WORK/dev
    "$BIN/yunkey" --data "$DATA" dev --listen 127.0.0.1:0 --metrics off >"$WORK/dev.out" 2>"$WORK/dev.err" &
    DEV=$!
    trap 'kill $DEV 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
    for _ in $(seq 600); do
        grep -q '^endpoint: ' "$WORK/dev.out" 2>/dev/null && break
        sleep 0.1
    done
    grep -q '^endpoint: ' "$WORK/dev.out" || { cat "$WORK/dev.err" >&2; exit 1; }
    USERS=${USERS:-32}
    CONCURRENCY=${CONCURRENCY:-1,8,32}
    SECONDS_PER_LEVEL=${SECONDS_PER_LEVEL:-5}
    echo
    echo "== end-to-end through yunkey dev: $USERS users, concurrency $CONCURRENCY, ${SECONDS_PER_LEVEL} s per level"
    for alg in p256 sm2; do
        echo "-- yunkey bench --algorithm $alg"
        "$BIN/yunkey" --data "$DATA" bench --algorithm "$alg" --users "$USERS" \
            --concurrency "$CONCURRENCY" --seconds "$SECONDS_PER_LEVEL"
        echo
    done
    echo "load after: $(uptime | sed 's/.*load average/load average/')"
fi
