#!/usr/bin/env bash
# Builds the yunkey container image from a static release binary, fully offline:
#   deploy/image/build.sh            -> image yunkey:<version> (and yunkey:latest)
# Environment:
#   IMAGE          image name (default yunkey)
#   STATIC_TARGET  cargo target dir of the static build (default <repo>/target-static)
#   NICE           prefix for the build commands (default "nice -n 10")
# The binary is linked statically (glibc, crt-static) so that the image is FROM scratch.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

image="${IMAGE:-yunkey}"
target_dir="${STATIC_TARGET:-$repo/target-static}"
nice_cmd=(${NICE-nice -n 10})
triple=x86_64-unknown-linux-gnu

# The workspace version, from [workspace.package] in Cargo.toml.
version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)"
[ -n "$version" ] || { echo "build.sh: no version in Cargo.toml" >&2; exit 1; }
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
created="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

echo "build.sh: static release binary (target dir $target_dir)"
RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR="$target_dir" \
  "${nice_cmd[@]}" cargo build --release --locked --target "$triple" -p yunkey
bin="$target_dir/$triple/release/yunkey"
if ! file "$bin" 2>/dev/null | grep -q 'static'; then
  # `file` may be missing; ldd says "not a dynamic executable" or "statically linked".
  if ldd "$bin" 2>&1 | grep -q '=>'; then
    echo "build.sh: $bin is dynamically linked; refusing to put it in a scratch image" >&2
    exit 1
  fi
fi

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp "$here/Dockerfile" "$ctx/Dockerfile"
# The release profile keeps line tables (debug = 1) for backtraces; the image does without.
strip -o "$ctx/yunkey" "$bin"
mkdir "$ctx/data"

echo "build.sh: image $image:$version"
"${nice_cmd[@]}" docker build --quiet \
  --build-arg VERSION="$version" --build-arg REVISION="$revision" --build-arg CREATED="$created" \
  -t "$image:$version" -t "$image:latest" "$ctx"
docker run --rm "$image:$version" --version
echo "built $image:$version ($(docker image inspect -f '{{.Size}}' "$image:$version") bytes)"
