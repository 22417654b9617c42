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
source "$(dirname "$0")/suite_common.sh"
suite_out_dir tpu_suite.sh "$@"
cd "$(dirname "$0")"
if [[ "${CODAJAX_SKIP_INSTALL:-0}" != 1 ]]; then
  python -m pip install -q -e .. "jax[tpu]>=0.10" || exit 1
fi
export PYTHONUNBUFFERED=1
python -c "import jax; assert jax.default_backend() == 'tpu', jax.devices(); \
print(jax.__version__, jax.devices())" | tee "$out/tpu.txt" || exit 1
run_benchmarks "$out" 64
