"""`wsss train-cls`: train a classifier (cam | eps | nsrom) on image-level labels."""

from __future__ import annotations

import argparse
import os

from wsss.commands.common import add_config_arguments, add_resume_argument, config_from_args

NAME = "train-cls"
HELP = "train a classifier (cam | eps | nsrom) on image-level labels"
DESCRIPTION = HELP + """.

Input: a dataset (data.*) with image-level labels, plus saliency maps for method eps.
Output, in <run>/<train_cls.out> (default classifier/): last.pt (resumable state), final.pt
(weights + meta for `wsss cams`), metrics.jsonl, train_cls.log, tensorboard/train_cls/.
Method nsrom also writes the accumulated attention maps to <run>/<train_cls.oaa_out>/<id>.npz
(default oaa/), the input of `wsss train-iam`.

An existing last.pt is resumed (same iteration, learning rate, optimiser and random state)
unless --no-resume. Multi-process: torchrun --nproc_per_node N -m wsss.cli train-cls ...
(train_cls.batch_size is the global batch)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    add_resume_argument(parser)


def run(args: argparse.Namespace) -> int:
    from wsss.stages.context import stage_context
    from wsss.stages.train_classifier import check_classifier_config, train_classifier

    cfg = config_from_args(args)
    check_classifier_config(cfg)  # before the run directory is created
    ctx = stage_context(cfg, args.config)
    final = train_classifier(ctx, resume=not args.no_resume)
    if int(os.environ.get('RANK', '0')) == 0:
        out = final.parent
        print(f"train-cls: final weights {final}")
        print(f"train-cls: checkpoints, metrics.jsonl and logs in {out} (TensorBoard: {out / 'tensorboard'})")
        if cfg.train_cls.method == "nsrom":
            print(f"train-cls: accumulated attention maps in {ctx.path(cfg.train_cls.oaa_out)}")
    return 0
