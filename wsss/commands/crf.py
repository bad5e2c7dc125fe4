"""`wsss crf`: refine label maps or probabilities with a dense CRF."""

from __future__ import annotations

import argparse

from wsss.commands.common import add_config_arguments, config_from_args

NAME = "crf"
HELP = "refine label maps or probabilities with a dense CRF"
DESCRIPTION = HELP + """.

Input: <crf.input>/<id>.npz probabilities (`probs`, `labels`) or <id>.png labels for each id of
crf.split, and the dataset's images.
Output: <crf.out>/<id>.png refined palette label maps (255 pixels of a label input stay 255).

CRF values crf.* (DeepLab-v2 defaults). Folders are relative to the run directory unless absolute.
Done images are skipped; under `torchrun --nproc_per_node N` the ids are split over the processes."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--input", metavar="DIR", help="folder of <id>.npz / <id>.png (default: crf.input)")
    parser.add_argument("--out", metavar="DIR", help="folder of refined labels (default: crf.out)")
    parser.add_argument("--overwrite", action="store_true", help="refine again images whose output exists")


def run(args: argparse.Namespace) -> int:
    from wsss.stages.context import stage_context
    from wsss.stages.crf import run_crf

    cfg = config_from_args(args)
    if args.input:
        cfg.crf.input = args.input
    if args.out:
        cfg.crf.out = args.out
    if args.overwrite:
        cfg.crf.overwrite = True
    s = run_crf(stage_context(cfg, args.config))
    kinds = ", ".join(f"{n} from {k}" for k, n in s["inputs"].items() if n)
    print(f"crf on {s['split']}: {s['refined']} refined ({kinds or 'none'}), {s['done_before']} already done "
          f"({s['images_per_s']:.2f} images/s, rank {s['rank']}/{s['world_size']})")
    print(f"changed pixels: {s['changed_share']:.4f} on average")
    print(f"refined labels: {s['out']}")
    return 0
