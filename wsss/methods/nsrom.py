"""NSROM (Yao et al., CVPR 2021): background extraction, potential object mining, the 1 % rule,
and the integral-attention-model loss.

METHODS.md B.2 (IAM loss), B.3 (BE), B.4 (POM). Label rules take numpy arrays and return
numpy arrays: no I/O, no globals. Label values: 0 background, k = class k (1-based), 255 ignore.
Maps for the label rules are given per labelled class, aligned with ``classes``; an entry may
be None (the class has no map: it gets no channel / mines nothing).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from wsss.errors import DataError

IGNORE = 255


#: The official NSROM code divides by (max − min + 1e-8), so the maximum lands just below 1.
MINMAX_EPS = 1e-8


def minmax_normalize(values: np.ndarray) -> np.ndarray:
    """Any array -> float64 in [0, 1) by (x − min) / (max − min + 1e-8), as the official code;
    a constant array becomes 0."""
    values = np.asarray(values, dtype=np.float64)
    low, high = values.min(), values.max()
    if high <= low:
        return np.zeros_like(values)
    return (values - low) / (high - low + MINMAX_EPS)


def _class_maps(maps, classes: Sequence[int], shape: tuple[int, int], what: str):
    """Pairs (class, map) sorted by class, maps present only; validates shapes and classes."""
    if maps is None:
        maps = [None] * len(classes)
    if len(maps) != len(classes):
        raise DataError(f"{what}: {len(maps)} maps for {len(classes)} classes {list(classes)}")
    class_list = [int(c) for c in classes]
    if len(set(class_list)) != len(class_list) or any(c < 1 or c > 254 for c in class_list):
        raise DataError(f"{what}: classes must be distinct 1-based indices in 1..254, got {class_list}")
    pairs = []
    for cls, cam in sorted(zip(class_list, maps), key=lambda pair: pair[0]):
        if cam is None:
            continue
        cam = np.asarray(cam)
        if cam.shape != shape:
            raise DataError(f"{what}: map of class {cls} has shape {cam.shape}, expected {shape}")
        pairs.append((cls, cam))
    return pairs


def background_extraction(saliency_u8: np.ndarray, oa_cams, classes: Sequence[int], *,
                          fg_thr: float = 0.3, conflict_thr: float = 0.9,
                          sal_att_thr: float = 32, att_thr: float = 0.8) -> np.ndarray:
    """Initial labels by background extraction (METHODS B.3).

    saliency_u8: (H, W) uint8 saliency S, 0..255.
    oa_cams:     K maps (H, W), min-max normalised OA-CAMs in [0, 1] (see :func:`minmax_normalize`),
                 aligned with ``classes``; a (K, H, W) array or a sequence with None entries.
    classes:     K distinct 1-based class indices of the image label.
    Steps: scores = float32 stack [1 − S/255, A_c...] (classes in increasing order);
    sal_att = max(S, 255·[A_c > att_thr]) with the comparison in float64; scores < fg_thr -> 0
    (background channel included; float32, so a value equal to float32(fg_thr) is kept);
    pixels with more than one channel > conflict_thr (float32; equal is not above) -> 255;
    label = argmax (ties to background, then the lower class; 0 where all were zeroed);
    pixels labelled 0 with sal_att >= sal_att_thr (in 0..255 units) -> 255.
    Returns (H, W) uint8.
    """
    saliency = np.asarray(saliency_u8)
    if saliency.ndim != 2:
        raise DataError(f"saliency must be a (H, W) map, got shape {saliency.shape}")
    pairs = _class_maps(oa_cams, classes, saliency.shape, "background extraction")
    sal32 = saliency.astype(np.float32)
    scores = np.zeros((len(pairs) + 1,) + saliency.shape, dtype=np.float32)
    scores[0] = np.float32(1.0) - sal32 / np.float32(255.0)
    sal_att = sal32.copy()
    for channel, (_, cam) in enumerate(pairs, start=1):
        cam64 = np.asarray(cam, dtype=np.float64)
        scores[channel] = cam64
        sal_att = np.maximum(sal_att, (cam64 > att_thr).astype(np.float32) * np.float32(255.0))

    scores[scores < np.float32(fg_thr)] = 0
    conflict = (scores > np.float32(conflict_thr)).sum(axis=0) > 1
    lookup = np.array([0] + [cls for cls, _ in pairs], dtype=np.uint8)
    label = lookup[np.argmax(scores, axis=0)]
    label[conflict] = IGNORE
    label[(label == 0) & (sal_att >= sal_att_thr)] = IGNORE
    return label


def class_threshold(label: np.ndarray, cam: np.ndarray, cls: int, t_bg: float = 0.3) -> float | None:
    """POM's adaptive threshold T_c for one class (METHODS B.4); None means "mine nothing".

    If K_c summed over the pixels labelled ``cls`` is non-zero: the median of K_c there.
    Otherwise the "top quartile" of {K_c > t_bg}: the median of those values that lie above
    their median. None when no value exceeds t_bg, or when no value lies above that median
    (all equal: the official np.median of an empty array is NaN, which nothing exceeds).
    """
    region = cam[label == cls]
    if region.sum() != 0:
        return float(np.median(region))
    high = cam[cam > t_bg]
    if high.size == 0:
        return None
    upper = high[high > np.median(high)]
    if upper.size == 0:
        return None
    return float(np.median(upper))


def potential_object_mining(label: np.ndarray, cams, classes: Sequence[int], *,
                            t_bg: float = 0.3) -> np.ndarray:
    """Potential Object Mining (METHODS B.4): background pixels likely to be objects -> 255.

    label:   (H, W) uint8 initial label (from :func:`background_extraction`).
    cams:    K plain CAMs (H, W), min-max normalised to [0, 1], aligned with ``classes``
             ((K, H, W) array or a sequence with None entries).
    classes: K distinct 1-based class indices of the image label.
    Every pixel labelled 0 with K_c > T_c (:func:`class_threshold`, computed on the input
    label) for some class c becomes 255. Never assigns a class. Returns a new (H, W) uint8.
    """
    label = np.asarray(label)
    pairs = _class_maps(cams, classes, label.shape, "potential object mining")
    mined = np.zeros(label.shape, dtype=bool)
    for cls, cam in pairs:
        threshold = class_threshold(label, cam, cls, t_bg)
        if threshold is not None:
            mined |= cam > threshold
    out = label.astype(np.uint8, copy=True)
    out[(label == 0) & mined] = IGNORE
    return out


def min_class_fraction_rule(label: np.ndarray, min_fraction: float = 0.01) -> np.ndarray:
    """The 1 % rule: the whole image becomes 255 if fewer than ``min_fraction`` of its pixels
    carry a class (1..254). Exactly ``min_fraction`` is kept. Returns a new uint8 array."""
    label = np.asarray(label)
    out = label.astype(np.uint8, copy=True)
    carrying = np.count_nonzero((label > 0) & (label < IGNORE))
    if carrying / label.size < min_fraction:
        out[...] = IGNORE
    return out


def nsrom_pseudo_label(saliency_u8: np.ndarray, oa_cams, classes: Sequence[int], cams=None, *,
                       fg_thr: float = 0.3, conflict_thr: float = 0.9, sal_att_thr: float = 32,
                       att_thr: float = 0.8, t_bg: float = 0.3,
                       min_fraction: float = 0.01) -> np.ndarray:
    """BE (B.3), then POM (B.4) when plain ``cams`` are given, then the 1 % rule. (H, W) uint8."""
    label = background_extraction(saliency_u8, oa_cams, classes, fg_thr=fg_thr,
                                  conflict_thr=conflict_thr, sal_att_thr=sal_att_thr,
                                  att_thr=att_thr)
    if cams is not None:
        label = potential_object_mining(label, cams, classes, t_bg=t_bg)
    return min_class_fraction_rule(label, min_fraction)


def iam_loss(logits_maps: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Integral attention model loss (METHODS B.2).

    logits_maps: (B, C, h, w) raw IAM maps x.
    targets:     (B, C, h, w) accumulated maps t in [0, 1] (float), or uint8 0..255 (divided by 255).
    loss = mean over {t > 0} of −t·log σ(x) + mean over {t = 0} of −log(1 − σ(x)),
    computed with logsigmoid (stable for large |x|). A term whose set is empty is 0, as in the
    official code (which adds a 1e-8 inside the negative log; this uses the exact form).
    """
    if logits_maps.shape != targets.shape:
        raise DataError(f"IAM targets {tuple(targets.shape)} do not match maps {tuple(logits_maps.shape)}")
    if targets.dtype == torch.uint8:
        targets = targets.to(logits_maps.dtype) / 255.0
    targets = targets.to(logits_maps.dtype)
    positive = targets > 0
    negative = targets == 0
    zero = logits_maps.sum() * 0.0
    loss_pos = zero
    loss_neg = zero
    if positive.any():
        loss_pos = -(targets[positive] * F.logsigmoid(logits_maps[positive])).mean()
    if negative.any():
        loss_neg = -F.logsigmoid(-logits_maps[negative]).mean()
    return loss_pos + loss_neg
