"""What each step of a pipeline reads and writes, and whether the steps fit together.

Every stage's inputs and outputs are named in its config section (run-relative or absolute paths).
:func:`step_io` lists them per step; :func:`wiring_problems` checks a whole pipeline before anything
runs: an input that no earlier step writes and that does not exist yet, or two steps writing the
same output, is reported (so a pipeline that would fail at its ninth step after hours of training
fails at once, and two steps never overwrite each other's results).

Output kinds: ``file`` (must exist), ``ids`` (one ``<id><suffix>`` per id of ``split``), ``folder``
(must exist; its contents are not checked per id, e.g. NSROM's accumulated maps, which exist only
for images with a label).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from wsss.config import Config
from wsss.io import paths_overlap
from wsss.pipeline.planner import Step
from wsss.stages.context import StageContext


@dataclass(frozen=True)
class Output:
    path: Path
    kind: str               # "file" | "ids" | "folder"
    suffix: str = ""        # for "ids"
    split: str = ""         # for "ids"


@dataclass
class StepIO:
    step: Step
    cfg: Config
    inputs: list[tuple[Path, str]] = field(default_factory=list)   # (path, config key)
    outputs: list[Output] = field(default_factory=list)


def eval_json_path(run_dir: Path, step_name: str) -> Path:
    return Path(run_dir) / "eval" / f"{step_name}.json"


def probs_folder(out_dir: Path) -> Path:
    """``<out>_probs`` beside a prediction folder (as :func:`wsss.stages.predict.probs_folder`)."""
    return out_dir.parent / f"{out_dir.name}_probs"


def _classifier_method(cfg: Config, ctx: StageContext, earlier: list[StepIO]) -> str:
    """The method of the classifier a cams step reads: that of the train_cls step writing its
    checkpoint, else ``train_cls.method`` of the step's own config."""
    checkpoint = ctx.path(cfg.cams.checkpoint)
    for io in reversed(earlier):
        if io.step.stage == "train_cls" and any(o.path == checkpoint for o in io.outputs):
            return io.cfg.train_cls.method
    return cfg.train_cls.method


def step_io(step: Step, cfg: Config, run_dir: Path, earlier: list[StepIO] = ()) -> StepIO:
    """The inputs and outputs of one step (``earlier``: the steps before it, for the classifier
    method behind a cams step)."""
    ctx = StageContext(cfg, Path(run_dir))
    p = ctx.path
    io = StepIO(step, cfg)
    s = step.stage
    if s == "train_cls":
        io.outputs.append(Output(p(cfg.train_cls.out) / "final.pt", "file"))
        if cfg.train_cls.method == "nsrom":
            io.outputs.append(Output(p(cfg.train_cls.oaa_out), "folder"))
    elif s == "train_iam":
        io.inputs.append((p(cfg.iam.attention), "iam.attention"))
        io.outputs.append(Output(p(cfg.iam.out) / "final.pt", "file"))
    elif s == "cams":
        cc = cfg.cams
        io.inputs.append((p(cc.checkpoint), "cams.checkpoint"))
        io.outputs.append(Output(p(cc.out), "ids", ".npz", cc.split))
        if _classifier_method(cfg, ctx, list(earlier)) == "nsrom":
            io.inputs.append((p(cc.iam_checkpoint), "cams.iam_checkpoint"))
            io.outputs.append(Output(p(cc.oa_out), "ids", ".npz", cc.split))
    elif s == "labels":
        lc = cfg.labels
        if lc.method in ("eps", "cam") or (lc.method == "saliency" and lc.cams):
            io.inputs.append((p(lc.cams), "labels.cams"))
        if lc.method == "nsrom":
            io.inputs.append((p(lc.oa_cams), "labels.oa_cams"))
        if lc.pom and lc.method in ("eps", "cam", "nsrom"):
            io.inputs.append((p(lc.pom_cams or lc.cams), "labels.pom_cams" if lc.pom_cams else "labels.cams"))
        if lc.method == "nsrm":
            io.inputs += [(p(lc.nsrm_pred), "labels.nsrm_pred"), (p(lc.nsrm_labels), "labels.nsrm_labels")]
        io.outputs.append(Output(p(lc.out), "ids", ".png", lc.split))
    elif s == "crf":
        io.inputs.append((p(cfg.crf.input), "crf.input"))
        io.outputs.append(Output(p(cfg.crf.out), "ids", ".png", cfg.crf.split))
    elif s == "train_seg":
        if cfg.train_seg.supervision == "weak":
            io.inputs.append((p(cfg.train_seg.labels), "train_seg.labels"))
        io.outputs.append(Output(p(cfg.train_seg.out) / "final.pt", "file"))
    elif s == "predict":
        pc = cfg.predict
        io.inputs.append((p(pc.checkpoint), "predict.checkpoint"))
        io.outputs.append(Output(p(pc.out), "ids", ".png", pc.split))
        if pc.save_probs:
            io.outputs.append(Output(probs_folder(p(pc.out)), "ids", ".npz", pc.split))
    elif s == "eval":
        io.inputs.append((p(cfg.eval.pred), "eval.pred"))
        io.outputs.append(Output(eval_json_path(run_dir, step.name), "file"))
    else:
        raise ValueError(f"unknown stage {s!r}")
    return io


