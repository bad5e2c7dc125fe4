"""`wsss cams`: infer class activation maps (multi-scale + flip) for a split."""

from __future__ import annotations

import argparse

from wsss.commands.common import add_config_arguments, not_available

NAME = "cams"
HELP = "infer class activation maps (multi-scale + flip) for a split"
DESCRIPTION = HELP + """.

Input: a trained classifier and a split.
Output: <run>/cams/<id>.npz, one file per image with the maps of its labelled classes."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


run = not_available(NAME, "EPS/NSROM classifier issue")
