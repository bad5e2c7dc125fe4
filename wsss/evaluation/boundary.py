"""Class-agnostic boundary precision / recall / F1, as EPS reports boundary quality (METHODS.md A.5).

Boundaries of a label map are the pixels where a Laplacian edge detector (``cv2.Laplacian``,
3x3 kernel ``[[0,1,0],[1,-4,1],[0,1,0]]``, reflected border) responds on the label values: the
response is non-zero wherever a 4-neighbour has a different label, so a step between two regions
marks the pixel on each side (a 2-pixel-wide line). Image borders are not boundaries.

Pixels labelled 255 take the label of the nearest non-255 pixel before edge detection. For VOC
ground truth, where a band of 255 is drawn over every object outline, this puts the boundary on
the centre line of the band, which is where the annotator's outline lies; for a prediction
with 255 regions it does the same. A map that is all 255 has no boundary.

Matching: a predicted boundary pixel is correct when a ground-truth boundary pixel lies within
``tolerance`` pixels (Euclidean distance), and a ground-truth boundary pixel is recalled when a
predicted one lies within ``tolerance``; tolerance 0 asks for the same pixel. Matching is
many-to-one (no one-to-one assignment as in the BSDS ``correspondPixels`` benchmark). Counts are
summed over images before precision = matched predicted / predicted and recall = matched
ground-truth / ground-truth are taken (pixel-pooled, as a confusion matrix is).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from wsss.errors import DataError

IGNORE = 255
DEFAULT_TOLERANCE = 2.0
# Order of the four counts returned by boundary_counts and summed over images.
COUNT_FIELDS = ("pred_boundary_pixels", "matched_pred", "gt_boundary_pixels", "matched_gt")


def fill_ignored(label: np.ndarray) -> np.ndarray:
    """Replace every 255 pixel of an ``(H, W)`` uint8 map by the label of the nearest non-255
    pixel (approximate Euclidean distance, 5x5 mask). Returns a new map; an all-255 map is
    returned as it is."""
    void = label == IGNORE
    if not void.any() or void.all():
        return label.copy()
    # Each valid (zero) pixel of `void` gets its own id (1, 2, ... in raster order); every pixel
    # learns the id of its nearest valid pixel, and the id is mapped back to that pixel's class.
    _, nearest = cv2.distanceTransformWithLabels(void.astype(np.uint8), cv2.DIST_L2, 5,
                                                 labelType=cv2.DIST_LABEL_PIXEL)
    valid = ~void
    valid_labels = label[valid]                      # raster order
    flat = valid.reshape(-1)
    first, last = int(np.argmax(flat)), flat.size - 1 - int(np.argmax(flat[::-1]))
    if nearest.flat[first] == 1 and nearest.flat[last] == valid_labels.size:
        id_to_label = np.concatenate([np.zeros(1, label.dtype), valid_labels])
    else:  # pragma: no cover - an OpenCV that numbers the pixels in another order
        id_to_label = np.zeros(int(nearest.max()) + 1, dtype=label.dtype)
        id_to_label[nearest[valid]] = valid_labels
    out = label.copy()
    out[void] = id_to_label[nearest[void]]
    return out


def label_boundaries(label: np.ndarray) -> np.ndarray:
    """Class-agnostic boundaries of an ``(H, W)`` uint8 label map: ``(H, W) bool``, True where the
    Laplacian of the label values (255 filled with the nearest label) is non-zero."""
    label = np.asarray(label)
    if label.dtype != np.uint8:
        label = label.astype(np.uint8)
    filled = fill_ignored(label)
    if filled.size == 0 or (filled == IGNORE).all():
        return np.zeros(label.shape, dtype=bool)
    return cv2.Laplacian(filled, cv2.CV_16S, ksize=1) != 0


def _disk(tolerance: float) -> np.ndarray:
    r = int(np.floor(tolerance))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (xx * xx + yy * yy <= tolerance * tolerance).astype(np.uint8)


def _within(mask: np.ndarray, tolerance: float) -> np.ndarray:
    """Pixels within Euclidean distance ``tolerance`` of a True pixel of ``mask``."""
    if tolerance < 1:
        return mask
    return cv2.dilate(mask.astype(np.uint8), _disk(tolerance)).astype(bool)


def boundary_counts(pred_boundary: np.ndarray, gt_boundary: np.ndarray, tolerance: float) -> np.ndarray:
    """Match two ``(H, W) bool`` boundary maps. Returns ``(4,) int64`` in the order of
    :data:`COUNT_FIELDS`: predicted boundary pixels, those within ``tolerance`` of a ground-truth
    boundary, ground-truth boundary pixels, those within ``tolerance`` of a predicted boundary."""
    if tolerance < 0:
        raise ValueError(f"boundary tolerance must be >= 0, got {tolerance}")
    matched_pred = np.count_nonzero(pred_boundary & _within(gt_boundary, tolerance))
    matched_gt = np.count_nonzero(gt_boundary & _within(pred_boundary, tolerance))
    return np.array([np.count_nonzero(pred_boundary), matched_pred,
                     np.count_nonzero(gt_boundary), matched_gt], dtype=np.int64)


def boundary_scores(counts: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 in [0, 1] (NaN when undefined) from summed :func:`boundary_counts`."""
    n_pred, m_pred, n_gt, m_gt = (int(c) for c in counts)
    precision = m_pred / n_pred if n_pred else float("nan")
    recall = m_gt / n_gt if n_gt else float("nan")
    if n_pred and n_gt and precision + recall > 0:
        f1 = 2 * precision * recall / (precision + recall)
    elif n_pred and n_gt:
        f1 = 0.0
    else:
        f1 = float("nan")
    return {"precision": precision, "recall": recall, "f1": f1}


