#!/bin/sh
# hkube java template: the dependency step of the image build (its own cached layer).
# Runs in /hkube/algorithm, which holds what hkube/deps/ had: pom.xml if any, or the whole code
# when a dependency install command is given (DEPENDENCY_INSTALL_CMD).
#   - a dependency install command: run as is (with the trust store below in MAVEN_OPTS);
#   - pom.xml: the project's dependencies and plugins are downloaded (mvn dependency:go-offline);
#     the jar itself is built by compile.sh once the code is there;
#   - neither: nothing to do (compile.sh compiles the sources with javac).
# /hkube/runtime/hkube-runtime.jar is already in the image: it is installed in the local Maven
# repository as io.hkube.rs:hkube-runtime:1.0 so that a pom can depend on it (scope provided).
set -eu

. /hkube/build/java-env.sh

runtime=/hkube/runtime/hkube-runtime.jar
if [ -f "$runtime" ] && command -v mvn >/dev/null 2>&1; then
    # Laid out by hand (no plugin download): what `mvn install:install-file` would write.
    dir="$HOME/.m2/repository/io/hkube/rs/hkube-runtime/1.0"
    mkdir -p "$dir"
    cp "$runtime" "$dir/hkube-runtime-1.0.jar"
    cat >"$dir/hkube-runtime-1.0.pom" <<'POM'
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.hkube.rs</groupId>
  <artifactId>hkube-runtime</artifactId>
  <version>1.0</version>
  <packaging>jar</packaging>
  <description>hkube's Java runtime, as shipped in the hkube java image</description>
</project>
POM
fi

if [ -n "${DEPENDENCY_INSTALL_CMD:-}" ]; then
    hkube_trust
    hkube_install_cmd
elif [ -f pom.xml ]; then
    echo "hkube: mvn dependency:go-offline (downloads the project's dependencies and plugins)"
    hkube_trust
    hkube_run "resolving the dependencies of pom.xml (mvn)" mvn -B -q dependency:go-offline
else
    echo "hkube: no pom.xml found: the sources are compiled with javac after the code is copied"
fi
