"""Which labels a segmentation network is trained on, said out loud (METHODS.md Part C).

``train_seg.supervision``:

- ``weak`` (default): the labels are the pseudo-label folder ``train_seg.labels`` (run-relative or
  absolute), ``<id>.png`` palette PNGs with 255 = ignore. A folder that *is* the ground truth
  ``<data.root>/<data.mask_dir>`` (the same folder reached through a symlink, a relative path,
  ``..`` or a trailing slash) or whose files *are* the ground-truth files (e.g. a folder of
  symlinks or hard links to them) is refused: the NSROM repository silently trains on the ground
  truth unless a path is edited by hand, and a toolkit must not.
- ``full``: the ground-truth folder, on purpose: the fully supervised reference that weak results
  are divided by (weak/full ratio).

The trainer logs the folder used and a coverage summary over the training ids (share of labelled
pixels, of ignore pixels, images that are all ignore), written to
``<run>/<train_seg.out>/label_source.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from wsss.data.image_labels import check_mask_values
from wsss.data.splits import dataset_root
from wsss.data.voc import image_path
from wsss.engine.sharding import process_map
from wsss.errors import ConfigError, DataError
from wsss.io import IGNORE, read_label, write_text_atomic

PSEUDO_LABEL_EXT = ".png"
#: How many label files are compared with the ground truth by identity (samefile).
FILES_CHECKED = 5
REPORT_NAME = "label_source.json"


class GroundTruthAsPseudoLabels(ConfigError):
    """The pseudo-label folder is (or holds) the ground truth while ``supervision`` is ``weak``."""


@dataclass(frozen=True)
class LabelSource:
    """The training labels: ``folder/<id><ext>`` for every training id."""

    folder: Path
    ext: str
    supervision: str
    description: str


def ground_truth_folder(data_cfg) -> Path:
    """``<data.root>/<data.mask_dir>`` as an absolute path (``mask_dir`` may be absolute): the
    training data joins ``mask_dir`` to ``data.root``, so a relative one would be joined twice."""
    return (dataset_root(data_cfg) / Path(data_cfg.mask_dir).expanduser()).resolve()


def _same_folder(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _shared_files(folder: Path, gt: Path, ids: Sequence[str], ext: str, gt_ext: str,
                  limit: int = FILES_CHECKED) -> list[str]:
    """Ids (among the first ``limit`` present in both folders) whose label file is a GT file."""
    same: list[str] = []
    checked = 0
    for image_id in ids:
        if checked >= limit:
            break
        mine, theirs = folder / f"{image_id}{ext}", gt / f"{image_id}{gt_ext}"
        if not (mine.is_file() and theirs.is_file()):
            continue
        checked += 1
        if os.path.samefile(mine, theirs):
            same.append(image_id)
    return same


def _identical_bytes(folder: Path, gt: Path, ids: Sequence[str], ext: str, gt_ext: str,
                     limit: int = FILES_CHECKED) -> tuple[int, int]:
    """``(identical, compared)``: how many of the first ``limit`` label files are byte copies of
    the ground truth (a copy is allowed, but worth a warning)."""
    identical = compared = 0
    for image_id in ids:
        if compared >= limit:
            break
        mine, theirs = folder / f"{image_id}{ext}", gt / f"{image_id}{gt_ext}"
        if not (mine.is_file() and theirs.is_file()):
            continue
        compared += 1
        identical += mine.read_bytes() == theirs.read_bytes()
    return identical, compared


def label_source(ctx, ids: Sequence[str] = ()) -> LabelSource:
    """Resolve and check the training labels of ``ctx.cfg.train_seg`` (see the module docstring).

    ``ids``: training ids used to compare a few files with the ground truth (default: the split
    ``train_seg.split``). Raises :class:`GroundTruthAsPseudoLabels` for the ground truth under weak
    supervision, :class:`~wsss.errors.DataError` for a missing folder.
    """
    cfg = ctx.cfg
    tcfg = cfg.train_seg
    gt = ground_truth_folder(cfg.data)
    if tcfg.supervision == "full":
        if not gt.is_dir():
            raise DataError(f"ground-truth folder not found: {gt} (data.root + data.mask_dir); "
                            f"train_seg.supervision=full trains on it")
        return LabelSource(gt, cfg.data.mask_ext, "full",
                           f"ground truth {gt} (train_seg.supervision=full: the fully supervised reference)")
    if tcfg.supervision != "weak":
        raise ConfigError(f"train_seg.supervision = {tcfg.supervision!r}: use weak or full")
    if not str(tcfg.labels).strip():
        raise ConfigError("train_seg.labels is empty: name the pseudo-label folder (e.g. labels, "
                          "written by `wsss labels`), or set train_seg.supervision=full")
    folder = ctx.path(tcfg.labels)
    refuse = (f"train_seg.labels = {tcfg.labels!r} ({folder}) {{}} the ground truth {gt}; weak supervision "
              f"must train on pseudo labels. Point train_seg.labels at the folder written by `wsss labels`, "
              f"or set train_seg.supervision=full to train the fully supervised reference on purpose")
    if gt.exists() and folder.exists() and _same_folder(folder, gt):
        raise GroundTruthAsPseudoLabels(refuse.format("is"))
    if not folder.is_dir():
        raise DataError(f"pseudo-label folder not found: {folder} (train_seg.labels); "
                        f"run `wsss labels` first or fix the path")
    if gt.is_dir():
        ids = list(ids) if ids else ctx.split_ids(tcfg.split)
        shared = _shared_files(folder, gt, ids, PSEUDO_LABEL_EXT, cfg.data.mask_ext)
        if shared:
            raise GroundTruthAsPseudoLabels(refuse.format(
                f"holds files that are the ground-truth files (e.g. {shared[0]}{PSEUDO_LABEL_EXT}) of"))
    return LabelSource(folder.resolve(), PSEUDO_LABEL_EXT, "weak", f"pseudo labels {folder.resolve()}")


def resolve_training_labels(ctx) -> tuple[Path, str]:
    """``(folder, description)`` of the training labels (see :func:`label_source`)."""
    source = label_source(ctx)
    return source.folder, source.description


def training_ids(ctx) -> list[str]:
    """The ids of ``train_seg.split``; with ``data.missing = skip``, only those whose image exists."""
    cfg = ctx.cfg
    ids = ctx.split_ids(cfg.train_seg.split)
    if cfg.data.missing == "skip":
        root = dataset_root(cfg.data)
        ids = [i for i in ids if image_path(cfg.data, root, i).is_file()]
    return ids


def check_label_files(source: LabelSource, ids: Sequence[str]) -> None:
    """Raise :class:`DataError` naming the first missing ``<folder>/<id><ext>`` and the count."""
    missing = [i for i in ids if not (source.folder / f"{i}{source.ext}").is_file()]
    if missing:
        raise DataError(f"{len(missing)} of {len(ids)} training ids have no label file in {source.folder} "
                        f"(first: {missing[0]}, expected {source.folder / (missing[0] + source.ext)}); "
                        f"make labels for every id of the training split (`wsss labels`) or fix train_seg.labels")


def _label_counts(args: tuple[str, int]) -> np.ndarray:
    path, num_classes = args
    return check_mask_values(read_label(path, "training label"), num_classes, path)


def label_coverage(source: LabelSource, ids: Sequence[str], num_classes: int,
                   workers: int = 0) -> dict:
    """Coverage of the training labels over ``ids``.

    Returns ``{"images", "pixels", "labelled_fraction", "ignore_fraction", "all_ignore_images",
    "all_ignore_fraction", "class_pixel_fraction": [C+1 floats, share of labelled pixels per class]}``;
    fractions in [0, 1]. Values outside 0..C and 255 raise :class:`DataError` naming the file.
    """
    jobs = [(str(source.folder / f"{i}{source.ext}"), num_classes) for i in ids]
    per_image = process_map(_label_counts, jobs, workers=workers, chunksize=16,
                            desc="label coverage", progress=len(jobs) > 200)
    totals = np.zeros(256, dtype=np.int64)
    all_ignore = 0
    for counts in per_image:
        totals += counts
        all_ignore += int(counts.sum() == counts[IGNORE])
    pixels = int(totals.sum())
    labelled = int(totals[:num_classes + 1].sum())
    return {
        "images": len(ids),
        "pixels": pixels,
        "labelled_fraction": labelled / pixels if pixels else 0.0,
        "ignore_fraction": int(totals[IGNORE]) / pixels if pixels else 0.0,
        "all_ignore_images": all_ignore,
        "all_ignore_fraction": all_ignore / len(ids) if ids else 0.0,
        "class_pixel_fraction": [float(v) / labelled if labelled else 0.0
                                 for v in totals[:num_classes + 1]],
    }


def coverage_line(coverage: dict) -> str:
    """One line for the log: ``N images: 71.2% labelled, 28.8% ignore, 3 images all ignore``."""
    return (f"{coverage['images']} images: {100 * coverage['labelled_fraction']:.1f}% of pixels labelled, "
            f"{100 * coverage['ignore_fraction']:.1f}% ignore (255), "
            f"{coverage['all_ignore_images']} images all ignore")


def write_label_report(path: str | os.PathLike, source: LabelSource, coverage: dict, split: str,
                       byte_copies: tuple[int, int] | None = None) -> Path:
    """Write the label-source report (folder, supervision, split, coverage and, for pseudo labels,
    how many of the first few files are byte copies of the ground truth) as JSON."""
    report = {
        "supervision": source.supervision,
        "folder": str(source.folder),
        "ext": source.ext,
        "description": source.description,
        "split": split,
        "coverage": coverage,
    }
    if byte_copies is not None:
        report["byte_copies_of_ground_truth"] = {"identical": byte_copies[0], "compared": byte_copies[1]}
    path = Path(path)
    write_text_atomic(path, json.dumps(report, indent=2) + "\n")
    return path


def report_label_source(ctx, source: LabelSource, ids: Sequence[str], num_classes: int,
                        log=None, workers: int = 0) -> dict:
    """Coverage of ``source`` over ``ids``, logged (``log.info``/``log.warning``) and written to
    ``<run>/<train_seg.out>/label_source.json``. Returns the report's coverage dict."""
    coverage = label_coverage(source, ids, num_classes, workers)
    byte_copies = None
    if source.supervision == "weak":
        gt = ground_truth_folder(ctx.cfg.data)
        if gt.is_dir():
            byte_copies = _identical_bytes(source.folder, gt, ids, source.ext, ctx.cfg.data.mask_ext)
    path = write_label_report(ctx.path(ctx.cfg.train_seg.out) / REPORT_NAME, source, coverage,
                              ctx.cfg.train_seg.split, byte_copies)
    if log is not None:
        log.info("training labels: %s", source.description)
        log.info("label coverage: %s (%s)", coverage_line(coverage), path)
        if byte_copies and byte_copies[0]:
            log.warning("%d of the first %d pseudo-label files are byte copies of the ground truth: "
                        "check that train_seg.labels holds pseudo labels", *byte_copies)
    return coverage
