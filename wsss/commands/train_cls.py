"""`wsss train-cls`: train a classifier (cam | eps | nsrom) on image-level labels."""

from __future__ import annotations

import argparse

from wsss.commands.common import add_config_arguments, not_available

NAME = "train-cls"
HELP = "train a classifier (cam | eps | nsrom) on image-level labels"
DESCRIPTION = HELP + """.

Input: a dataset (data.*) with image-level labels (+ saliency for EPS).
Output: <run>/classifier/ checkpoints, TensorBoard logs and the final weights."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


run = not_available(NAME, "EPS/NSROM classifier issue")
