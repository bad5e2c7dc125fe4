"""`wsss predict`: predict label maps with a trained segmentation network."""

from __future__ import annotations

import argparse

from wsss.commands.common import add_config_arguments, config_from_args

NAME = "predict"
HELP = "predict label maps with a trained segmentation network"
DESCRIPTION = HELP + """.

Input: a trained segmenter (predict.checkpoint, default <run>/segmenter/final.pt) and the images of
a split (predict.split, default val).
Output: <run>/<predict.out>/<id>.png palette label maps (0..C) at full image size, from the
multi-scale network (predict.scales, max fusion) with optional flip (probabilities averaged);
with --probs also <run>/<predict.out>_probs/<id>.npz (probs (K,H,W) float16, labels (K,)) for
`wsss crf`; <run>/<predict.out>.summary.json with counts and images/s. Images whose outputs exist
are skipped (predict.overwrite=true redoes them); torchrun --nproc_per_node N splits the images."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--split", metavar="S", help="split name or id-list file (sets predict.split)")
    parser.add_argument("--out", metavar="DIR", help="output folder, run-relative or absolute (sets predict.out)")
    parser.add_argument("--probs", action="store_true", help="also save class probabilities (predict.save_probs)")


def run(args: argparse.Namespace) -> int:
    from wsss.stages.context import stage_context
    from wsss.stages.predict import predict

    cfg = config_from_args(args)
    if args.split:
        cfg.predict.split = args.split
    if args.out:
        cfg.predict.out = args.out
    if args.probs:
        cfg.predict.save_probs = True
    ctx = stage_context(cfg, args.config)
    s = predict(ctx)
    rate = f", {s['images_per_s']:.2f} images/s" if s["images_per_s"] else ""
    probs = f"; probabilities in {s['probs']}" if s["probs"] else ""
    shard = f" (rank {s['rank']} of {s['world_size']})" if s["world_size"] > 1 else ""
    print(f"predict {s['split']}{shard}: {s['predicted']} predicted, {s['skipped']} already done{rate}; "
          f"label maps in {s['out']}{probs}")
    return 0
