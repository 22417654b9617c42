#!/usr/bin/env bash
# The shapes study of issues 5 and 6, sized for a 2-core CPU (about 1.5 h of training).
#
#   bash studies/shapes_study.sh train   # embedding depths s0..s3, then λ on s2
#   bash studies/shapes_study.sh eval    # eval.py on every run (see the EVAL_* settings)
#   python studies/summarise.py runs/study > studies/shapes_study.md
#
# Every run trains EPOCHS epochs (default 5) of the 20,000 shapes training images with the
# configs' warmup-cosine schedule; the configs themselves say 20 epochs, which a GPU affords.
# Re-running resumes finished or interrupted runs from their checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=${1:?usage: shapes_study.sh train|eval}
OUT=${OUT:-runs/study}
EPOCHS=${EPOCHS:-5}
DEPTHS=${DEPTHS:-"s3 s2 s0 s1"}
LAMBDA_STAGE=${LAMBDA_STAGE:-s2}
LAMBDAS=${LAMBDAS:-"0.25 1 0.1 0.5"}
# eval.py sizes: localisation grids, grid size, pixel-removal/ground-truth images, RISE masks.
EVAL_GRIDS=${EVAL_GRIDS:-30}
EVAL_GRID=${EVAL_GRID:-3}
EVAL_REMOVAL=${EVAL_REMOVAL:-256}
EVAL_RISE_MASKS=${EVAL_RISE_MASKS:-1000}
EVAL_METHODS=${EVAL_METHODS:-}          # empty: all methods
EVAL_HYBRID_METHODS=${EVAL_HYBRID_METHODS:-Ours,IxG,GCam}

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
      methods=$EVAL_HYBRID_METHODS
      [[ "$name" == depth-s0 ]] && methods=$EVAL_METHODS
      echo "== $(date +%T) eval $name (methods: ${methods:-all})"
      python eval.py --workdir "$workdir" --n_grids "$EVAL_GRIDS" --grid "$EVAL_GRID" \
        --n_removal "$EVAL_REMOVAL" --methods "$methods" \
        --method_setting "RISE.n_masks=$EVAL_RISE_MASKS" </dev/null
      ;;
    *) echo "unknown stage $STAGE (train|eval)" >&2; exit 2 ;;
  esac
done
