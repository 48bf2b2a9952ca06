#!/bin/sh
# hkube java template: builds the algorithm once its code is in /hkube/algorithm (the last layer).
#   - pom.xml (and no dependency install command): mvn package (tests skipped), plus the
#     project's runtime dependencies copied to target/dependency/;
#   - otherwise every *.java under /hkube/algorithm is compiled with javac into /hkube/classes,
#     against the runtime jar and the jars below.
# Then every jar the algorithm brings is linked into /hkube/lib, which the image's command puts on
# the class path (/hkube/runtime/hkube-runtime.jar:/hkube/classes:/hkube/lib/*:/hkube/algorithm):
# target/*.jar (not -sources, -javadoc, -tests or original-*), target/dependency/*.jar, and *.jar
# in the project's root and lib/.
set -eu
cd /hkube/algorithm
. /hkube/build/java-env.sh
mkdir -p /hkube/classes /hkube/lib

if [ -f pom.xml ] && [ -z "${DEPENDENCY_INSTALL_CMD:-}" ]; then
    echo "hkube: mvn package (tests skipped) and the runtime dependencies to target/dependency/"
    hkube_trust
    hkube_run "mvn package" mvn -B -q -DskipTests package dependency:copy-dependencies -DincludeScope=runtime
fi

link_jars() {
    for jar in "$@"; do
        [ -f "$jar" ] || continue
        case "$(basename "$jar")" in
            *-sources.jar | *-javadoc.jar | *-tests.jar | original-*.jar) continue ;;
        esac
        name="$(echo "${jar#/hkube/algorithm/}" | tr / _)"
        ln -sf "$jar" "/hkube/lib/$name"
    done
}
link_jars /hkube/algorithm/target/*.jar /hkube/algorithm/target/dependency/*.jar \
    /hkube/algorithm/*.jar /hkube/algorithm/lib/*.jar

if [ ! -f pom.xml ]; then
    sources=/tmp/hkube-java-sources
    find /hkube/algorithm -name '*.java' -type f -not -path '*/target/*' >"$sources"
    count=$(wc -l <"$sources")
    if [ "$count" -gt 0 ]; then
        echo "hkube: javac: $count source file(s) into /hkube/classes"
        hkube_cleanup="$hkube_cleanup $sources"
        hkube_run "compiling the algorithm (javac)" javac --release 17 -encoding UTF-8 \
            -d /hkube/classes -cp "/hkube/runtime/hkube-runtime.jar:/hkube/lib/*" @"$sources"
    else
        echo "hkube: no .java files: the algorithm's classes come from its jars or class files"
    fi
fi
echo "hkube: class path: /hkube/runtime/hkube-runtime.jar:/hkube/classes:/hkube/lib/*:/hkube/algorithm ($(ls /hkube/lib | wc -l) jar(s) in /hkube/lib)"
