"""The evaluation step of a run: compare a run folder of label maps with the dataset's ground truth
using the one evaluator (:func:`wsss.evaluation.evaluate`) and keep the JSON in ``<run>/eval/``.

Paths of the ``eval`` section: ``eval.pred`` is run-relative (or absolute); ``context_dir``,
``context_classes`` and ``boundary_gt_dir`` are relative to ``data.root`` (or absolute).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wsss.config import Config
from wsss.errors import WsssError
from wsss.stages.context import StageContext


def data_relative(cfg: Config, value: str) -> str | None:
    """A path from the eval section: as given if absolute or present, else under ``data.root``."""
    if not value:
        return None
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists() or not cfg.data.root:
        return str(path)
    return str(Path(cfg.data.root).expanduser() / path)


def context_class_file(given: str | None, context_dir: str) -> str:
    """The context class-name file: the one given, else a ``context.json`` beside or inside the folder."""
    if given:
        return given
    for candidate in (Path(context_dir).parent / "context.json", Path(context_dir) / "context.json"):
        if candidate.is_file():
            return str(candidate)
    raise WsssError(f"no context class names for {context_dir}: set eval.context_classes "
                    f"(no context.json beside or inside it)")


def evaluate_step(ctx: StageContext, name: str, out_json: Path) -> dict[str, Any]:
    """Evaluate ``<run>/<eval.pred>`` on ``eval.split``; write ``out_json``; return its dict."""
    from wsss.data.voc import build_dataset_info
    from wsss.evaluation import evaluate

    cfg, ev = ctx.cfg, ctx.cfg.eval
    info = build_dataset_info(cfg.data)
    ids = ctx.split_ids(ev.split)
    context = data_relative(cfg, ev.context_dir)
    classes = context_class_file(data_relative(cfg, ev.context_classes), context) if context else None
    protocol = {"run": str(ctx.run_dir), "step": name, "split_name": ev.split, **ev.protocol}
    result = evaluate(
        ctx.path(ev.pred), Path(cfg.data.root) / cfg.data.mask_dir, ids, info,
        gt_ext=cfg.data.mask_ext, boundary=ev.boundary, tolerance=ev.boundary_tolerance,
        boundary_gt_dir=data_relative(cfg, ev.boundary_gt_dir), context_dir=context,
        context_names=classes, pairs=list(ev.pairs), top_pairs=ev.top_pairs, crop=ev.crop,
        workers=ev.workers, protocol=protocol)
    result.write_json(out_json)
    print(f"[{name}] {ev.pred} on {ev.split} ({len(ids)} images)")
    print(result.table())
    return result.to_dict()
