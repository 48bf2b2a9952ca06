#!/usr/bin/env bash
# Builds the runtime jar, compiles the tests against it and runs them (JDK only, no downloads).
set -euo pipefail
cd "$(dirname "$0")"
jar=$(bash build.sh)
rm -rf build/test-classes
mkdir -p build/test-classes
javac --release 17 -Xlint:all -Werror -cp "$jar" -d build/test-classes $(find src/test/java -name '*.java')
exec java -cp "$jar:build/test-classes" io.hkube.rs.RuntimeTest "$@"
