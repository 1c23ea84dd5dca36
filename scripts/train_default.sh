#!/usr/bin/env bash
# Reproduce models/default: split both data sets, train lens on Br35H TRAIN plus the LGG training
# patients (the CAM guided by their outlines), choose the CAM method on VALIDATION, measure TEST of
# both domains once, install it.
#   scripts/train_default.sh [OUT]      (OUT defaults to .tumorlens/runs/default)
# Data is read from $TUMORLENS_DATA (default ../shared/data); splits and caches stay under .tumorlens/.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${TUMORLENS_DATA:-../shared/data}
OUT=${1:-.tumorlens/runs/default}
BIN=.venv/bin
WORK=.tumorlens/data

test -d "$WORK/br35h-split" || $BIN/tumorlens prepare-data "$DATA/br35h" "$WORK/br35h-split" --seed 0 \
    --label-review docs/label_review/br35h.json  # group 93: reported both ways, never relabelled
test -d "$WORK/lgg-split" || $BIN/tumorlens split-cases "$DATA/lgg_flair" "$WORK/lgg-split" --split 60,20,20 --seed 0

nice -n 10 $BIN/tumorlens train "$WORK/br35h-split" --out "$OUT" \
  --extra-domain "$WORK/lgg-split" \
  --annotations "$DATA/br35h/tumor_outlines_via.json" \
  --arch lens --weights none --input-size 160 --width 24 \
  --augment flip,rotation,zoom,contrast,gamma,noise,blur --mask-weight 0.5 \
  --epochs 40 --patience 40 --schedule cosine --learning-rate 2e-3 --batch-size 32 --seed 0 \
  --cache .tumorlens/cache --name br35h-lgg-lens-v2

mkdir -p models/default
cp "$OUT/model.keras" "$OUT/model.json" "$OUT/model_card.json" models/default/
echo "installed $OUT into models/default"
