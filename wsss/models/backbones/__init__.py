"""Backbone networks; build them through :func:`wsss.models.create_backbone`."""

from wsss.models.backbones.base import Backbone, InputNorm
from wsss.models.backbones.efficientnet_lite import EfficientNetLite
from wsss.models.backbones.resnet import ResNet
from wsss.models.backbones.resnet38 import ResNet38
from wsss.models.backbones.resnet_caffe import ResNetCaffe
from wsss.models.backbones.timm_backbone import TimmBackbone
from wsss.models.backbones.vgg import VGG16D1

__all__ = ["Backbone", "InputNorm", "EfficientNetLite", "ResNet", "ResNet38", "ResNetCaffe",
           "TimmBackbone", "VGG16D1"]
