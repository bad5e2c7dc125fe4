"""`wsss train-seg`: train a DeepLab segmentation network on pseudo labels."""

from __future__ import annotations

import argparse
from pathlib import Path

from wsss.commands.common import add_config_arguments, add_resume_argument, config_from_args

NAME = "train-seg"
HELP = "train a DeepLab segmentation network on pseudo labels"
DESCRIPTION = HELP + """.

Input: the images of train_seg.split and a named folder of pseudo labels <id>.png (train_seg.labels,
run-relative or absolute; 255 = ignore). The ground-truth folder is refused as pseudo labels (also
through a symlink or a relative path); --supervision full trains on it on purpose (the fully
supervised reference).
Output: <run>/<train_seg.out>/ (default segmenter/): last.pt (resume), final.pt (the trained
DeepLab-v2 with its initialisation and label source), train_seg.log, metrics.jsonl,
tensorboard/train_seg/, label_source.json (folder used + label coverage).
One iteration = one optimiser step over train_seg.batch_size x train_seg.accumulate images.
Multi-process: torchrun --nproc_per_node N -m wsss.cli train-seg ... (batch_size is global)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--labels", metavar="DIR",
                        help="pseudo-label folder (sets train_seg.labels): an existing folder relative to "
                             "the working directory, else a folder inside the run directory")
    parser.add_argument("--supervision", choices=("weak", "full"),
                        help="weak: pseudo labels (default); full: the ground truth, on purpose")
    add_resume_argument(parser)


def run(args: argparse.Namespace) -> int:
    from wsss.stages.context import stage_context
    from wsss.stages.train_segmenter import train_segmenter

    cfg = config_from_args(args)
    if args.labels:
        typed = Path(args.labels).expanduser()
        cfg.train_seg.labels = str(typed.absolute()) if typed.is_dir() else args.labels
    if args.supervision:
        cfg.train_seg.supervision = args.supervision
    ctx = stage_context(cfg, args.config)
    final = train_segmenter(ctx, resume=not args.no_resume)
    from wsss.engine.distributed import get_rank

    if get_rank() == 0:
        print(f"segmenter: {final} ({cfg.train_seg.iterations} iterations, "
              f"supervision {cfg.train_seg.supervision}; labels and coverage in "
              f"{ctx.path(cfg.train_seg.out) / 'label_source.json'})")
    return 0
