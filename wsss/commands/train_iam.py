"""`wsss train-iam`: train NSROM's integral attention model on the accumulated attention maps."""

from __future__ import annotations

import argparse
import os

from wsss.commands.common import add_config_arguments, add_resume_argument, config_from_args

NAME = "train-iam"
HELP = "train NSROM's integral attention model on the accumulated attention maps"
DESCRIPTION = HELP + """.

Input: the training images (data.*) and <run>/<iam.attention>/<id>.npz (default oaa/), the maps
that `wsss train-cls` with train_cls.method=nsrom exported. Same model.* and
train_cls.square_size as that classifier.
Output, in <run>/<iam.out> (default iam/): last.pt, final.pt (head iam: its maps are the
OA-CAMs of `wsss cams`), metrics.jsonl, train_iam.log, tensorboard/train_iam/.

An existing last.pt is resumed unless --no-resume. Multi-process: torchrun --nproc_per_node N
-m wsss.cli train-iam ... (iam.batch_size is the global batch)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    add_resume_argument(parser)


def run(args: argparse.Namespace) -> int:
    from wsss.stages.context import stage_context
    from wsss.stages.train_iam import check_iam_config, train_iam

    cfg = config_from_args(args)
    check_iam_config(cfg)  # before the run directory is created
    ctx = stage_context(cfg, args.config)
    final = train_iam(ctx, resume=not args.no_resume)
    if int(os.environ.get('RANK', '0')) == 0:
        print(f"train-iam: final weights {final}")
        print(f"train-iam: checkpoints, metrics.jsonl and logs in {final.parent}")
    return 0
