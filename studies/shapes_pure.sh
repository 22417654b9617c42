#!/usr/bin/env bash
# The pure CoDA-Net on shapes, its ground-truth evaluation, and the temperature study.
# Reruns everything of studies/shapes_pure.md from a clean clone (CPU only):
#
#   bash studies/shapes_pure.sh            # probes, shapes run + eval, temperatures, original data, report
#   STAGES="shapes temps" bash studies/shapes_pure.sh   # a subset
#
# Data are prepared into $CODAJAX_DATA_DIR (default: runs/data inside the clone); runs go to $OUT.
# CPU time (summed from the measured parts in shapes_pure.md, section 5; machine shared, not one
# end-to-end run): about 137 CPU minutes (probes ~25, shapes ~20, temperatures ~59, report ~2,
# the original-data run ~31: train 693 CPU s + eval 1,143 CPU s).
set -euo pipefail
cd "$(dirname "$0")/.."
export CODAJAX_DATA_DIR=${CODAJAX_DATA_DIR:-$PWD/runs/data}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python}
OUT=${OUT:-runs/pure}
STAGES=${STAGES:-"probes shapes temps original report"}
TEMPS=${TEMPS:-"10 100 1000"}
SHAPES_TEMPS=${SHAPES_TEMPS:-"10 100 1000"}   # the shapes temperature runs (3 x ~13 CPU min)
# Modest eval settings (CPU): grids, ground-truth / removal images, cheaper RISE and SmoothGrad.
EVAL_FLAGS=${EVAL_FLAGS:-"--config.methods=Ours,Grad,IxG,IntGrad,SmoothGrad,GCam,Occ5,Occ9,RISE --config.evals.localisation.n_grids=6 --config.evals.localisation.grid=3 --config.evals.pixel_removal.n_images=96 --config.evals.ground_truth.n_images=96 --config.skip=depths --method_setting IntGrad.n_steps=10 --method_setting SmoothGrad.nt_samples=10 --method_setting RISE.n_masks=500"}
mkdir -p "$OUT/probe"

has() { [[ " $STAGES " == *" $1 "* ]]; }
timed() { /usr/bin/time -f "== %e s wall, %U s user + %S s sys: $*" "$@"; }

if has probes; then
  # The diagnosis (table "Probes" of shapes_pure.md): one hypothesis at a time, 200 steps each.
  probe() { local name=$1; shift; timed "$PY" studies/shapes_pure_probe.py --model shapes-5L --steps 200 \
              --eval_every 50 "$@" | tee "$OUT/probe/$name.log"; }
  probe p1_random
  probe p2_light --polarity light
  probe p3_random_flat_noclutter --texture 0 --clutter 0
  probe p4_random_T10 --temperature 10
  probe p5_random_softmax --loss softmax
fi

if has shapes; then
  timed "$PY" train.py --config configs/shapes.py --workdir "$OUT/shapes"
  # shellcheck disable=SC2086
  timed "$PY" eval.py --workdir "$OUT/shapes" $EVAL_FLAGS
fi

if has temps; then
  # Digits: the config's 30 epochs at every T; shapes: the config's 2 epochs at every T.
  for t in $TEMPS; do
    timed "$PY" train.py --config configs/digits.py --workdir "$OUT/digits30-T$t" --config.model.temperature="$t"
    timed "$PY" eval.py --workdir "$OUT/digits30-T$t" --config.methods=Ours,IxG,IntGrad --config.evals.localisation.n_grids=30 \
      --config.skip=depths,figures --method_setting IntGrad.n_steps=10
  done
  for t in $SHAPES_TEMPS; do
    timed "$PY" train.py --config configs/shapes.py --workdir "$OUT/shapes-T$t" --config.model.temperature="$t"
    timed "$PY" eval.py --workdir "$OUT/shapes-T$t" --config.methods=Ours,IxG,IntGrad,Grad --config.evals.localisation.n_grids=12 \
      --config.evals.pixel_removal.n_images=128 --config.evals.ground_truth.n_images=128 --config.skip=depths --method_setting IntGrad.n_steps=10
  done
  shapes_runs=()
  for t in $SHAPES_TEMPS; do shapes_runs+=("$OUT/shapes-T$t"); done
  if [ ${#shapes_runs[@]} -gt 0 ]; then "$PY" studies/shapes_mask_energy.py "${shapes_runs[@]}"; fi
fi

if has original; then
  # The original (random-polarity) data at T = 10 for 3 epochs, every baseline (section 4).
  timed "$PY" train.py --config configs/shapes.py:original --workdir "$OUT/shapes-original-T10-e3" \
    --config.model.temperature=10 --config.num_epochs=3
  # shellcheck disable=SC2086
  timed "$PY" eval.py --workdir "$OUT/shapes-original-T10-e3" $EVAL_FLAGS
fi

if has report; then
  "$PY" studies/summarise.py "$OUT/shapes"
  shapes_runs=()
  for t in $SHAPES_TEMPS; do shapes_runs+=("$OUT/shapes-T$t"); done
  digits_runs=()
  for t in $TEMPS; do digits_runs+=("$OUT/digits30-T$t"); done
  "$PY" studies/shapes_pure_report.py --out docs/figures/pure_temperature.png \
    --digits "${digits_runs[@]}" ${shapes_runs[@]+--shapes "${shapes_runs[@]}"}
  cp "$OUT/shapes/eval/contributions.png" docs/figures/shapes_pure_contributions.png
fi
