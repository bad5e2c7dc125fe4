"""Split lists: which image ids a split holds, and where a split's list file lives.

Two line formats are accepted (blank lines are ignored):

- plain ids, one per line: ``2007_000032``;
- the path-pair form of the DeepLab/PSA lists: ``/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png``
  (the id is the file stem of the first path; the rest of the line is ignored).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from wsss.errors import DataError

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def entry_id(token: str) -> str:
    """The image id named by the first token of a list line: a plain id, or a path whose stem is the id."""
    if "/" in token or "\\" in token:
        return PurePosixPath(token.replace("\\", "/")).stem
    if token.lower().endswith(_IMAGE_SUFFIXES):
        return PurePosixPath(token).stem
    return token


def read_split(path: str | os.PathLike) -> list[str]:
    """Read a split list. Returns its ids in file order.

    Raises :class:`DataError` when the file is missing, holds no id, or lists an id twice.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split list missing: expected {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"split list unreadable: {path} ({exc})") from None
    ids: list[str] = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        image_id = entry_id(fields[0])
        if image_id in first_line:
            raise DataError(f"split list {path}: id {image_id!r} is listed twice "
                            f"(lines {first_line[image_id]} and {lineno}); remove the duplicate")
        first_line[image_id] = lineno
        ids.append(image_id)
    if not ids:
        raise DataError(f"split list {path} is empty: it must name at least one image id")
    return ids


def dataset_root(data_cfg) -> Path:
    """The dataset root folder of ``data_cfg`` (a :class:`~wsss.config.schema.DataConfig`), checked to exist."""
    if not data_cfg.root:
        raise DataError("data.root is not set: give the dataset folder (e.g. --set data.root=/path/to/VOC2012)")
    root = Path(data_cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset root not found: {root} (data.root)")
    return root


def resolve_split(data_cfg, name_or_path: str | os.PathLike) -> Path:
    """Where the list file of a split is.

    An existing file is used as is (a relative path is tried from the working directory, then from
    the dataset root). A bare name such as ``train`` means ``<root>/<split_dir>/<name>.txt``.
    The returned path may not exist; :func:`read_split` then names it in its error.
    """
    text = str(name_or_path)
    if not text:
        raise DataError("no split given: name one (train, val, ...) or give the path of a list file")
    path = Path(text).expanduser()
    if path.is_file():
        return path
    root = dataset_root(data_cfg)
    looks_like_path = path.is_absolute() or "/" in text or "\\" in text or path.suffix == ".txt"
    if looks_like_path:
        if not path.is_absolute() and (root / path).is_file():
            return root / path
        return path
    return root / data_cfg.split_dir / f"{text}.txt"
