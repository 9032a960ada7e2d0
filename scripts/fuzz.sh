#!/bin/bash
# Builds the libFuzzer target tests/fuzz/fuzz_protocol.cpp with clang (ASan + UBSan) into
# build-fuzz/ and runs it for FUZZ_SECONDS (default 60) on the hostile-input corpus of
# tests/faults/hostile.py. The corpus the fuzzer grows is kept in build-fuzz/corpus across runs.
# Exit status non-zero = the fuzzer found a crash (its input is saved as build-fuzz/crash-*).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
CXX_CLANG="${FUZZ_CXX:-$(command -v clang++ || command -v clang++-14 || true)}"
if [ -z "$CXX_CLANG" ]; then
  echo "fuzz: clang++ not found (apt-get install clang, or make deps)" >&2
  exit 1
fi
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_CXX_COMPILER="$CXX_CLANG" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCVTASKS_FUZZ=ON -DBUILD_TESTING=OFF >/dev/null
cmake --build "$BUILD" -j"${JOBS:-2}" --target fuzz_protocol
rm -rf "$BUILD/seeds"
/usr/bin/python3 "$ROOT/tests/faults/hostile.py" --write "$BUILD/seeds"
mkdir -p "$BUILD/corpus"
exec "$BUILD/bin/fuzz_protocol" -max_total_time="$FUZZ_SECONDS" -max_len=65536 -timeout=10 \
  -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$BUILD/crash-" \
  "$BUILD/corpus" "$BUILD/seeds"
