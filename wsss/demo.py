"""The demo: synthetic scenes, then the CAM baseline, EPS, NSROM and EPS + POM + NSRM end to end on
a CPU, and one table that compares them.

Everything runs through the ordinary pipeline machinery: ``configs/demo/demo.yaml`` is a `wsss run`
config (its steps train the classifiers, infer maps, make pseudo labels, train DeepLab, predict and
evaluate), so an interrupted demo resumes and a finished one is only re-summarised. This module adds:

- :func:`prepare_data`: the synthetic scenes of :mod:`wsss.data.synth` in ``<out>/data`` (kept when
  they exist with the same settings);
- :func:`object_breakdown`: a demo-specific measure computed from ``synth_meta.json`` and
  ``SegmentationObject/``: of the pixels of the objects the saliency map missed ("non-salient
  objects"), the share a label map gives their own class, background, 255 (ignore) or another
  class. POM and NSRM are about exactly these pixels: trained as background they teach the
  network that such objects are background; marked 255 they teach nothing wrong;
- :func:`demo_rows` / :func:`format_demo_table`: the comparison table (pseudo labels on the training
  split, DeepLab predictions on the validation split) from ``<run>/eval/<step>.json``;
- :func:`run_demo`: all of the above, for ``wsss demo``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from wsss.errors import ConfigError, DataError
from wsss.io import IGNORE, read_label, write_text_atomic

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = Path("configs/demo/demo.yaml")
FAST_CONFIG = Path("configs/demo/demo_fast.yaml")


@dataclass(frozen=True)
class DemoData:
    """The synthetic scenes of a demo: image counts, side length range (px) and seed."""

    num_train: int
    num_val: int
    size: str
    seed: int = 0


#: the demo's scenes; ``--fast`` (the slow test) uses the same scenes with shorter NSROM and
#: DeepLab schedules (on 48 scenes the CAM/EPS comparison came out differently per pair)
DEMO_DATA = DemoData(num_train=80, num_val=32, size="96-128")
FAST_DATA = DEMO_DATA


@dataclass(frozen=True)
class DemoRow:
    """One line of the table: a label folder of the run and the eval step that scored it."""

    method: str
    what: str            # "pseudo labels" | "DeepLab round 1" | ...
    eval_step: str       # <run>/eval/<eval_step>.json
    folder: str          # run-relative label folder (for the non-salient breakdown)
    split: str           # "train" | "val"


PSEUDO_ROWS = (
    DemoRow("Saliency baseline", "pseudo labels", "eval_labels_saliency", "labels_saliency", "train"),
    DemoRow("CAM baseline", "pseudo labels", "eval_labels_cam", "labels_cam", "train"),
    DemoRow("EPS", "pseudo labels", "eval_labels_eps", "labels_eps", "train"),
    DemoRow("NSROM BE", "pseudo labels", "eval_labels_nsrom_be", "labels_nsrom_be", "train"),
    DemoRow("NSROM BE+POM", "pseudo labels", "eval_labels_nsrom", "labels_nsrom", "train"),
    DemoRow("EPS+POM", "pseudo labels", "eval_labels_epspom", "labels_epspom", "train"),
    DemoRow("NSROM NSRM", "NSRM labels", "eval_labels_nsrom_nsrm", "labels_nsrom_nsrm", "train"),
    DemoRow("EPS+POM NSRM", "NSRM labels", "eval_labels_epspom_nsrm", "labels_epspom_nsrm", "train"),
)
FINAL_ROWS = (
    DemoRow("EPS", "DeepLab", "eval_final_eps", "pred_eps", "val"),
    DemoRow("NSROM", "DeepLab round 1", "eval_final_nsrom_r1", "pred_nsrom_r1", "val"),
    DemoRow("NSROM", "DeepLab round 2 (NSRM)", "eval_final_nsrom_r2", "pred_nsrom_r2", "val"),
    DemoRow("EPS+POM", "DeepLab round 1", "eval_final_epspom_r1", "pred_epspom_r1", "val"),
    DemoRow("EPS+POM+NSRM", "DeepLab round 2 (NSRM)", "eval_final_epspom_r2", "pred_epspom_r2", "val"),
)
PAIRS = ("train:rails", "boat:water")


# ------------------------------------------------------------------------------------- config

def demo_config(fast: bool = False) -> Path:
    """The demo's pipeline config (``configs/demo/demo.yaml``, or ``demo_fast.yaml``) of this checkout."""
    rel = FAST_CONFIG if fast else DEMO_CONFIG
    for base in (REPO_ROOT, Path.cwd()):
        if (base / rel).is_file():
            return base / rel
    raise ConfigError(f"demo config {rel} not found beside the wsss package ({REPO_ROOT}) or in the "
                      f"working directory: run the demo from a checkout of wsss")


