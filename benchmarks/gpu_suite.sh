#!/usr/bin/env bash
# The GPU benchmarks on one GPU, in one run (~6-8 min on an H100/H200):
#   bash benchmarks/gpu_suite.sh OUT_DIR
# Every line of OUT_DIR/*.jsonl is one JSON record; the explicit form (the
# reference's algorithm) is the in-run baseline of each figure.
# benchmarks/tpu_suite.sh is the same suite for a TPU VM.
set -uo pipefail
source "$(dirname "$0")/suite_common.sh"
suite_out_dir gpu_suite.sh "$@"
cd "$(dirname "$0")"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python -c "import jax; print(jax.__version__, jax.devices())" | tee -a "$out/gpu.txt"
python torch_reference.py --arch 9L-S --batches 16,256 --steps 10 | tee "$out/reference_9ls.jsonl"
run_benchmarks "$out" 256
