#!/usr/bin/env bash
# The recipe of the shipped checkpoints (asr_core/checkpoints/), resumable: rerun to continue.
# CPU: ~1 h on 2 cores for the base model, + meta-training; GPU: pass DEVICE=cuda.
#   bash asr_core/recipe.sh [stage]     stages: corpus train meta eval ship
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/corpus}
RUN=${RUN:-data/run}
META=${META:-data/meta}
DEVICE=${DEVICE:-cpu}
EPOCHS=${EPOCHS:-6}
STAGE=${1:-all}

if [[ $STAGE == all || $STAGE == corpus ]]; then
  $PY -m asr_core corpus --out "$DATA" --train-speakers 300 --train-utts 40 --workers 2 \
      --accent-train-speakers 120 --accent-dev-speakers 6 --accent-test-speakers 12
fi
if [[ $STAGE == all || $STAGE == train ]]; then
  $PY -m asr_core train --manifest "$DATA/manifest.tsv" --out "$RUN" --epochs "$EPOCHS" \
      --d-model 192 --batch-frames 6000 --threads 2 --device "$DEVICE"
  mkdir -p asr_core/checkpoints && cp "$RUN/best.pt" asr_core/checkpoints/ctc_base.pt
fi
if [[ $STAGE == all || $STAGE == meta ]]; then
  # second-order MAML is ~5x slower per step on CPU (CTC written in plain ops, differentiated twice)
  # the adaptive group: feature transform + LHUC + rank-8 feed-forward adapters (B per caller)
  common=(--manifest "$DATA/manifest.tsv" --checkpoint asr_core/checkpoints/ctc_base.pt --out "$META"
          --inner-lr "${INNER_LR:-1}" --lhuc-lr 50 --adapter-rank 8 --adapter-lr "${ADAPTER_LR:-2}" --threads 1)
  $PY -m asr_core meta-train "${common[@]}" --algo metasgd --outer-steps "${OUTER_STEPS:-300}" --eval-every 25 &
  $PY -m asr_core meta-train "${common[@]}" --algo fomaml --outer-steps "${OUTER_STEPS:-300}" --eval-every 25
  wait
  $PY -m asr_core meta-train "${common[@]}" --algo reptile --outer-steps "${OUTER_STEPS:-300}" --eval-every 25 &
  $PY -m asr_core meta-train "${common[@]}" --algo maml --outer-steps "${MAML_STEPS:-40}" --eval-every 10 \
      --meta-batch 2 --inner-steps 1
  wait
fi
if [[ $STAGE == all || $STAGE == ship ]]; then
  cp "$META/metasgd.pt" asr_core/checkpoints/base.pt
  $PY -m asr_core tune-decoder --checkpoint asr_core/checkpoints/base.pt --manifest "$DATA/manifest.tsv" --write
fi
if [[ $STAGE == all || $STAGE == eval ]]; then
  $PY -m asr_core evaluate --manifest "$DATA/manifest.tsv" --json "$RUN/eval.json"
  $PY -m asr_core evaluate --manifest "$DATA/manifest.tsv" --adapt all --meta-dir "$META" --json "$RUN/eval_adapt.json"
fi
