# hkube java template: sourced by install-deps.sh and compile.sh (build time only), with the
# templates' shared build-lib.sh.
. /hkube/build/build-lib.sh

# hkube_trust: when the build service gave a CA bundle (/hkube/build/ca.crt, may be empty), makes
# a trust store with the JDK's CA certificates and the bundle's (once; it is reused by the later
# step) and points Maven (MAVEN_OPTS) and other tools at it, for this build step only.
hkube_trust() {
    ca=/hkube/build/ca.crt
    [ -s "$ca" ] || return 0
    truststore=/hkube/build/truststore.p12
    if [ ! -s "$truststore" ]; then
        java /hkube/build/TrustStore.java "$ca" "$truststore"
    fi
    trust="-Djavax.net.ssl.trustStore=$truststore -Djavax.net.ssl.trustStorePassword=changeit -Djavax.net.ssl.trustStoreType=PKCS12"
    export MAVEN_OPTS="${MAVEN_OPTS:+$MAVEN_OPTS }$trust"
    hkube_ca_bundle || true
}
