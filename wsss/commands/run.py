"""`wsss run CONFIG`: run a whole method end to end, resuming where it stopped."""

from __future__ import annotations

import argparse

NAME = "run"
HELP = "run a whole method end to end from one config, resuming where it stopped"
DESCRIPTION = HELP + """.

Input: a config file whose pipeline.steps list the stages in order (see configs/pipelines/).
Output: a run directory <run.out_dir>/<config name> with every stage's outputs, logs, the resolved
config, provenance (version, commit, device, world size), eval/<step>.json and summary.json.
Finished steps whose settings and inputs are unchanged are skipped; a changed setting re-runs
that step and every later one; an interrupted step resumes (also after kill -9)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="+", help="YAML config file(s); later files override earlier ones")
    parser.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override one config value (repeatable)")
    parser.add_argument("--from", dest="start_from", metavar="STEP", help="re-run from this step on")
    parser.add_argument("--only", metavar="STEP", help="run only this step")
    parser.add_argument("--until", metavar="STEP", help="stop after this step (e.g. the pseudo labels' eval)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (run/skip and why) and stop")


def run(args: argparse.Namespace) -> int:
    from wsss.pipeline.run import run_pipeline

    run_pipeline(args.config, args.overrides, start_from=args.start_from, only=args.only,
                 until=args.until, dry_run=args.dry_run)
    return 0
