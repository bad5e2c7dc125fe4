"""The configuration schema: one dataclass per section. Defaults are the faithful ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


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
class ModelConfig:
    """The classifier network: a registered backbone and a head chosen by the method."""

    backbone: str = "resnet38"        # see `wsss weights list`
    output_stride: int = 8
    pretrained: str = ""              # a weight file, a known name (e.g. "imagenet"), or "" (random)
    freeze_bn: bool = True            # BatchNorm in eval mode, affine frozen (EPS, DeepLab)
    freeze_prefixes: list[str] = field(default_factory=list)  # parameters frozen by name prefix


@dataclass
class ClassifierTrainConfig:
    """`wsss train-cls`: the classifier recipe (EPS/CAM: METHODS A.3; NSROM: B.1)."""

    method: Literal["cam", "eps", "nsrom"] = "eps"
    iterations: int = 20000           # iteration-based loop (cam / eps)
    epochs: int = 15                  # epoch-based loop (nsrom)
    batch_size: int = 8
    num_workers: int = 2
    lr: float = 0.01
    weight_decay: float = 5e-4
    momentum: float = 0.9
    # The official EPS/PSA optimiser passes weight decay as SGD's momentum argument, so its
    # effective momentum is 5e-4. true = reproduce that (momentum := weight_decay).
    official_momentum_quirk: bool = True
    nesterov: bool = False
    schedule: Literal["poly", "step"] = "poly"
    poly_power: float = 0.9
    step_epochs: list[int] = field(default_factory=lambda: [5, 10])
    step_gamma: float = 0.1
    backbone_lr_mult: tuple[float, float] = (1.0, 2.0)     # weights, biases
    head_lr_mult: tuple[float, float] = (10.0, 20.0)       # weights, biases
    resize_long: tuple[int, int] = (256, 512)              # random long side (cam / eps)
    crop_size: int = 448
    square_size: int = 256                                 # nsrom: images squashed to a square
    flip: bool = True
    color_jitter: tuple[float, float, float, float] = (0.3, 0.3, 0.3, 0.1)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    tau: float = 0.4                  # EPS map selection threshold
    lam: float = 0.5                  # EPS foreground/background balance (COCO: 0.9)
    checkpoint_every: int = 500
    log_every: int = 20


@dataclass
class EvalConfig:
    """`wsss eval`: how predictions are scored (METHODS.md A.5 and Part C)."""

    boundary: bool = True             # boundary precision / recall / F1
    tolerance: float = 2.0            # boundary match distance in pixels
    boundary_gt_dir: str = ""         # "" = boundaries of the GT masks; else <id>.mat (SBD) / <id>.png maps
    context_dir: str = ""             # context masks for the co-occurrence ratio (e.g. SegmentationContext)
    context_classes: str = ""         # their class names (context.json {index: name} or a list)
    pairs: list[str] = field(default_factory=list)   # target:context, e.g. boat:water
    top_pairs: int = 0                # also report the N pairs with the most false positives
    crop: bool = False                # size mismatch: false = error, true = crop as the EPS evaluator
    workers: int = 0                  # processes; 0 = one per usable CPU
    protocol: dict[str, Any] = field(default_factory=dict)  # post_processing, scales, initialisation, ...


@dataclass
class Config:
    """A whole experiment."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train_cls: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
