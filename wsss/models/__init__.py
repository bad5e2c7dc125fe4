"""Networks and pretrained weights: backbones, GloRe, classifier heads, DeepLab-v2, safe loading.

Typical use::

    from wsss.models import build_classifier, param_groups
    net = build_classifier("resnet38", "eps", num_classes=20, pretrained="ilsvrc-cls_rna-a1_cls1000_ep-0001.params",
                           freeze_bn=True, frozen_stages=2)
    groups = param_groups(net, lr=0.01, weight_decay=5e-4)
"""

from wsss.models.backbones import Backbone, InputNorm
from wsss.models.classifier import Classifier, build_classifier
from wsss.models.deeplab import ASPP, DeepLabV2, MultiScale, build_deeplab_v2, convert_deeplab_pytorch_keys
from wsss.models.glore import GloRe
from wsss.models.heads import CAMHead, EPSHead, IAMHead, NSROMHead, create_head
from wsss.models.mxnet_params import convert_resnet38_mxnet, read_mxnet_params
from wsss.models.param_groups import (
    FrozenBatchNorm2d,
    find_backbone,
    freeze_bn,
    freeze_modules,
    is_frozen_bn,
    param_groups,
    unfreeze_bn,
)
from wsss.models.registry import backbone_names, create_backbone, list_backbones, resolve_weights
from wsss.models.weights import (
    LoadReport,
    UnsafeWeightsError,
    load_state_dict_checked,
    read_weight_file,
    save_state_dict,
    strip_prefixes,
)

__all__ = [
    "ASPP", "Backbone", "CAMHead", "Classifier", "DeepLabV2", "EPSHead", "FrozenBatchNorm2d", "GloRe",
    "IAMHead", "InputNorm", "LoadReport", "MultiScale", "NSROMHead", "UnsafeWeightsError",
    "backbone_names", "build_classifier", "build_deeplab_v2", "convert_deeplab_pytorch_keys",
    "convert_resnet38_mxnet", "create_backbone", "create_head", "find_backbone", "freeze_bn",
    "freeze_modules", "is_frozen_bn", "list_backbones", "load_state_dict_checked", "param_groups",
    "read_mxnet_params", "read_weight_file", "resolve_weights", "save_state_dict", "strip_prefixes",
    "unfreeze_bn",
]
