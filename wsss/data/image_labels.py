"""Image-level labels: which foreground classes an image contains.

Every reader returns ``dict[str, np.ndarray]``: image id -> multi-hot ``(C,) float32`` vector over the
C foreground classes (entry ``c - 1`` is class ``c``; the background is never listed). Supported
sources:

- the masks themselves (classes 1..C with at least one pixel; 0 and 255 are ignored);
- ``cls_labels.json``: ``{id: [1-based class indices]}``;
- ``cls_labels.npy`` of the PSA / IRN / EPS repos: ``np.save`` of a dict ``{id: multi-hot (C,)}``;
- the text lists of the OAA / NSROM repos: ``id c1 c2 ...`` with **0-based** class indices.

Any class index outside the dataset's range, or a vector of the wrong length, is a
:class:`DataError` naming the file, the id and the value: it means the labels were made for another
label set than the dataset description (``data.dataset`` / ``data.class_names``).
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from wsss.data.splits import entry_id
from wsss.errors import DataError
from wsss.io import IGNORE, read_label, write_text_atomic


def multi_hot(classes: Iterable[int], num_classes: int) -> np.ndarray:
    """``(C,) float32`` vector with 1 at ``c - 1`` for each 1-based class ``c`` in ``classes``."""
    vec = np.zeros(num_classes, dtype=np.float32)
    idx = np.asarray(list(classes), dtype=np.int64)
    vec[idx - 1] = 1.0
    return vec


def present_classes(vector: np.ndarray) -> list[int]:
    """The 1-based classes set in a multi-hot ``(C,)`` vector, ascending."""
    return [int(i) + 1 for i in np.flatnonzero(np.asarray(vector) > 0.5)]


# --------------------------------------------------------------------------------------------- masks

def check_mask_values(mask: np.ndarray, num_classes: int, source: str | os.PathLike = "mask") -> np.ndarray:
    """Check that a ``(H, W)`` uint8 mask only holds 0..C and 255; return its ``(256,)`` pixel counts."""
    counts = np.bincount(np.asarray(mask, dtype=np.uint8).ravel(), minlength=256)
    bad = np.flatnonzero(counts[num_classes + 1:IGNORE]) + num_classes + 1
    if bad.size:
        raise DataError(f"mask {source} has values {bad.tolist()} outside 0..{num_classes} and {IGNORE}: "
                        f"it does not match the dataset description ({num_classes} classes)")
    return counts


def labels_from_mask(mask: np.ndarray, num_classes: int, source: str | os.PathLike = "mask") -> np.ndarray:
    """Multi-hot ``(C,) float32`` of the classes 1..C present in a ``(H, W)`` uint8 mask."""
    counts = check_mask_values(mask, num_classes, source)
    return (counts[1:num_classes + 1] > 0).astype(np.float32)


def read_labels_from_masks(mask_paths: Mapping[str, str | os.PathLike], num_classes: int) -> dict[str, np.ndarray]:
    """Image-level labels from mask files: ``{id: mask path}`` -> ``{id: (C,) float32}``."""
    return {image_id: labels_from_mask(read_label(path, "mask"), num_classes, path)
            for image_id, path in mask_paths.items()}


# ---------------------------------------------------------------------------------------------- json

def _require_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"image-level label file missing: expected {path} (data.image_labels_file)")


def _range_error(path: Path, image_id: str, value, low: int, high: int, base: str) -> DataError:
    return DataError(f"image-level labels {path}: id {image_id!r} has class {value!r}, outside {low}..{high} "
                     f"({base}); the labels do not match the dataset description ({high - low + 1} classes)")


def read_cls_labels_json(path: str | os.PathLike, num_classes: int) -> dict[str, np.ndarray]:
    """Read ``cls_labels.json``: ``{id: [1-based class indices]}`` (an empty list is allowed)."""
    path = Path(path)
    _require_file(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"image-level label file {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"image-level label file {path} must be a JSON object {{id: [class indices]}}")
    labels = {}
    for image_id, classes in data.items():
        if not isinstance(classes, list):
            raise DataError(f"image-level labels {path}: id {image_id!r} must map to a list of class indices, "
                            f"got {classes!r}")
        for c in classes:
            if isinstance(c, bool) or not isinstance(c, int):
                raise DataError(f"image-level labels {path}: id {image_id!r} has class {c!r}, not an integer")
            if not 1 <= c <= num_classes:
                raise _range_error(path, image_id, c, 1, num_classes, "1-based, background not listed")
        labels[str(image_id)] = multi_hot(classes, num_classes)
    return labels


def write_cls_labels_json(path: str | os.PathLike, labels: Mapping[str, np.ndarray]) -> None:
    """Write ``{id: [1-based classes]}`` as ``cls_labels.json`` (one id per line, file order = dict order)."""
    lines = [f"{json.dumps(str(image_id))}: {json.dumps(present_classes(vec))}" for image_id, vec in labels.items()]
    write_text_atomic(path, "{\n" + ",\n".join(lines) + "\n}\n")


# ----------------------------------------------------------------------------------------------- txt

def read_cls_labels_txt(path: str | os.PathLike, num_classes: int) -> dict[str, np.ndarray]:
    """Read the OAA / NSROM list: one ``id c1 c2 ...`` line per image, **0-based** classes.

    The first token may also be an image path (its stem is the id). An id with no class is allowed.
    """
    path = Path(path)
    _require_file(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"image-level label file {path} unreadable ({exc})") from None
    labels: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        image_id = entry_id(fields[0])
        if image_id in labels:
            raise DataError(f"image-level labels {path}: id {image_id!r} is listed twice (line {lineno})")
        classes = []
        for token in fields[1:]:
            try:
                c = int(token)
            except ValueError:
                raise DataError(f"image-level labels {path} line {lineno}: id {image_id!r} has class "
                                f"{token!r}, not an integer") from None
            if not 0 <= c < num_classes:
                raise _range_error(path, image_id, c, 0, num_classes - 1, "0-based")
            classes.append(c + 1)
        labels[image_id] = multi_hot(classes, num_classes)
    return labels


def write_cls_labels_txt(path: str | os.PathLike, labels: Mapping[str, np.ndarray]) -> None:
    """Write the OAA / NSROM list: ``id c1 c2 ...`` with 0-based classes, one line per id."""
    lines = [" ".join([str(image_id)] + [str(c - 1) for c in present_classes(vec)]) for image_id, vec in labels.items()]
    write_text_atomic(path, "\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------- npy

def _numpy_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    import _codecs

    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                              ("_codecs", "encode"): _codecs.encode}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    return allowed


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles containers, strings, numbers and numpy arrays; refuses every other global."""

    allowed = _numpy_globals()

    def find_class(self, module: str, name: str):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def _load_pickled_npy(path: Path):
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
        if not dtype.hasobject:
            return np.fromfile(f, dtype=dtype, count=int(np.prod(shape))).reshape(shape)
        return _ArrayOnlyUnpickler(f, encoding="latin1").load()


