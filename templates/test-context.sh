#!/usr/bin/env bash
# Lays out a docker build context the way hkube's build service does (docs/images.md), from a
# template and a folder of algorithm code, so that a template can be tried by hand:
#
#   templates/test-context.sh ENV CODE_DIR CONTEXT_DIR [--install-cmd CMD] [--no-ca] [--build TAG]
#
#   ENV            python, nodejs or java (templates/ENV/)
#   CODE_DIR       the algorithm's code (e.g. examples/numbers/range)
#   CONTEXT_DIR    made afresh (an existing one is replaced)
#   --install-cmd  a dependency install command: hkube/deps/ gets the whole code, and --build
#                  passes it as DEPENDENCY_INSTALL_CMD
#   --no-ca        hkube/ca.crt is empty (trust only the image's own CAs)
#   --build TAG    then `docker build` it with the classic builder (extra `docker build` arguments
#                  can be given in $DOCKER_BUILD_ARGS, e.g. "--build-arg BASE_IMAGE=...")
#
# Environment: HKUBE_CA_BUNDLE (default /etc/ssl/certs/ca-certificates.crt when it exists),
# HKUBE_WRAPPER (default target/release/hkube-wrapper, else target/debug/hkube-wrapper; when
# neither exists a stub script takes its place and says so when run).
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
die() { printf 'test-context: %s\n' "$*" >&2; exit 2; }

repo="$(cd "$(dirname "$0")/.." && pwd)"
[[ $# -ge 3 ]] || { usage >&2; exit 2; }
env="$1" code="$2" ctx="$3"
shift 3
install_cmd="" no_ca=0 tag=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --install-cmd) [[ $# -ge 2 ]] || die "--install-cmd needs a value"; install_cmd="$2"; shift ;;
        --no-ca) no_ca=1 ;;
        --build) [[ $# -ge 2 ]] || die "--build needs a tag"; tag="$2"; shift ;;
        *) die "unknown argument: $1" ;;
    esac
    shift
done
template="$repo/templates/$env"
[[ -f "$template/Dockerfile" ]] || die "no template for env '$env' ($template/Dockerfile)"
[[ -d "$code" ]] || die "no code folder $code"
code="$(cd "$code" && pwd)"

rm -rf "$ctx"
mkdir -p "$ctx/hkube/template" "$ctx/hkube/runtime" "$ctx/hkube/deps" "$ctx/algorithm"

# Dockerfile and the template's other files.
cp "$template/Dockerfile" "$ctx/Dockerfile"
for f in "$repo/templates/common"/* "$template"/*; do
    [[ "$(basename "$f")" == Dockerfile ]] || cp -r "$f" "$ctx/hkube/template/"
done

# The CA bundle (may be empty).
ca="${HKUBE_CA_BUNDLE-}"
[[ -n "$ca" || ! -f /etc/ssl/certs/ca-certificates.crt ]] || ca=/etc/ssl/certs/ca-certificates.crt
if [[ $no_ca -eq 0 && -n "$ca" ]]; then cp "$ca" "$ctx/hkube/ca.crt"; else : >"$ctx/hkube/ca.crt"; fi

# The sidecar.
wrapper="${HKUBE_WRAPPER-}"
for candidate in "$repo/target/release/hkube-wrapper" "$repo/target/debug/hkube-wrapper"; do
    [[ -n "$wrapper" || ! -f "$candidate" ]] || wrapper="$candidate"
done
if [[ -n "$wrapper" ]]; then
    cp "$wrapper" "$ctx/hkube/hkube-wrapper"
else
    echo "test-context: no hkube-wrapper binary (cargo build -p wrapper): a stub takes its place" >&2
    printf '#!/bin/sh\necho "hkube-wrapper: stub from templates/test-context.sh" >&2\nexit 1\n' \
        >"$ctx/hkube/hkube-wrapper"
fi
chmod 0755 "$ctx/hkube/hkube-wrapper"

# The runtime.
case "$env" in
    python)
        cp -r "$repo/runtimes/python/hkube_runtime" "$ctx/hkube/runtime/"
        rm -rf "$ctx/hkube/runtime/hkube_runtime/__pycache__"
        ;;
    nodejs)
        for f in bin lib index.js package.json; do
            cp -r "$repo/runtimes/javascript/$f" "$ctx/hkube/runtime/"
        done
        ;;
    java)
        jar="$repo/runtimes/java/build/hkube-runtime.jar"
        [[ -f "$jar" ]] || die "no $jar: run runtimes/java/build.sh first"
        cp "$jar" "$ctx/hkube/runtime/"
        ;;
esac

# What the dependency step needs, then the code.
if [[ -n "$install_cmd" ]]; then
    cp -r "$code/." "$ctx/hkube/deps/"
else
    case "$env" in
        python) deps=(requirements.txt) ;;
        nodejs) deps=(package.json package-lock.json) ;;
        java) deps=(pom.xml) ;;
    esac
    for f in "${deps[@]}"; do
        [[ ! -f "$code/$f" ]] || cp "$code/$f" "$ctx/hkube/deps/"
    done
fi
cp -r "$code/." "$ctx/algorithm/"
find "$ctx/algorithm" "$ctx/hkube/deps" \( -name __pycache__ -o -name .git \) -type d -prune -exec rm -rf {} +

echo "test-context: $ctx ($env, code from $code)"
if [[ -n "$tag" ]]; then
    # shellcheck disable=SC2086 # DOCKER_BUILD_ARGS is a list of arguments
    exec env DOCKER_BUILDKIT=0 docker build --force-rm ${DOCKER_BUILD_ARGS-} \
        --build-arg "DEPENDENCY_INSTALL_CMD=$install_cmd" -t "$tag" "$ctx"
fi
