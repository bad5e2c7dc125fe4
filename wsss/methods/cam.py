"""Aggregation of class maps over inference passes (scales × flips), on torch tensors.

METHODS A.4 (EPS and CAM baseline: multi-scale + flip, sum, max-normalise) and B.2
"Inference" (NSROM: single scale, ReLU, divide by max, bicubic resize, min-max normalise).

A *pass* is one forward of the network on one rescaled (and possibly horizontally flipped)
version of the input. Each pass output is a tensor (N, C', h_p, w_p) where the N entries are
the same N images in every pass (N = 1 for one image, or several images of one size).
The caller flips the input of a flipped pass; these helpers un-flip its output.
Network class indices here are 0-based (foreground class k is label value k + 1).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from wsss.errors import DataError

#: Added to each class map's spatial max before dividing (official EPS / PSA code).
MAX_NORM_EPS = 1e-5
#: Added to the max in NSROM's inference normalisation (official test script).
NSROM_MAX_EPS = 1e-8


def pass_plan(scales: Sequence[float], flip: bool = True) -> list[tuple[float, bool]]:
    """Passes in the official order: for each scale the plain pass, then (if flip) the flipped one."""
    plan = []
    for scale in scales:
        plan.append((float(scale), False))
        if flip:
            plan.append((float(scale), True))
    return plan


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(H, W) scaled by ``scale`` with Python's round (half to even), as the PSA/EPS loaders."""
    height, width = size
    return max(1, round(height * scale)), max(1, round(width * scale))


def _check_passes(outputs: Sequence[torch.Tensor], flips: Sequence[bool]) -> None:
    if len(outputs) == 0:
        raise DataError("no inference passes given: expected at least one output tensor")
    if len(outputs) != len(flips):
        raise DataError(f"{len(outputs)} pass outputs but {len(flips)} flip flags")
    first = outputs[0].shape
    for output in outputs:
        if output.dim() != 4 or output.shape[:2] != first[:2]:
            raise DataError("every pass output must be (N, C', h, w) with the same N and C'; got "
                            f"{[tuple(o.shape) for o in outputs]}")


def _select(maps: torch.Tensor, classes: Sequence[int] | None, num_foreground: int) -> torch.Tensor:
    if classes is None:
        return maps[:, :num_foreground]
    index = torch.as_tensor(list(classes), dtype=torch.long, device=maps.device)
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_foreground):
        raise DataError(f"class indices must be 0-based foreground indices in 0..{num_foreground - 1}, "
                        f"got {list(classes)}")
    return maps.index_select(1, index)


def _resize(maps: torch.Tensor, image_size: tuple[int, int], mode: str) -> torch.Tensor:
    if maps.shape[1] == 0:  # an image without labelled classes: nothing to resize
        return maps.new_zeros(maps.shape[:2] + tuple(image_size))
    return F.interpolate(maps, size=tuple(image_size), mode=mode, align_corners=False)


def _upsample_unflip(maps: torch.Tensor, image_size: tuple[int, int], flipped: bool) -> torch.Tensor:
    maps = _resize(maps, image_size, "bilinear")
    return maps.flip(-1) if flipped else maps


def max_normalize(maps: torch.Tensor, eps: float = MAX_NORM_EPS) -> torch.Tensor:
    """(N, K, H, W) -> each map divided by (its own spatial max + eps)."""
    return maps / (maps.amax(dim=(-2, -1), keepdim=True) + eps)


