#!/usr/bin/env bash
# Issue 6 measurement: NSROM's pseudo labels on the real cocovoc set (EfficientNet-Lite0, ImageNet):
# BE alone and BE + POM from the NSROM classifier + IAM, and EPS + POM (EPS labels mined with the
# CAM baseline's maps) when benchmarks/cocovoc_eps.sh has run into the same OUT_DIR.
# Trains the NSROM classifier (with online accumulated attention) and the IAM on train (unless
# done), infers plain CAMs and OA-CAMs on val, makes the labels and evaluates them on val.
#   [SETS="--set k=v ..."] bash benchmarks/cocovoc_nsrom.sh DATA_ROOT OUT_DIR
set -euo pipefail
data=${1:?dataset root}; out=${2:?output folder}
wsss=${WSSS:-.venv/bin/wsss}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WSSS_PROGRESS=${WSSS_PROGRESS:-lines}
cfg=configs/pipelines/nsrom_effl0_cocovoc.yaml     # the classifier/IAM/cams/labels settings of the pipeline
run=$out/nsrom_effl0_cocovoc
common=(-c "$cfg" --set data.root="$data" --set run.out_dir="$out")
# shellcheck disable=SC2206  # SETS is split on purpose: one word per argument
extra=(${SETS:-})
common+=("${extra[@]}")
proto=(--protocol "scales=1.0 (256 square)" --protocol initialisation=imagenet --protocol saliency_source=ISNet)

"$wsss" train-cls "${common[@]}" --set train_cls.num_workers=1
"$wsss" train-iam "${common[@]}" --set train_cls.num_workers=1
"$wsss" cams "${common[@]}" --set cams.split=val --set cams.out=cams_val --set cams.oa_out=oa_cams_val --set cams.workers=1
for pom in no-pom pom; do
  "$wsss" labels "${common[@]}" --method nsrom --$pom --set labels.split=val --set labels.cams=cams_val \
    --set labels.oa_cams=oa_cams_val --set labels.out=labels_val_be_$pom
  "$wsss" eval "${common[@]}" --pred "$run/labels_val_be_$pom" --set eval.split=val "${proto[@]}" \
    --out "$run/eval_val_be_$pom.json"
done

# EPS + POM: EPS's val labels (thr 0.20) mined with the CAM baseline's val maps
eps=$out/eps_effl0_cocovoc; cam=$out/cam_effl0_cocovoc
if [[ -d $eps/cams_val && -d $cam/cams_val ]]; then
  epscommon=(-c configs/eps/eps_effl0_cocovoc.yaml --set data.root="$data" --set run.out_dir="$out" "${extra[@]}")
  "$wsss" labels "${epscommon[@]}" --method eps --pom --set labels.split=val --set labels.cams=cams_val \
    --set labels.pom_cams="$cam/cams_val" --set labels.thr=0.20 --set labels.out=labels_val_thr0.20_pom
  "$wsss" eval "${epscommon[@]}" --pred "$eps/labels_val_thr0.20_pom" --set eval.split=val \
    --protocol "scales=[0.5,1.0,1.5]+flip" --protocol initialisation=imagenet --protocol saliency_source=ISNet \
    --out "$eps/eval_val_thr0.20_pom.json"
else
  echo "EPS + POM skipped: run benchmarks/cocovoc_eps.sh into $out first" >&2
fi
