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

echo "== C/C++ runtime: build (+ ASan/UBSan build) and ctest" >&2
scripts/build_cpp.sh --asan --test

echo "== ruff" >&2
.venv/bin/ruff check .
echo "== mypy" >&2
scripts/typecheck.sh
echo "== pytest" >&2
.venv/bin/python -m pytest "$@"
