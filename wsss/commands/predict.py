"""`wsss predict`: predict label maps with a trained segmentation network."""

from __future__ import annotations

import argparse

from wsss.commands.common import add_config_arguments, not_available

NAME = "predict"
HELP = "predict label maps with a trained segmentation network"
DESCRIPTION = HELP + """.

Input: a trained segmenter and a split.
Output: <run>/pred/<id>.png (+ probabilities for CRF when asked)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


run = not_available(NAME, "segmentation-stage issue")
