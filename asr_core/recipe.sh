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
  $PY -m asr_core corpus --out "$DATA" --train-speakers 300 --train-utts 40 --workers 2
fi
if [[ $STAGE == all || $STAGE == train ]]; then
  $PY -m asr_core train --manifest "$DATA/manifest.tsv" --out "$RUN" --epochs "$EPOCHS" \
      --d-model 192 --batch-frames 6000 --threads 2 --device "$DEVICE"
  mkdir -p asr_core/checkpoints && cp "$RUN/best.pt" asr_core/checkpoints/ctc_base.pt
fi
if [[ $STAGE == all || $STAGE == meta ]]; then
  for algo in ${ALGOS:-metasgd fomaml reptile maml}; do
    $PY -m asr_core meta-train --manifest "$DATA/manifest.tsv" --checkpoint asr_core/checkpoints/ctc_base.pt \
        --out "$META" --algo "$algo" --outer-steps "${OUTER_STEPS:-150}" --threads 2
  done
fi
if [[ $STAGE == all || $STAGE == ship ]]; then
  cp "$META/metasgd.pt" asr_core/checkpoints/base.pt
fi
if [[ $STAGE == all || $STAGE == eval ]]; then
  $PY -m asr_core evaluate --manifest "$DATA/manifest.tsv" --json "$RUN/eval.json"
  $PY -m asr_core evaluate --manifest "$DATA/manifest.tsv" --adapt all --meta-dir "$META" --json "$RUN/eval_adapt.json"
fi