# --------------------------------------------------------------------------------------- data

def prepare_data(root: str | os.PathLike, spec: DemoData, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Generate the scenes of ``spec`` into ``root``, or reuse them when ``root`` already holds
    scenes made with the same settings (a :class:`DataError` when it holds others)."""
    from wsss.data.synth import META_FILE, generate_synthetic_dataset, parse_size

    root = Path(root)
    meta_path = root / META_FILE
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        images = meta.get("images", {})
        counts = {s: sum(1 for m in images.values() if m.get("split") == s) for s in ("train", "val")}
        wanted = {"seed": spec.seed, "size": list(parse_size(spec.size)),
                  "counts": {"train": spec.num_train, "val": spec.num_val}}
        found = {"seed": meta.get("seed"), "size": meta.get("size"), "counts": counts}
        if found != wanted:
            raise DataError(f"{root} holds other synthetic scenes ({found}, the demo needs {wanted}): "
                            f"delete it or give the demo another --out")
        log(f"scenes: reusing {root} ({counts['train']} train + {counts['val']} val images)")
        return {"out_root": str(root), "reused": True, "images": counts}
    summary = generate_synthetic_dataset(root, spec.num_train, spec.num_val, size=spec.size, seed=spec.seed)
    log(f"scenes: wrote {summary['images']['train']} train + {summary['images']['val']} val images to {root} "
        f"({summary['nonsalient_objects']} non-salient objects, context strips {summary['context_strips']})")
    return {**summary, "reused": False}


def object_breakdown(label_dir: str | os.PathLike, data_root: str | os.PathLike, ids: Sequence[str],
                     salient: bool = False) -> dict[str, Any]:
    """Where the pixels of the (non-)salient objects of ``ids`` go in ``<label_dir>/<id>.png``.

    Objects are those of ``synth_meta.json`` with ``salient`` equal to the argument; their pixels
    come from ``SegmentationObject/<id>.png`` (instance index, 1-based, in meta order). Returns
    ``{"objects", "pixels", "as_class", "as_background", "as_ignore", "as_other"}``, the shares in
    [0, 1] (None when there is no such pixel). Missing label files raise :class:`DataError`.
    """
    from wsss.data.synth import META_FILE

    data_root, label_dir = Path(data_root), Path(label_dir)
    images = json.loads((data_root / META_FILE).read_text())["images"]
    counts = {"as_class": 0, "as_background": 0, "as_ignore": 0, "as_other": 0}
    pixels = objects = 0
    for image_id in ids:
        chosen = [o for o in images[image_id]["objects"] if bool(o["salient"]) == salient]
        if not chosen:
            continue
        path = label_dir / f"{image_id}.png"
        if not path.is_file():
            raise DataError(f"label map {path} is missing (object breakdown of {label_dir})")
        label = read_label(path, "label map")
        instances = read_label(data_root / "SegmentationObject" / f"{image_id}.png", "instance map")
        for obj in chosen:
            values = label[instances == obj["instance"]]
            if not values.size:
                continue
            objects += 1
            pixels += int(values.size)
            own = int((values == obj["class_index"]).sum())
            background = int((values == 0).sum())
            ignore = int((values == IGNORE).sum())
            counts["as_class"] += own
            counts["as_background"] += background
            counts["as_ignore"] += ignore
            counts["as_other"] += int(values.size) - own - background - ignore
    shares = {k: (v / pixels if pixels else None) for k, v in counts.items()}
    return {"objects": objects, "pixels": pixels, **shares}


# -------------------------------------------------------------------------------------- table

def demo_rows(run_dir: str | os.PathLike, data_root: str | os.PathLike) -> list[dict[str, Any]]:
    """One dict per table row whose eval JSON exists: method, what, split, miou (255 = miss),
    coverage, the co-occurrence ratios of :data:`PAIRS`, and the non-salient breakdown
    (:func:`object_breakdown`). Fractions in [0, 1]; None where undefined."""
    from wsss.data.splits import read_split

    run_dir, data_root = Path(run_dir), Path(data_root)
    split_ids = {s: read_split(data_root / "ImageSets" / "Segmentation" / f"{s}.txt")
                 for s in {spec.split for spec in PSEUDO_ROWS + FINAL_ROWS}}
    rows = []
    for spec in PSEUDO_ROWS + FINAL_ROWS:
        path = run_dir / "eval" / f"{spec.eval_step}.json"
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        pairs = {f"{p['target']}:{p['context']}": p["ratio"]
                 for p in (result.get("cooccurrence") or {}).get("pairs", [])}
        nonsalient = object_breakdown(run_dir / spec.folder, data_root, split_ids[spec.split])
        rows.append({
            "method": spec.method, "what": spec.what, "split": spec.split, "eval_step": spec.eval_step,
            "folder": str(run_dir / spec.folder), "images": result.get("num_images"),
            "miou": result["conventions"]["ignore_as_miss"]["miou"],
            "miou_255_dropped": result["conventions"]["ignore_dropped"]["miou"],
            "coverage": result.get("coverage"),
            "cooccurrence": {p: pairs.get(p) for p in PAIRS},
            "nonsalient": nonsalient,
        })
    return rows


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _ratio(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def format_demo_table(rows: list[dict[str, Any]]) -> str:
    """The comparison table as aligned text (percentages; co-occurrence ratios as numbers)."""
    head = ["method", "labels", "split", "mIoU", "cover", "m[train:rails]", "m[boat:water]",
            "nonsal->cls", "nonsal->bg", "nonsal->255"]
    body = [[r["method"], r["what"], r["split"], _pct(r["miou"]), _pct(r["coverage"]),
             _ratio(r["cooccurrence"].get("train:rails")), _ratio(r["cooccurrence"].get("boat:water")),
             _pct(r["nonsalient"]["as_class"]), _pct(r["nonsalient"]["as_background"]),
             _pct(r["nonsalient"]["as_ignore"])] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(head), "  ".join("-" * w for w in widths)]
    previous_split = None
    for row, cells in zip(rows, body):
        if previous_split is not None and row["split"] != previous_split:
            out.append("")
        previous_split = row["split"]
        out.append(line(cells))
    return "\n".join(out)


TABLE_NOTES = """\
mIoU: 255 in a label counts as a miss (all in %); cover: share of pixels not 255.
m[target:context]: pixels of the context strip (rails under trains, water under boats) labelled as
  the target class, divided by the target's true positives (EPS, METHODS A.5); lower is better.
nonsal->cls/bg/255: where the pixels of the objects the saliency map missed go (demo measure from
  synth_meta.json): their class, background (wrong supervision), or 255 (ignored in training).
Pseudo labels are scored on the training images they were made for; DeepLab on the validation
  images (single scale, no CRF)."""


# ---------------------------------------------------------------------------------------- run

def default_threads() -> int:
    """Torch threads for the demo: the usable CPUs, at most 2 (more gives little at these sizes)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 1
    return max(1, min(2, usable))


def run_demo(out: str | os.PathLike = "runs/demo", fast: bool = False, threads: int | None = None,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Generate (or reuse) the scenes in ``<out>/data`` and run the demo pipeline into ``<out>``.

    Returns ``{"run_dir", "data_root", "rows", "table", "seconds", "records"}`` and writes
    ``<out>/demo_table.txt`` and ``<out>/demo.json``.
    """
    import torch

    from wsss.pipeline.run import run_pipeline

    started = time.perf_counter()
    out = Path(out)
    torch.set_num_threads(threads or default_threads())
    spec = FAST_DATA if fast else DEMO_DATA
    data_root = out / "data"
    prepare_data(data_root, spec, log)
    overrides = [f"data.root={data_root}", f"run.out_dir={out.parent}", f"run.name={out.name}",
                 f"run.seed={spec.seed}"]
    result = run_pipeline([demo_config(fast)], overrides, log=log)
    rows = demo_rows(result["run_dir"], data_root)
    table = format_demo_table(rows)
    seconds = time.perf_counter() - started
    ran = sum(r["action"] == "run" for r in result["records"])
    text = (f"wsss demo ({'fast, ' if fast else ''}{spec.num_train} train / {spec.num_val} val scenes, "
            f"{torch.get_num_threads()} threads): {seconds:.0f} s, {ran} steps run\n\n{table}\n\n{TABLE_NOTES}\n")
    write_text_atomic(out / "demo_table.txt", text)
    write_text_atomic(out / "demo.json", json.dumps({"rows": rows, "seconds": seconds, "fast": fast,
                                                     "threads": torch.get_num_threads(),
                                                     "records": result["records"]}, indent=2) + "\n")
    log("\n" + text)
    log(f"outputs: {out} (labels_*/ pseudo labels, pred_*/ predictions, eval/*.json scores, "
        f"demo_table.txt, summary.json); scenes: {data_root}")
    return {"run_dir": result["run_dir"], "data_root": data_root, "rows": rows, "table": table,
            "seconds": seconds, "records": result["records"]}
