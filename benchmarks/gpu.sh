#!/usr/bin/env bash
# GPU benchmark of every backend that runs on this CUDA machine, then the merged summary.
#
#   benchmarks/gpu.sh [--quick] [OUT]     (OUT defaults to <repo>/results/bench)
#
# For each backend whose interpreter imports its framework AND sees a GPU:
#   1. float32: parity, fast and the seed's own loop (peer) for the Gaussian GAN (batch 8..4096),
#      the full-size DCGAN (batch 1..256) and seed 002's VAE (batch 16..4096);
#   2. bf16 mixed precision for the DCGAN in fast mode: torch.autocast(bfloat16) around the
#      unchanged step (float32 weights, Adam and loss). The other backends have no bf16 path:
#      their run prints "skip ... no bf16 mixed-precision path" and this script says so.
# Rows: OUT/<gpu name>/<backend>.json (e.g. results/bench/nvidia-h100-80gb-hbm3/torch.json);
# then OUT/summary.md and OUT/plots/ are rebuilt from every file under OUT (CPU rows included).
#
# Interpreters: PYTHON_TORCH, PYTHON_JAX, PYTHON_TENSORFLOW, PYTHON_MXNET (default python3; on the
# lent H100/H200 image python3 holds PyTorch and JAX). The gansuite sources are taken from this
# checkout (a temporary `gansuite` namespace of symlinks on PYTHONPATH), so nothing needs installing
# beyond each framework and numpy, matplotlib, pillow, safetensors, typer.
#
# TensorFlow and MXNet GPU wheels are not on the lent image. On a CUDA machine with internet access:
#   python3 -m venv ~/venv-tf-gpu
#   ~/venv-tf-gpu/bin/pip install 'tensorflow[and-cuda]==2.21.0' keras==3.15.1 numpy==2.4.6 \
#       pillow safetensors typer rich matplotlib
#   PYTHON_TENSORFLOW=~/venv-tf-gpu/bin/python benchmarks/gpu.sh
#   python3 -m venv ~/venv-mx-gpu        # MXNet 1.9.1 is the last release; its GPU wheels are CUDA 11.x builds
#   ~/venv-mx-gpu/bin/pip install mxnet-cu112==1.9.1 numpy==1.23.5 pillow safetensors typer rich matplotlib
#   PYTHON_MXNET=~/venv-mx-gpu/bin/python benchmarks/gpu.sh
# (mxnet-cu112 loads the CUDA 11.2 runtime, cuDNN 8 and NCCL from the system: install those, and a
# driver that still runs CUDA 11 code on your GPU, or the GPU check below skips MXNet.)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QUICK=()
OUT="$ROOT/results/bench"
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=(--quick) ;;
        -h|--help) sed -n '2,30p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) OUT="$arg" ;;
    esac
done

# The repository maps common/, backends/, benchmarks/ to gansuite.*: rebuild that mapping here.
SHIM="$(mktemp -d)"
trap 'rm -rf "$SHIM"' EXIT
mkdir -p "$SHIM/gansuite"
for d in common backends benchmarks; do ln -s "$ROOT/$d" "$SHIM/gansuite/$d"; done
export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
export MPLBACKEND=Agg TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}" PYTHONUNBUFFERED=1

gpu_check() {  # $1 backend, $2 python: 0 = sees a GPU, 3 = imports but no GPU, other = does not import
    local code
    case "$1" in
        torch) code='import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)' ;;
        jax) code='import sys, jax; sys.exit(0 if any(d.platform == "gpu" for d in jax.devices()) else 3)' ;;
        tensorflow) code='import sys, tensorflow as tf; sys.exit(0 if tf.config.list_physical_devices("GPU") else 3)' ;;
        mxnet) code='import sys, mxnet as mx; sys.exit(0 if mx.context.num_gpus() > 0 else 3)' ;;
    esac
    "$2" -c "$code" >/dev/null 2>&1
}

status=0
ran=0
for backend in torch jax tensorflow mxnet; do
    var="PYTHON_${backend^^}"
    py="${!var:-python3}"
    if ! command -v "$py" >/dev/null 2>&1; then
        echo "skip $backend: interpreter '$py' not found (set $var)"; continue
    fi
    gpu_check "$backend" "$py"
    case $? in
        0) ;;
        3) echo "skip $backend: $py imports $backend but sees no GPU"; continue ;;
        *) echo "skip $backend: $py cannot import $backend (set $var to an interpreter that has it; see the comments in $0)"; continue ;;
    esac
    echo "== $backend ($py): float32 parity, fast and seed loops"
    "$py" -m gansuite.benchmarks.run --backend "$backend" --device cuda --out "$OUT" \
        --models gaussian,dcgan,vae --modes parity,fast,peer "${QUICK[@]}" || status=1
    echo "== $backend: bf16 mixed precision, DCGAN, fast mode"
    "$py" -m gansuite.benchmarks.run --backend "$backend" --device cuda --out "$OUT" \
        --models dcgan --modes fast --dtypes bf16-mixed "${QUICK[@]}"
    case $? in
        0) ;;
        2) echo "   $backend: no bf16 rows (the line above says why)" ;;
        *) status=1 ;;
    esac
    ran=$((ran + 1))
done

if [ "$ran" -eq 0 ]; then
    echo "no backend sees a GPU here: nothing benchmarked" >&2
    exit 2
fi
"${PYTHON_TORCH:-python3}" -m gansuite.benchmarks.summary --results "$OUT" || status=1
exit $status
