"""`wsss eval`: evaluate predicted label maps against ground truth (mIoU, P/R, boundary F1, ...)."""

from __future__ import annotations

import argparse

from wsss.commands.common import add_config_arguments, not_available

NAME = "eval"
HELP = "evaluate predicted label maps against ground truth (mIoU, P/R, boundary F1, ...)"
DESCRIPTION = HELP + """.

Input: --pred DIR of label PNGs and --gt DIR of ground-truth PNGs.
Output: a table on the terminal and a JSON file with every number and the protocol."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


run = not_available(NAME, "evaluator issue")
