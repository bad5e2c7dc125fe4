"""The result of an evaluation: raw counts, the metrics derived from them, JSON and a terminal table."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsss.evaluation.boundary import COUNT_FIELDS, boundary_scores
from wsss.evaluation.confusion import CONVENTIONS, SegmentationMetrics, class_coverage, coverage, segmentation_metrics
from wsss.io import write_text_atomic


@dataclass
class EvalResult:
    """Summed counts of an evaluation and its protocol.

    ``confusion``: ``(L, L + 1) int64``, rows = ground truth 0..C, columns = prediction 0..C and
    (last) 255. ``boundary``: ``(4,) int64`` (see ``boundary.COUNT_FIELDS``) or None.
    ``cooccurrence``: None or a dict with ``context_classes``, ``fp`` ``(K, L) int64``, ``pairs``
    (list of ``cooccurrence.Pair``), ``ignored_context``, ``top_pairs``.
    Fractions are in [0, 1]; undefined values (0 / 0) are NaN here and null in JSON.
    """

    class_names: tuple[str, ...]
    confusion: np.ndarray
    gt_ignored: int
    num_images: int
    boundary: np.ndarray | None = None
    tolerance: float | None = None
    cooccurrence: dict | None = None
    protocol: dict = field(default_factory=dict)

    def metrics(self, convention: str = "ignore_as_miss") -> SegmentationMetrics:
        return segmentation_metrics(self.confusion, convention)

    @property
    def coverage(self) -> float:
        return coverage(self.confusion)

    @property
    def boundary_scores(self) -> dict[str, float] | None:
        return None if self.boundary is None else boundary_scores(self.boundary)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """Every number and the protocol as plain JSON types (NaN -> None)."""
        names = list(self.class_names)
        out: dict[str, Any] = {
            "protocol": self.protocol,
            "classes": names,
            "num_images": self.num_images,
            "pixels": {
                "counted": int(self.confusion.sum()),
                "ground_truth_255": int(self.gt_ignored),
                "predicted_255": int(self.confusion[:, -1].sum()),
            },
            "coverage": self.coverage,
            "per_class_coverage": dict(zip(names, class_coverage(self.confusion).tolist())),
            "conventions": {},
            "confusion_matrix": {
                "rows": "ground truth " + ", ".join(names),
                "columns": "prediction " + ", ".join(names) + ", 255",
                "counts": self.confusion.tolist(),
            },
        }
        for conv in CONVENTIONS:
            m = self.metrics(conv)
            out["conventions"][conv] = {
                "description": self.protocol.get("ignore_255_in_prediction", {}).get(conv, conv),
                "miou": m.miou,
                "miou_gt_present": m.miou_gt_present,
                "pixel_accuracy": m.pixel_accuracy,
                "fw_iou": m.fw_iou,
                "mean_precision": m.mean_precision,
                "mean_recall": m.mean_recall,
                "per_class": {
                    name: {"iou": m.iou[i], "precision": m.precision[i], "recall": m.recall[i],
                           "tp": int(m.tp[i]), "gt_pixels": int(m.gt_pixels[i]), "pred_pixels": int(m.pred_pixels[i])}
                    for i, name in enumerate(names)
                },
            }
        if self.boundary is not None:
            out["boundary"] = {"tolerance_px": self.tolerance, **self.boundary_scores,
                               **dict(zip(COUNT_FIELDS, (int(c) for c in self.boundary)))}
        if self.cooccurrence is not None:
            co = self.cooccurrence
            miss, dropped = self.metrics("ignore_as_miss"), self.metrics("ignore_dropped")
            out["cooccurrence"] = {
                "definition": "m_{k,c} = FP_{k,c} / TP_c; FP_{k,c} = pixels with context label k, ground truth "
                              "neither c nor 255, predicted c; TP_c = true positives of c over the same images",
                "context_classes": list(co["context_classes"]),
                "ignored_context": list(co["ignored_context"]),
                "top_pairs": co["top_pairs"],
                "pairs": [
                    {"target": p.target, "context": p.context, "fp": p.fp, "tp": p.tp, "ratio": p.ratio,
                     "target_iou": miss.iou[p.target_index], "target_iou_ignore_dropped": dropped.iou[p.target_index]}
                    for p in co["pairs"]
                ],
                "fp_matrix": {"rows": "context class", "columns": "predicted class", "counts": co["fp"].tolist()},
            }
        return _clean(out)

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False) + "\n"

    def write_json(self, path: str | Path) -> None:
        write_text_atomic(path, self.to_json())

    # ----------------------------------------------------------------- table
    def table(self) -> str:
        """An aligned text table (percentages) with class names, overall numbers, boundary and
        co-occurrence sections."""
        miss, dropped = self.metrics("ignore_as_miss"), self.metrics("ignore_dropped")
        cov = class_coverage(self.confusion)
        width = max(12, *(len(n) for n in self.class_names))
        head = (f"{'class':<{width}}  {'IoU':>7}  {'IoU-EPS':>7}  {'Prec':>7}  {'Rec':>7}  {'Rec-EPS':>7}  "
                f"{'Cover':>7}  {'GT px':>12}")
        lines = [
            f"{self.num_images} images, split: {self.protocol.get('split') or self.protocol.get('ids_from', '-')}",
            "IoU/Rec: a predicted 255 counts as a miss; IoU-EPS/Rec-EPS: pixels predicted 255 dropped "
            "(EPS evaluator); Cover: share of valid GT pixels not predicted 255. All in %.",
            head,
            "-" * len(head),
        ]
        for i, name in enumerate(self.class_names):
            lines.append(f"{name:<{width}}  {_pct(miss.iou[i])}  {_pct(dropped.iou[i])}  {_pct(miss.precision[i])}  "
                         f"{_pct(miss.recall[i])}  {_pct(dropped.recall[i])}  {_pct(cov[i])}  "
                         f"{int(miss.gt_pixels[i]):>12}")
        lines.append("-" * len(head))
        label_w = 52
        lines.append(f"{'':<{label_w}}  {'255=miss':>9}  {'EPS':>9}")
        for label, a, b in (
            ("mIoU, mean over classes with non-zero union", miss.miou, dropped.miou),
            ("mIoU, mean over classes present in the ground truth", miss.miou_gt_present, dropped.miou_gt_present),
            ("pixel accuracy", miss.pixel_accuracy, dropped.pixel_accuracy),
            ("frequency-weighted IoU", miss.fw_iou, dropped.fw_iou),
            ("mean precision", miss.mean_precision, dropped.mean_precision),
            ("mean recall", miss.mean_recall, dropped.mean_recall),
        ):
            lines.append(f"{label:<{label_w}}  {_pct(a, 9)}  {_pct(b, 9)}")
        lines.append(f"{'coverage (valid GT pixels not predicted 255)':<{label_w}}  {_pct(self.coverage, 9)}")
        if self.boundary is not None:
            s = self.boundary_scores
            lines.append(f"boundary (Laplacian, class-agnostic, tolerance {self.tolerance:g} px): "
                         f"precision {_pct(s['precision'], 0)}  recall {_pct(s['recall'], 0)}  "
                         f"F1 {_pct(s['f1'], 0)}")
        if self.cooccurrence is not None:
            pairs = self.cooccurrence["pairs"]
            lines.append("co-occurrence confusion ratio m = FP(context k -> target c) / TP(c), lower is better:")
            if not pairs:
                lines.append("  (no pairs requested; use --pairs target:context or --top-pairs N)")
            else:
                tw = max(6, *(len(p.target) for p in pairs))
                cw = max(7, *(len(p.context) for p in pairs))
                lines.append(f"  {'target':<{tw}}  {'context':<{cw}}  {'FP':>10}  {'TP':>10}  {'m':>8}  {'IoU(c)':>7}")
                for p in pairs:
                    ratio = "-" if math.isnan(p.ratio) else f"{p.ratio:.4f}"
                    lines.append(f"  {p.target:<{tw}}  {p.context:<{cw}}  {p.fp:>10}  {p.tp:>10}  {ratio:>8}  "
                                 f"{_pct(miss.iou[p.target_index])}")
        return "\n".join(lines)


def _pct(x: float, width: int = 7) -> str:
    x = float(x)
    return f"{'-':>{width}}" if math.isnan(x) else f"{100 * x:>{width}.2f}"


def _clean(v: Any) -> Any:
    """numpy scalars/arrays to Python, NaN/inf to None, tuples to lists."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, np.ndarray):
        return _clean(v.tolist())
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return None if math.isnan(v) or math.isinf(v) else v
    return v
