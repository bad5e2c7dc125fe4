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
    # NHWC (channels-last) tensors in training: auto = on CUDA only; "always" also speeds up the
    # CPU (1.37x for one EfficientNet-Lite0 training step on one thread, benchmarks/RESULTS.md)
    channels_last: Literal["auto", "always", "never"] = "auto"


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
    pretrained_min_share: float = 0.5  # a file filling fewer of the backbone's tensors is refused (0: any)
    freeze_bn: bool = True            # BatchNorm in eval mode, affine frozen (EPS, DeepLab)
    frozen_stages: int = 0            # stop gradients in the first N backbone stages (EPS ResNet-38: 2)


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
    out: str = "classifier"           # run-dir folder: last.pt, final.pt, metrics.jsonl, logs
    oaa_out: str = "oaa"              # nsrom: run-dir folder of the exported accumulated maps
    oaa_skip_below: float = 0.1       # nsrom: a class with sigmoid(logit) below this is not accumulated
    # Under DDP, trainable BatchNorm layers (NSROM's GloRe unit) normalise each rank's share of the
    # batch (false, like the official DataParallel code) or the global batch (true).
    sync_bn: bool = False


@dataclass
class IAMTrainConfig:
    """NSROM's integral attention model (METHODS B.2), trained on the accumulated OAA maps."""

    epochs: int = 15
    lr: float = 1e-3                     # backbone weights; biases 2x, head 10x/20x (as train_cls)
    batch_size: int = 5
    out: str = "iam"                     # run-dir folder of its checkpoints and final weights
    attention: str = "oaa"               # run-dir folder of the exported accumulated maps


@dataclass
class CamsConfig:
    """`wsss cams`: per-image class maps (METHODS A.4 for EPS/CAM, B.2 inference for NSROM)."""

    split: str = "train"
    checkpoint: str = "classifier/final.pt"   # relative to the run dir, or absolute
    out: str = "cams"                         # <run>/<out>/<id>.npz
    scales: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    flip: bool = True
    nsrom_size: int = 256                     # NSROM official: single scale, square input
    nsrom_multiscale: bool = False            # NSROM: use `scales`/`flip` instead of one pass
    iam_checkpoint: str = "iam/final.pt"      # NSROM: the IAM whose maps are the OA-CAMs
    oa_out: str = "oa_cams"                   # NSROM: <run>/<oa_out>/<id>.npz
    batch_passes: bool = True                 # run all scales/flips of an image as few batches
    workers: int = 0                          # DataLoader workers for image decoding
    overwrite: bool = False


@dataclass
class LabelsConfig:
    """`wsss labels`: pseudo labels from maps (EPS A.4, NSROM BE+POM B.3-B.4, NSRM B.5)."""

    method: Literal["eps", "cam", "nsrom", "nsrm", "saliency"] = "eps"
    split: str = "train"
    cams: str = "cams"                 # maps of the classifier (EPS/CAM maps, NSROM plain CAMs)
    oa_cams: str = "oa_cams"           # NSROM: OA-CAMs for background extraction
    out: str = "labels"
    thr: float = 0.20                  # EPS/CAM constant background score
    # eps/cam: [thr on salient pixels, thr on non-salient pixels] (linear in the saliency value)
    # instead of the constant thr; [] = the constant (official). Not in the paper.
    thr_by_saliency: list[float] = field(default_factory=list)
    # saliency baseline: salient (value / 255 >= saliency_thr) -> the image's class; with several
    # labelled classes the one whose map in labels.cams is highest ("" = no maps: single-class only)
    saliency_thr: float = 0.5
    pom: bool = False                  # Potential Object Mining (on by default in nsrom configs)
    # POM's plain CAMs; "" = labels.cams. For eps/cam + POM, the maps that made the label leave POM
    # (nearly) nothing to mine, so point this at another classifier's maps (e.g. a CAM run's cams).
    pom_cams: str = ""
    be_fg_thr: float = 0.3
    be_conflict_thr: float = 0.9
    be_sal_att_thr: int = 32
    be_att_thr: float = 0.8
    pom_t_bg: float = 0.3
    min_fraction: float = 0.01         # images with fewer class pixels become all 255 (nsrom, nsrm)
    # eps / cam (+ pom): also apply the min_fraction rule. Off = as EPS (no 255 from it); nsrom and
    # nsrm always apply it.
    eps_min_fraction: bool = False
    nsrm_pred: str = "pred_r1"         # NSRM: round-1 predictions on the training split
    nsrm_labels: str = "labels"        # NSRM: the round-1 pseudo labels
    nsrm_kernel: int = 30
    workers: int = 0
    overwrite: bool = False


