#!/usr/bin/env bash
# Runs one yunkey command inside the cluster, as the operator (Secret yunkey-operator-tls), in
# a throw-away pod: the image has no shell, and the coordinators' own pods hold no operator
# identity. Examples:
#   deploy/k8s/ops/ctl.sh yunkey ctl status
#   deploy/k8s/ops/ctl.sh yunkey ctl chip add --address https://yunkey-chip-4.yunkey-chip:7600
#   deploy/k8s/ops/ctl.sh yunkey ctl remove-node --node-id 123456789
# Environment: IMAGE (default yunkey:0.1.0); RUN_OPTS (default "--rm -i"); KUBECTL_ARGS (extra
# kubectl arguments). Not run against a live cluster yet (there is none here).
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,9p' "$0"; exit 2; }
ns="$1"
shift
image="${IMAGE:-yunkey:0.1.0}"
name="yunkey-ctl-$(date +%s)"
args="$(python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@")"
overrides=$(cat <<JSON
{
  "apiVersion": "v1",
  "spec": {
    "automountServiceAccountToken": false,
    "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [{
      "name": "$name",
      "image": "$image",
      "args": $args,
      "env": [
        {"name": "YUNKEY_ENDPOINT", "value": "https://yunkey-coordinator-0.yunkey-coordinator:7443,https://yunkey-coordinator-1.yunkey-coordinator:7443,https://yunkey-coordinator-2.yunkey-coordinator:7443"},
        {"name": "YUNKEY_CA", "value": "/etc/yunkey/ops/ca.pem"},
        {"name": "YUNKEY_CERT", "value": "/etc/yunkey/ops/operator.pem"},
        {"name": "YUNKEY_KEY", "value": "/etc/yunkey/ops/operator-key.pem"}
      ],
      "volumeMounts": [{"name": "operator-tls", "mountPath": "/etc/yunkey/ops", "readOnly": true}],
      "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                          "capabilities": {"drop": ["ALL"]}}
    }],
    "volumes": [{"name": "operator-tls", "secret": {"secretName": "yunkey-operator-tls", "defaultMode": 288,
      "items": [{"key": "ca.crt", "path": "ca.pem"}, {"key": "tls.crt", "path": "operator.pem"},
                {"key": "tls.key", "path": "operator-key.pem"}]}}]
  }
}
JSON
)
# shellcheck disable=SC2086 # KUBECTL_ARGS is a list of arguments
kubectl -n "$ns" run "$name" ${RUN_OPTS---rm -i} --restart=Never --image="$image" \
  --labels=yunkey.io/operator=true --overrides="$overrides" ${KUBECTL_ARGS:-}
