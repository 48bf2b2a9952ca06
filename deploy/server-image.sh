#!/usr/bin/env bash
# Builds hkube's server image (deploy/Dockerfile) from this checkout, and pushes it.
#
# Usage: deploy/server-image.sh IMAGE [--push] [--debug] [--base IMAGE]
#   IMAGE         the reference to tag, e.g. registry.example.com/hkube/server:0.1.0
#   --push        docker push IMAGE afterwards (credentials from `docker login`)
#   --debug       use the debug build (faster to make; for trying the image out)
#   --base IMAGE  the image to build FROM (default hkube/java:bookworm; see deploy/Dockerfile)
# Needs: cargo, a running Docker engine, and the base image (scripts/base-images.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

image=""
push=0
profile=release
base=hkube/java:bookworm
while [[ $# -gt 0 ]]; do
    case "$1" in
        --push) push=1 ;;
        --debug) profile=debug ;;
        --base)
            [[ $# -ge 2 ]] || { echo "server-image: --base needs an image" >&2; exit 2; }
            base="$2"
            shift
            ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        -*) echo "server-image: unknown option $1" >&2; exit 2 ;;
        *) image="$1" ;;
    esac
    shift
done
[[ -n "$image" ]] || { echo "server-image: name the image to build, e.g. registry.example.com/hkube/server:0.1.0" >&2; exit 2; }
docker image inspect "$base" >/dev/null 2>&1 || {
    echo "server-image: the base image $base is missing: make it with scripts/base-images.sh" >&2
    exit 1
}

flags=()
[[ "$profile" == release ]] && flags+=(--release)
cargo build ${flags[@]+"${flags[@]}"} --bin hkube --bin hkube-wrapper
target="${CARGO_TARGET_DIR:-target}/$profile"

# A context of the three things the image takes, not the whole checkout (target/ is gigabytes).
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$target/hkube" "$target/hkube-wrapper" "$context/"
cp -r templates "$context/templates"
docker build --build-arg "BASE=$base" -f deploy/Dockerfile -t "$image" "$context"
if [[ $push -eq 1 ]]; then
    docker push "$image"
fi
echo "server-image: built $image"
