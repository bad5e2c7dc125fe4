"""The evaluator: stream over image ids, count per image in worker processes, sum the counts.

Each image contributes small integer arrays (an ``(L, L + 1)`` confusion matrix, four boundary
counts, a ``(K, L)`` context false-positive matrix); the main process only adds them up, so
memory does not grow with the number of images, and the result does not depend on the number of
workers or the order in which images finish.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

import wsss
from wsss.data.classes import DatasetInfo, dataset_info
from wsss.data.splits import read_split
from wsss.errors import DataError
from wsss.evaluation.boundary import (COUNT_FIELDS, DEFAULT_TOLERANCE, boundary_counts, label_boundaries,
                                      read_boundary_map)
from wsss.evaluation.confusion import AVERAGING_TEXT, CONVENTION_TEXT, IGNORE, check_values, confusion_counts
from wsss.evaluation.cooccurrence import (context_fp_counts, default_ignored_context, make_pairs, parse_pairs,
                                          read_context_names)
from wsss.evaluation.result import EvalResult
from wsss.io import read_label

# Free-form protocol fields every result carries (null until a caller fills them in).
PROTOCOL_FIELDS = ("post_processing", "scales", "initialisation", "saliency_source")
# Protocol fields the evaluator fills in itself.
EVALUATOR_FIELDS = ("split", "ids_from", "num_images", "dataset", "pred_dir", "gt_dir", "ignore_255_in_ground_truth",
                    "ignore_255_in_prediction", "averaging", "boundary", "crop", "context_dir", "wsss_version")
CROP_TEXT = {
    False: "error: prediction and ground truth must have the same size",
    True: "EPS evaluator: the prediction is cut to the ground-truth size at the top-left corner "
          "(PIL crop((0, 0, W, H))); where it is smaller the missing pixels are 0 (background); context "
          "masks and boundary maps are cut the same way (padding: no context label, no boundary)",
}


def ids_in_folder(folder: str | Path, ext: str = ".png") -> list[str]:
    """Sorted stems of the ``*<ext>`` files in ``folder``."""
    return sorted(p.name[: -len(ext)] for p in Path(folder).iterdir() if p.name.endswith(ext) and p.is_file())


@dataclass(frozen=True)
class EvalJob:
    """What a worker needs to evaluate one image (small and picklable)."""

    pred_dir: str
    gt_dir: str
    num_labels: int
    pred_ext: str = ".png"
    gt_ext: str = ".png"
    boundary: bool = True
    tolerance: float = DEFAULT_TOLERANCE
    boundary_gt_dir: str | None = None
    context_dir: str | None = None
    context_ext: str = ".png"
    num_context: int = 0
    crop: bool = False


@dataclass
class ImageCounts:
    """Counts of one image, or sums over many."""

    confusion: np.ndarray                  # (L, L + 1) int64, last column = predicted 255
    gt_ignored: int = 0                    # ground-truth pixels of 255 (not counted)
    images: int = 1
    boundary: np.ndarray | None = None     # (4,) int64, see boundary.COUNT_FIELDS
    context_fp: np.ndarray | None = None   # (K, L) int64

    def add(self, other: "ImageCounts") -> None:
        self.confusion += other.confusion
        self.gt_ignored += other.gt_ignored
        self.images += other.images
        if other.boundary is not None:
            self.boundary = other.boundary.copy() if self.boundary is None else self.boundary + other.boundary
        if other.context_fp is not None:
            self.context_fp = other.context_fp.copy() if self.context_fp is None else self.context_fp + other.context_fp


def crop_top_left(arr: np.ndarray, shape: tuple[int, int], fill: Any) -> np.ndarray:
    """``arr`` cut to ``shape`` at the top-left corner, padded with ``fill`` where it is smaller."""
    out = np.full(shape, fill, dtype=arr.dtype)
    h, w = min(shape[0], arr.shape[0]), min(shape[1], arr.shape[1])
    out[:h, :w] = arr[:h, :w]
    return out


def _match_size(arr: np.ndarray, gt_shape: tuple[int, int], crop: bool, fill: Any, what: str, path: Path,
                gt_path: Path) -> np.ndarray:
    if arr.shape == gt_shape:
        return arr
    if crop:
        return crop_top_left(arr, gt_shape, fill)
    raise DataError(f"{what} {path} is {arr.shape[1]}x{arr.shape[0]} (WxH) but the ground truth {gt_path} is "
                    f"{gt_shape[1]}x{gt_shape[0]}; resize it, or pass --crop to cut it as the EPS evaluator does")


def evaluate_image(image_id: str, job: EvalJob) -> ImageCounts:
    """Read and count one image. Raises :class:`DataError` naming the file on any problem."""
    gt_path = Path(job.gt_dir) / f"{image_id}{job.gt_ext}"
    pred_path = Path(job.pred_dir) / f"{image_id}{job.pred_ext}"
    if not gt_path.is_file():
        raise DataError(f"ground truth missing for {image_id}: expected {gt_path}")
    if not pred_path.is_file():
        raise DataError(f"prediction missing for {image_id}: expected {pred_path}")
    gt = read_label(gt_path, what="ground truth")
    pred = read_label(pred_path, what="prediction")
    pred = _match_size(pred, gt.shape, job.crop, 0, "prediction", pred_path, gt_path)
    counts = ImageCounts(
        confusion=confusion_counts(pred, gt, job.num_labels, pred_name=f"prediction {pred_path}",
                                   gt_name=f"ground truth {gt_path}"),
        gt_ignored=int(np.count_nonzero(gt == IGNORE)),
    )
    if job.boundary:
        if job.boundary_gt_dir:
            gt_b = read_boundary_map(job.boundary_gt_dir, image_id)
            gt_b = _match_size(gt_b, gt.shape, job.crop, False, "boundary map", Path(job.boundary_gt_dir) / image_id,
                               gt_path)
        else:
            gt_b = label_boundaries(gt)
        counts.boundary = boundary_counts(label_boundaries(pred), gt_b, job.tolerance)
    if job.context_dir:
        ctx_path = Path(job.context_dir) / f"{image_id}{job.context_ext}"
        if not ctx_path.is_file():
            raise DataError(f"context mask missing for {image_id}: expected {ctx_path}")
        ctx = read_label(ctx_path, what="context mask")
        ctx = _match_size(ctx, gt.shape, job.crop, IGNORE, "context mask", ctx_path, gt_path)
        check_values(ctx, job.num_context, f"context mask {ctx_path}")
        counts.context_fp = context_fp_counts(pred, gt, ctx, job.num_labels, job.num_context)
    return counts


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def stream_counts(ids: Sequence[str], job: EvalJob, workers: int = 1, chunksize: int | None = None) -> Iterator[ImageCounts]:
    """Per-image counts in id order; ``workers > 1`` uses a process pool (``imap`` with chunks),
    ``workers == 0`` one process per usable CPU."""
    workers = usable_cpus() if workers == 0 else workers
    workers = max(1, min(workers, len(ids)))
    fn = partial(evaluate_image, job=job)
    if workers == 1:
        yield from map(fn, ids)
        return
    if chunksize is None:
        chunksize = max(1, min(64, len(ids) // (workers * 8)))
    with multiprocessing.get_context().Pool(workers) as pool:
        yield from pool.imap(fn, ids, chunksize=chunksize)


def _check_dir(path: str | Path | None, what: str) -> None:
    if path is not None and not Path(path).is_dir():
        raise DataError(f"{what} folder not found: {path}")


def evaluate(pred_dir: str | Path, gt_dir: str | Path, ids: Iterable[str] | None = None,
             info: DatasetInfo | None = None, *, split: str | Path | None = None,
             pred_ext: str = ".png", gt_ext: str = ".png",
             boundary: bool = True, tolerance: float = DEFAULT_TOLERANCE, boundary_gt_dir: str | Path | None = None,
             context_dir: str | Path | None = None, context_names: Sequence[str] | str | Path | None = None,
             pairs: Sequence[str] = (), top_pairs: int = 0, ignored_context: Sequence[int | str] | None = None,
             crop: bool = False, workers: int = 1, chunksize: int | None = None,
             protocol: Mapping[str, Any] | None = None, progress: bool = False) -> EvalResult:
    """Evaluate the label maps ``pred_dir/<id><pred_ext>`` against ``gt_dir/<id><gt_ext>``.

    Ids: ``ids`` if given, else those of the ``split`` file, else every ``*<gt_ext>`` file in
    ``gt_dir`` (so a missing prediction is an error, never a silently smaller set).
    ``info``: the label set (default VOC); maps hold ``0..C`` or 255.
    ``boundary``: boundary P/R/F1 at ``tolerance`` pixels, against boundaries of the ground-truth
    masks or of ``boundary_gt_dir`` (``<id>.mat`` SBD or ``<id>.png``).
    ``context_dir`` + ``context_names`` (names, or a file for :func:`read_context_names`): the
    co-occurrence confusion ratio for ``pairs`` (``"target:context"``) and the ``top_pairs`` pairs
    with the most false positives, leaving out the context classes of ``ignored_context``
    (indices or names; default: those named void/unlabeled/ignore/none).
    ``crop``: cut size-mismatched maps as the EPS evaluator does instead of failing.
    ``protocol``: free-form fields recorded with the result (post_processing, scales, ...).
    """
    info = info or dataset_info("voc")
    _check_dir(pred_dir, "prediction")
    _check_dir(gt_dir, "ground-truth")
    _check_dir(boundary_gt_dir, "boundary map")
    _check_dir(context_dir, "context mask")
    if tolerance < 0:
        raise DataError(f"boundary tolerance must be >= 0 pixels, got {tolerance}")
    if workers < 0:
        raise DataError(f"workers must be >= 0 (0 = one per CPU), got {workers}")
    if top_pairs < 0:
        raise DataError(f"top_pairs must be >= 0, got {top_pairs}")
    free = {key: None for key in PROTOCOL_FIELDS}
    free.update(dict(protocol or {}))
    for key in free:
        if key in EVALUATOR_FIELDS:
            raise DataError(f"protocol field {key!r} is set by the evaluator and cannot be given")
    if ids is not None:
        ids = [str(i) for i in ids]
        ids_from = "given list"
    elif split is not None:
        ids = read_split(split)
        ids_from = f"split file {split}"
    else:
        ids = ids_in_folder(gt_dir, gt_ext)
        ids_from = f"every *{gt_ext} file in the ground-truth folder"
    if not ids:
        raise DataError(f"no images to evaluate: the id list ({ids_from}) is empty")
    seen: set[str] = set()
    for image_id in ids:
        if image_id in seen:
            raise DataError(f"image id {image_id} is listed twice ({ids_from})")
        seen.add(image_id)

    ctx_names: tuple[str, ...] = ()
    if context_dir is not None:
        if context_names is None:
            raise DataError("context masks need their class names: give a context.json or a list of names")
        ctx_names = (read_context_names(context_names) if isinstance(context_names, (str, Path))
                     else tuple(str(n) for n in context_names))
        if not ctx_names:
            raise DataError("the list of context class names is empty")
    elif pairs or top_pairs:
        raise DataError("co-occurrence pairs need context masks: give the context mask folder")
    pair_index = parse_pairs(pairs, info.class_names, ctx_names) if ctx_names else []
    ignored = (default_ignored_context(ctx_names) if ignored_context is None
               else _context_indices(ignored_context, ctx_names))

    job = EvalJob(pred_dir=str(pred_dir), gt_dir=str(gt_dir), num_labels=info.num_labels, pred_ext=pred_ext,
                  gt_ext=gt_ext, boundary=boundary, tolerance=float(tolerance),
                  boundary_gt_dir=str(boundary_gt_dir) if boundary_gt_dir else None,
                  context_dir=str(context_dir) if context_dir else None, num_context=len(ctx_names), crop=crop)
    total: ImageCounts | None = None
    from tqdm import tqdm

    with tqdm(total=len(ids), desc="eval", unit="img", disable=not progress, leave=False) as bar:
        for counts in stream_counts(ids, job, workers=workers, chunksize=chunksize):
            if total is None:
                total = counts
            else:
                total.add(counts)
            bar.update(1)
    assert total is not None

    cooc = None
    if ctx_names:
        tp = np.diag(total.confusion[:, :info.num_labels])
        cooc = {
            "context_classes": ctx_names,
            "ignored_context": ignored,
            "fp": total.context_fp,
            "pairs": make_pairs(total.context_fp, tp, info.class_names, ctx_names, pair_index, top_pairs, ignored),
            "top_pairs": int(top_pairs),
        }

    fields: dict[str, Any] = {
        "split": str(split) if split is not None else None,
        "ids_from": ids_from,
        "num_images": total.images,
        "dataset": info.name,
        "pred_dir": str(pred_dir),
        "gt_dir": str(gt_dir),
        "ignore_255_in_ground_truth": "pixels whose ground truth is 255 are not counted",
        "ignore_255_in_prediction": dict(CONVENTION_TEXT),
        "averaging": dict(AVERAGING_TEXT),
        "boundary": _boundary_protocol(boundary, tolerance, boundary_gt_dir),
        "crop": CROP_TEXT[bool(crop)],
        "context_dir": str(context_dir) if context_dir is not None else None,
        "wsss_version": wsss.__version__,
    }
    assert set(fields) == set(EVALUATOR_FIELDS)
    fields.update(free)
    return EvalResult(class_names=tuple(info.class_names), confusion=total.confusion, gt_ignored=total.gt_ignored,
                      num_images=total.images, boundary=total.boundary, tolerance=float(tolerance) if boundary else None,
                      cooccurrence=cooc, protocol=fields)


def _context_indices(items: Sequence[int | str], names: Sequence[str]) -> tuple[int, ...]:
    out = []
    for item in items:
        if isinstance(item, str) and not item.isdigit():
            if item not in names:
                raise DataError(f"context class {item!r} to ignore is not a context class ({', '.join(names)})")
            out.append(list(names).index(item))
        else:
            out.append(int(item))
    return tuple(out)


def _boundary_protocol(enabled: bool, tolerance: float, boundary_gt_dir: str | Path | None) -> dict | None:
    if not enabled:
        return None
    return {
        "detector": "cv2.Laplacian (3x3) on the label map, non-zero response = boundary, class-agnostic; "
                    "255 pixels take the nearest label first",
        "tolerance_px": float(tolerance),
        "matching": "a boundary pixel matches when one of the other side lies within the tolerance "
                    "(Euclidean), many-to-one; counts pooled over images",
        "gt_source": (f"boundary maps in {boundary_gt_dir} (<id>.mat SBD GTcls.Boundaries or <id>.png non-zero)"
                      if boundary_gt_dir else "Laplacian boundaries of the ground-truth masks"),
        "count_fields": list(COUNT_FIELDS),
    }
