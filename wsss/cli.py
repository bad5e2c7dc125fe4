"""The ``wsss`` command: one subcommand per pipeline stage; each only wraps the library API.

Every subcommand lives in :mod:`wsss.commands` as a module with ``NAME``, ``HELP``,
``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import errno
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


def describe_os_error(exc: OSError) -> str:
    """One line for a file-system error: the cause and the path it concerns."""
    causes = {errno.ENOSPC: "no space left on the device", errno.EACCES: "permission denied",
              errno.EROFS: "read-only file system", errno.ENOTDIR: "a file stands where a folder is needed",
              errno.EEXIST: "it already exists", errno.EISDIR: "it is a folder"}
    cause = causes.get(exc.errno, exc.strerror or str(exc))
    where = exc.filename if exc.filename is not None else "?"
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    return f"{where}: {cause}"


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
    except OSError as exc:
        # a folder that cannot be written (read-only, a file in its place, a full disk): one line
        print(f"wsss {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        # torch.save reports a failed write (e.g. a full disk) as a RuntimeError of its zip writer
        if "inline_container" not in str(exc) and "file write failed" not in str(exc):
            raise
        print(f"wsss {args.command}: error: writing a checkpoint failed (is the disk full?): "
              f"{str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"wsss {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
