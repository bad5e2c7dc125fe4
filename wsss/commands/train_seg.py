"""`wsss train-seg`: train a DeepLab segmentation network on pseudo labels."""

from __future__ import annotations

import argparse

from wsss.commands.common import add_config_arguments, not_available

NAME = "train-seg"
HELP = "train a DeepLab segmentation network on pseudo labels"
DESCRIPTION = HELP + """.

Input: a named folder of pseudo labels (never the ground truth unless supervision: full).
Output: <run>/segmenter/ checkpoints and final weights."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


run = not_available(NAME, "segmentation-stage issue")
