# hkube templates: what every language's build steps share (sourced, build time only; the
# build service puts templates/common/ beside each template's own files).
#
#   hkube_ca_bundle   trusts the image's CA certificates plus /hkube/build/ca.crt (the build
#                     service's bundle, may be empty) for this step only: writes the merged
#                     bundle to $hkube_bundle, exports SSL_CERT_FILE, CURL_CA_BUNDLE and
#                     GIT_SSL_CAINFO; returns 1 when there is no bundle to add
#   hkube_run WHAT CMD...
#                     runs CMD; when it fails, says "hkube: WHAT failed (exit status N)" on
#                     stderr and exits with N, so the build log ends with the reason
#   hkube_cleanup     files and folders removed when the step ends (append to it)

hkube_bundle=/tmp/hkube-ca-bundle.crt
hkube_cleanup="$hkube_bundle"
trap 'rm -rf $hkube_cleanup' EXIT

hkube_ca_bundle() {
    ca=/hkube/build/ca.crt
    [ -s "$ca" ] || return 1
    {
        if [ -f /etc/ssl/certs/ca-certificates.crt ]; then cat /etc/ssl/certs/ca-certificates.crt; fi
        echo
        cat "$ca"
    } >"$hkube_bundle"
    export SSL_CERT_FILE="$hkube_bundle" CURL_CA_BUNDLE="$hkube_bundle" GIT_SSL_CAINFO="$hkube_bundle"
    echo "hkube: trusting the image's CA certificates and the build service's bundle"
}

hkube_run() {
    what="$1"
    shift
    status=0
    "$@" || status=$?
    if [ "$status" -ne 0 ]; then
        echo "hkube: $what failed (exit status $status)" >&2
        exit "$status"
    fi
}

# The dependency install command, when one is given: returns 1 when there is none.
hkube_install_cmd() {
    cmd="${DEPENDENCY_INSTALL_CMD:-}"
    [ -n "$cmd" ] || return 1
    echo "hkube: running the dependency install command in $PWD: $cmd"
    hkube_run "the dependency install command" sh -c "$cmd"
}
