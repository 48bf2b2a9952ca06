#!/bin/sh
# hkube nodejs template: the dependency step of the image build (its own cached layer).
# Runs in /hkube/algorithm, which holds what hkube/deps/ had: package.json and package-lock.json
# if any, or the whole code when a dependency install command is given (DEPENDENCY_INSTALL_CMD).
# node_modules/ lands in /hkube/algorithm; the later COPY of the code merges with it.
set -eu

# npm's download cache goes to /tmp and is removed with it: it must not stay in the layer.
cache=/tmp/hkube-npm-cache
bundle=/tmp/hkube-ca-bundle.crt
trap 'rm -rf "$cache" "$bundle"' EXIT
export npm_config_cache="$cache" npm_config_update_notifier=false npm_config_fund=false \
    npm_config_audit=false

# Trust the image's CAs and /hkube/build/ca.crt (the build service's bundle, may be empty) for
# this step only: nothing here ends up in the image's environment.
ca=/hkube/build/ca.crt
if [ -s "$ca" ]; then
    {
        if [ -f /etc/ssl/certs/ca-certificates.crt ]; then cat /etc/ssl/certs/ca-certificates.crt; fi
        echo
        cat "$ca"
    } >"$bundle"
    # npm's cafile replaces its CA list (hence the whole bundle); NODE_EXTRA_CA_CERTS adds to
    # node's own for install scripts that download things.
    export npm_config_cafile="$bundle" NODE_EXTRA_CA_CERTS="$ca" SSL_CERT_FILE="$bundle" \
        CURL_CA_BUNDLE="$bundle" GIT_SSL_CAINFO="$bundle"
    echo "hkube: trusting the image's CA certificates and the build service's bundle"
fi

cmd="${DEPENDENCY_INSTALL_CMD:-}"
if [ -n "$cmd" ]; then
    echo "hkube: running the dependency install command in $PWD: $cmd"
    status=0
    sh -c "$cmd" || status=$?
    if [ "$status" -ne 0 ]; then
        echo "hkube: the dependency install command failed (exit status $status)" >&2
        exit "$status"
    fi
elif [ -f package.json ]; then
    echo "hkube: npm install --omit=dev (node $(node --version), npm $(npm --version))"
    status=0
    npm install --omit=dev --no-audit --no-fund || status=$?
    if [ "$status" -ne 0 ]; then
        echo "hkube: npm install failed (exit status $status)" >&2
        exit "$status"
    fi
else
    echo "hkube: no package.json found: no dependencies to install"
fi
