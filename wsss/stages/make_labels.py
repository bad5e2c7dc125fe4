"""`wsss labels`: pseudo labels from class maps (METHODS.md A.4, B.3-B.4, B.5 NSRM).

Output: ``<run>/<labels.out>/<id>.png``, palette PNGs of the dataset (0 background, 1..C
classes, 255 ignore), written atomically, one per id of ``labels.split``; and a summary
``<run>/<labels.out>.summary.json`` *next to* the folder (never inside it, so tools listing
``*.png`` there see label maps only): images, pixels, share of ignore pixels, share of each label,
images fully ignored. With several ranks each writes ``<out>.summary.rank<r>.json`` over its
shard; a later single-process run (everything done, nothing recomputed, the labels only read
back) writes the summary of the whole split.

Inputs by ``labels.method``:

- ``eps`` / ``cam``: ``<labels.cams>/<id>.npz`` (``classes``, ``cams`` of ``wsss cams``). Label =
  argmax over [``labels.thr``, map_1, ...] (:func:`~wsss.methods.eps.eps_pseudo_mask`).
  ``labels.thr_by_saliency = [t_s, t_n]`` (in neither paper) replaces the constant ``thr`` with a
  per-pixel background score read from the saliency map, ``t_s`` on salient and ``t_n`` on
  non-salient pixels (:func:`~wsss.methods.eps.saliency_background_score`).
  ``labels.pom`` (EPS + POM, in neither paper): Potential Object Mining on top, with the maps of
  ``<labels.pom_cams>`` (default: the same maps as the label), min-max normalised per class as
  NSROM's plain CAMs. POM only turns background pixels into 255, so the class pixels stay EPS's.
  Caveat, with the same maps: every pixel labelled c has map_c > thr >= map_c of every
  background pixel, so the median rule never mines; only a labelled class that wins no pixel is
  mined (top-quartile rule), which max-normalised EPS maps almost never allow. EPS + POM is
  therefore meant with ``labels.pom_cams`` naming another classifier's maps (e.g. the CAM
  baseline's, as NSROM mines with its plain classifier's CAMs).
  The 1 % rule (``labels.min_fraction``) is applied to eps/cam labels only when
  ``labels.eps_min_fraction`` is true and ``min_fraction`` > 0: EPS has no such rule, and POM
  does not change the class share it tests.
- ``nsrom``: saliency ``<data.root>/<data.saliency_dir>/<id><ext>`` (uint8), OA-CAMs
  ``<labels.oa_cams>/<id>.npz`` -> background extraction (thresholds ``labels.be_*``); with
  ``labels.pom`` POM with the plain CAMs ``<labels.pom_cams or labels.cams>/<id>.npz``
  (``labels.pom_t_bg``); then the 1 % rule (``labels.min_fraction``). Every map is min-max
  normalised on reading, as the official code does with its PNG maps.
- ``saliency`` (the no-learning baseline): saliency map + the image-level labels; a pixel with
  saliency >= ``labels.saliency_thr`` takes the image's class, with several labelled classes the
  one whose map in ``<labels.cams>/<id>.npz`` (any classifier's) is highest
  (:func:`~wsss.methods.saliency_baseline.saliency_label`). ``labels.cams = ""`` reads no maps: an
  image with several labelled classes is then an error.
- ``nsrm``: round-1 prediction ``<labels.nsrm_pred>/<id>.png``, round-1 pseudo label
  ``<labels.nsrm_labels>/<id>.png``, saliency, the image-level labels of the dataset ->
  :func:`~wsss.methods.nsrm.non_salient_region_masking` (``labels.nsrm_kernel``, ``min_fraction``).

A saliency map of another size than the maps follows ``data.saliency_size_mismatch`` (error, or
bilinear resize). Ids are sharded by RANK / WORLD_SIZE, done ids are skipped unless
``labels.overwrite``, and images are processed by a pool of ``labels.workers`` processes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from wsss.data.image_labels import present_classes
from wsss.data.splits import dataset_root
from wsss.data.voc import build_dataset_info, image_path, load_image_labels, saliency_path
from wsss.engine.sharding import pending_ids, process_imap, shard_ids
from wsss.errors import ConfigError, DataError
from wsss.io import IGNORE, image_size, load_npz, read_label, read_saliency, write_label
from wsss.methods.eps import eps_pseudo_mask, saliency_background_score
from wsss.methods.nsrm import non_salient_region_masking
from wsss.methods.saliency_baseline import saliency_label
from wsss.methods.nsrom import (
    minmax_normalize,
    min_class_fraction_rule,
    nsrom_pseudo_label,
    potential_object_mining,
)
from wsss.stages.context import StageContext
from wsss.stages.offline import env_shard, require_dir, require_files, summary_path, write_summary

METHODS = ("eps", "cam", "nsrom", "nsrm", "saliency")

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- rules on arrays

def eps_label(cams: np.ndarray, classes: Sequence[int], thr: float | np.ndarray = 0.20, pom: bool = False,
              t_bg: float = 0.3, min_fraction: float = 0.0, pom_cams: np.ndarray | None = None
              ) -> np.ndarray:
    """EPS / CAM pseudo-mask (A.4), optionally + POM (B.4) and the 1 % rule.

    cams: (K, H, W) maps in [0, 1] of the 1-based ``classes``; ``thr`` a constant or (H, W)
    background score. ``pom``: POM with ``pom_cams``
    ((K, H, W) of the same classes; None = ``cams``), min-max normalised per class.
    ``min_fraction`` > 0 applies the 1 % rule. Returns (H, W) uint8.
    """
    cams = np.asarray(cams, dtype=np.float32)
    label = eps_pseudo_mask(cams, classes, thr)
    if pom:
        mining = cams if pom_cams is None else np.asarray(pom_cams)
        label = potential_object_mining(label, [minmax_normalize(m) for m in mining], classes, t_bg=t_bg)
    if min_fraction > 0:
        label = min_class_fraction_rule(label, min_fraction)
    return label


def nsrom_label(saliency_u8: np.ndarray, oa_cams: np.ndarray, classes: Sequence[int],
                cams: np.ndarray | None = None, *, fg_thr: float = 0.3, conflict_thr: float = 0.9,
                sal_att_thr: float = 32, att_thr: float = 0.8, t_bg: float = 0.3,
                min_fraction: float = 0.01) -> np.ndarray:
    """NSROM label (B.3 BE, + B.4 POM when plain ``cams`` are given, + the 1 % rule).

    oa_cams / cams: (K, H, W) maps of the 1-based ``classes``, min-max normalised here per class.
    """
    oa = [minmax_normalize(m) for m in np.asarray(oa_cams)]
    plain = None if cams is None else [minmax_normalize(m) for m in np.asarray(cams)]
    return nsrom_pseudo_label(saliency_u8, oa, classes, plain, fg_thr=fg_thr,
                              conflict_thr=conflict_thr, sal_att_thr=sal_att_thr, att_thr=att_thr,
                              t_bg=t_bg, min_fraction=min_fraction)


# ------------------------------------------------------------------------------------- one image

@dataclass(frozen=True)
class LabelParams:
    """The label rule of a run (from the ``labels`` config section) and the output palette."""

    method: str
    thr: float = 0.20
    thr_by_saliency: tuple[float, ...] = ()
    saliency_thr: float = 0.5
    pom: bool = False
    be_fg_thr: float = 0.3
    be_conflict_thr: float = 0.9
    be_sal_att_thr: float = 32
    be_att_thr: float = 0.8
    pom_t_bg: float = 0.3
    min_fraction: float = 0.01
    eps_min_fraction: bool = False
    nsrm_kernel: int = 30
    resize_saliency: bool = False
    palette: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class LabelJob:
    """One image: where its inputs are and where its label goes. ``make`` False = already done
    (the label is only read back for the summary)."""

    image_id: str
    out: Path
    make: bool = True
    cams: Path | None = None
    oa_cams: Path | None = None
    pom_cams: Path | None = None
    saliency: Path | None = None
    pred: Path | None = None
    pseudo: Path | None = None
    classes: tuple[int, ...] = ()
    image: Path | None = None


def read_maps(path: Path) -> tuple[list[int], np.ndarray]:
    """``(classes 1-based, maps (K, H, W) float32)`` of a CAM npz."""
    arrays = load_npz(path)
    for key in ("classes", "cams"):
        if key not in arrays:
            raise DataError(f"map file {path} has no '{key}' array (keys: {sorted(arrays)}); "
                            f"it must come from `wsss cams`")
    classes = [int(c) for c in np.asarray(arrays["classes"]).reshape(-1)]
    cams = np.asarray(arrays["cams"], dtype=np.float32)
    if cams.ndim != 3 or cams.shape[0] != len(classes):
        raise DataError(f"map file {path}: cams {cams.shape} do not match {len(classes)} classes")
    return classes, cams


def read_pom_maps(path: Path, classes: list[int], shape: tuple[int, ...], reference: Path) -> np.ndarray:
    """POM's maps (K, H, W) from ``path``, checked against the label maps' classes and shape."""
    pom_classes, maps = read_maps(path)
    if pom_classes != classes or maps.shape != shape:
        raise DataError(f"{path} (classes {pom_classes}, {maps.shape}) does not match "
                        f"{reference} (classes {classes}, {shape})")
    return maps


def read_saliency_as(path: Path, shape: tuple[int, int], resize: bool) -> np.ndarray:
    """Saliency (H, W) uint8 at ``shape``: resized (bilinear) when ``resize``, else an error."""
    saliency = read_saliency(path)
    if saliency.shape != tuple(shape):
        if not resize:
            raise DataError(f"saliency map {path} is {saliency.shape[1]}x{saliency.shape[0]} (WxH) but the "
                            f"maps are {shape[1]}x{shape[0]}; set data.saliency_size_mismatch=resize "
                            f"to resize it (bilinear)")
        saliency = cv2.resize(saliency, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return saliency


def check_image_size(job: LabelJob, shape: tuple[int, ...], source: Path | None) -> None:
    """A label must have its image's size: maps or predictions of another size are an error
    (checked when the image file is there; the label stage itself never needs the image)."""
    if job.image is None or not job.image.is_file():
        return
    height, width = image_size(job.image)
    if tuple(shape) != (height, width):
        raise DataError(f"{source} is {shape[1]}x{shape[0]} (WxH) but the image {job.image} is "
                        f"{width}x{height}: it was made for another image or size; make it again")


def make_label(job: LabelJob, params: LabelParams) -> np.ndarray:
    """The (H, W) uint8 label of one image under ``params``."""
    label = _make_label(job, params)
    check_image_size(job, label.shape, job.cams or job.oa_cams or job.pred or job.saliency)
    return label


def _make_label(job: LabelJob, params: LabelParams) -> np.ndarray:
    method = params.method
    if method in ("eps", "cam"):
        classes, cams = read_maps(job.cams)
        min_fraction = params.min_fraction if params.eps_min_fraction else 0.0
        pom_cams = None
        if params.pom and job.pom_cams is not None and job.pom_cams != job.cams:
            pom_cams = read_pom_maps(job.pom_cams, classes, cams.shape, job.cams)
        thr: float | np.ndarray = params.thr
        if params.thr_by_saliency:
            saliency = read_saliency_as(job.saliency, cams.shape[1:], params.resize_saliency)
            thr = saliency_background_score(saliency, *params.thr_by_saliency)
        return eps_label(cams, classes, thr, params.pom, params.pom_t_bg, min_fraction, pom_cams)
    if method == "nsrom":
        classes, oa_cams = read_maps(job.oa_cams)
        cams = read_pom_maps(job.pom_cams, classes, oa_cams.shape, job.oa_cams) if params.pom else None
        saliency = read_saliency_as(job.saliency, oa_cams.shape[1:], params.resize_saliency)
        return nsrom_label(saliency, oa_cams, classes, cams, fg_thr=params.be_fg_thr,
                           conflict_thr=params.be_conflict_thr, sal_att_thr=params.be_sal_att_thr,
                           att_thr=params.be_att_thr, t_bg=params.pom_t_bg,
                           min_fraction=params.min_fraction)
    if method == "saliency":
        if job.cams is None or len(job.classes) < 2:
            return saliency_label(read_saliency(job.saliency), job.classes, None, params.saliency_thr)
        map_classes, cams = read_maps(job.cams)
        if sorted(map_classes) != sorted(job.classes):
            raise DataError(f"map file {job.cams} has classes {map_classes} but the image is labelled "
                            f"{list(job.classes)}")
        saliency = read_saliency_as(job.saliency, cams.shape[1:], params.resize_saliency)
        maps = cams[[map_classes.index(c) for c in job.classes]]
        return saliency_label(saliency, job.classes, maps, params.saliency_thr)
    if method == "nsrm":
        pred = read_label(job.pred, "round-1 prediction")
        pseudo = read_label(job.pseudo, "round-1 pseudo label")
        saliency = read_saliency_as(job.saliency, pred.shape, params.resize_saliency)
        return non_salient_region_masking(pred, pseudo, saliency, job.classes, params.nsrm_kernel,
                                          params.min_fraction)
    raise ConfigError(f"labels.method = {method!r}: use one of {', '.join(METHODS)}")


def label_one(task: tuple[LabelJob, LabelParams]) -> tuple[str, bool, np.ndarray]:
    """Make (or read back) one label; returns ``(id, made, (256,) int64 pixel counts)``."""
    job, params = task
    if job.make:
        label = make_label(job, params)
        write_label(job.out, label, params.palette)
    else:
        label = read_label(job.out, "pseudo label")
    return job.image_id, job.make, np.bincount(label.ravel(), minlength=256).astype(np.int64)


# ----------------------------------------------------------------------------------------- stage

def label_summary(counts: np.ndarray, images: int, fully_ignored: int,
                  class_names: Sequence[str]) -> dict[str, Any]:
    """Counts of a set of label maps: ``counts`` (256,) pixels per value."""
    total = int(counts.sum())

    def share(n: int) -> float:
        return round(n / total, 6) if total else 0.0

    other = int(counts[len(class_names):IGNORE].sum())
    summary = {
        "images": images, "pixels": total, "ignore_share": share(int(counts[IGNORE])),
        "class_share": {name: share(int(counts[i])) for i, name in enumerate(class_names)},
        "fully_ignored_images": fully_ignored,
    }
    if other:
        summary["other_values_share"] = share(other)
    return summary


def params_from_config(cfg, palette: np.ndarray | None) -> LabelParams:
    lc = cfg.labels
    if lc.thr_by_saliency and len(lc.thr_by_saliency) != 2:
        raise ConfigError(f"labels.thr_by_saliency must be [thr on salient pixels, thr on non-salient pixels] "
                          f"or [], got {list(lc.thr_by_saliency)}")
    return LabelParams(method=lc.method, thr=lc.thr, thr_by_saliency=tuple(lc.thr_by_saliency),
                       saliency_thr=lc.saliency_thr, pom=lc.pom, be_fg_thr=lc.be_fg_thr,
                       be_conflict_thr=lc.be_conflict_thr, be_sal_att_thr=lc.be_sal_att_thr,
                       be_att_thr=lc.be_att_thr, pom_t_bg=lc.pom_t_bg, min_fraction=lc.min_fraction,
                       eps_min_fraction=lc.eps_min_fraction, nsrm_kernel=lc.nsrm_kernel,
                       resize_saliency=cfg.data.saliency_size_mismatch == "resize", palette=palette)


def _check_out(ctx: StageContext, out: Path) -> None:
    lc = ctx.cfg.labels
    if lc.method == "nsrm":
        for key in ("nsrm_pred", "nsrm_labels"):
            if ctx.path(getattr(lc, key)).resolve() == out.resolve():
                raise ConfigError(f"labels.out and labels.{key} are the same folder {out}: NSRM labels "
                                  f"would overwrite their inputs; set e.g. --set labels.out=labels_nsrm")


def _jobs(ctx: StageContext, ids: Sequence[str], todo: set[str], out: Path) -> list[LabelJob]:
    cfg, lc = ctx.cfg, ctx.cfg.labels
    make = [i for i in ids if i in todo]
    hint = "run the stage that makes them first"
    reads_saliency = lc.method in ("nsrom", "nsrm", "saliency") or (lc.method in ("eps", "cam")
                                                                    and bool(lc.thr_by_saliency))
    data_root = dataset_root(cfg.data)
    root = data_root if reads_saliency else None
    if root is not None and cfg.data.missing == "skip":
        have = [i for i in ids if saliency_path(cfg.data, root, i).is_file()]
        if len(have) < len(ids):
            log.warning("data.missing=skip: %d of %d ids have no saliency map and get no label",
                        len(ids) - len(have), len(ids))
        kept = set(have)
        ids, make = have, [i for i in make if i in kept]
    folders: dict[str, Path] = {}
    if lc.method in ("eps", "cam"):
        folders["cams"] = require_dir(ctx.path(lc.cams), "labels.cams", "run `wsss cams` first")
    if lc.method == "saliency" and lc.cams:
        folders["cams"] = require_dir(ctx.path(lc.cams), "labels.cams",
                                      "run `wsss cams` first, or set labels.cams='' to use no maps")
    if lc.method == "nsrom":
        folders["oa_cams"] = require_dir(ctx.path(lc.oa_cams), "labels.oa_cams", "run `wsss cams` first")
    if lc.pom and lc.method in ("eps", "cam", "nsrom"):
        key = "labels.pom_cams" if lc.pom_cams else "labels.cams"
        folders["pom_cams"] = require_dir(ctx.path(lc.pom_cams or lc.cams), key, "run `wsss cams` first")
    if lc.method == "nsrm":
        folders["pred"] = require_dir(ctx.path(lc.nsrm_pred), "labels.nsrm_pred",
                                      "run `wsss predict` on the training split first")
        folders["pseudo"] = require_dir(ctx.path(lc.nsrm_labels), "labels.nsrm_labels",
                                        "give the round-1 pseudo-label folder")
    suffix = {"cams": ".npz", "oa_cams": ".npz", "pom_cams": ".npz", "pred": ".png", "pseudo": ".png"}
    for key, folder in folders.items():
        require_files([folder / f"{i}{suffix[key]}" for i in make], f"{key} file in {folder}", hint)
    if root is not None:
        require_files([saliency_path(cfg.data, root, i) for i in make], "saliency map",
                      f"check data.saliency_dir = {cfg.data.saliency_dir!r}")
    classes: dict[str, tuple[int, ...]] = {}
    if lc.method in ("nsrm", "saliency") and make:
        vectors = load_image_labels(cfg.data, build_dataset_info(cfg.data), make)
        classes = {i: tuple(present_classes(v)) for i, v in vectors.items()}
    jobs = []
    for image_id in ids:
        if image_id not in todo:
            jobs.append(LabelJob(image_id, out / f"{image_id}.png", make=False))
            continue
        paths = {key: folder / f"{image_id}{suffix[key]}" for key, folder in folders.items()}
        jobs.append(LabelJob(image_id, out / f"{image_id}.png", True, cams=paths.get("cams"),
                             oa_cams=paths.get("oa_cams"), pom_cams=paths.get("pom_cams"),
                             saliency=saliency_path(cfg.data, root, image_id) if root is not None else None,
                             pred=paths.get("pred"), pseudo=paths.get("pseudo"),
                             classes=classes.get(image_id, ()),
                             image=image_path(cfg.data, data_root, image_id)))
    return jobs


def make_labels(ctx: StageContext) -> dict[str, Any]:
    """Write the pseudo labels of this process's shard of ``labels.split``; see the module docstring.

    Returns the summary (also written to ``summary_file``): counts, shares, made / done before,
    seconds, images/s, output folder.
    """
    cfg, lc = ctx.cfg, ctx.cfg.labels
    if lc.method not in METHODS:
        raise ConfigError(f"labels.method = {lc.method!r}: use one of {', '.join(METHODS)}")
    rank, world_size, _ = env_shard()
    info = build_dataset_info(cfg.data)
    out = ctx.output_path(lc.out, "labels.out")
    _check_out(ctx, out)
    ids = shard_ids(ctx.split_ids(lc.split), rank, world_size)
    out.mkdir(parents=True, exist_ok=True)
    todo = set(pending_ids(ids, out, ".png", lc.overwrite))
    jobs = _jobs(ctx, ids, todo, out)
    params = params_from_config(cfg, info.palette)
    if rank == 0:
        ctx.record("labels", "cpu", world_size)

    start = time.perf_counter()
    counts = np.zeros(256, dtype=np.int64)
    made = fully_ignored = 0
    tasks = [(job, params) for job in jobs]
    for _, was_made, image_counts in process_imap(label_one, tasks, workers=lc.workers,
                                                  ordered=False, desc=f"labels {lc.method}",
                                                  progress=rank == 0):
        counts += image_counts
        made += int(was_made)
        fully_ignored += int(image_counts[IGNORE] == image_counts.sum())
    seconds = time.perf_counter() - start
    summary = label_summary(counts, len(jobs), fully_ignored, info.class_names)
    summary.update({
        "method": lc.method, "pom": bool(lc.pom) if lc.method in ("eps", "cam", "nsrom") else False,
        "pom_cams": str(ctx.path(lc.pom_cams or lc.cams)) if lc.pom and lc.method in ("eps", "cam", "nsrom") else "",
        "split": lc.split, "out": str(out), "made": made, "done_before": len(jobs) - made,
        "seconds": round(seconds, 3), "images_per_s": round(made / seconds, 3) if made and seconds else 0.0,
        "rank": rank, "world_size": world_size,
    })
    path = summary_path(out, rank, world_size)
    summary["summary_file"] = str(path)
    write_summary(path, summary)
    return summary
