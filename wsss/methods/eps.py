"""EPS (Lee et al., CVPR 2021): saliency loss with map selection, total loss, pseudo-mask rule.

METHODS.md A.2 (losses) and A.4 (pseudo-masks). Pure functions: no I/O, no globals.

Channel convention: the classifier predicts ``C + 1`` maps, the C foreground classes first
(0-based network indices) and the background map **last** (index C).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from wsss.errors import DataError

#: The official code adds this to every pixel of the class area before summing (A.2).
OVERLAP_EPS_PER_PIXEL = 1e-4


def _as_batched_saliency(saliency: torch.Tensor) -> torch.Tensor:
    """(B, H, W) or (B, 1, H, W) -> (B, 1, H, W)."""
    if saliency.dim() == 3:
        return saliency.unsqueeze(1)
    if saliency.dim() == 4 and saliency.shape[1] == 1:
        return saliency
    raise DataError(
        f"saliency must have shape (B, H, W) or (B, 1, H, W), got {tuple(saliency.shape)}")


def resize_saliency(saliency: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Saliency (B, 1, H, W) or (B, H, W) in [0, 1] -> (B, 1, h, w) with nearest interpolation.

    Uses ``F.interpolate(mode="nearest")`` like the official code (source index
    ``floor(dst * H / h)``), so the selected pixels match it exactly.
    """
    saliency = _as_batched_saliency(saliency)
    if tuple(saliency.shape[-2:]) == tuple(size):
        return saliency
    return F.interpolate(saliency, size=size, mode="nearest")


