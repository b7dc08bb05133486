#!/usr/bin/env bash
# mypy over the library as it is installed, then over benchmarks/: vtc_deploy with train/, export/ and runtimes/ mapped to
# vtc_deploy.train, .export and .runtimes (mypy does not follow setuptools' package-dir mapping, so a tree of
# links with the installed layout is checked).
set -euo pipefail
cd "$(dirname "$0")/.."
MYPY=${MYPY:-.venv/bin/mypy}
tree=build/typecheck
rm -rf "$tree" && mkdir -p "$tree/vtc_deploy"
for entry in vtc_deploy/*; do ln -s "$PWD/$entry" "$tree/vtc_deploy/"; done
for sub in train export runtimes; do ln -s "$PWD/$sub" "$tree/vtc_deploy/$sub"; done
cd "$tree" && "$OLDPWD/$MYPY" --config-file "$OLDPWD/pyproject.toml" -p vtc_deploy
# The benchmarks (run by hand, their figures go into README and closing notes) are checked too.
cd "$OLDPWD" && "$MYPY" --config-file pyproject.toml benchmarks