@dataclass
class CrfStageConfig:
    """`wsss crf`: dense CRF (DeepLab-v2 values, METHODS A.4) over a folder of labels/probabilities."""

    split: str = "train"
    input: str = "labels"              # folder of <id>.png labels or <id>.npz probabilities
    out: str = "labels_crf"
    iterations: int = 10
    gaussian_sxy: float = 1.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 67.0
    bilateral_srgb: float = 3.0
    bilateral_compat: float = 4.0
    gt_prob: float = 0.7               # confidence given to a hard label when the input is labels
    workers: int = 2
    overwrite: bool = False


@dataclass
class SegTrainConfig:
    """`wsss train-seg`: DeepLab-v2 on pseudo labels (METHODS B.5)."""

    labels: str = "labels"             # the pseudo-label folder (run-relative or absolute)
    supervision: Literal["weak", "full"] = "weak"   # full = train on data.mask_dir on purpose
    split: str = "train"
    out: str = "segmenter"
    backbone: str = "resnet101"
    output_stride: int = 8
    pretrained: str = ""
    pretrained_min_share: float = 0.5  # a file filling fewer of the backbone's tensors is refused (0: any)
    aspp_rates: tuple[int, ...] = (6, 12, 18, 24)
    msc_scales: tuple[float, ...] = (1.0, 0.75, 0.5)
    iterations: int = 20000
    batch_size: int = 5
    accumulate: int = 2
    num_workers: int = 2
    lr: float = 2.5e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    backbone_lr_mult: tuple[float, float] = (1.0, 1.0)
    head_lr_mult: tuple[float, float] = (10.0, 20.0)
    crop_size: int = 321
    scale_range: tuple[float, float] = (0.5, 1.5)
    flip: bool = True
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    freeze_bn: bool = True
    checkpoint_every: int = 1000
    log_every: int = 20


@dataclass
class PredictConfig:
    """`wsss predict`: full-resolution multi-scale prediction with a trained segmenter."""

    split: str = "val"
    checkpoint: str = "segmenter/final.pt"
    out: str = "pred"
    scales: tuple[float, ...] = (1.0, 0.75, 0.5)
    flip: bool = False
    save_probs: bool = False           # also <out>_probs/<id>.npz for the CRF
    # classes kept in the probabilities: all = the C+1 softmax (default, no image labels used);
    # labelled = background + the image-level label's classes, renormalised, and the PNG is the
    # argmax over them too (training splits only, where image labels are the weak supervision)
    probs_classes: Literal["all", "labelled"] = "all"
    workers: int = 0
    overwrite: bool = False


@dataclass
class EvalConfig:
    """`wsss eval` (alone or inside a run): which folder is compared with the ground truth, and how
    (METHODS.md A.5 and Part C)."""

    split: str = "val"
    pred: str = "pred"
    boundary: bool = True              # boundary precision / recall / F1
    boundary_tolerance: float = 2.0    # boundary match distance in pixels
    boundary_gt_dir: str = ""          # "" = boundaries of the GT masks; else <id>.mat (SBD) / <id>.png maps
    context_dir: str = ""              # context masks (e.g. SegmentationContext), relative to data.root
    context_classes: str = ""          # their class names (e.g. context.json), relative to data.root
    pairs: list[str] = field(default_factory=list)   # "target:context" names, e.g. "train:rails"
    top_pairs: int = 0
    crop: bool = False                 # size mismatch: false = error, true = crop as the EPS evaluator
    workers: int = 2                   # processes; 0 = one per usable CPU
    protocol: dict[str, Any] = field(default_factory=dict)  # post_processing, scales, initialisation, ...


@dataclass
class PipelineConfig:
    """`wsss run`: the ordered steps, each ``{name, stage, set: [key=value, ...]}``."""

    steps: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Config:
    """A whole experiment."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train_cls: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)
    iam: IAMTrainConfig = field(default_factory=IAMTrainConfig)
    cams: CamsConfig = field(default_factory=CamsConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    crf: CrfStageConfig = field(default_factory=CrfStageConfig)
    train_seg: SegTrainConfig = field(default_factory=SegTrainConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
