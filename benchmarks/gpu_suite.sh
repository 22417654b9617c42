#!/usr/bin/env bash
# The GPU benchmarks on one GPU, in one run (~6-8 min on an H100/H200):
#   bash benchmarks/gpu_suite.sh OUT_DIR
# Every line of OUT_DIR/*.jsonl is one JSON record; the explicit form (the
# reference's algorithm) is the in-run baseline of each figure.
# benchmarks/tpu_suite.sh is the same suite for a TPU VM.
set -uo pipefail
usage="usage: bash benchmarks/gpu_suite.sh OUT_DIR  (OUT_DIR: a directory for the results, created if missing)"
case "${1:-}" in
  -h|--help) echo "$usage"; exit 0 ;;
esac
if [[ $# -ne 1 || -z "$1" || "$1" == -* || ( -e "$1" && ! -d "$1" ) ]]; then
  echo "gpu_suite.sh: expected one argument, a directory; got: $*" >&2
  echo "$usage" >&2
  exit 2
fi
out=$1
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python -c "import jax; print(jax.__version__, jax.devices())" | tee -a "$out/gpu.txt"
python torch_reference.py --arch 9L-S --batches 16,256 --steps 10 | tee "$out/reference_9ls.jsonl"
python dau_forms.py --arch 9L-S --batches 16,64,256,1024 --dtypes float32,bfloat16 \
    --steps 20 --skip_explicit_above 256 | tee "$out/train_9ls.jsonl"
python dau_forms.py --arch 9L-L --batches 8,32 --dtypes float32,bfloat16 --steps 10 \
    --skip_explicit_above 8 | tee "$out/train_9ll.jsonl"
python explain_throughput.py --arch 9L-S --batches 256 --targets predicted,all --steps 20 \
    | tee "$out/explain_9ls.jsonl"
python end_to_end.py --dataset shapes --arch 9L-S --batch 1024 --workers 8 --steps 50 \
    | tee "$out/end_to_end.jsonl"
python norm_factors.py --arch 9L-S --impls mgs,cholqr2,cholqr2_lapack \
    | tee "$out/norm_factors_9ls.jsonl"
python dau_forms.py --arch 9L-S --batches 256 --steps 10 --interleaved_rounds 3 \
    | tee "$out/norm_share_9ls.jsonl"
