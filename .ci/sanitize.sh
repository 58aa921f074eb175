#!/usr/bin/env bash
# The native kernel tests once more against a build with AddressSanitizer + UndefinedBehavior-
# Sanitizer (CMake option CREMA_SANITIZE). The sanitized module goes into a private copy of the
# package so the regular editable build stays untouched. Runs in the environment .ci/run made.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/pkg/tests"
cp -r engine "$work/pkg/"
rm -f "$work"/pkg/engine/_kernels*.so
cp -r tests/kernels tests/conftest.py "$work/pkg/tests/"  # the suite-wide fixtures (isa) too
python -m pip install -q cmake ninja pybind11  # build tools (pip's build isolation kept its own)
pybind11_dir=$(python -c 'import pybind11; print(pybind11.get_cmake_dir())')
cmake -S . -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCREMA_SANITIZE=ON \
    -DPython_EXECUTABLE="$(command -v python)" -Dpybind11_DIR="$pybind11_dir" \
    -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$work/pkg/engine" > "$work/cmake.log"
cmake --build "$work/build" -j "$(nproc)" > "$work/build.log"
cd "$work/pkg"
# CPython is not instrumented: preload the sanitizer runtimes; leak checking stays off because
# LeakSanitizer reports the interpreter's own lifetime objects.
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    python -m pytest -q -p no:cacheprovider tests/kernels
