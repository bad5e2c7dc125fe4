"""Non-Salient Region Masking (NSROM, METHODS.md B.5): masked labels for segmentation round 2.

Pure function on numpy arrays. Label values: 0 background, k = class k (1-based), 255 ignore.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from wsss.errors import DataError
from wsss.methods.nsrom import IGNORE, min_class_fraction_rule


def dilate_object_mask(mask: np.ndarray, kernel: int = 30) -> np.ndarray:
    """Dilate a (H, W) bool mask with a kernel×kernel all-ones kernel, one iteration, as
    ``cv2.dilate`` with its default anchor (kernel // 2) and default border (outside = not object).

    Reach for an even kernel of 30: an output pixel is set when an object pixel lies within
    15 px up/left or 14 px down/right of it; seen from an object pixel, the mask therefore
    grows by 14 px up/left and 15 px down/right. For an odd kernel the reach is symmetric.
    """
    element = np.ones((kernel, kernel), dtype=np.uint8)
    return cv2.dilate(mask.astype(np.uint8), element, iterations=1).astype(bool)


def non_salient_region_masking(pred: np.ndarray, pseudo_label: np.ndarray, saliency: np.ndarray,
                               classes: Sequence[int], kernel: int = 30,
                               min_fraction: float = 0.01) -> np.ndarray:
    """NSRM label of one image (METHODS B.5).

    pred:         (H, W) uint8 round-1 prediction P (0..C).
    pseudo_label: (H, W) uint8 pseudo label L of round 1 (0, 1..C, 255).
    saliency:     (H, W) saliency S (any non-zero value counts as object).
    classes:      the image-level label (1-based class indices).
    Complex images (two or more distinct classes): P is expanded with L (where L is a class
    and P is 0, P = L); object mask M = [P ≠ 0] ∪ [S ≠ 0]; M dilated by :func:`dilate_object_mask`;
    outside it the label becomes 255, inside it is the expanded P. Single-class images keep P
    unchanged. The 1 % rule (:func:`min_class_fraction_rule`) is then applied to every image.
    Returns a new (H, W) uint8 array.
    """
    pred = np.asarray(pred)
    pseudo_label = np.asarray(pseudo_label)
    saliency = np.asarray(saliency)
    if pred.ndim != 2 or pseudo_label.shape != pred.shape or saliency.shape != pred.shape:
        raise DataError(f"NSRM needs prediction, pseudo label and saliency of one (H, W) shape, "
                        f"got {pred.shape}, {pseudo_label.shape}, {saliency.shape}")
    out = pred.astype(np.uint8, copy=True)
    if len(set(int(c) for c in classes)) >= 2:
        is_class = (pseudo_label > 0) & (pseudo_label < IGNORE)
        expand = is_class & (out == 0)
        out[expand] = pseudo_label[expand]
        object_mask = (out != 0) | (saliency != 0)
        out[~dilate_object_mask(object_mask, kernel)] = IGNORE
    return min_class_fraction_rule(out, min_fraction)
