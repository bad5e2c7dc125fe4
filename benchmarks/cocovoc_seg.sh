#!/usr/bin/env bash
# Issue 7 measurement: DeepLab-v2 (EfficientNet-Lite0, ImageNet) on cocovoc trained on EPS labels,
# on NSROM BE+POM labels (round 1), on NSRM labels (round 2), and on the ground truth (the fully
# supervised reference); every model is evaluated on val with and without CRF.
# The EPS and NSROM parts are `wsss run` of configs/pipelines/{eps,nsrom}_effl0_cocovoc.yaml, so
# classifiers already trained into OUT_DIR by benchmarks/cocovoc_{eps,nsrom}.sh with the same SETS
# are reused (resumed at their last iteration) and not retrained. Every later step runs afresh,
# though: the pipeline has no record of the standalone runs, so it counts the classifier step as
# run and remakes what follows — NSROM's IAM is trained again (same seed and data order).
#   [METHODS="full eps nsrom"] [SETS="--set k=v ..."] [SEG="--set k=v ..."] bash benchmarks/cocovoc_seg.sh DATA_ROOT OUT_DIR
# SETS: classifier settings shared with the other two scripts; SEG: the DeepLab/prediction sizing
# (default below: a CPU-sized schedule, one input scale, 224 px crops).
set -euo pipefail
data=${1:?dataset root}; out=${2:?output folder}
wsss=${WSSS:-.venv/bin/wsss}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WSSS_PROGRESS=${WSSS_PROGRESS:-lines}
# shellcheck disable=SC2206  # split on purpose: one word per argument
extra=(${SETS:-})
# shellcheck disable=SC2206
seg=(${SEG:---set train_seg.msc_scales=[1.0] --set train_seg.crop_size=224 --set train_seg.accumulate=1
     --set train_seg.iterations=300 --set train_seg.lr=0.001 --set train_seg.num_workers=1
     --set predict.scales=[1.0] --set predict.workers=1 --set crf.workers=1 --set eval.workers=1})
base=(--set data.root="$data" --set run.out_dir="$out" "${extra[@]}" "${seg[@]}")

full_reference() {  # the same DeepLab recipe on the ground truth
  local cfg=(-c configs/seg/deeplabv2_effl0_cocovoc.yaml --set run.name=deeplabv2_effl0_cocovoc_full "${base[@]}")
  local run=$out/deeplabv2_effl0_cocovoc_full
  local proto=(--protocol supervision=full --protocol "scales=[1.0]" --protocol initialisation=imagenet)
  "$wsss" train-seg "${cfg[@]}" --supervision full
  "$wsss" predict "${cfg[@]}" --set predict.save_probs=true
  "$wsss" eval "${cfg[@]}" --pred "$run/pred" --set eval.split=val "${proto[@]}" --protocol post_processing=none \
    --out "$run/eval_pred.json"
  "$wsss" crf "${cfg[@]}" --set crf.split=val --set crf.input=pred_probs --set crf.out=pred_crf
  "$wsss" eval "${cfg[@]}" --pred "$run/pred_crf" --set eval.split=val "${proto[@]}" --protocol post_processing=crf \
    --out "$run/eval_pred_crf.json"
}

for method in ${METHODS:-full eps nsrom}; do
  if [[ $method == full ]]; then
    full_reference
  else
    "$wsss" run "configs/pipelines/${method}_effl0_cocovoc.yaml" "${base[@]}" --set cams.workers=1 \
      --set "cams.scales=[0.5,1.0,1.5]"
  fi
done
