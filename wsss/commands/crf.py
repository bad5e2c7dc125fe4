"""`wsss crf`: refine label maps or probabilities with a dense CRF."""

from __future__ import annotations

import argparse

from wsss.commands.common import add_config_arguments, not_available

NAME = "crf"
HELP = "refine label maps or probabilities with a dense CRF"
DESCRIPTION = HELP + """.

Input: a folder of probabilities (.npz) or labels (.png) and the images.
Output: a folder of refined label PNGs."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


run = not_available(NAME, "EPS issue")
