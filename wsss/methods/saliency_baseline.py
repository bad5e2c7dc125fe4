"""The saliency baseline: the no-learning pseudo-label rule every saliency-based WSSS method is
measured against.

A pixel whose saliency is at least ``thr`` takes the image's class; every other pixel is
background. With several labelled classes, each salient pixel takes the labelled class whose
(max-normalised) class map is highest there, so the rule needs some classifier's maps for such
images. Pure NumPy: no I/O, no torch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from wsss.errors import DataError

#: Default saliency threshold on the [0, 1] scale (uint8 maps: value >= 127.5).
DEFAULT_THR = 0.5


def saliency_label(saliency_u8: np.ndarray, classes: Sequence[int], maps: np.ndarray | None = None,
                   thr: float = DEFAULT_THR) -> np.ndarray:
    """Saliency-baseline label of one image.

    saliency_u8: (H, W) uint8 salient-object map, 0..255 (compared as value / 255 >= thr).
    classes:     the image's labelled classes, 1-based (any order; duplicates not allowed).
    maps:        (K, H, W) class maps of ``classes`` (maps[k] belongs to classes[k]); needed
                 only when K > 1. Values on any scale; ties go to the lower class index.
    thr:         saliency threshold in [0, 1].
    Returns (H, W) uint8: 0 background or a labelled class; never 255. An image without a
    labelled class is all background.
    """
    sal = np.asarray(saliency_u8)
    if sal.ndim != 2:
        raise DataError(f"saliency must be a (H, W) map, got shape {sal.shape}")
    if not 0.0 <= thr <= 1.0:
        raise DataError(f"saliency threshold must be in [0, 1], got {thr}")
    class_ids = np.asarray(list(classes), dtype=np.int64)
    if class_ids.size and (class_ids.min() < 1 or class_ids.max() > 254):
        raise DataError(f"classes must be 1-based indices in 1..254, got {list(classes)}")
    if len(set(class_ids.tolist())) != class_ids.size:
        raise DataError(f"classes must not repeat, got {list(classes)}")
    salient = sal.astype(np.float32) / np.float32(255.0) >= np.float32(thr)
    label = np.zeros(sal.shape, dtype=np.uint8)
    if class_ids.size == 0:
        return label
    if class_ids.size == 1:
        label[salient] = class_ids[0]
        return label
    if maps is None:
        raise DataError(f"an image with several labelled classes ({list(classes)}) needs class maps "
                        f"to choose between them: set labels.cams to a folder of `wsss cams` maps")
    maps = np.asarray(maps, dtype=np.float32)
    if maps.shape != (class_ids.size,) + sal.shape:
        raise DataError(f"maps must have shape (K, H, W) = {(class_ids.size,) + sal.shape}, got {maps.shape}")
    order = np.argsort(class_ids, kind="stable")
    winner = class_ids[order][np.argmax(maps[order], axis=0)].astype(np.uint8)
    label[salient] = winner[salient]
    return label
