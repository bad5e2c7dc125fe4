"""Dataset descriptions: class names, class count and palette. Nothing else hard-codes them.

Index 0 is always the background; foreground classes are 1..C; 255 means ignore.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wsss.errors import DataError

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

COCO_CLASSES = (
    "background", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: ``(n, 3) uint8``; index 255 is (224, 224, 192)."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


@dataclass(frozen=True)
class DatasetInfo:
    """Class names (index 0 = background) and a 256-entry palette for one label set."""

    name: str
    class_names: tuple[str, ...]
    palette: np.ndarray = field(default_factory=voc_palette, compare=False, repr=False)

    @property
    def num_classes(self) -> int:
        """Number of foreground classes C (background excluded)."""
        return len(self.class_names) - 1

    @property
    def num_labels(self) -> int:
        """C + 1: background plus foreground classes."""
        return len(self.class_names)

    def index(self, name: str) -> int:
        try:
            return self.class_names.index(name)
        except ValueError:
            raise DataError(f"class {name!r} is not in dataset {self.name!r} ({', '.join(self.class_names[1:])})") from None


BUILTIN = {
    "voc": lambda: DatasetInfo("voc", VOC_CLASSES),
    "coco": lambda: DatasetInfo("coco", COCO_CLASSES),
}


def dataset_info(name: str = "voc", class_names: list[str] | tuple[str, ...] | None = None,
                 classes_file: str | None = None) -> DatasetInfo:
    """Build a description from a built-in name (``voc``, ``coco``), an explicit list of names
    (background first), or a file (``.json`` list, ``.yaml`` list, or one name per line)."""
    if classes_file:
        class_names = _read_class_file(Path(classes_file))
    if class_names:
        names = tuple(str(c) for c in class_names)
        if len(names) < 2:
            raise DataError("a dataset needs a background class and at least one foreground class")
        if len(set(names)) != len(names):
            raise DataError(f"duplicate class names in dataset {name!r}")
        if len(names) > 255:
            raise DataError(f"dataset {name!r} has {len(names)} labels; at most 255 fit with 255 = ignore")
        return DatasetInfo(name, names)
    if name not in BUILTIN:
        raise DataError(f"unknown dataset {name!r}: use one of {sorted(BUILTIN)} or give data.class_names")
    return BUILTIN[name]()


def _read_class_file(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"class list missing: expected {path}")
    text = path.read_text()
    if path.suffix == ".json":
        names = json.loads(text)
    elif path.suffix in (".yaml", ".yml"):
        import yaml

        names = yaml.safe_load(text)
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(names, list):
        raise DataError(f"class list {path} must be a list of names")
    return [str(n) for n in names]
