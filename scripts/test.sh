#!/usr/bin/env bash
# Install everything into .venv (created if missing), then lint, type-check and run the tests.
# This is the README's test command and what .ci/run executes. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip
"${PIP[@]}" install -e '.[export,train,cpu,serve,dev]'
# tensorrt-stubs declares the tensorrt wheel itself as a dependency, which only installs from NVIDIA's index.
"${PIP[@]}" install --no-deps 'tensorrt-stubs>=10.3'
# qemu-user runs the tiny model's int8 and fp16-emulation gates as an AVX2-only CPU (tests/test_isa.py), so that any
# x86 machine checks that path too. Debian's qemu-user (QEMU >= 7.2 emulates AVX2); skipped with the reason otherwise.
if [ "$(uname -m)" = x86_64 ] && ! command -v qemu-x86_64 >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing qemu-user (apt-get)" >&2
        if ! { apt-get install -y -q qemu-user >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q qemu-user >/dev/null 2>&1; }; }; then
            echo "== qemu-user could not be installed (apt-get failed): the AVX2-emulation tests will skip" >&2
        fi
    else
        echo "== qemu-user missing and not installable here (needs root and apt-get): the AVX2-emulation tests will skip" >&2
    fi
fi

echo "== C/C++ runtime: build (+ ASan/UBSan build) and ctest" >&2
scripts/build_cpp.sh --asan --test
# vtc_deploy._resample (optional at install: it needs a C++ compiler, which build_cpp.sh has made sure of by now)
if ! .venv/bin/python -c "import vtc_deploy._resample" 2>/dev/null; then
    echo "== building the vtc_deploy._resample extension" >&2
    "${PIP[@]}" install --no-deps -e .
fi

echo "== ruff" >&2
.venv/bin/ruff check .
echo "== mypy" >&2
scripts/typecheck.sh
echo "== pytest" >&2
.venv/bin/python -m pytest "$@"
echo "== pytest: the C++ rules (decoding, bad files, streaming, tokenizer, resize) on the ASan + UBSan build" >&2
VTC_RULES_TOOL=build/cpp-asan/vtc-rules .venv/bin/python -m pytest -q tests/test_cpp_rules.py
