"""`wsss demo`: generate synthetic scenes and run EPS, NSROM and their combination on a CPU."""

from __future__ import annotations

import argparse

NAME = "demo"
HELP = "generate synthetic scenes and run the CAM baseline, EPS, NSROM and EPS+POM+NSRM on a CPU"
DESCRIPTION = HELP + """.

Input: nothing (the scenes are generated into OUT/data, or reused when they are there).
Output: the run directory OUT (default runs/demo) of the pipeline configs/demo/demo.yaml, with
every stage's outputs (classifiers, CAMs, pseudo labels, DeepLab models, predictions, eval/*.json),
and a comparison table (printed, and in OUT/demo_table.txt): pseudo-label and DeepLab mIoU,
coverage, co-occurrence ratios (train:rails, boat:water) and where the pixels of the objects the
saliency map missed go. A re-run skips finished steps and resumes an interrupted one."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="run directory (default runs/demo, or runs/demo_fast with --fast)")
    parser.add_argument("--fast", action="store_true",
                        help="shorter NSROM and DeepLab schedules (the CAM and EPS classifiers as in the demo; about 7 minutes on 2 cores)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch threads (default: the usable CPUs, at most 2)")


def run(args: argparse.Namespace) -> int:
    from wsss.demo import run_demo

    out = args.out or ("runs/demo_fast" if args.fast else "runs/demo")
    run_demo(out, fast=args.fast, threads=args.threads)
    return 0
