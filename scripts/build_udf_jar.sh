#!/usr/bin/env bash
# Build sparkml_scale/core/sparkml-scale-udf.jar from jvm/src (the package's one JVM function,
# VectorToBytes) against the installed pyspark's jars, for Java 17.  The jar is committed: a fresh
# install needs no JDK.  Its manifest records the SHA-256 of the sources it was built from, which
# tests/test_jvm_udf.py compares with jvm/src, so a source change without a rebuild fails CI.
# Usage: bash scripts/build_udf_jar.sh [python]   (python: the interpreter with pyspark, default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
SPARK_JARS="$("$PY" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')"
OUT=sparkml_scale/core/sparkml-scale-udf.jar
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mapfile -t sources < <(find jvm/src -name '*.java' | LC_ALL=C sort)
javac --release 17 -nowarn -cp "$SPARK_JARS/*" -d "$tmp/classes" "${sources[@]}"
digest="$("$PY" -c 'import sys; sys.path.insert(0, "."); from sparkml_scale.core.jvm import source_digest; print(source_digest())')"
printf 'Manifest-Version: 1.0\nCreated-By: scripts/build_udf_jar.sh\nSparkml-Scale-Source-SHA256: %s\n' "$digest" > "$tmp/MANIFEST.MF"
jar --create --file "$OUT" --manifest "$tmp/MANIFEST.MF" -C "$tmp/classes" .
echo "wrote $OUT (sources $digest)"
