#!/usr/bin/env bash
# The coordinator benchmark beside etcd, in one run on this machine (docs/performance.md,
# "Coordinators beside etcd").
#
#   scripts/bench-coordinators.sh            # build, run both sides, print the table
#
# 1. builds `yunkey` (release) and tools/etcd-bench (release, outside the workspace);
# 2. starts CHIPS `yunkey chip` + 3 `yunkey coordinator` processes on loopback (TLS from a dev
#    PKI); runs `yunkey bench` (authorized signatures/s and latency at each SIGN_CONCURRENCY
#    level through the whole cluster, enrolments/s, and the crypto ceilings of the same run),
#    then `yunkey bench cluster`: enrolments/s and WriteProbe (Raft writes)/s at each
#    concurrency level, then leader kill -9 -> first acknowledged write, ROUNDS times;
# 3. stops them, starts 3 etcd members (Debian's etcd-server; same PKI, TLS on client and peer
#    URLs, default fsync) and runs etcd-bench: puts/s at the same levels, the same failover
#    rounds; then a second etcd cluster with its election timeout set to ours (failover only);
# 4. prints a side-by-side table. Raw JSON stays in $WORK (printed) when KEEP=1.
#
# Environment: CONCURRENCY (1,16,64), SECONDS_PER_LEVEL (5), ROUNDS (3), BASE_PORT (17400),
# CHIPS (4), SIGN_USERS (256), SIGN_CONCURRENCY (1,8,32,64), SIGN_BATCH (1: KeyService.Sign;
# N > 1: KeyService.SignBatch of N signatures per call), PACED (0.5: after the concurrency
# levels, an open-loop level at these fractions of their best rate; empty for none), YUNKEY_ONLY=1 (no etcd side: no
# etcd, etcd-bench or protoc needed),
# BENCH_DIR (parent of the temporary work dir; default /tmp), KEEP=1 keeps the work dir,
# NO_BUILD=1 uses the binaries already built, RUN_LIMIT (seconds for each bench run, 600),
# YK_ELECTION=MIN-MAX passes --election-timeout to the coordinators (default: theirs, 300-500),
# YK_ARGS adds flags to every coordinator's command line (for example YK_ARGS='--chip-batch 1').
# Needs: cargo, etcd (apt-get install etcd-server etcd-client), protoc for the etcd-client
# crate (apt-get install protobuf-compiler), jq.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONCURRENCY=${CONCURRENCY:-1,16,64}
SECONDS_PER_LEVEL=${SECONDS_PER_LEVEL:-5}
ROUNDS=${ROUNDS:-3}
CHIPS_N=${CHIPS:-4}
SIGN_USERS=${SIGN_USERS:-256}
SIGN_CONCURRENCY=${SIGN_CONCURRENCY:-1,8,32,64}
SIGN_BATCH=${SIGN_BATCH:-1}
PACED=${PACED-0.5}
YUNKEY_ONLY=${YUNKEY_ONLY:-}
BASE_PORT=${BASE_PORT:-17400}
RUN_LIMIT=${RUN_LIMIT:-600}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
# etcd's defaults, and ours (crates/yunkey-coordinator/src/raft.rs: heartbeat 100 ms,
# election 300-500 ms; etcd randomizes its election timeout over [T, 2T)).
ETCD_HEARTBEAT=100
ETCD_ELECTION=1000
# etcd refuses an election timeout under 5 heartbeats: 500 ms is the closest to our 300-500.
MATCHED_ELECTION=500

die() { echo "bench-coordinators: $*" >&2; exit 1; }
tools=(cargo jq)
[ -n "$YUNKEY_ONLY" ] || tools+=(etcd)
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || die "$tool not found on the PATH${tool/etcd/ (apt-get install etcd-server etcd-client)}"
done
[ "$CHIPS_N" -ge 2 ] && [ "$CHIPS_N" -le 9 ] || die "CHIPS must be 2..9"
if [ -z "${NO_BUILD:-}" ] && [ -z "$YUNKEY_ONLY" ] && ! command -v protoc >/dev/null && [ -z "${PROTOC:-}" ]; then
    die "protoc not found: the etcd-client crate compiles etcd's protos with it (apt-get install protobuf-compiler)"
fi

WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/bench-coordinators.XXXXXX")
mkdir -p "$WORK/pids" "$WORK/log" "$WORK/cmd"
cleanup() {
    local rc=$?
    for f in "$WORK"/pids/*.pid; do
        [ -e "$f" ] || continue
        kill -9 "$(cat "$f")" 2>/dev/null || true
    done
    if [ -n "${KEEP:-}" ] || [ "$rc" -ne 0 ]; then
        echo "bench-coordinators: work dir kept: $WORK (logs in $WORK/log)" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for p in $(seq "$BASE_PORT" $((BASE_PORT + 40))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        die "port $p is in use (BASE_PORT=$BASE_PORT..$((BASE_PORT + 40))): stop what listens there or set BASE_PORT"
    fi
done

if [ -z "${NO_BUILD:-}" ]; then
    echo "== building (release)" >&2
    (cd "$ROOT" && cargo build --release -p yunkey --bin yunkey) >&2
    [ -n "$YUNKEY_ONLY" ] || cargo build --release --manifest-path "$ROOT/tools/etcd-bench/Cargo.toml" >&2
fi
YUNKEY=$TARGET/release/yunkey
ETCD_BENCH=${CARGO_TARGET_DIR:-$ROOT/tools/etcd-bench/target}/release/etcd-bench
[ -x "$YUNKEY" ] || die "$YUNKEY not built"
[ -n "$YUNKEY_ONLY" ] || [ -x "$ETCD_BENCH" ] || die "$ETCD_BENCH not built"

PKI=$WORK/pki
# One cluster CA; one node identity (127.0.0.1) for every process, one client and one operator
# identity, in the layout --tls-dir and the etcd flags below expect.
"$YUNKEY" pki init --ca-dir "$WORK/ca" >/dev/null
"$YUNKEY" pki issue --ca-dir "$WORK/ca" --role node --name bench-node \
    --host 127.0.0.1 --host localhost --out "$PKI" >/dev/null
"$YUNKEY" pki issue --ca-dir "$WORK/ca" --role client --name bench-client --out "$PKI" >/dev/null
"$YUNKEY" pki issue --ca-dir "$WORK/ca" --role operator --name bench-operator --out "$PKI" >/dev/null

# ctl.sh start|kill NAME: the processes of both clusters, by name; their command lines are in
# $WORK/cmd/NAME, their pids in $WORK/pids/NAME.pid (the exit trap kills whatever is left).
cat >"$WORK/ctl.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
W=$WORK
case "\$1" in
start)
    (cd "\$W" && exec setsid bash "\$W/cmd/\$2" >>"\$W/log/\$2.log" 2>&1 </dev/null) &
    echo \$! >"\$W/pids/\$2.pid" ;;
kill)
    pid=\$(cat "\$W/pids/\$2.pid")
    kill -9 "\$pid" 2>/dev/null || true
    # Gone, or a zombie nobody has reaped yet (state Z): either way it serves nothing.
    while [ -e "/proc/\$pid" ] && [ "\$(awk '{print \$3}' "/proc/\$pid/stat" 2>/dev/null)" != Z ]; do sleep 0.005; done
    rm -f "\$W/pids/\$2.pid" ;;
stop)
    pid=\$(cat "\$W/pids/\$2.pid" 2>/dev/null) || exit 0
    kill -TERM "\$pid" 2>/dev/null || true
    for _ in \$(seq 100); do kill -0 "\$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "\$pid" 2>/dev/null || true
    rm -f "\$W/pids/\$2.pid" ;;
*) echo "usage: ctl.sh start|kill|stop NAME" >&2; exit 2 ;;
esac
EOF
chmod +x "$WORK/ctl.sh"
CTL=$WORK/ctl.sh

wait_log() { # NAME TEXT SECONDS
    local end=$((SECONDS + $3))
    until grep -q "$2" "$WORK/log/$1.log" 2>/dev/null; do
        [ -e "$WORK/pids/$1.pid" ] && kill -0 "$(cat "$WORK/pids/$1.pid")" 2>/dev/null \
            || die "$1 exited; its log: $(tail -5 "$WORK/log/$1.log" 2>/dev/null)"
        [ "$SECONDS" -lt "$end" ] || die "$1: no \"$2\" within $3 s; its log: $(tail -5 "$WORK/log/$1.log")"
        sleep 0.1
    done
}

load() { cut -d' ' -f1 /proc/loadavg; }

# ---------------------------------------------------------------- yunkey
yk_port() { echo $((BASE_PORT + $1)); }           # coordinators 1..3
chip_port() { echo $((BASE_PORT + 10 + $1)); }    # chips 1..CHIPS
CHIPS=()
for c in $(seq "$CHIPS_N"); do
    echo "exec env YUNKEY_LOG=warn '$YUNKEY' --data '$WORK/chip-$c' chip --id chip-$c --zone zone-$c --listen 127.0.0.1:$(chip_port $c) --tls-dir '$PKI'" >"$WORK/cmd/chip-$c"
    CHIPS+=(--chip "https://127.0.0.1:$(chip_port $c)")
done
for n in 1 2 3; do
    init=""
    chips=""
    if [ "$n" = 1 ]; then init="--init"; chips="${CHIPS[*]}"; fi
    # --init only on the very first start (the restart command must not carry it).
    echo "exec env YUNKEY_LOG=warn,openraft=off '$YUNKEY' --data '$WORK/node-$n' coordinator --node-id $n --listen 127.0.0.1:$(yk_port $n) --tls-dir '$PKI' ${YK_ELECTION:+--election-timeout $YK_ELECTION} ${YK_ARGS:-} $chips" >"$WORK/cmd/yk-$n"
    [ -n "$init" ] && sed "s/ coordinator / coordinator --init /" "$WORK/cmd/yk-$n" >"$WORK/cmd/yk-$n-init"
done
YK_CLIENT=(--endpoint "https://127.0.0.1:$(yk_port 1),https://127.0.0.1:$(yk_port 2),https://127.0.0.1:$(yk_port 3)"
    --ca "$PKI/ca.pem" --cert "$PKI/client.pem" --key "$PKI/client-key.pem")
# Membership changes need the operator role.
YK_OPERATOR=(--ca "$PKI/ca.pem" --cert "$PKI/operator.pem" --key "$PKI/operator-key.pem")

echo "== yunkey: $CHIPS_N chips, 3 coordinators (load $(load))" >&2
for c in $(seq "$CHIPS_N"); do "$CTL" start "chip-$c"; done
for c in $(seq "$CHIPS_N"); do wait_log "chip-$c" "endpoint:" 60; done
# The operator admits each chip to the security domain (docs/operations.md, "Admitting chips").
"$YUNKEY" pki domain-operator-key --out "$WORK/domain-operator-key.pem" >/dev/null
for c in $(seq "$CHIPS_N"); do
    "$YUNKEY" pki admit-chip --domain-operator-key "$WORK/domain-operator-key.pem" \
        --identity "$WORK/chip-$c/identity.json" >/dev/null
done
"$CTL" start yk-1-init
mv "$WORK/pids/yk-1-init.pid" "$WORK/pids/yk-1.pid"
mv "$WORK/log/yk-1-init.log" "$WORK/log/yk-1.log"
wait_log yk-1 "ready:" 60
for n in 2 3; do
    "$CTL" start "yk-$n"
    wait_log "yk-$n" "endpoint:" 60
    "$YUNKEY" "${YK_OPERATOR[@]}" --endpoint "https://127.0.0.1:$(yk_port 1)" ctl add-node \
        --node-id "$n" --address "https://127.0.0.1:$(yk_port $n)" >&2
done
for n in 2 3; do wait_log "yk-$n" "ready:" 60; done

SIGN_LOAD_BEFORE=$(load)
echo "== yunkey bench: authorized signatures through the cluster (load $SIGN_LOAD_BEFORE)" >&2
timeout "$RUN_LIMIT" "$YUNKEY" "${YK_CLIENT[@]}" --json bench --users "$SIGN_USERS" \
    --concurrency "$SIGN_CONCURRENCY" --seconds "$SECONDS_PER_LEVEL" --replicas 2 \
    --batch "$SIGN_BATCH" ${PACED:+--paced-at "$PACED"} >"$WORK/signatures.json" || die "yunkey bench (signatures) failed (see $WORK/log)"
SIGN_LOAD_AFTER=$(load)
# Where the bench's keys went (placement spreads them over the chips).
"$YUNKEY" "${YK_OPERATOR[@]}" --endpoint "https://127.0.0.1:$(yk_port 1)" ctl chip list >&2

YK_LOAD_BEFORE=$(load)
echo "== yunkey bench cluster (load $YK_LOAD_BEFORE)" >&2
timeout "$RUN_LIMIT" "$YUNKEY" "${YK_CLIENT[@]}" --json bench cluster \
    --concurrency "$CONCURRENCY" --seconds "$SECONDS_PER_LEVEL" \
    --failover-rounds "$ROUNDS" --kill-cmd "'$CTL' kill yk-{id}" --restart-cmd "'$CTL' start yk-{id}" \
    >"$WORK/yunkey.json" || die "yunkey bench failed (see $WORK/log)"
YK_LOAD_AFTER=$(load)
for n in 1 2 3; do "$CTL" stop "yk-$n"; done
for c in $(seq "$CHIPS_N"); do "$CTL" stop "chip-$c"; done

# ---------------------------------------------------------------- signatures table
S=$WORK/signatures.json
echo
echo "Authorized signatures through 3 coordinators + $CHIPS_N chips (R = 2, $SIGN_USERS users, $SIGN_BATCH per call): $(nproc) cores, $("$YUNKEY" --version)"
echo "load average (1 min) before -> after: $SIGN_LOAD_BEFORE -> $SIGN_LOAD_AFTER"
jq -r '"crypto ceiling, reference (ring, 2 verifications + 1 signature): \(.ring_ceiling_per_second|floor)/s",
       "crypto ceiling, ours (servers'"'"' code, device signature included): \(.crypto_ceiling_per_second|floor)/s",
       "enrolment: \(.enrollments_per_second|floor)/s of a crypto ceiling of \(.enrolment_ceiling_per_second|floor)/s",
       (.levels[] | "  concurrency \(.concurrency): \(.signatures_per_second|floor)/s  p50 \(.p50_ms*100|round/100) ms  p99 \(.p99_ms*100|round/100) ms  errors \(.errors)"),
       "best: \(.best_signatures_per_second|floor)/s = \(.best_fraction_of_ring_ceiling*1000|round/10)% of the reference, \(.best_fraction_of_ceiling*1000|round/10)% of ours",
       (.paced[] | "  paced at \(.fraction_of_best) of best (open loop, asked \(.target_calls_per_second*'"$SIGN_BATCH"'|floor)/s): \(.signatures_per_second|floor)/s  p50 \(.p50_ms*100|round/100) ms  p99 \(.p99_ms*100|round/100) ms  in flight <= \(.max_in_flight)  errors \(.errors)")' "$S"
if [ -n "$YUNKEY_ONLY" ]; then
    echo
    Y=$WORK/yunkey.json
    echo "WriteProbe and EnrollUser through the cluster:"
    jq -r '.levels.raft_write[] | "  WriteProbe concurrency \(.concurrency): \(.per_second|floor)/s  p50 \(.p50_ms*10|round/10) p99 \(.p99_ms*10|round/10) ms"' "$Y"
    jq -r '.levels.enroll[] | "  EnrollUser concurrency \(.concurrency): \(.per_second|floor)/s  p50 \(.p50_ms*10|round/10) p99 \(.p99_ms*10|round/10) ms"' "$Y"
    [ -z "${KEEP:-}" ] || echo "raw JSON: $S $Y"
    exit 0
fi

# ---------------------------------------------------------------- etcd
etcd_client_port() { echo $((BASE_PORT + 20 + $1)); }
etcd_peer_port() { echo $((BASE_PORT + 30 + $1)); }
etcd_cluster() { # PREFIX ELECTION_MS: writes the command files
    local prefix=$1 election=$2 initial="" m
    for m in 1 2 3; do initial+="${initial:+,}$prefix-$m=https://127.0.0.1:$(etcd_peer_port $m)"; done
    for m in 1 2 3; do
        cat >"$WORK/cmd/$prefix-$m" <<EOF
exec etcd --name $prefix-$m --data-dir '$WORK/$prefix-$m' \
  --listen-client-urls https://127.0.0.1:$(etcd_client_port $m) --advertise-client-urls https://127.0.0.1:$(etcd_client_port $m) \
  --listen-peer-urls https://127.0.0.1:$(etcd_peer_port $m) --initial-advertise-peer-urls https://127.0.0.1:$(etcd_peer_port $m) \
  --initial-cluster '$initial' --initial-cluster-state new --initial-cluster-token $prefix-$$ \
  --cert-file '$PKI/node.pem' --key-file '$PKI/node-key.pem' --client-cert-auth --trusted-ca-file '$PKI/ca.pem' \
  --peer-cert-file '$PKI/node.pem' --peer-key-file '$PKI/node-key.pem' --peer-client-cert-auth --peer-trusted-ca-file '$PKI/ca.pem' \
  --heartbeat-interval $ETCD_HEARTBEAT --election-timeout $election --logger zap --log-level warn
EOF
    done
}
ETCD_ENDPOINTS="https://127.0.0.1:$(etcd_client_port 1),https://127.0.0.1:$(etcd_client_port 2),https://127.0.0.1:$(etcd_client_port 3)"
ETCD_TLS=(--ca "$PKI/ca.pem" --cert "$PKI/client.pem" --key "$PKI/client-key.pem")

run_etcd() { # PREFIX ELECTION_MS OUT EXTRA...
    local prefix=$1 election=$2 out=$3 m
    shift 3
    etcd_cluster "$prefix" "$election"
    for m in 1 2 3; do "$CTL" start "$prefix-$m"; done
    ETCD_LOAD_BEFORE=$(load)
    echo "== etcd-bench, election timeout $election ms (load $ETCD_LOAD_BEFORE)" >&2
    timeout "$RUN_LIMIT" "$ETCD_BENCH" --endpoints "$ETCD_ENDPOINTS" "${ETCD_TLS[@]}" --json \
        --concurrency "$CONCURRENCY" --seconds "$SECONDS_PER_LEVEL" \
        --failover-rounds "$ROUNDS" --kill-cmd "'$CTL' kill $prefix-{id}" --restart-cmd "'$CTL' start $prefix-{id}" \
        "$@" >"$WORK/$out" || die "etcd-bench failed (see $WORK/log)"
    ETCD_LOAD_AFTER=$(load)
    for m in 1 2 3; do "$CTL" stop "$prefix-$m"; done
}
run_etcd etcd "$ETCD_ELECTION" etcd.json
E_LOAD="$ETCD_LOAD_BEFORE -> $ETCD_LOAD_AFTER"
run_etcd etcdm "$MATCHED_ELECTION" etcd-matched.json --failover-only

# ---------------------------------------------------------------- table
Y=$WORK/yunkey.json E=$WORK/etcd.json EM=$WORK/etcd-matched.json
row() { # JQ-FILTER FILE
    jq -r "$1" "$2"
}
echo
echo "Coordinators beside etcd: $(nproc) cores, $(uname -r), $(etcd --version | head -1), $("$YUNKEY" --version)"
echo "load average (1 min) before -> after: yunkey $YK_LOAD_BEFORE -> $YK_LOAD_AFTER, etcd $E_LOAD"
echo
printf '%-11s  %21s  %21s  %21s\n' "" "yunkey WriteProbe" "etcd Put" "yunkey EnrollUser"
printf '%-11s  %9s %5s %5s  %9s %5s %5s  %9s %5s %5s\n' concurrency "/s" p50 p99 "/s" p50 p99 "/s" p50 p99
for c in ${CONCURRENCY//,/ }; do
    sel=".[] | select(.concurrency == $c) | \"\\(.per_second|floor) \\(.p50_ms*10|round/10) \\(.p99_ms*10|round/10)\""
    # shellcheck disable=SC2046
    printf '%-11s  %9s %5s %5s  %9s %5s %5s  %9s %5s %5s\n' "$c" \
        $(row ".levels.raft_write | $sel" "$Y") $(row ".levels.put | $sel" "$E") \
        $(row ".levels.enroll | $sel" "$Y")
done
echo "(latencies in ms)"
echo
fo() { jq -r '[.failover.rounds[].resume_ms | if . == null then "none" else (.|round|tostring) end] | join(", ")' "$1"; }
fmed() { jq -r '.failover.median_resume_ms | if . == null then "-" else (.|round|tostring) end' "$1"; }
echo "leader kill -9 -> first acknowledged write sent after it (ms; each round, median):"
printf '  %-44s %-22s median %s\n' "yunkey (election ${YK_ELECTION:-300-500} ms)" "$(fo "$Y")" "$(fmed "$Y")"
printf '  %-44s %-22s median %s\n' "etcd default (election $ETCD_ELECTION ms, randomized to 2x)" "$(fo "$E")" "$(fmed "$E")"
printf '  %-44s %-22s median %s\n' "etcd matched (election $MATCHED_ELECTION ms, randomized to 2x)" "$(fo "$EM")" "$(fmed "$EM")"
if [ -n "${KEEP:-}" ]; then echo; echo "raw JSON: $Y $E $EM"; fi