@torch.no_grad()
def overlap_ratio(class_probs: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
    """Overlap O_c = |B_c ∩ B_s| / |B_c| of each class map with the saliency map (no gradient).

    class_probs: (B, C, h, w) softmax probabilities of the foreground maps, in [0, 1].
    saliency:    (B, 1, h, w) in [0, 1], already at the map resolution.
    Returns (B, C) float. B_c = round(P_c), B_s = round(S); for values in [0, 1] this is
    [x > 0.5] (``torch.round`` rounds half to even, so exactly 0.5 is not counted).
    The denominator is ``Σ round(P_c) + 1e-4·h·w`` (1e-4 added at every pixel, as the
    official code), so a class with no pixel above 0.5 has O_c = 0. Not an IoU.
    """
    binary_class = torch.round(class_probs.detach())
    binary_saliency = torch.round(saliency.detach())
    intersection = (binary_class * binary_saliency).flatten(2).sum(-1)
    area = (binary_class + OVERLAP_EPS_PER_PIXEL).flatten(2).sum(-1)
    return intersection / area


def eps_saliency_loss(maps: torch.Tensor, saliency: torch.Tensor, labels: torch.Tensor,
                      tau: float = 0.4, lam: float = 0.5) -> tuple[torch.Tensor, dict]:
    """EPS saliency loss L_sal with map selection (METHODS A.2).

    maps:     (B, C+1, h, w) raw class maps (logits per pixel); background is the last channel.
    saliency: (B, 1, H, W) or (B, H, W) float in [0, 1] (soft); resized to (h, w) with nearest.
    labels:   (B, C) image-level multi-hot labels (0/1, any dtype).
    tau:      overlap threshold: a labelled class with O_c > tau is foreground, else background.
    lam:      blend λ in Ŝ = λ·M_fg + (1 − λ)·(1 − M_bg).

    Returns ``(loss, details)``; loss is the mean over pixels and batch of (S − Ŝ)².
    details (all detached): ``overlap`` (B, C); ``foreground_set`` and ``background_set``
    (B, C+1) bool (the background channel is always in the background set; classes outside
    the label are in neither); ``estimated_saliency`` and ``saliency`` (B, 1, h, w).
    No gradient flows through O_c; the gradient reaches all C+1 maps through P.
    """
    if maps.dim() != 4:
        raise DataError(f"maps must have shape (B, C+1, h, w), got {tuple(maps.shape)}")
    batch, channels, height, width = maps.shape
    num_classes = channels - 1
    if tuple(labels.shape) != (batch, num_classes):
        raise DataError(f"labels must have shape (B, C) = ({batch}, {num_classes}) for maps "
                        f"with C+1 = {channels} channels, got {tuple(labels.shape)}")
    sal = resize_saliency(saliency.to(maps.dtype), (height, width))
    if sal.shape[0] != batch:
        raise DataError(f"saliency batch {sal.shape[0]} does not match maps batch {batch}")

    probs = torch.softmax(maps, dim=1)
    overlap = overlap_ratio(probs[:, :num_classes], sal)
    in_label = labels.detach().to(torch.bool)
    selected = overlap > tau
    fg_classes = in_label & selected
    bg_classes = in_label & ~selected
    always_bg = torch.ones(batch, 1, dtype=torch.bool, device=maps.device)
    foreground_set = torch.cat([fg_classes, ~always_bg], dim=1)
    background_set = torch.cat([bg_classes, always_bg], dim=1)

    fg_weight = foreground_set.to(probs.dtype)[:, :, None, None]
    bg_weight = background_set.to(probs.dtype)[:, :, None, None]
    fg_map = (probs * fg_weight).sum(dim=1, keepdim=True)
    bg_map = (probs * bg_weight).sum(dim=1, keepdim=True)
    estimated = lam * fg_map + (1.0 - lam) * (1.0 - bg_map)
    loss = F.mse_loss(estimated, sal)
    details = {
        "overlap": overlap,
        "foreground_set": foreground_set,
        "background_set": background_set,
        "estimated_saliency": estimated.detach(),
        "saliency": sal.detach(),
    }
    return loss, details


def eps_total_loss(logits: torch.Tensor, maps: torch.Tensor, saliency: torch.Tensor,
                   labels: torch.Tensor, tau: float = 0.4, lam: float = 0.5
                   ) -> tuple[torch.Tensor, dict]:
    """L_total = L_cls + L_sal (unweighted, METHODS A.2).

    logits: (B, C+1) or (B, C) image logits (GAP of the maps); only the C foreground logits
    enter the multilabel soft-margin loss. Other arguments as :func:`eps_saliency_loss`.
    Returns ``(total, details)`` with the saliency details plus ``loss_cls`` and ``loss_sal``
    (detached scalars).
    """
    num_classes = labels.shape[1]
    if logits.dim() != 2 or logits.shape[1] not in (num_classes, num_classes + 1):
        raise DataError(f"logits must have shape (B, C) or (B, C+1) with C = {num_classes}, "
                        f"got {tuple(logits.shape)}")
    loss_cls = F.multilabel_soft_margin_loss(logits[:, :num_classes], labels.to(logits.dtype))
    loss_sal, details = eps_saliency_loss(maps, saliency, labels, tau=tau, lam=lam)
    details["loss_cls"] = loss_cls.detach()
    details["loss_sal"] = loss_sal.detach()
    return loss_cls + loss_sal, details


def saliency_background_score(saliency_u8: np.ndarray, thr_salient: float, thr_non_salient: float) -> np.ndarray:
    """A per-pixel background score for :func:`eps_pseudo_mask`, interpolated by saliency.

    saliency_u8: (H, W) uint8 0..255. Returns (H, W) float32
    ``thr_non_salient + (thr_salient - thr_non_salient) * S / 255``: a salient pixel becomes a class
    where its map exceeds ``thr_salient`` (low: the saliency map is trusted for the extent), a
    non-salient one only where its map exceeds ``thr_non_salient`` (high: a confident map can still
    add an object the saliency map missed). With both equal this is EPS's constant score.
    """
    s = np.asarray(saliency_u8).astype(np.float32) / np.float32(255.0)
    return (np.float32(thr_non_salient) + np.float32(thr_salient - thr_non_salient) * s).astype(np.float32)


def eps_pseudo_mask(cams: np.ndarray, classes: Sequence[int], thr: float | np.ndarray = 0.20) -> np.ndarray:
    """Pseudo-mask rule of EPS and of the CAM baseline (METHODS A.4).

    cams:    (K, H, W) max-normalised maps (values in [0, 1]) of the image's labelled classes.
    classes: K 1-based class indices, cams[k] belongs to class classes[k].
    thr:     background score: a constant (EPS), or an (H, W) array such as
             :func:`saliency_background_score`.
    Returns (H, W) uint8: argmax over [thr, map_1, ..., map_K] -> 0 (background) or the class
    index; never 255. Ties go to background, then to the lower class index (maps are ordered
    by class index first, whatever the order of ``classes``). Compared in float32, like the
    official padded float32 array.
    """
    cams = np.asarray(cams)
    if cams.ndim != 3 or cams.shape[0] != len(classes):
        raise DataError(f"cams must have shape (K, H, W) with K = len(classes) = {len(classes)}, "
                        f"got {cams.shape}")
    class_ids = np.asarray(classes, dtype=np.int64)
    if class_ids.size and (class_ids.min() < 1 or class_ids.max() > 254):
        raise DataError(f"classes must be 1-based indices in 1..254, got {list(classes)}")
    order = np.argsort(class_ids, kind="stable")
    scores = np.empty((len(classes) + 1,) + cams.shape[1:], dtype=np.float32)
    scores[0] = np.asarray(thr, dtype=np.float32)
    scores[1:] = cams[order]
    lookup = np.concatenate([[0], class_ids[order]]).astype(np.uint8)
    return lookup[np.argmax(scores, axis=0)]
