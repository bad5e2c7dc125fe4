"""`wsss labels`: turn class maps into pseudo labels (eps | cam | nsrom BE+POM | nsrm)."""

from __future__ import annotations

import argparse

from wsss.commands.common import add_config_arguments, config_from_args

NAME = "labels"
HELP = "turn class maps into pseudo labels (eps | cam | nsrom BE+POM | nsrm | saliency baseline)"
DESCRIPTION = HELP + """.

Input: eps/cam: <run>/<labels.cams>/<id>.npz; nsrom: OA-CAMs <run>/<labels.oa_cams>/ (+ plain CAMs
<labels.cams>/ for POM) and the saliency maps; nsrm: round-1 predictions <labels.nsrm_pred>/,
round-1 pseudo labels <labels.nsrm_labels>/, saliency maps and image-level labels; saliency
(the no-learning baseline): saliency maps, image-level labels and, for images with several labelled
classes, any classifier's maps <labels.cams>/ (labels.cams="" uses none).
Output: <run>/<labels.out>/<id>.png palette PNGs (255 = ignore) and the counts in
<run>/<labels.out>.summary.json.

POM mines with the maps of labels.pom_cams (default labels.cams; for eps/cam give another
classifier's maps, since the maps that made a label leave POM almost nothing to mine).
Thresholds come from labels.* (thr, saliency_thr, be_*, pom_t_bg, min_fraction, nsrm_kernel). Done images are
skipped; under `torchrun --nproc_per_node N` the ids are split over the N processes."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--method", choices=("eps", "cam", "nsrom", "nsrm", "saliency"),
                        help="label rule (default: labels.method of the config)")
    parser.add_argument("--pom", action=argparse.BooleanOptionalAction, default=None,
                        help="Potential Object Mining on top of eps/cam/nsrom labels (default: labels.pom)")
    parser.add_argument("--overwrite", action="store_true", help="remake labels that exist")


def run(args: argparse.Namespace) -> int:
    from wsss.stages.context import stage_context
    from wsss.stages.make_labels import make_labels

    cfg = config_from_args(args)
    if args.method:
        cfg.labels.method = args.method
    if args.pom is not None:
        cfg.labels.pom = args.pom
    if args.overwrite:
        cfg.labels.overwrite = True
    s = make_labels(stage_context(cfg, args.config))
    pom = " + POM" if s["pom"] else ""
    print(f"{s['method']}{pom} labels of {s['split']}: {s['made']} made, {s['done_before']} already done "
          f"({s['images_per_s']:.1f} images/s, rank {s['rank']}/{s['world_size']})")
    print(f"ignore share {s['ignore_share']:.3f}, background share {next(iter(s['class_share'].values())):.3f}, "
          f"{s['fully_ignored_images']} of {s['images']} images fully ignored")
    print(f"labels: {s['out']}")
    print(f"summary: {s['summary_file']}")
    return 0
