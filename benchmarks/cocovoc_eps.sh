#!/usr/bin/env bash
# Issue 5 measurement: CAM baseline vs EPS on the real cocovoc set (EfficientNet-Lite0, ImageNet).
# Trains both classifiers on train (unless done), infers CAMs on val, makes pseudo-masks over a
# sweep of the background score thr, refines the default ones with the dense CRF, and evaluates
# every label set against the val ground truth with `wsss eval`.
#   [METHODS="cam eps"] [SETS="--set k=v ..."] bash benchmarks/cocovoc_eps.sh DATA_ROOT OUT_DIR [SCALES]
# SETS adds config overrides to every command (e.g. a longer schedule or momentum 0.9).
# e.g. bash benchmarks/cocovoc_eps.sh ../shared/data/cocovoc runs "[0.5,1.0,1.5]"
set -euo pipefail
data=${1:?dataset root}; out=${2:?output folder}; scales=${3:-"[0.5,1.0,1.5,2.0]"}
wsss=${WSSS:-.venv/bin/wsss}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WSSS_PROGRESS=${WSSS_PROGRESS:-lines}
for m in ${METHODS:-cam eps}; do
  cfg=configs/eps/${m}_effl0_cocovoc.yaml
  common=(-c "$cfg" --set data.root="$data" --set run.out_dir="$out")
  # shellcheck disable=SC2206  # SETS is split on purpose: one word per argument
  extra=(${SETS:-})
  common+=("${extra[@]}")
  "$wsss" train-cls "${common[@]}" --set train_cls.num_workers=1
  "$wsss" cams "${common[@]}" --set cams.split=val --set cams.out=cams_val --set "cams.scales=$scales" --set cams.workers=1
  for thr in 0.10 0.15 0.20 0.25 0.30 0.40; do
    "$wsss" labels "${common[@]}" --method "$m" --set labels.split=val --set labels.cams=cams_val \
      --set labels.thr=$thr --set labels.out=labels_val_thr$thr
    "$wsss" eval "${common[@]}" --pred "$out/${m}_effl0_cocovoc/labels_val_thr$thr" --set eval.split=val \
      --protocol post_processing=none --protocol "scales=$scales+flip" --protocol initialisation=imagenet \
      --protocol saliency_source=ISNet --out "$out/${m}_effl0_cocovoc/eval_val_thr$thr.json"
  done
  "$wsss" crf "${common[@]}" --set crf.split=val --set crf.input=labels_val_thr0.20 --set crf.out=labels_val_thr0.20_crf
  "$wsss" eval "${common[@]}" --pred "$out/${m}_effl0_cocovoc/labels_val_thr0.20_crf" --set eval.split=val \
    --protocol post_processing=crf --protocol "scales=$scales+flip" --protocol initialisation=imagenet \
    --protocol saliency_source=ISNet --out "$out/${m}_effl0_cocovoc/eval_val_thr0.20_crf.json"
done
