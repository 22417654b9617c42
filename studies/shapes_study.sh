#!/usr/bin/env bash
# The shapes study (studies/shapes_study.md), sized for a 2-core CPU (about 1.5 h of training).
#
#   bash studies/shapes_study.sh train   # embedding depths s3, s2, s1, then λ on s2
#   bash studies/shapes_study.sh eval    # eval.py on every run (see the EVAL_* settings)
#   python studies/summarise.py runs/study
#
# Every run trains EPOCHS epochs (default 5) of the 20,000 shapes training images with the
# configs' warmup-cosine schedule; the configs themselves say 20 epochs, which a GPU affords.
# Re-running resumes finished or interrupted runs from their checkpoints. DEPTHS="s0" adds the
# pure CoDA-Net, which stayed at chance for 5 epochs here (studies/shapes_study.md).
# The results and what they mean: studies/shapes_study.md.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=${1:?usage: shapes_study.sh train|eval}
OUT=${OUT:-runs/study}
EPOCHS=${EPOCHS:-5}
DEPTHS=${DEPTHS-"s3 s2 s1"}   # DEPTHS="" skips them
LAMBDA_STAGE=${LAMBDA_STAGE:-s2}
LAMBDAS=${LAMBDAS-"0.25 25"}
# eval.py on every run: localisation grids, grid size, pixel-removal/ground-truth images, methods.
EVAL_GRIDS=${EVAL_GRIDS:-30}
EVAL_GRID=${EVAL_GRID:-3}
EVAL_REMOVAL=${EVAL_REMOVAL:-256}
EVAL_METHODS=${EVAL_METHODS:-Ours,IxG,GCam}
# Every method on one run (written to RUN/eval_all), smaller because RISE, SmoothGrad and
# Occlusion cost hundreds of forward passes per image on a CPU.
ALL_METHODS_RUN=${ALL_METHODS_RUN:-depth-s2}
ALL_GRIDS=${ALL_GRIDS:-12}
ALL_REMOVAL=${ALL_REMOVAL:-128}
ALL_SETTINGS=${ALL_SETTINGS:-"--method_setting RISE.n_masks=1000 --method_setting SmoothGrad.nt_samples=20"}

runs() {
  for s in $DEPTHS; do echo "depth-$s configs/shapes_hybrid.py:$s 0"; done
  for l in $LAMBDAS; do echo "lambda-$l configs/shapes_hybrid.py:$LAMBDA_STAGE $l"; done
}

runs | while read -r name config lambda; do
  workdir="$OUT/$name"
  case "$STAGE" in
    train)
      echo "== $(date +%T) train $name ($config, λ=$lambda, $EPOCHS epochs)"
      python train.py --config "$config" --workdir "$workdir" \
        --config.num_epochs="$EPOCHS" --config.l1_matrix_weight="$lambda" --config.eval_every_epochs=1 </dev/null
      ;;
    eval)
      echo "== $(date +%T) eval $name ($EVAL_METHODS)"
      python eval.py --workdir "$workdir" --config.evals.localisation.n_grids="$EVAL_GRIDS" --config.evals.depths.n_grids="$EVAL_GRIDS" \
        --config.evals.localisation.grid="$EVAL_GRID" --config.evals.depths.grid="$EVAL_GRID" \
        --config.evals.pixel_removal.n_images="$EVAL_REMOVAL" --config.evals.ground_truth.n_images="$EVAL_REMOVAL" \
        --config.methods="$EVAL_METHODS" </dev/null
      if [[ "$name" == "$ALL_METHODS_RUN" ]]; then
        echo "== $(date +%T) eval $name (every method)"
        # shellcheck disable=SC2086
        python eval.py --workdir "$workdir" --config configs/eval/paper.py --config.out="$workdir/eval_all" \
          --config.evals.localisation.n_grids="$ALL_GRIDS" --config.evals.depths.n_grids="$ALL_GRIDS" \
          --config.evals.localisation.grid="$EVAL_GRID" --config.evals.depths.grid="$EVAL_GRID" \
          --config.evals.pixel_removal.n_images="$ALL_REMOVAL" --config.evals.ground_truth.n_images="$ALL_REMOVAL" $ALL_SETTINGS </dev/null
      fi
      ;;
    *) echo "unknown stage $STAGE (train|eval)" >&2; exit 2 ;;
  esac
done
