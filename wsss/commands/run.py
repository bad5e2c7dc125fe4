"""`wsss run`: run a whole method end to end from one config, resuming where it stopped."""

from __future__ import annotations

import argparse

from wsss.commands.common import add_config_arguments, not_available

NAME = "run"
HELP = "run a whole method end to end from one config, resuming where it stopped"
DESCRIPTION = HELP + """.

Input: a config file.
Output: a run directory with every stage's outputs and a summary table."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


run = not_available(NAME, "main-job issue")
