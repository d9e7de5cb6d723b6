#!/usr/bin/env bash
# The init step of the Compose cluster, after `docker-compose up -d`:
#   1. admits the four chips: signs each chip's identity.json with the domain operator key
#      (the `tool` container reads the key from the `ca` volume and writes admission.json
#      into the chip's data volume; the chip reads it on its next GetInfo, no restart);
#   2. adds coordinators 2 and 3 to the cluster that coord-1 initialized (AddNode, with the
#      operator identity);
#   3. copies the business client's and the operator's TLS identities to ./creds and writes
#      ./creds/backend.env and ./creds/ops.env for the host's yunkey CLI;
#   4. waits until every coordinator reports SERVING-ready (`yunkey ctl status`, then a
#      no-op Raft write).
# Safe to run again: an admission is signed again, a node that is already a member is
# accepted as such, files are copied again.
set -euo pipefail
cd "$(dirname "$0")"

tool() { docker-compose run --rm -T tool "$@"; }
# retry N CMD...: runs CMD until it succeeds, at most N times, a second apart.
retry() {
  local n=$1 i
  shift
  for ((i = 1; i < n; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 1
  done
  "$@"
}

echo "init: admitting chips"
for c in 1 2 3 4; do
  retry 60 tool pki admit-chip --domain-operator-key /data/ca/domain-operator-key.pem \
    --identity "/chips/chip-$c/identity.json"
done

echo "init: adding coordinators 2 and 3"
retry 60 tool ctl probe
for n in 2 3; do
  retry 30 tool --timeout 30 ctl add-node --node-id "$n" --address "https://10.231.9.1$n:7443"
done

echo "init: copying the client and operator identities to $PWD/creds"
pki="$(docker-compose ps -q pki)"
rm -rf creds
mkdir -p creds
docker cp "$pki:/etc/yunkey/backend" creds/backend
docker cp "$pki:/etc/yunkey/ops" creds/ops
endpoints=https://10.231.9.11:7443,https://10.231.9.12:7443,https://10.231.9.13:7443
cat > creds/backend.env <<ENV
export YUNKEY_ENDPOINT=$endpoints
export YUNKEY_CA=$PWD/creds/backend/ca.pem
export YUNKEY_CERT=$PWD/creds/backend/client.pem
export YUNKEY_KEY=$PWD/creds/backend/client-key.pem
ENV
cat > creds/ops.env <<ENV
export YUNKEY_ENDPOINT=$endpoints
export YUNKEY_CA=$PWD/creds/ops/ca.pem
export YUNKEY_CERT=$PWD/creds/ops/operator.pem
export YUNKEY_KEY=$PWD/creds/ops/operator-key.pem
ENV

echo "init: waiting for a Raft write and for all three coordinators"
retry 60 tool ctl probe
tool ctl status
echo "init: done. From the host: . $PWD/creds/backend.env (business) or . $PWD/creds/ops.env (operator)"