def minmax_normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """(N, K, H, W) -> each map min-max normalised to [0, 1]; a constant map becomes 0."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (maps - low) / safe, torch.zeros_like(maps))


def aggregate_eps_maps(outputs: Sequence[torch.Tensor], flips: Sequence[bool],
                       image_size: tuple[int, int], classes: Sequence[int] | None = None,
                       with_background: bool = False, eps: float = MAX_NORM_EPS) -> torch.Tensor:
    """EPS multi-scale + flip maps (METHODS A.4), float32.

    outputs: per pass, (N, C+1, h_p, w_p) raw maps of the EPS classifier (background last).
    flips:   per pass, whether its input was horizontally flipped.
    classes: 0-based foreground indices to keep (the image label); None keeps all C.
    Per pass: softmax over the C+1 maps, bilinear upsample of all C+1 maps to ``image_size``
    (align_corners=False; all at once, as the official code: torch's CPU kernel rounds a
    many-channel resize differently in the last bit), keep the labelled foreground maps (and the
    background map last if ``with_background``), un-flip; then sum over passes and divide each
    map by (its spatial max + eps).
    Returns (N, K, H, W) (K = len(classes), + 1 with background) with values in [0, 1).
    """
    _check_passes(outputs, flips)
    num_foreground = outputs[0].shape[1] - 1
    total = None
    for output, flipped in zip(outputs, flips):
        probs = _upsample_unflip(torch.softmax(output.float(), dim=1), image_size, flipped)
        kept = _select(probs, classes, num_foreground)
        if with_background:
            kept = torch.cat([kept, probs[:, num_foreground:]], dim=1)
        total = kept if total is None else total + kept
    return max_normalize(total, eps)


def aggregate_cam_maps(outputs: Sequence[torch.Tensor], flips: Sequence[bool],
                       image_size: tuple[int, int], classes: Sequence[int] | None = None,
                       eps: float = MAX_NORM_EPS) -> torch.Tensor:
    """CAM-baseline multi-scale + flip maps (METHODS A.4), float32.

    outputs: per pass, (N, C, h_p, w_p) raw CAMs (the last 1×1 conv before GAP).
    Per pass: ReLU, bilinear upsample of all C maps (as the official code), keep the labelled
    classes, un-flip; sum; max-normalise.
    Returns (N, K, H, W) in [0, 1).
    """
    _check_passes(outputs, flips)
    num_classes = outputs[0].shape[1]
    total = None
    for output, flipped in zip(outputs, flips):
        kept = _select(_upsample_unflip(torch.relu(output.float()), image_size, flipped), classes, num_classes)
        total = kept if total is None else total + kept
    return max_normalize(total, eps)


def nsrom_inference_maps(maps: torch.Tensor, image_size: tuple[int, int],
                         classes: Sequence[int] | None = None, quantize: bool = False) -> torch.Tensor:
    """NSROM single-scale inference maps (METHODS B.2 Inference), then min-max normalised.

    maps: (N, C, h, w) raw class maps of one pass (plain CAMs or IAM maps, no flip).
    Per labelled class: ReLU, divide by (max + 1e-8), bicubic resize to ``image_size``
    (torch bicubic, align_corners=False: matches cv2.INTER_CUBIC on float maps to ~1e-6),
    then min-max normalise each map to [0, 1] (as background extraction does on reading).
    quantize=True reproduces the official uint8 PNG round trip: values truncated to 0..255 before
    resizing, the resized map rounded and clipped to 0..255 (bicubic undershoot clipped at 0,
    which changes the min-max normalised result noticeably). It matched OpenCV's uint8
    INTER_CUBIC resize exactly in the tests; OpenCV's fixed-point arithmetic could still differ
    by one grey level on rare pixels.
    Returns (N, K, H, W) float32 in [0, 1].
    """
    if maps.dim() != 4:
        raise DataError(f"maps must have shape (N, C, h, w), got {tuple(maps.shape)}")
    kept = _select(torch.relu(maps.float()), classes, maps.shape[1])
    kept = kept / (kept.amax(dim=(-2, -1), keepdim=True) + NSROM_MAX_EPS)
    if quantize:
        kept = torch.floor(kept * 255.0)
    resized = _resize(kept, image_size, "bicubic")
    if quantize:
        resized = torch.round(resized).clamp_(0.0, 255.0)
    return minmax_normalize_maps(resized)
