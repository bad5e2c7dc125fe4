"""Execute a planned pipeline: run or skip each step, keep markers, clear stale outputs, summarise.

Every stage is resumable on its own (training from ``last.pt``, offline stages skip finished
per-image files, all writes atomic), so re-running the same command after an interruption, even
``kill -9``, continues where it stopped: the first step that is not done resumes. A step's
outputs are removed first when its start marker shows they were made with other settings, when
the plan forces it (``--from``, ``--only``) or when an earlier step runs (its inputs are remade).
Each step's resolved config is kept in ``<run>/.steps/<step>.config.yaml``. Under torchrun every
rank runs every stage (training stages as DDP, offline stages on their shard of the ids) except
``eval``, which rank 0 runs alone; ranks meet at a barrier between steps.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from wsss.config import Config
from wsss.config.loader import dump_yaml
from wsss.errors import ConfigError
from wsss.io import write_text_atomic
from wsss.pipeline.planner import PlannedStep, Step, marker_dir, plan, read_marker, step_config
from wsss.pipeline.wiring import Output, eval_json_path, pipeline_io, placement_problems, territory, wiring_problems
from wsss.stages.context import StageContext


def _world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _barrier(device: str = "auto") -> None:
    """Under torchrun, wait for every rank (joining the job's process group if a training stage
    has closed it); a no-op for one process."""
    if _world()[1] == 1:
        return
    import torch.distributed as dist

    from wsss.engine.distributed import init_distributed

    init_distributed(device)
    dist.barrier()


def outputs_complete(outputs: list[Output], ctx: StageContext) -> bool:
    """Whether every output of a step exists (one file per id of its split for ``ids`` outputs)."""
    for out in outputs:
        if out.kind == "file" and not out.path.is_file():
            return False
        if out.kind == "folder" and not out.path.is_dir():
            return False
        if out.kind == "ids" and not all((out.path / f"{i}{out.suffix}").is_file()
                                         for i in ctx.split_ids(out.split)):
            return False
    return True


def _check_removable(target: Path, ctx: StageContext) -> None:
    """Refuse to remove the run directory, a folder holding it, or anything of the dataset (an
    output folder misconfigured as ``.`` or as a data folder must not cost the data)."""
    target = target.resolve()
    run_dir = ctx.run_dir.resolve()
    protected = [("the run directory", run_dir)]
    if ctx.cfg.data.root:
        protected.append(("the dataset", Path(ctx.cfg.data.root).expanduser().resolve()))
    for what, path in protected:
        if target == path or target in path.parents or (what == "the dataset" and path in target.parents):
            raise ConfigError(f"an output of this step is {target}, which is (or holds, or lies in) {what} "
                              f"{path}: give the step an output folder of its own")


#: Written into every output folder a step owns; a folder is only ever removed by the step named in it.
OWNER_FILE = ".wsss-step"


def claim_outputs(step: Step, outputs: list[Output]) -> None:
    """Create the output folders a step owns and mark them as the step's (see :data:`OWNER_FILE`)."""
    for out in outputs:
        folder = territory(step, out)
        if out.kind == "file" and not step.stage.startswith("train"):
            folder.parent.mkdir(parents=True, exist_ok=True)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        owner = folder / OWNER_FILE
        if not owner.is_file() or owner.read_text().strip() != step.name:
            write_text_atomic(owner, step.name + "\n")


def _owner_of(folder: Path) -> str | None:
    try:
        return (folder / OWNER_FILE).read_text().strip()
    except OSError:
        return None


def clear_outputs(step: Step, outputs: list[Output], ctx: StageContext) -> int:
    """Remove a step's outputs before it starts afresh (a training step: its whole folder, so that
    no ``last.pt`` of other settings is resumed). Returns how many paths were removed.

    Only what the step wrote is removed: a folder must carry the step's :data:`OWNER_FILE` (a
    folder of the run directory without one, from a run before owner files existed, counts as the
    step's when the run's ``.steps`` records that this step started); anything else is refused.
    """
    removed = 0
    started = (marker_dir(ctx.run_dir) / f"{step.name}.started.json").is_file()
    for out in outputs:
        target = territory(step, out)
        if not target.exists():
            continue
        _check_removable(target, ctx)
        if target.is_dir():
            owner = _owner_of(target)
            legacy = owner is None and started and ctx.run_dir.resolve() in target.resolve().parents
            if owner != step.name and not legacy:
                who = f"step {owner!r}" if owner else "no step of this run"
                raise ConfigError(f"step {step.name!r} would remove {target} to start afresh, but it was "
                                  f"written by {who}: move it away or give the step another folder")
            shutil.rmtree(target)
        else:
            target.unlink()
        removed += 1
    return removed


