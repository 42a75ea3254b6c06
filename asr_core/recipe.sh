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
  # test callers: 0000-0023 + acc 0000-0011 and 0030-0047 report figures; 0024-0047 + acc 0012-0029 tune
  # (more test callers leave every training and dev file as it is)
  $PY -m asr_core corpus --out "$DATA" --train-speakers 300 --train-utts 40 --workers 2 --test-speakers 48 \
      --accent-train-speakers 120 --accent-dev-speakers 6 --accent-test-speakers 48
fi
if [[ $STAGE == all || $STAGE == train ]]; then
  $PY -m asr_core train --manifest "$DATA/manifest.tsv" --out "$RUN" --epochs "$EPOCHS" \
      --d-model 192 --batch-frames 6000 --threads 2 --device "$DEVICE"
  mkdir -p asr_core/checkpoints && cp "$RUN/best.pt" asr_core/checkpoints/ctc_base.pt
fi
if [[ $STAGE == all || $STAGE == meta ]]; then
  # second-order MAML is ~5x slower per step on CPU (CTC written in plain ops, differentiated twice)
  # the adaptive group: feature transform + LHUC + rank-8 feed-forward adapters (B per caller)
  common=(--manifest "$DATA/manifest.tsv" --checkpoint asr_core/checkpoints/ctc_base.pt
          --inner-lr "${INNER_LR:-1}" --lhuc-lr 50 --adapter-rank 8 --adapter-lr "${ADAPTER_LR:-2}" --threads 1)
  # the four algorithms over the adaptive group only (the comparison table)
  $PY -m asr_core meta-train "${common[@]}" --out "$META" --algo metasgd --outer-steps "${OUTER_STEPS:-300}" --eval-every 25 &
  $PY -m asr_core meta-train "${common[@]}" --out "$META" --algo fomaml --outer-steps "${OUTER_STEPS:-300}" --eval-every 25
  wait
  $PY -m asr_core meta-train "${common[@]}" --out "$META" --algo reptile --outer-steps "${OUTER_STEPS:-300}" --eval-every 25 &
  $PY -m asr_core meta-train "${common[@]}" --out "$META" --algo maml --outer-steps "${MAML_STEPS:-40}" --eval-every 10 \
      --meta-batch 2 --inner-steps 1
  wait
  # the shipped model: Meta-SGD that also meta-learns the base weights
  $PY -m asr_core meta-train "${common[@]}" --out "$META/ship" --algo metasgd --outer-steps "${OUTER_STEPS:-300}" \
      --eval-every 25 --learn-base --base-lr 1e-4
  # then the adaptation for callers nobody verified: support sets labelled by the model's own confident
  # transcripts (beam + LM), query by references; weights and supervised settings stay as they are
  $PY -m asr_core meta-train --manifest "$DATA/manifest.tsv" --checkpoint "$META/ship/metasgd.pt" --out "$META/ship" \
      --label-free --support 8 --query 5 --meta-batch 4 --outer-steps "${OUTER_STEPS:-300}" --eval-every 25 --threads 2
fi
if [[ $STAGE == all || $STAGE == ship ]]; then
  # decoder weights (lm_weight, word_score) come with ctc_base.pt's meta (tune-decoder --write retunes them)
  cp "$META/ship/metasgd_label_free.pt" asr_core/checkpoints/base.pt
fi
if [[ $STAGE == all || $STAGE == eval ]]; then
  plain='^test00([01][0-9]|2[0-3])$' mixed='^test00([01][0-9]|2[0-3])$|^testacc00(0[0-9]|1[01])$'
  accented='^testacc00(0[0-9]|1[01]|3[0-9]|4[0-7])$'
  $PY -m asr_core evaluate --manifest "$DATA/manifest.tsv" --speakers "$plain" --json "$RUN/eval.json"
  $PY -m asr_core evaluate --manifest "$DATA/manifest.tsv" --speakers "$mixed" --adapt all --meta-dir "$META" \
      --json "$RUN/eval_adapt.json"
  # the accented callers alone: the population of the adaptation targets (model card)
  $PY -m asr_core evaluate --manifest "$DATA/manifest.tsv" --speakers "$accented" --adapt all --meta-dir "$META" \
      --json "$RUN/eval_adapt_accented.json"
fi
