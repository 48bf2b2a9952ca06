#!/usr/bin/env bash
# Installs Ray from PyPI (`pip install ray`) into a virtual environment of its own, so that the
# benchmarks (bench/src/bin/workers.rs, parallel.rs, front.rs) can run the same work on Ray in the
# same run, with bench/ray/workloads.py. Without this venv their tables say Ray was not measured.
#
# Idempotent: a venv that already imports ray is left alone.
# Environment:
#   HKUBE_RAY_VENV     where the venv goes (default $HOME/.cache/hkube/ray-venv); the benchmark
#                      reads the same variable
#   HKUBE_RAY_VERSION  a ray version to pin (default: the newest)
# The venv's python is printed on the last line.
set -euo pipefail

readonly VENV="${HKUBE_RAY_VENV:-$HOME/.cache/hkube/ray-venv}"
readonly PYTHON="$VENV/bin/python"

ray_version() {
    "$PYTHON" -c 'import ray; print(ray.__version__)' 2>/dev/null
}

if [[ -x "$PYTHON" ]] && version="$(ray_version)"; then
    echo "ray $version is already installed in $VENV"
    echo "$PYTHON"
    exit 0
fi

if [[ ! -x "$PYTHON" ]]; then
    echo "creating the venv $VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
fi

echo "installing ray${HKUBE_RAY_VERSION:+==$HKUBE_RAY_VERSION} into $VENV"
started=$SECONDS
"$PYTHON" -m pip install --disable-pip-version-check --quiet "ray${HKUBE_RAY_VERSION:+==$HKUBE_RAY_VERSION}"
if ! version="$(ray_version)"; then
    echo "pip finished, but ray is not importable from $VENV" >&2
    exit 1
fi
echo "installed ray $version in $((SECONDS - started)) s"
echo "$PYTHON"
