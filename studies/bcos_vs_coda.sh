#!/usr/bin/env bash
# B-cos against CoDA on the shapes ground truth (studies/bcos_vs_coda.md), CPU only.
#
#   bash studies/bcos_vs_coda.sh                   # train both, evaluate both, tables
#   STAGES="bcos eval_bcos" bash studies/bcos_vs_coda.sh   # a subset
#   CODA_RUN=/path/to/a/trained/configs/shapes.py/workdir STAGES="bcos eval_bcos eval_coda report" ...
#
# Data are prepared into $CODAJAX_DATA_DIR (default: runs/data inside the clone); runs go to $OUT.
# Measured on the shared 2-core machine (studies/bcos_vs_coda.md): B-cos training 189 s wall /
# 106 CPU s, B-cos eval and CoDA eval: see the study. CoDA training (configs/shapes.py): 353 CPU s
# (studies/shapes_pure.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export CODAJAX_DATA_DIR=${CODAJAX_DATA_DIR:-$PWD/runs/data}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python}
OUT=${OUT:-runs/bcos_vs_coda}
STAGES=${STAGES:-"bcos coda eval_bcos eval_coda digits report"}
CODA_T=${CODA_T:-10}                 # the CoDA run's temperature (the study used T = 10)
CODA_RUN=${CODA_RUN:-$OUT/coda-shapes-T$CODA_T}
# The modest CPU settings of studies/shapes_pure.md, every method but Occlusion-9.
METHODS=${METHODS:-"Ours,Grad,IxG,IntGrad,SmoothGrad,GCam,Occ5,RISE"}
EVAL_FLAGS=${EVAL_FLAGS:-"--config.methods=$METHODS --config.evals.localisation.n_grids=6 --config.evals.localisation.grid=3 --config.evals.pixel_removal.n_images=96 --config.evals.ground_truth.n_images=96 --config.skip=depths --method_setting IntGrad.n_steps=10 --method_setting SmoothGrad.nt_samples=10 --method_setting RISE.n_masks=500"}
mkdir -p "$OUT"

has() { [[ " $STAGES " == *" $1 "* ]]; }
timed() { /usr/bin/time -f "== %e s wall, %U s user + %S s sys: $*" "$@"; }

if has bcos; then
  timed "$PY" train.py --config configs/bcos_shapes.py --workdir "$OUT/bcos-shapes"
fi
if has coda; then
  timed "$PY" train.py --config configs/shapes.py --workdir "$CODA_RUN" --config.model.temperature="$CODA_T"
fi
if has eval_bcos; then
  # shellcheck disable=SC2086
  timed "$PY" eval.py --workdir "$OUT/bcos-shapes" $EVAL_FLAGS
fi
if has eval_coda; then
  # shellcheck disable=SC2086
  timed "$PY" eval.py --workdir "$CODA_RUN" $EVAL_FLAGS
fi
if has digits; then
  timed "$PY" train.py --config configs/bcos_digits.py --workdir "$OUT/bcos-digits"
fi
if has report; then
  "$PY" studies/summarise.py "$OUT/bcos-shapes" "$CODA_RUN"
  mkdir -p docs/figures
  cp "$OUT/bcos-shapes/eval/contributions.png" docs/figures/bcos_shapes_contributions.png
  cp "$CODA_RUN/eval/contributions.png" docs/figures/bcos_coda_shapes_contributions.png
fi