def read_boundary_png(path: str | Path) -> np.ndarray:
    """A boundary map stored as a single-channel PNG: ``(H, W) bool``, True where non-zero."""
    from wsss.io import read_label

    return read_label(path, what="boundary map") != 0


def read_sbd_boundaries(path: str | Path) -> np.ndarray:
    """Class-agnostic ground-truth boundaries of an SBD ``cls/<id>.mat`` file: the union of the
    per-class sparse matrices in ``GTcls.Boundaries`` (a cell array, one ``(H, W)`` matrix per
    class). Returns ``(H, W) bool``."""
    import scipy.io
    import scipy.sparse

    path = Path(path)
    if not path.is_file():
        raise DataError(f"boundary file missing: expected {path}")
    try:
        mat = scipy.io.loadmat(str(path))
    except (OSError, ValueError, NotImplementedError, TypeError) as exc:
        raise DataError(f"boundary file unreadable: {path} ({exc})") from None
    try:
        cells = mat["GTcls"]["Boundaries"][0, 0]
    except (KeyError, IndexError, ValueError) as exc:
        raise DataError(f"{path} has no GTcls.Boundaries cell array (SBD cls format expected): {exc}") from None
    union = None
    for cell in np.asarray(cells, dtype=object).reshape(-1):
        if scipy.sparse.issparse(cell):
            mask = cell.toarray() != 0
        else:
            mask = np.asarray(cell) != 0
        if mask.ndim != 2:
            raise DataError(f"{path}: GTcls.Boundaries holds a {mask.ndim}-D entry; expected (H, W) matrices")
        if union is None:
            union = mask.copy()
        elif mask.shape != union.shape:
            raise DataError(f"{path}: GTcls.Boundaries entries have different shapes {mask.shape} and {union.shape}")
        else:
            union |= mask
    if union is None:
        raise DataError(f"{path}: GTcls.Boundaries is empty")
    return union


def read_boundary_map(folder: str | Path, image_id: str) -> np.ndarray:
    """Ground-truth boundaries of ``image_id`` from a folder: ``<id>.mat`` (SBD) if present,
    else ``<id>.png`` (non-zero = boundary). Returns ``(H, W) bool``."""
    folder = Path(folder)
    mat = folder / f"{image_id}.mat"
    if mat.is_file():
        return read_sbd_boundaries(mat)
    png = folder / f"{image_id}.png"
    if png.is_file():
        return read_boundary_png(png)
    raise DataError(f"boundary map missing for {image_id}: expected {mat} or {png}")
