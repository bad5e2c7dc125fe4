"""Arguments shared by subcommands: config files and dotted overrides."""

from __future__ import annotations

import argparse

from wsss.config import Config, load_config


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument("--config", "-c", action="append", default=[], metavar="FILE",
                        required=required,
                        help="YAML config file (repeatable; later files override earlier ones)")
    parser.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override one config value, e.g. --set train_cls.lr=0.01 (repeatable)")


def add_resume_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-resume`` for training commands (by default an existing last.pt is resumed)."""
    parser.add_argument("--no-resume", action="store_true",
                        help="start from iteration 0 even when <out>/last.pt exists (it is overwritten)")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(Config, args.config, args.overrides)


