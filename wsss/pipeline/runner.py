"""Execute a planned pipeline: run or skip each step, keep markers, clear stale outputs, summarise.

Every stage is resumable on its own (training from ``last.pt``, offline stages skip finished
per-image files, all writes atomic), so re-running the same command after an interruption, even
``kill -9``, continues where it stopped. A step's outputs are removed only when its start marker
shows they were made with other settings.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from wsss.config import Config
from wsss.io import write_text_atomic
from wsss.pipeline.planner import PlannedStep, Step, marker_dir, plan, read_marker
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


def step_outputs(step: Step, cfg: Config, ctx: StageContext) -> list[tuple[Path, str]]:
    """The outputs of a step: ``(path, kind)`` with kind ``file`` (must exist) or ``dir`` (must hold
    one file per id of the step's split, checked by :func:`outputs_complete`)."""
    s = step.stage
    if s == "train_cls":
        return [(ctx.path(cfg.train_cls.out) / "final.pt", "file")]
    if s == "train_iam":
        return [(ctx.path(cfg.iam.out) / "final.pt", "file")]
    if s == "cams":
        outs = [(ctx.path(cfg.cams.out), "dir")]
        if cfg.train_cls.method == "nsrom":
            outs.append((ctx.path(cfg.cams.oa_out), "dir"))
        return outs
    if s == "labels":
        return [(ctx.path(cfg.labels.out), "dir")]
    if s == "crf":
        return [(ctx.path(cfg.crf.out), "dir")]
    if s == "train_seg":
        return [(ctx.path(cfg.train_seg.out) / "final.pt", "file")]
    if s == "predict":
        return [(ctx.path(cfg.predict.out), "dir")]
    if s == "eval":
        return [(eval_json_path(ctx, step.name), "file")]
    raise ValueError(s)


def step_split(step: Step, cfg: Config) -> str | None:
    return {"cams": cfg.cams.split, "labels": cfg.labels.split, "crf": cfg.crf.split,
            "predict": cfg.predict.split}.get(step.stage)


def eval_json_path(ctx: StageContext, step_name: str) -> Path:
    return ctx.run_dir / "eval" / f"{step_name}.json"


def outputs_complete(step: Step, cfg: Config, ctx: StageContext) -> bool:
    split = step_split(step, cfg)
    ids = ctx.split_ids(split) if split else []
    for path, kind in step_outputs(step, cfg, ctx):
        if kind == "file" and not path.is_file():
            return False
        if kind == "dir":
            suffix = ".png" if step.stage in ("labels", "crf", "predict") else ".npz"
            if not all((path / f"{i}{suffix}").is_file() for i in ids):
                return False
    return True


def clear_outputs(step: Step, cfg: Config, ctx: StageContext) -> None:
    """Remove a step's stale outputs (made with other settings)."""
    for path, kind in step_outputs(step, cfg, ctx):
        target = path.parent if (kind == "file" and step.stage.startswith("train")) else path
        if target.is_dir():
            shutil.rmtree(target)
        elif target.is_file():
            target.unlink()


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
        return evaluate_step(ctx, step.name, eval_json_path(ctx, step.name))
    raise ValueError(s)


def make_plan(cfg: Config, steps: list[Step], run_dir: Path, start_from: str | None = None,
              only: str | None = None) -> list[PlannedStep]:
    def complete(step: Step, scfg: Config) -> bool:
        return outputs_complete(step, scfg, StageContext(scfg, run_dir))

    return plan(cfg, steps, run_dir, complete, start_from=start_from, only=only)


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
        forced = p.reason.startswith("forced")
        if rank == 0:
            if done.exists():
                done.unlink()
            if stale or forced:
                clear_outputs(p.step, p.cfg, ctx)
            write_text_atomic(started, json.dumps({"fingerprint": p.fingerprint, "time": time.time()}))
        _barrier(p.cfg.run.device)
        log(f"[{p.step.name}] {p.step.stage}: {p.reason}" + (" (old outputs removed)" if stale or forced else ""))
        t0 = time.time()
        run_stage(p.step, ctx, resume=resume and not (stale or forced))
        _barrier(p.cfg.run.device)
        seconds = time.time() - t0
        if rank == 0:
            write_text_atomic(done, json.dumps({"fingerprint": p.fingerprint, "seconds": seconds}))
        log(f"[{p.step.name}] done in {seconds:.1f} s")
        records.append({"step": p.step.name, "stage": p.step.stage, "action": "run", "seconds": seconds})
    return records
