"""Confusion matrix of one label map pair, and the segmentation metrics derived from it.

The matrix has one extra column for predictions of 255 (ignore), so that both conventions for
such pixels come out of the same counts (METHODS.md, Part C):

- ``ignore_as_miss`` (strict): a predicted 255 is a miss of the ground-truth class (a false
  negative); every valid ground-truth pixel counts.
- ``ignore_dropped`` (the EPS evaluator): pixels predicted 255 are dropped before counting.

Ground-truth pixels of 255 are never counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsss.errors import DataError

IGNORE = 255
CONVENTIONS = ("ignore_as_miss", "ignore_dropped")
CONVENTION_TEXT = {
    "ignore_as_miss": "a prediction of 255 counts as a miss (false negative) of the ground-truth class",
    "ignore_dropped": "pixels predicted 255 are dropped before counting (the EPS evaluator)",
}
AVERAGING_TEXT = {
    "miou": "mean IoU over classes with a non-zero union (TP + FP + FN > 0), as numpy.nanmean in the EPS evaluator",
    "miou_gt_present": "mean IoU over classes with at least one counted ground-truth pixel",
}


def check_values(label: np.ndarray, num_values: int, what: str) -> None:
    """Raise :class:`DataError` naming ``what`` if ``label`` holds a value outside
    ``0..num_values-1`` and not 255."""
    bad = np.unique(label[(label >= num_values) & (label != IGNORE)])
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:8])
        raise DataError(f"{what} has values {shown} outside 0..{num_values - 1} and 255; "
                        f"check that it belongs to this label set ({num_values} labels)")


def _as_uint8(label: np.ndarray, what: str) -> np.ndarray:
    label = np.asarray(label)
    if label.dtype == np.uint8:
        return label
    if label.size and (label.min() < 0 or label.max() > IGNORE):
        raise DataError(f"{what} has values outside 0..255")
    return label.astype(np.uint8)


def confusion_counts(pred: np.ndarray, gt: np.ndarray, num_labels: int,
                     pred_name: str = "prediction", gt_name: str = "ground truth") -> np.ndarray:
    """Count pixels by (ground truth, prediction).

    ``pred``, ``gt``: ``(H, W)`` uint8 label maps with values in ``0..num_labels-1`` or 255.
    Returns ``(L, L + 1) int64`` with ``L = num_labels``: rows are ground-truth classes, columns
    predicted classes, the last column counts pixels predicted 255. Pixels whose ground truth is
    255 are left out. Raises :class:`DataError` (naming ``pred_name``/``gt_name``) on values out
    of range; shapes must already match.
    """
    L = num_labels
    gt = _as_uint8(gt, gt_name)
    pred = _as_uint8(pred, pred_name)
    # One pass: a 256 x 256 histogram of (gt, pred) byte pairs, then the valid rows/columns.
    joint = np.asarray(gt, dtype=np.intp) << 8
    joint |= pred
    hist = np.bincount(joint.reshape(-1), minlength=256 * 256).reshape(256, 256)
    if hist[L:IGNORE].any() or hist[:, L:IGNORE].any():
        # Slow path only for bad input: say which map and which values.
        check_values(gt, L, gt_name)
        check_values(pred, L, pred_name)
    columns = list(range(L)) + [IGNORE]
    return hist[:L][:, columns].astype(np.int64)


@dataclass(frozen=True)
class SegmentationMetrics:
    """Metrics of one 255-convention. Per-class arrays are ``(L,) float64``, NaN where undefined
    (0 / 0); fractions in [0, 1]."""

    convention: str
    tp: np.ndarray          # (L,) int64 true positives
    gt_pixels: np.ndarray   # (L,) int64 counted ground-truth pixels per class (TP + FN)
    pred_pixels: np.ndarray  # (L,) int64 pixels predicted as the class (TP + FP)
    iou: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    miou: float             # over classes with a non-zero union
    miou_gt_present: float  # over classes present in the ground truth
    pixel_accuracy: float
    fw_iou: float           # frequency-weighted IoU (weights = ground-truth pixel share)
    mean_precision: float   # over classes where defined
    mean_recall: float      # over classes where defined


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def segmentation_metrics(confusion: np.ndarray, convention: str = "ignore_as_miss") -> SegmentationMetrics:
    """IoU, precision, recall per class and the overall numbers from an ``(L, L + 1)`` matrix
    (see :func:`confusion_counts`) under ``convention`` (one of :data:`CONVENTIONS`)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; use one of {CONVENTIONS}")
    confusion = np.asarray(confusion, dtype=np.int64)
    L = confusion.shape[0]
    m = confusion[:, :L]
    tp = np.diag(m).copy()
    pred_pixels = m.sum(axis=0)
    gt_pixels = confusion.sum(axis=1) if convention == "ignore_as_miss" else m.sum(axis=1)
    union = gt_pixels + pred_pixels - tp
    iou = _ratio(tp, union)
    present = gt_pixels > 0
    total = int(gt_pixels.sum())
    freq = _ratio(gt_pixels, total) if total else np.zeros(L)
    return SegmentationMetrics(
        convention=convention,
        tp=tp,
        gt_pixels=gt_pixels,
        pred_pixels=pred_pixels,
        iou=iou,
        precision=_ratio(tp, pred_pixels),
        recall=_ratio(tp, gt_pixels),
        miou=_nanmean(iou),
        miou_gt_present=_nanmean(iou[present]),
        pixel_accuracy=float(tp.sum() / total) if total else float("nan"),
        fw_iou=float((freq[present] * iou[present]).sum()) if total else float("nan"),
        mean_precision=_nanmean(_ratio(tp, pred_pixels)),
        mean_recall=_nanmean(_ratio(tp, gt_pixels)),
    )


def coverage(confusion: np.ndarray) -> float:
    """Share of valid ground-truth pixels that the prediction labels (not 255), in [0, 1]."""
    confusion = np.asarray(confusion)
    total = confusion.sum()
    return float(1.0 - confusion[:, -1].sum() / total) if total else float("nan")


def class_coverage(confusion: np.ndarray) -> np.ndarray:
    """Per ground-truth class: share of its valid pixels that are not predicted 255. ``(L,)``."""
    confusion = np.asarray(confusion)
    rows = confusion.sum(axis=1)
    return _ratio(rows - confusion[:, -1], rows)