def run_stage(step: Step, ctx: StageContext, resume: bool = True) -> Any:
    """Call the library function of a step's stage."""
    s = step.stage
    if s == "train_cls":
        from wsss.stages.train_classifier import train_classifier
        return train_classifier(ctx, resume=resume)
    if s == "train_iam":
        from wsss.stages.train_iam import train_iam
        return train_iam(ctx, resume=resume)
    if s == "cams":
        from wsss.stages.infer_cams import infer_cams
        return infer_cams(ctx)
    if s == "labels":
        from wsss.stages.make_labels import make_labels
        return make_labels(ctx)
    if s == "crf":
        from wsss.stages.crf import run_crf
        return run_crf(ctx)
    if s == "train_seg":
        from wsss.stages.train_segmenter import train_segmenter
        return train_segmenter(ctx, resume=resume)
    if s == "predict":
        from wsss.stages.predict import predict
        return predict(ctx)
    if s == "eval":
        from wsss.stages.evaluate import evaluate_step
        return evaluate_step(ctx, step.name, eval_json_path(ctx.run_dir, step.name))
    raise ValueError(s)


def make_plan(cfg: Config, steps: list[Step], run_dir: Path, start_from: str | None = None,
              only: str | None = None, check_wiring: bool = True, until: str | None = None) -> list[PlannedStep]:
    """Plan the steps (:func:`~wsss.pipeline.planner.plan`) with their outputs attached. With
    ``check_wiring`` a :class:`ConfigError` lists every input that no earlier step writes and
    that does not exist, and every output two steps would write."""
    ios = pipeline_io(steps, [step_config(cfg, s) for s in steps], run_dir)
    problems = placement_problems(ios, run_dir, cfg.data.root or None)
    if problems:
        raise ConfigError("the pipeline's outputs are misplaced:\n  " + "\n  ".join(dict.fromkeys(problems)))
    if check_wiring:
        problems = wiring_problems(ios)
        if problems:
            raise ConfigError("the pipeline's steps do not fit together:\n  " + "\n  ".join(problems))
    outputs = {io.step.name: io.outputs for io in ios}

    def complete(step: Step, scfg: Config) -> bool:
        return outputs_complete(outputs[step.name], StageContext(scfg, run_dir))

    planned = plan(cfg, steps, run_dir, complete, start_from=start_from, only=only, until=until)
    for p in planned:
        p.outputs = outputs[p.step.name]
    return planned


def describe_plan(planned: list[PlannedStep]) -> str:
    width = max(len(p.step.name) for p in planned)
    lines = [f"  {p.step.name:<{width}}  {p.step.stage:<9}  {p.action:<4}  {p.reason}" for p in planned]
    return "\n".join(lines)


def execute(planned: list[PlannedStep], run_dir: Path, log: Callable[[str], None] = print,
            resume: bool = True) -> list[dict[str, Any]]:
    """Run the planned steps in order; returns one record per step (name, action, seconds)."""
    rank, _ = _world()
    markers = marker_dir(run_dir)
    markers.mkdir(parents=True, exist_ok=True)
    records = []
    for p in planned:
        ctx = StageContext(p.cfg, run_dir)
        if p.action == "skip":
            log(f"[{p.step.name}] skipped: {p.reason}")
            records.append({"step": p.step.name, "stage": p.step.stage, "action": "skip", "seconds": 0.0})
            continue
        started = markers / f"{p.step.name}.started.json"
        done = markers / f"{p.step.name}.done.json"
        previous = read_marker(started)
        stale = previous is not None and previous.get("fingerprint") != p.fingerprint
        fresh = stale or p.fresh
        removed = 0
        if rank == 0:
            if done.exists():
                done.unlink()
            if fresh:
                removed = clear_outputs(p.step, p.outputs, ctx)
            write_text_atomic(markers / f"{p.step.name}.config.yaml", dump_yaml(p.cfg))
            write_text_atomic(started, json.dumps({"fingerprint": p.fingerprint, "time": time.time()}))
            claim_outputs(p.step, p.outputs)
        _barrier(p.cfg.run.device)
        log(f"[{p.step.name}] {p.step.stage}: {p.reason}" + (" (old outputs removed)" if removed else ""))
        t0 = time.time()
        if p.step.stage != "eval" or rank == 0:   # one process evaluates; the others wait
            run_stage(p.step, ctx, resume=resume and not fresh)
        _barrier(p.cfg.run.device)
        seconds = time.time() - t0
        if rank == 0:
            write_text_atomic(done, json.dumps({"fingerprint": p.fingerprint, "seconds": seconds}))
        log(f"[{p.step.name}] done in {seconds:.1f} s")
        records.append({"step": p.step.name, "stage": p.step.stage, "action": "run", "seconds": seconds})
    return records
