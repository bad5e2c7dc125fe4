"""One evaluator with an explicit protocol: confusion-matrix metrics under both 255 conventions,
coverage, boundary P/R/F1 and the co-occurrence confusion ratio (METHODS.md A.5 and Part C)."""

from wsss.evaluation.boundary import boundary_counts, boundary_scores, label_boundaries, read_sbd_boundaries
from wsss.evaluation.confusion import CONVENTIONS, confusion_counts, coverage, segmentation_metrics
from wsss.evaluation.cooccurrence import context_fp_counts, read_context_names
from wsss.evaluation.evaluate import evaluate, evaluate_image
from wsss.evaluation.result import EvalResult

__all__ = [
    "CONVENTIONS", "EvalResult", "boundary_counts", "boundary_scores", "confusion_counts", "context_fp_counts",
    "coverage", "evaluate", "evaluate_image", "label_boundaries", "read_context_names",
    "read_sbd_boundaries", "segmentation_metrics",
]
