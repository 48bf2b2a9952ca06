#!/bin/sh
# hkube python template: the dependency step of the image build (its own cached layer).
# Runs in /hkube/algorithm, which holds what hkube/deps/ had: requirements.txt if any, or the whole
# code when a dependency install command is given (build arg DEPENDENCY_INSTALL_CMD).
set -eu
. /hkube/build/build-lib.sh

# Nothing here ends up in the image's environment.
if hkube_ca_bundle; then
    export PIP_CERT="$hkube_bundle" REQUESTS_CA_BUNDLE="$hkube_bundle"
fi
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

if hkube_install_cmd; then
    :
elif [ -f requirements.txt ]; then
    echo "hkube: pip install -r requirements.txt ($(python3 --version 2>&1), $(command -v python3))"
    hkube_run "installing requirements.txt (pip)" python3 -m pip install --no-cache-dir -r requirements.txt
else
    echo "hkube: no requirements.txt found: no dependencies to install"
fi
