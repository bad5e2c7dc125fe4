"""The configuration schema: one dataclass per section. Defaults are the faithful ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class RunConfig:
    """Where a run writes, and how it is seeded."""

    name: str = ""            # run directory name; empty = the config file's stem
    out_dir: str = "runs"     # parent folder of run directories
    seed: int = 0
    device: str = "auto"      # auto | cpu | cuda | cuda:N


@dataclass
class DataConfig:
    """A dataset in VOC layout and its label set."""

    root: str = ""                          # dataset root folder (required by every data stage)
    dataset: str = "voc"                    # built-in description: voc | coco
    class_names: list[str] = field(default_factory=list)  # custom label set, background first
    classes_file: str = ""                  # or a file with the names (json/yaml list, or one per line)
    image_dir: str = "JPEGImages"
    image_ext: str = ".jpg"
    mask_dir: str = "SegmentationClass"     # or SegmentationClassAug
    mask_ext: str = ".png"
    saliency_dir: str = "Saliency"          # or SALImages, ...
    saliency_ext: str = ".png"
    split_dir: str = "ImageSets/Segmentation"
    train_split: str = "train"              # split name (file <split_dir>/<name>.txt) or a path
    val_split: str = "val"
    # image-level labels: masks | json (cls_labels.json) | npy (cls_labels.npy) | txt (id c1 c2 ...)
    image_labels: Literal["masks", "json", "npy", "txt"] = "json"
    image_labels_file: str = "cls_labels.json"   # relative to root unless absolute
    missing: Literal["error", "skip"] = "error"   # a listed id with a missing file
    saliency_size_mismatch: Literal["error", "resize"] = "error"


@dataclass
class Config:
    """A whole experiment."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
