"""Post-processing of probability and label maps (dense CRF)."""

from wsss.postprocess.crf import CrfConfig, crf_from_labels, dense_crf, probs_from_labels

__all__ = ["CrfConfig", "crf_from_labels", "dense_crf", "probs_from_labels"]
