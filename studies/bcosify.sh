#!/usr/bin/env bash
# B-cosification on the shapes ground truth (studies/bcosify.md), CPU only, two seeds:
#   (a) the conventional resnet-tiny from scratch      configs/resnet_shapes.py
#   (b) the B-cos resnet-tiny from scratch             configs/bcos_shapes.py
#   (c) (a) B-cosified and fine-tuned                   configs/bcosify.py:curve
# then the ground-truth scores of every run (studies/bcosify_scores.py) and the table.
#
#   bash studies/bcosify.sh                        # everything (about 1 CPU hour on 2 cores)
#   STAGES="scores" SEEDS="0" bash studies/bcosify.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CODAJAX_DATA_DIR=${CODAJAX_DATA_DIR:-$PWD/runs/data}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python}
OUT=${OUT:-runs/bcosify}
SEEDS=${SEEDS:-"0 1"}
STAGES=${STAGES:-"conventional bcos bcosify scores"}
mkdir -p "$OUT"

has() { [[ " $STAGES " == *" $1 "* ]]; }
timed() { /usr/bin/time -f "== %e s wall, %U s user + %S s sys: $*" "$@"; }

for seed in $SEEDS; do
  if has conventional; then
    timed "$PY" train.py --config configs/resnet_shapes.py --workdir "$OUT/resnet-seed$seed" \
      --config.seed="$seed"
  fi
  if has bcos; then
    timed "$PY" train.py --config configs/bcos_shapes.py --workdir "$OUT/bcos-seed$seed" \
      --config.seed="$seed"
  fi
  if has bcosify; then
    timed "$PY" train.py --config configs/bcosify.py:curve --workdir "$OUT/bcosify-seed$seed" \
      --config.seed="$seed" --config.init_from="$OUT/resnet-seed$seed"
  fi
done
if has scores; then
  timed "$PY" studies/bcosify_scores.py --out "$OUT" --seeds "${SEEDS// /,}"
fi
