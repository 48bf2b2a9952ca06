#!/bin/sh
# hkube python template: the dependency step of the image build (its own cached layer).
# Runs in /hkube/algorithm, which holds what hkube/deps/ had: requirements.txt if any, or the whole
# code when a dependency install command is given (build arg DEPENDENCY_INSTALL_CMD).
set -eu

# Trust the image's CAs and /hkube/build/ca.crt (the build service's bundle, may be empty) for
# this step only: nothing here ends up in the image's environment.
ca=/hkube/build/ca.crt
if [ -s "$ca" ]; then
    bundle=/tmp/hkube-ca-bundle.crt
    trap 'rm -f "$bundle"' EXIT
    {
        if [ -f /etc/ssl/certs/ca-certificates.crt ]; then cat /etc/ssl/certs/ca-certificates.crt; fi
        echo
        cat "$ca"
    } >"$bundle"
    export PIP_CERT="$bundle" SSL_CERT_FILE="$bundle" REQUESTS_CA_BUNDLE="$bundle" \
        CURL_CA_BUNDLE="$bundle" GIT_SSL_CAINFO="$bundle"
    echo "hkube: trusting the image's CA certificates and the build service's bundle"
fi
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

cmd="${DEPENDENCY_INSTALL_CMD:-}"
if [ -n "$cmd" ]; then
    echo "hkube: running the dependency install command in $PWD: $cmd"
    status=0
    sh -c "$cmd" || status=$?
    if [ "$status" -ne 0 ]; then
        echo "hkube: the dependency install command failed (exit status $status)" >&2
        exit "$status"
    fi
elif [ -f requirements.txt ]; then
    echo "hkube: pip install -r requirements.txt ($(python3 --version 2>&1), $(command -v python3))"
    status=0
    python3 -m pip install --no-cache-dir -r requirements.txt || status=$?
    if [ "$status" -ne 0 ]; then
        echo "hkube: installing requirements.txt failed (pip exit status $status)" >&2
        exit "$status"
    fi
else
    echo "hkube: no requirements.txt found: no dependencies to install"
fi
