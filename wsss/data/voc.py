"""A dataset in PASCAL VOC layout: images, masks, saliency maps, split lists and image-level labels.

Paths come from a :class:`~wsss.config.schema.DataConfig`::

    <root>/<image_dir>/<id><image_ext>          RGB image
    <root>/<mask_dir>/<id><mask_ext>            class mask (0 background, 1..C, 255 ignore)
    <root>/<saliency_dir>/<id><saliency_ext>    grayscale saliency map, same size as the image
    <root>/<split_dir>/<split>.txt              split list (see :mod:`wsss.data.splits`)
    <root>/<image_labels_file>                  image-level labels (see :mod:`wsss.data.image_labels`)

Validation happens in two places. At construction: the split list, the image-level labels, and the
existence of every file that will be loaded (a missing one is an error naming the id and the
expected path, or, with ``data.missing = "skip"``, the id is dropped and counted in ``skipped``).
At load time: readability (truncated images), sizes and mask values.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from torch.utils.data import Dataset

from wsss.data.classes import DatasetInfo, dataset_info
from wsss.data.image_labels import (
    check_mask_values,
    read_cls_labels_json,
    read_cls_labels_npy,
    read_cls_labels_txt,
    read_labels_from_masks,
    select_labels,
)
from wsss.data.splits import dataset_root, read_split, resolve_split
from wsss.errors import DataError
from wsss.io import read_image, read_label, read_saliency

log = logging.getLogger(__name__)

Transform = Callable[[dict, np.random.Generator], dict]


def data_file(root: Path, name: str | os.PathLike) -> Path:
    """A file named in the data config: absolute as is, else under the dataset root, else from the
    working directory; when it exists nowhere, the path under the root (for the error message)."""
    path = Path(name).expanduser()
    if path.is_absolute():
        return path
    if (root / path).exists() or not path.exists():
        return root / path
    return path


def build_dataset_info(data_cfg) -> DatasetInfo:
    """The dataset description (class names, count, palette) from ``data.dataset``, ``data.class_names``
    or ``data.classes_file``."""
    classes_file = None
    if data_cfg.classes_file:
        classes_file = Path(data_cfg.classes_file).expanduser()
        if not classes_file.is_absolute() and not classes_file.is_file() and data_cfg.root:
            classes_file = Path(data_cfg.root).expanduser() / classes_file
        classes_file = str(classes_file)
    return dataset_info(data_cfg.dataset, list(data_cfg.class_names) or None, classes_file)


def image_path(data_cfg, root: Path, image_id: str) -> Path:
    return root / data_cfg.image_dir / f"{image_id}{data_cfg.image_ext}"


def mask_path(data_cfg, root: Path, image_id: str) -> Path:
    return root / data_cfg.mask_dir / f"{image_id}{data_cfg.mask_ext}"


def saliency_path(data_cfg, root: Path, image_id: str) -> Path:
    return root / data_cfg.saliency_dir / f"{image_id}{data_cfg.saliency_ext}"


def ids_with_files(data_cfg, ids: list[str]) -> list[str]:
    """The ids whose image (and, with ``data.image_labels = masks``, mask) file exists: what every
    stage keeps of a split under ``data.missing = skip``."""
    root = dataset_root(data_cfg)
    needs_mask = data_cfg.image_labels == "masks"
    kept = [i for i in ids if image_path(data_cfg, root, i).is_file()
            and (not needs_mask or mask_path(data_cfg, root, i).is_file())]
    if len(kept) < len(ids):
        log.warning("data.missing=skip: %d of %d ids of the split have no image%s and are skipped",
                    len(ids) - len(kept), len(ids), " or mask" if needs_mask else "")
    return kept


def load_image_labels(data_cfg, info: DatasetInfo, ids: list[str]) -> dict[str, np.ndarray]:
    """Image-level labels of ``ids`` (in order) from the source named by ``data.image_labels``:
    ``masks``, ``json``, ``npy`` or ``txt``. Returns ``{id: (C,) float32 multi-hot}``."""
    root = dataset_root(data_cfg)
    num_classes = info.num_classes
    source = data_cfg.image_labels
    if source == "masks":
        return read_labels_from_masks({i: mask_path(data_cfg, root, i) for i in ids}, num_classes)
    readers = {"json": read_cls_labels_json, "npy": read_cls_labels_npy, "txt": read_cls_labels_txt}
    if source not in readers:
        raise DataError(f"data.image_labels = {source!r}: use one of masks, {', '.join(readers)}")
    path = data_file(root, data_cfg.image_labels_file)
    return select_labels(readers[source](path, num_classes), ids, path)


class VOCDataset(Dataset):
    """Images of one split with their image-level labels, and optionally masks and saliency maps.

    ``dataset[i]`` is a dict:

    - ``id`` (str), ``index`` (int ``i``), ``labels`` ``(C,) float32`` multi-hot (entry ``c - 1`` = class c);
    - ``image`` ``(H, W, 3) uint8`` RGB, when ``load_image``;
    - ``saliency`` ``(H, W) uint8`` 0..255, when ``load_saliency``;
    - ``mask`` ``(H, W) uint8`` with values 0..C and 255, when ``load_mask``;
    - ``orig_size`` ``(2,) int64`` = (H, W) of the files, before any transform.

    ``transform(sample, rng)`` is applied last when given. ``rng`` is
    ``np.random.default_rng((seed, epoch, i))``: the same item of the same epoch gets the same
    augmentation whatever the number of loader workers (call :meth:`set_epoch` each epoch).

    Size policy: a saliency map whose size differs from the image's is an error, unless
    ``data.saliency_size_mismatch = "resize"``: then it is resized (bilinear) to the image size.
    A mask of another size is always an error.
    """

    def __init__(self, data_cfg, split: str | os.PathLike, info: DatasetInfo | None = None,
                 load_image: bool = True, load_mask: bool = False, load_saliency: bool = False,
                 transform: Transform | None = None, seed: int = 0):
        self.cfg = data_cfg
        self.root = dataset_root(data_cfg)
        self.info = info if info is not None else build_dataset_info(data_cfg)
        self.load_image, self.load_mask, self.load_saliency = load_image, load_mask, load_saliency
        self.transform = transform
        self.seed, self.epoch = seed, 0
        if data_cfg.missing not in ("error", "skip"):
            raise DataError(f"data.missing = {data_cfg.missing!r}: use error or skip")
        if data_cfg.saliency_size_mismatch not in ("error", "resize"):
            raise DataError(f"data.saliency_size_mismatch = {data_cfg.saliency_size_mismatch!r}: use error or resize")

        self.split_path = resolve_split(data_cfg, split)
        self.split_name = Path(str(split)).stem
        listed = read_split(self.split_path)
        self.num_listed = len(listed)
        self.ids: list[str] = []
        self.skipped: list[tuple[str, str]] = []
        for image_id in listed:
            reason = self._missing_file(image_id)
            if reason is None:
                self.ids.append(image_id)
            elif data_cfg.missing == "skip":
                self.skipped.append((image_id, reason))
            else:
                n_more = sum(self._missing_file(i) is not None for i in listed) - 1
                more = f" (and {n_more} more ids with missing files)" if n_more else ""
                raise DataError(f"{reason}{more}; set data.missing=skip to skip and count such ids")
        if not self.ids:
            raise DataError(f"split {self.split_path}: none of its {len(listed)} ids has all its files "
                            f"(first: {self.skipped[0][1]})")
        if self.skipped:
            log.warning(self.summary())
        labels = load_image_labels(data_cfg, self.info, self.ids)
        self.labels = np.stack([labels[i] for i in self.ids]).astype(np.float32)

    # ----------------------------------------------------------------------------------- paths

    def image_path(self, image_id: str) -> Path:
        return image_path(self.cfg, self.root, image_id)

    def mask_path(self, image_id: str) -> Path:
        return mask_path(self.cfg, self.root, image_id)

    def saliency_path(self, image_id: str) -> Path:
        return saliency_path(self.cfg, self.root, image_id)

    def _required_files(self, image_id: str) -> list[tuple[str, Path]]:
        files = []
        if self.load_image:
            files.append(("image", self.image_path(image_id)))
        if self.load_mask or self.cfg.image_labels == "masks":
            files.append(("mask", self.mask_path(image_id)))
        if self.load_saliency:
            files.append(("saliency map", self.saliency_path(image_id)))
        return files

    def _missing_file(self, image_id: str) -> str | None:
        for what, path in self._required_files(image_id):
            if not path.is_file():
                return f"{what} missing for id {image_id}: expected {path}"
        return None

    def summary(self) -> str:
        """One line: how many ids were kept and why the others were skipped."""
        head = f"{self.root.name} {self.split_name}: {len(self.ids)} of {self.num_listed} ids kept"
        if not self.skipped:
            return head
        kinds = Counter(reason.split(" missing")[0] + " missing" for _, reason in self.skipped)
        why = ", ".join(f"{what}: {n}" for what, n in kinds.most_common())
        return f"{head}, {len(self.skipped)} skipped ({why}; first: {self.skipped[0][1]})"

    # ----------------------------------------------------------------------------------- items

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of an epoch (see the class docstring)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
        sample: dict = {"id": image_id, "index": int(index), "labels": self.labels[index].copy()}
        size = None  # (H, W) of the reference array and its path
        if self.load_image:
            path = self.image_path(image_id)
            sample["image"] = read_image(path)
            size = (sample["image"].shape[:2], path)
        if self.load_mask:
            path = self.mask_path(image_id)
            mask = read_label(path, "mask")
            if size is not None and mask.shape != size[0]:
                raise DataError(_size_message("mask", path, mask.shape, size) + "; masks are never resized")
            check_mask_values(mask, self.info.num_classes, path)
            sample["mask"] = mask
            size = size or (mask.shape, path)
        if self.load_saliency:
            path = self.saliency_path(image_id)
            saliency = read_saliency(path)
            if size is not None and saliency.shape != size[0]:
                if self.cfg.saliency_size_mismatch != "resize":
                    raise DataError(_size_message("saliency map", path, saliency.shape, size)
                                    + "; set data.saliency_size_mismatch=resize to resize it (bilinear)")
                h, w = size[0]
                saliency = cv2.resize(saliency, (w, h), interpolation=cv2.INTER_LINEAR)
            sample["saliency"] = saliency
            size = size or (saliency.shape, path)
        if size is not None:
            sample["orig_size"] = np.asarray(size[0], dtype=np.int64)
        if self.transform is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            sample = self.transform(sample, rng)
        return sample


def _size_message(what: str, path: Path, shape: tuple, reference: tuple) -> str:
    (ref_h, ref_w), ref_path = reference
    return (f"{what} {path} is {shape[1]}x{shape[0]} (WxH) but {ref_path} is {ref_w}x{ref_h}: "
            f"they must have the same size")
