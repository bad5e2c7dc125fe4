"""The stage planner: which steps of a pipeline run, which are skipped, and why.

A pipeline is an ordered list of steps; each step runs one stage with its own config overrides.
Each step gets a fingerprint: a hash of the stage name, the config sections the stage reads, the
contents of the split lists it uses, and the fingerprint of the step before it (so a change
re-runs that step **and every step after it**). A finished step leaves a marker
``<run>/.steps/<name>.done.json`` holding its fingerprint; a step is skipped when its marker
matches and its outputs exist. Settings at their default value are left out of the hash, so a
setting that a newer wsss adds (with a default that keeps the old behaviour) leaves finished steps
valid. A started step leaves ``<name>.started.json``: when a re-run finds a
start marker with another fingerprint, the step's old outputs are stale and are removed first.

Pure logic over a config and a directory: no stage is imported here.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from wsss.config import Config, apply_overrides, from_dict, to_dict
from wsss.errors import ConfigError

#: A step name: it becomes file names under ``<run>/.steps`` and ``<run>/eval``.
STEP_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")

# Config sections each stage reads (besides `data`, read by every stage, and run.seed).
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "train_cls": ("model", "train_cls"),
    "train_iam": ("model", "train_cls", "iam"),
    "cams": ("cams",),
    "labels": ("labels",),
    "crf": ("crf",),
    "train_seg": ("train_seg",),
    "predict": ("predict",),
    "eval": ("eval",),
}


@dataclass(frozen=True)
class Step:
    """One step: a name unique in the pipeline, the stage it runs, and its overrides."""

    name: str
    stage: str
    overrides: tuple[str, ...] = ()


@dataclass
class PlannedStep:
    step: Step
    cfg: Config
    fingerprint: str
    action: str          # "run" | "skip"
    reason: str
    # Start from scratch (remove the step's outputs, no resume): forced by --from/--only, or an
    # earlier step runs (its outputs, this step's inputs, are being remade). A step that is only
    # "not done yet" or has "outputs incomplete" resumes instead.
    fresh: bool = False
    outputs: list = field(default_factory=list)   # wiring.Output list, attached by the runner


def parse_steps(raw: list[dict[str, Any]]) -> list[Step]:
    """Steps from the config's ``pipeline.steps`` list of ``{name, stage, set: [k=v, ...]}``."""
    steps, seen = [], set()
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or "stage" not in item:
            raise ConfigError(f"config key 'pipeline.steps[{i}]' must be a mapping with a 'stage'")
        unknown = set(item) - {"name", "stage", "set"}
        if unknown:
            raise ConfigError(f"unknown config key 'pipeline.steps[{i}].{sorted(unknown)[0]}'")
        stage = item["stage"]
        if stage not in STAGE_SECTIONS:
            raise ConfigError(f"config key 'pipeline.steps[{i}].stage': unknown stage {stage!r} "
                              f"(stages: {', '.join(STAGE_SECTIONS)})")
        name = str(item.get("name") or stage)
        if not STEP_NAME.fullmatch(name):
            raise ConfigError(f"config key 'pipeline.steps[{i}].name': {name!r} is not a plain name "
                              f"(letters, digits, '_', '-', '.'; not starting with '.'): step names "
                              f"become file names in the run directory")
        if name in seen:
            raise ConfigError(f"config key 'pipeline.steps[{i}].name': step name {name!r} is used twice")
        seen.add(name)
        sets = item.get("set") or []
        if not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
            raise ConfigError(f"config key 'pipeline.steps[{i}].set' must be a list of key=value strings")
        steps.append(Step(name, stage, tuple(sets)))
    if not steps:
        raise ConfigError("config key 'pipeline.steps' is empty: nothing to run")
    return steps


def step_config(cfg: Config, step: Step) -> Config:
    """The config a step runs with: the pipeline's config plus the step's overrides."""
    if not step.overrides:
        return cfg
    return from_dict(Config, apply_overrides(to_dict(cfg), list(step.overrides)))


def _split_digest(cfg: Config, split: str) -> str:
    """Hash of a split list's contents ('' when it cannot be found: the stage will say why)."""
    from wsss.data.splits import resolve_split

    try:
        path = resolve_split(cfg.data, split)
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except Exception:  # noqa: BLE001 - the stage itself reports a missing split
        return ""


def _changed(section: dict, default: dict) -> dict:
    """The entries of a config section that differ from the schema's defaults."""
    return {k: v for k, v in section.items() if k not in default or default[k] != v}


def fingerprint(cfg: Config, step: Step, previous: str = "") -> str:
    """A stable hash of what determines a step's outputs (see the module docstring)."""
    d = to_dict(cfg)
    defaults = to_dict(Config())
    payload: dict[str, Any] = {
        "stage": step.stage,
        "data": _changed(d["data"], defaults["data"]),
        "seed": d["run"]["seed"],
        "sections": {s: _changed(d[s], defaults[s]) for s in STAGE_SECTIONS[step.stage]},
        "previous": previous,
    }
    splits = {v for s in STAGE_SECTIONS[step.stage] for k, v in d[s].items() if k == "split"}
    if step.stage == "train_cls" or step.stage == "train_iam":
        splits.add(cfg.data.train_split)
    payload["split_lists"] = {s: _split_digest(cfg, s) for s in sorted(splits)}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def marker_dir(run_dir: Path) -> Path:
    return Path(run_dir) / ".steps"


def read_marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def plan(cfg: Config, steps: list[Step], run_dir: Path,
         outputs_complete: Callable[[Step, Config], bool],
         start_from: str | None = None, only: str | None = None,
         until: str | None = None) -> list[PlannedStep]:
    """Decide, for every step in order, whether it runs or is skipped.

    ``outputs_complete(step, cfg)`` says whether a step's outputs exist. ``start_from`` forces that
    step and every later one to run; ``only`` plans that single step (forced to run); ``until``
    plans the steps up to and including that one (the later ones are left out, untouched).
    """
    names = [s.name for s in steps]
    if until is not None and start_from is not None and until in names and start_from in names \
            and names.index(until) < names.index(start_from):
        raise ConfigError(f"--until {until} comes before --from {start_from}")
    for flag, value in (("--from", start_from), ("--only", only), ("--until", until)):
        if value is not None and value not in names:
            raise ConfigError(f"{flag} {value}: no such step (steps: {', '.join(names)})")
    planned: list[PlannedStep] = []
    previous, forced_from, earlier = "", False, None
    for step in steps:
        scfg = step_config(cfg, step)
        fp = fingerprint(scfg, step, previous)
        previous = fp
        if step.name == start_from:
            forced_from = True
        if only is not None and step.name != only:
            continue
        done = read_marker(marker_dir(run_dir) / f"{step.name}.done.json")
        fresh = False
        if only is not None or forced_from:
            action, reason, fresh = "run", "forced (--only)" if only else "forced (--from)", True
        elif earlier is not None:
            action, reason, fresh = "run", f"an earlier step runs ({earlier})", True
        elif done is None:
            action, reason = "run", "not done yet"
        elif done.get("fingerprint") != fp:
            action, reason, fresh = "run", "settings or inputs changed", True
        elif not outputs_complete(step, scfg):
            action, reason = "run", "outputs incomplete"
        else:
            action, reason = "skip", "done, unchanged"
        if action == "run" and earlier is None:
            earlier = step.name  # every step after one that runs runs too
        planned.append(PlannedStep(step, scfg, fp, action, reason, fresh))
        if step.name == until:
            break
    return planned
