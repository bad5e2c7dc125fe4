"""`wsss train-iam`: train NSROM's integral attention model on the accumulated attention maps."""

from __future__ import annotations

import argparse

from wsss.commands.common import add_config_arguments, not_available

NAME = "train-iam"
HELP = "train NSROM's integral attention model on the accumulated attention maps"
DESCRIPTION = HELP + """.

Input: <run>/oaa/ accumulated attention maps written by `wsss train-cls` with method nsrom.
Output: <run>/iam/ checkpoints and final weights; its maps are the OA-CAMs."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


run = not_available(NAME, "NSROM issue")
