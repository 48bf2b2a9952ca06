#!/bin/sh
# hkube nodejs template: the dependency step of the image build (its own cached layer).
# Runs in /hkube/algorithm, which holds what hkube/deps/ had: package.json and package-lock.json
# if any, or the whole code when a dependency install command is given (DEPENDENCY_INSTALL_CMD).
# node_modules/ lands in /hkube/algorithm; the later COPY of the code merges with it.
set -eu
. /hkube/build/build-lib.sh

# npm's download cache goes to /tmp and is removed with it: it must not stay in the layer.
cache=/tmp/hkube-npm-cache
hkube_cleanup="$hkube_cleanup $cache"
export npm_config_cache="$cache" npm_config_update_notifier=false npm_config_fund=false \
    npm_config_audit=false

# npm's cafile replaces its CA list (hence the whole bundle); NODE_EXTRA_CA_CERTS adds to node's
# own for install scripts that download things. Nothing here ends up in the image's environment.
if hkube_ca_bundle; then
    export npm_config_cafile="$hkube_bundle" NODE_EXTRA_CA_CERTS=/hkube/build/ca.crt
fi

if hkube_install_cmd; then
    :
elif [ -f package.json ]; then
    echo "hkube: npm install --omit=dev (node $(node --version), npm $(npm --version))"
    hkube_run "npm install" npm install --omit=dev --no-audit --no-fund
else
    echo "hkube: no package.json found: no dependencies to install"
fi
