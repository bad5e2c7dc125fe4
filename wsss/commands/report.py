"""`wsss report`: write a visual report (HTML) of a run's maps, labels and predictions."""

from __future__ import annotations

import argparse

from wsss.commands.common import add_config_arguments, not_available

NAME = "report"
HELP = "write a visual report (HTML) of a run's maps, labels and predictions"
DESCRIPTION = HELP + """.

Input: a run directory.
Output: <run>/report/index.html."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


run = not_available(NAME, "report issue")
