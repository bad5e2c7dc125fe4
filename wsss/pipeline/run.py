"""`run_pipeline`: load a config, plan its steps, run them, and print the summary.

The run directory ``<run.out_dir>/<run.name or config stem>`` holds, besides every step's outputs
(folders named in the step's settings): ``config.yaml`` (the pipeline's resolved config) and
``meta.json`` (version, git commit, device, world size); ``meta_<stage>.json`` of each stage;
``.steps/<step>.{config.yaml,started.json,done.json}`` (each step's resolved config and its
markers with the fingerprint); ``eval/<step>.json`` of every evaluation; ``summary.json``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

from wsss.config import Config, load_config
from wsss.errors import WsssError
from wsss.engine.runinfo import write_run_info
from wsss.pipeline.planner import parse_steps
from wsss.pipeline.runner import describe_plan, execute, make_plan
from wsss.pipeline.summary import format_table, write_summary
from wsss.stages.context import run_dir_for


#: The lock file of a run directory: held (flock) by the process that runs its pipeline.
LOCK_NAME = ".lock"


@contextlib.contextmanager
def run_directory_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``<run_dir>/.lock`` for the duration of a pipeline; a second ``wsss run`` on the same
    directory fails at once with the holder's PID. The kernel drops the lock when the holder
    exits, even on ``kill -9``, so a stale file never blocks a later run."""
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise WsssError(f"run directory {run_dir} is in use by another `wsss run` (PID {holder}); "
                            f"wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def run_pipeline(config_paths: Sequence[str | Path], overrides: Sequence[str] = (), *,
                 start_from: str | None = None, only: str | None = None, until: str | None = None,
                 dry_run: bool = False,
                 log: Callable[[str], None] = print, base: dict | None = None) -> dict:
    """Run (or, with ``dry_run``, only plan) the pipeline of a config. Returns
    ``{"run_dir", "plan", "records", "summary"}``."""
    cfg = load_config(Config, list(config_paths), list(overrides), base=base)
    steps = parse_steps(cfg.pipeline.steps)
    run_dir = run_dir_for(cfg, list(config_paths))
    planned = make_plan(cfg, steps, run_dir, start_from=start_from, only=only, until=until)
    log(f"run {run_dir}: {len(steps)} steps")
    log(describe_plan(planned))
    result: dict = {"run_dir": run_dir, "plan": planned, "records": [], "summary": []}
    if dry_run:
        return result
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    run_dir.mkdir(parents=True, exist_ok=True)
    # one job per run directory: only rank 0 of a torchrun job takes the lock
    with run_directory_lock(run_dir) if rank == 0 else contextlib.nullcontext():
        if rank == 0:   # plan again under the lock: a run that just finished may have moved on
            planned = make_plan(cfg, steps, run_dir, start_from=start_from, only=only, until=until)
            result["plan"] = planned
            write_run_info(run_dir, cfg, device=cfg.run.device, world_size=world)
        result["records"] = execute(planned, run_dir, log=log)
        _finish(result, cfg, steps, run_dir, rank, world, log)
    return result


def _finish(result: dict, cfg: Config, steps, run_dir: Path, rank: int, world: int,
            log: Callable[[str], None]) -> None:
    if rank == 0:
        # the stages each wrote their step's config; leave the pipeline's own at the top level
        write_run_info(run_dir, cfg, device=cfg.run.device, world_size=world)
        rows, path = write_summary(run_dir, [s.name for s in steps if s.stage == "eval"])
        result["summary"] = rows
        if rows:
            log("\n" + format_table(rows))
        log(f"outputs in {run_dir} (summary: {path})")
    if world > 1:
        from wsss.engine.distributed import cleanup

        cleanup()