def read_cls_labels_npy(path: str | os.PathLike, num_classes: int) -> dict[str, np.ndarray]:
    """Read ``cls_labels.npy`` of the PSA / IRN / EPS repos: a pickled dict ``{id: multi-hot (C,)}``.

    The file is a pickle, so it must come from a source you trust. As a safeguard it is unpickled
    with a loader that only accepts containers, strings, numbers and numpy arrays (nothing that can
    run code), and the result must be a dict of id -> 1-D numeric 0/1 vector of length C. Ids may be
    strings or integers (IRN stores ``2007_000032`` as ``2007000032``); they are returned as ``str``
    (see :func:`select_labels` for how integer ids are matched).
    """
    path = Path(path)
    _require_file(path)
    try:
        obj = _load_pickled_npy(path)
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, TypeError, AttributeError) as exc:
        raise DataError(f"image-level label file {path} is not a .npy dict of arrays ({exc})") from None
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict):
        raise DataError(f"image-level label file {path} must hold a dict {{id: multi-hot vector}}, "
                        f"got {type(obj).__name__}")
    labels = {}
    for key, value in obj.items():
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, (str, int, np.integer)):
            raise DataError(f"image-level labels {path}: id {key!r} is not a string or an integer")
        image_id = str(key)
        vec = np.asarray(value)
        if vec.ndim != 1 or not (np.issubdtype(vec.dtype, np.number) or vec.dtype == np.bool_):
            raise DataError(f"image-level labels {path}: id {image_id!r} must map to a 1-D numeric vector, "
                            f"got {vec.dtype} array of shape {vec.shape}")
        if vec.shape[0] != num_classes:
            raise DataError(f"image-level labels {path}: id {image_id!r} has a vector of length {vec.shape[0]}, "
                            f"but the dataset description has {num_classes} foreground classes")
        vec = vec.astype(np.float32)
        bad = vec[(vec != 0) & (vec != 1)]
        if bad.size:
            raise DataError(f"image-level labels {path}: id {image_id!r} has values {sorted(set(bad.tolist()))}; "
                            f"a multi-hot vector holds only 0 and 1")
        labels[image_id] = vec
    return labels


# ---------------------------------------------------------------------------------------------- ids

def _integer_form(image_id: str) -> str | None:
    digits = image_id.replace("_", "")
    return str(int(digits)) if digits.isdigit() else None


def select_labels(labels: Mapping[str, np.ndarray], ids: Iterable[str],
                  source: str | os.PathLike) -> dict[str, np.ndarray]:
    """The labels of ``ids``, in that order. An id missing from ``labels`` is a :class:`DataError`.

    An id is looked up as written, then in the integer form used by IRN-style files
    (``2007_000032`` -> ``2007000032``, ``000000000036`` -> ``36``).
    """
    out = {}
    for image_id in ids:
        vec = labels.get(image_id)
        if vec is None:
            alt = _integer_form(image_id)
            vec = labels.get(alt) if alt is not None else None
        if vec is None:
            raise DataError(f"image-level labels {source} have no entry for id {image_id!r}: "
                            f"add it, or use a split that matches the label file")
        out[image_id] = vec
    return out
