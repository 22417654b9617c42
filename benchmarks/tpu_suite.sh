#!/usr/bin/env bash
# The benchmarks of gpu_suite.sh on one TPU v5e chip, in one run, on a TPU VM:
#   bash benchmarks/tpu_suite.sh OUT_DIR
# It first installs codajax and jax[tpu] into the VM's Python (pip; set
# CODAJAX_SKIP_INSTALL=1 to use what is installed), checks that JAX sees a TPU,
# then runs the suite on the first chip. Every line of OUT_DIR/*.jsonl is one
# JSON record. Differences from the GPU suite: no PyTorch reference (the
# authors' code is CUDA-only), and the explicit form (~57 MB per 9L-S image) only
# up to batch 64, within a v5e chip's 16 GiB of HBM.
set -uo pipefail
usage="usage: bash benchmarks/tpu_suite.sh OUT_DIR  (OUT_DIR: a directory for the results, created if missing)"
case "${1:-}" in
  -h|--help) echo "$usage"; exit 0 ;;
esac
if [[ $# -ne 1 || -z "$1" || "$1" == -* || ( -e "$1" && ! -d "$1" ) ]]; then
  echo "tpu_suite.sh: expected one argument, a directory; got: $*" >&2
  echo "$usage" >&2
  exit 2
fi
out=$1
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")"
if [[ "${CODAJAX_SKIP_INSTALL:-0}" != 1 ]]; then
  python -m pip install -q -e .. "jax[tpu]>=0.10" || exit 1
fi
export PYTHONUNBUFFERED=1
python -c "import jax; assert jax.default_backend() == 'tpu', jax.devices(); \
print(jax.__version__, jax.devices())" | tee "$out/tpu.txt" || exit 1
python dau_forms.py --arch 9L-S --batches 16,64,256,1024 --dtypes float32,bfloat16 \
    --steps 20 --skip_explicit_above 64 | tee "$out/train_9ls.jsonl"
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
