"""`wsss cams`: infer class activation maps (multi-scale + flip) for a split."""

from __future__ import annotations

import argparse

from wsss.commands.common import add_config_arguments, config_from_args

NAME = "cams"
HELP = "infer class activation maps of a trained classifier for a split"
DESCRIPTION = HELP + """.

Input: the classifier <run>/<cams.checkpoint> (NSROM: also the IAM <run>/<cams.iam_checkpoint>)
and the images and image-level labels of cams.split.
Output: <run>/<cams.out>/<id>.npz with `classes` (K,) 1-based and `cams` (K,H,W) float16 in [0,1]
at image size (EPS: also `bg`); NSROM: OA-CAMs in <run>/<cams.oa_out>/<id>.npz.

EPS/CAM: scales cams.scales, each also flipped (cams.flip). NSROM: one pass at cams.nsrom_size
squared (cams.nsrom_multiscale for scales/flips). Done images are skipped; under
`torchrun --nproc_per_node N` the ids are split over the N processes."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="recompute images whose maps exist")


def run(args: argparse.Namespace) -> int:
    from wsss.stages.context import stage_context
    from wsss.stages.infer_cams import infer_cams

    cfg = config_from_args(args)
    if args.overwrite:
        cfg.cams.overwrite = True
    summary = infer_cams(stage_context(cfg, args.config))
    print(f"{summary['method']} maps of {summary['split']}: {summary['processed']} images computed, "
          f"{summary['done_before']} already done (rank {summary['rank']}/{summary['world_size']})")
    print(f"speed: {summary['images_per_s']:.2f} images/s on {summary['device']} "
          f"({summary['passes_per_image']} network pass(es) per image, {summary['seconds']:.1f} s)")
    for key, path in summary["out"].items():
        print(f"{key}: {path}")
    return 0
