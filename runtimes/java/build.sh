#!/usr/bin/env bash
# Builds hkube's Java runtime with the JDK alone (no Maven, no downloads): build/hkube-runtime.jar.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p build
# Two builds at once (parallel tests, two hkube processes) must not interleave.
exec 9>build/.lock
flock 9
rm -rf build/classes
mkdir -p build/classes
javac --release 17 -Xlint:all -Werror -d build/classes $(find src/main/java -name '*.java')
jar --create --file build/hkube-runtime.jar --main-class io.hkube.rs.Main -C build/classes .
echo "$PWD/build/hkube-runtime.jar"
