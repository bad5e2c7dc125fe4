"""The ``wsss`` command: one subcommand per pipeline stage; each only wraps the library API.

Every subcommand lives in :mod:`wsss.commands` as a module with ``NAME``, ``HELP``,
``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import wsss
from wsss.errors import WsssError

# Order = order in `wsss --help`: the pipeline stages first, then the drivers and tools.
COMMAND_MODULES = (
    "data", "weights", "train_cls", "train_iam", "cams", "labels", "crf", "train_seg", "predict", "eval",
    "run", "demo", "report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsss",
        description="Weakly supervised semantic segmentation from image-level labels: "
                    "classifier -> CAMs -> pseudo labels -> segmentation -> evaluation.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"wsss {wsss.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for mod_name in COMMAND_MODULES:
        mod = importlib.import_module(f"wsss.commands.{mod_name}")
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except WsssError as exc:
        print(f"wsss {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"wsss {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
