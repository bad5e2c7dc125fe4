"""Dense CRF post-processing (fully connected CRF, Krähenbühl & Koltun) with pydensecrf2.

Defaults are the DeepLab-v2 values used by both EPS and NSROM (METHODS.md A.4): bilateral
weight 4, bilateral xy std 67, bilateral rgb std 3; Gaussian weight 3, Gaussian xy std 1;
10 mean-field iterations. pydensecrf's ``compat`` is the kernel weight, ``sxy`` / ``srgb``
the standard deviations. Pure functions: arrays in, arrays out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pydensecrf.densecrf as dcrf

from wsss.errors import DataError

IGNORE = 255
#: Probabilities are clipped to this before taking -log (as pydensecrf.utils.unary_from_softmax).
PROB_CLIP = 1e-5


@dataclass(frozen=True)
class CrfConfig:
    """Dense CRF parameters (DeepLab-v2 defaults)."""

    iterations: int = 10
    gaussian_sxy: float = 1.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 67.0
    bilateral_srgb: float = 3.0
    bilateral_compat: float = 4.0

    def as_kwargs(self) -> dict:
        return asdict(self)


def _check_image(image_u8: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    image = np.asarray(image_u8)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"CRF image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if image.shape[:2] != tuple(size):
        raise DataError(f"CRF image is {image.shape[:2]} but the probabilities are {tuple(size)}: "
                        "resize the probabilities to the image size first")
    return np.ascontiguousarray(image)


def dense_crf(image_u8: np.ndarray, probs: np.ndarray, *, iterations: int = 10,
              gaussian_sxy: float = 1, gaussian_compat: float = 3, bilateral_sxy: float = 67,
              bilateral_srgb: float = 3, bilateral_compat: float = 4) -> np.ndarray:
    """Refine class probabilities with a dense CRF.

    image_u8: (H, W, 3) uint8 image (RGB or BGR: the rgb std treats channels alike).
    probs:    (K, H, W) class probabilities (summing to 1 per pixel), K >= 2.
    Unary = −log(clip(probs, 1e-5)); pairwise = Gaussian(sxy=gaussian_sxy, compat=gaussian_compat)
    + bilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, compat=bilateral_compat), Potts.
    Returns (K, H, W) float32 probabilities summing to 1 per pixel. With ``iterations=0`` the
    result is the normalised exp(−unary), i.e. the clipped input renormalised.
    """
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] < 2:
        raise DataError(f"CRF probabilities must be (K, H, W) with K >= 2, got {probs.shape}")
    num_labels, height, width = probs.shape
    image = _check_image(image_u8, (height, width))
    unary = -np.log(np.clip(probs.astype(np.float32), PROB_CLIP, 1.0))
    crf = dcrf.DenseCRF2D(width, height, num_labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(num_labels, -1), dtype=np.float32))
    crf.addPairwiseGaussian(sxy=gaussian_sxy, compat=gaussian_compat)
    crf.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=image,
                             compat=bilateral_compat)
    refined = np.array(crf.inference(int(iterations)), dtype=np.float32)
    return refined.reshape(num_labels, height, width)


def probs_from_labels(label: np.ndarray, num_labels: int, gt_prob: float = 0.7) -> np.ndarray:
    """Hard label map -> (K, H, W) float32 probabilities for a CRF unary.

    A pixel of label k gets ``gt_prob`` on k and (1 − gt_prob)/(K − 1) on every other label;
    a pixel of 255 (ignore) gets the uniform 1/K, so the CRF fills it from its neighbours.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise DataError(f"label must be a (H, W) map, got shape {label.shape}")
    if num_labels < 2:
        raise DataError(f"num_labels must be at least 2, got {num_labels}")
    known = label != IGNORE
    if known.any() and int(label[known].max()) >= num_labels:
        raise DataError(f"label contains value {int(label[known].max())} but num_labels is {num_labels}")
    if not 0.0 < gt_prob < 1.0:
        raise DataError(f"gt_prob must lie in (0, 1), got {gt_prob}")
    probs = np.full((num_labels,) + label.shape, (1.0 - gt_prob) / (num_labels - 1), dtype=np.float32)
    rows, cols = np.nonzero(known)
    probs[label[known].astype(np.int64), rows, cols] = gt_prob
    probs[:, ~known] = 1.0 / num_labels
    return probs


def crf_from_labels(image_u8: np.ndarray, label: np.ndarray, num_labels: int, gt_prob: float = 0.7,
                    keep_ignore: bool = True, config: CrfConfig = CrfConfig()) -> np.ndarray:
    """Refine a hard label map (e.g. a pseudo-label PNG) with a dense CRF.

    label: (H, W) uint8 with values 0..num_labels−1 and 255. Unary from
    :func:`probs_from_labels`. Returns the (H, W) uint8 argmax of the refined probabilities;
    with ``keep_ignore`` (default) pixels that were 255 stay 255, otherwise they take the label
    the CRF gives them.
    """
    probs = probs_from_labels(label, num_labels, gt_prob)
    refined = dense_crf(image_u8, probs, **config.as_kwargs())
    out = np.argmax(refined, axis=0).astype(np.uint8)
    if keep_ignore:
        out[np.asarray(label) == IGNORE] = IGNORE
    return out
