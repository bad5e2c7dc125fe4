"""`wsss labels`: turn CAMs into pseudo labels (eps | cam | nsrom BE+POM | nsrm)."""

from __future__ import annotations

import argparse

from wsss.commands.common import add_config_arguments, not_available

NAME = "labels"
HELP = "turn CAMs into pseudo labels (eps | cam | nsrom BE+POM | nsrm)"
DESCRIPTION = HELP + """.

Input: <run>/cams/ (+ saliency, + predictions for NSRM).
Output: <run>/labels/<id>.png palette PNGs, 255 = ignore."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


run = not_available(NAME, "EPS/NSROM issues")