def pipeline_io(steps: list[Step], cfgs: list[Config], run_dir: Path) -> list[StepIO]:
    """:func:`step_io` of every step, in order."""
    ios: list[StepIO] = []
    for step, cfg in zip(steps, cfgs):
        ios.append(step_io(step, cfg, run_dir, ios))
    return ios


def _written_by(path: Path, output: Output) -> bool:
    return path == output.path or (output.kind == "file" and path == output.path.parent)


def territory(step: Step, output: Output) -> Path:
    """What a step owns for an output, i.e. what a fresh start of the step removes: a training
    step's whole output folder (so no ``last.pt`` of other settings is resumed), else the output."""
    if output.kind == "file" and step.stage.startswith("train"):
        return output.path.parent
    return output.path


def placement_problems(ios: list[StepIO], run_dir: Path, dataset: Path | None = None) -> list[str]:
    """Outputs that lie outside the run directory, in (or around) the dataset, or inside another
    step's output: a fresh start of a step removes what it owns, which must never be anything else."""
    run_dir = Path(run_dir).resolve()
    dataset = Path(dataset).expanduser().resolve() if dataset else None
    problems = []
    owned: list[tuple[Path, str]] = []
    for io in ios:
        for out in io.outputs:
            area = territory(io.step, out).resolve()
            if run_dir not in area.parents:
                problems.append(f"step {io.step.name!r}: its output {area} is not inside the run directory "
                                f"{run_dir}: give it a folder name relative to the run directory")
                continue
            if dataset is not None and paths_overlap(area, dataset):
                problems.append(f"step {io.step.name!r}: its output {area} lies in or holds the dataset {dataset}")
                continue
            for other, name in owned:
                if name != io.step.name and area == other:
                    problems.append(f"steps {name!r} and {io.step.name!r} both write {area}: give one of "
                                    f"them another folder in its 'set' list")
                elif name != io.step.name and paths_overlap(area, other):
                    problems.append(f"steps {name!r} and {io.step.name!r} write into each other's folders "
                                    f"({other} and {area}): give one of them a folder of its own")
            owned.append((area, io.step.name))
    return problems


def wiring_problems(ios: list[StepIO]) -> list[str]:
    """Inputs that no earlier step writes and that do not exist; outputs written by two steps."""
    problems = []
    owner: dict[Path, str] = {}
    for i, io in enumerate(ios):
        for path, key in io.inputs:
            made = any(_written_by(path, o) for earlier in ios[:i] for o in earlier.outputs)
            if not made and not path.exists():
                problems.append(f"step {io.step.name!r}: {key} = {path} is written by no earlier step "
                                f"and does not exist")
        for out in io.outputs:
            if out.path in owner:
                problems.append(f"steps {owner[out.path]!r} and {io.step.name!r} both write {out.path}: "
                                f"give one of them another folder in its 'set' list")
            owner[out.path] = io.step.name
    return problems
