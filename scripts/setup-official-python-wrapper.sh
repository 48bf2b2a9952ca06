#!/usr/bin/env bash
# Installs HKube's official Python wrapper, hkube-python-wrapper 2.4.2 from PyPI, into a Python 3.8
# virtual environment, so that wrapper/tests/official_python_wrapper.rs can run it against our
# sidecar. The test skips (and says so) when this venv is missing, except in CI, which requires it
# (HKUBE_REQUIRE_ALL=1).
#
# Why Python 3.8: 2.4.2 pins native packages (msgpack 1.0.2, pyzmq 22.0.3, wsaccel 0.6.2, ...) that
# have wheels, or build, only for Python up to 3.8.
#
# Idempotent: an existing venv that already has 2.4.2 is left alone.
# Environment:
#   HKUBE_PY38         a Python 3.8 interpreter to use (else python3.8 on PATH, else pyenv's)
#   HKUBE_COMPAT_VENV  where the venv goes (default $HOME/.cache/hkube/py38-official-wrapper)
# Exit status: 0 installed (the venv's python is printed on the last line), 2 no Python 3.8.
set -euo pipefail

readonly PACKAGE=hkube-python-wrapper
readonly VERSION=2.4.2
readonly VENV="${HKUBE_COMPAT_VENV:-$HOME/.cache/hkube/py38-official-wrapper}"

is_py38() {
    [[ -x "$1" ]] && "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 8) else 1)' 2>/dev/null
}

find_python38() {
    local candidate
    if [[ -n "${HKUBE_PY38:-}" ]]; then
        if is_py38 "$HKUBE_PY38"; then
            echo "$HKUBE_PY38"
            return 0
        fi
        echo "HKUBE_PY38=$HKUBE_PY38 is not a Python 3.8 interpreter" >&2
        return 1
    fi
    candidate="$(command -v python3.8 || true)"
    if [[ -n "$candidate" ]] && is_py38 "$candidate"; then
        echo "$candidate"
        return 0
    fi
    for candidate in /root/.pyenv/versions/3.8.*/bin/python3.8 "$HOME"/.pyenv/versions/3.8.*/bin/python3.8; do
        if is_py38 "$candidate"; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

installed_version() {
    "$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$PACKAGE'))" 2>/dev/null || true
}

if [[ -x "$VENV/bin/python" ]] && [[ "$(installed_version)" == "$VERSION" ]]; then
    echo "$PACKAGE $VERSION is already installed in $VENV"
    echo "$VENV/bin/python"
    exit 0
fi

if ! python38="$(find_python38)"; then
    echo "no Python 3.8 found (set HKUBE_PY38, put python3.8 on PATH, or install it with pyenv:" \
        "pyenv install 3.8.18); $PACKAGE $VERSION needs it" >&2
    exit 2
fi
echo "using $python38 ($("$python38" --version 2>&1))"

# A venv made by another interpreter (or a half-made one) is replaced, not patched.
if [[ -d "$VENV" ]] && ! is_py38 "$VENV/bin/python"; then
    echo "removing $VENV: it is not a Python 3.8 venv"
    rm -rf "$VENV"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "creating the venv $VENV"
    mkdir -p "$(dirname "$VENV")"
    "$python38" -m venv "$VENV"
fi

echo "installing $PACKAGE==$VERSION into $VENV"
started=$SECONDS
"$VENV/bin/python" -m pip install --disable-pip-version-check --quiet "$PACKAGE==$VERSION"
echo "installed in $((SECONDS - started)) s"

if [[ "$(installed_version)" != "$VERSION" ]]; then
    echo "pip finished, but $PACKAGE $VERSION is not importable from $VENV" >&2
    exit 1
fi
echo "$VENV/bin/python"
