"""`wsss demo`: generate synthetic scenes and run EPS, NSROM and their combination on a CPU."""

from __future__ import annotations

import argparse

from wsss.commands.common import add_config_arguments, not_available

NAME = "demo"
HELP = "generate synthetic scenes and run EPS, NSROM and their combination on a CPU"
DESCRIPTION = HELP + """.

Input: nothing.
Output: a run directory and a comparison table."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


run = not_available(NAME, "main-job issue")
