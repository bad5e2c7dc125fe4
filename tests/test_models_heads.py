"""GloRe, classifier heads, Classifier, DeepLab-v2 + multi-scale, frozen BN and parameter groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wsss.errors import ConfigError
from wsss.models import (
    ASPP,
    CAMHead,
    Classifier,
    DeepLabV2,
    EPSHead,
    GloRe,
    IAMHead,
    MultiScale,
    NSROMHead,
    build_classifier,
    build_deeplab_v2,
    convert_deeplab_pytorch_keys,
    create_backbone,
    create_head,
    freeze_bn,
    is_frozen_bn,
    param_groups,
    unfreeze_bn,
)

torch.set_num_threads(1)


# --- GloRe ------------------------------------------------------------------------------------------

def glore_by_matrices(unit: GloRe, x: torch.Tensor) -> np.ndarray:
    """METHODS B.1 written as matrices (float64, numpy): X' = W_s X + b_s, B = W_p X + b_p,
    V = X' Bᵀ, then in node-major form Z = ReLU((I - A_g) Vᵀ + b_n) W_g with A_g = -(node conv
    weight) and W_g = (state conv weight)ᵀ, Y = Zᵀ B, out = X + BN(W_e Y)."""
    p = {k: v.detach().double().numpy() for k, v in unit.state_dict().items()}
    out = []
    for xb in x.detach().double().numpy():
        k, h, w = xb.shape
        X = xb.reshape(k, h * w)
        Xs = p["conv_state.weight"][:, :, 0, 0] @ X + p["conv_state.bias"][:, None]  # (S, L)
        B = p["conv_proj.weight"][:, :, 0, 0] @ X + p["conv_proj.bias"][:, None]  # (N, L)
        V = Xs @ B.T  # (S, N)
        n = B.shape[0]
        A_g = -p["gcn.conv1.weight"][:, :, 0]  # (N, N)
        W_g = p["gcn.conv2.weight"][:, :, 0].T  # (S, S)
        Z_nodes = np.maximum((np.eye(n) - A_g) @ V.T + p["gcn.conv1.bias"][:, None], 0) @ W_g  # (N, S)
        Y = Z_nodes.T @ B  # (S, L)
        E = p["conv_extend.weight"][:, :, 0, 0] @ Y  # (K, L)
        bn = (E - p["blocker.running_mean"][:, None]) / np.sqrt(p["blocker.running_var"][:, None] + 1e-4)
        bn = bn * p["blocker.weight"][:, None] + p["blocker.bias"][:, None]
        out.append((X + bn).reshape(k, h, w))
    return np.stack(out)


def test_glore_equals_its_matrix_form():
    torch.manual_seed(0)
    unit = GloRe(in_channels=16, num_state=8, num_node=4).eval()
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        unit.blocker.running_mean.normal_()
        unit.blocker.running_var.uniform_(0.5, 2.0)
        unit.blocker.weight.normal_()
        unit.blocker.bias.normal_()
        unit.gcn.conv1.bias.normal_()
    assert unit.blocker.eps == 1e-4
    x = torch.randn(2, 16, 5, 6)
    with torch.no_grad():
        got = unit(x).double().numpy()
    expected = glore_by_matrices(unit, x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert np.abs(expected - x.numpy()).max() > 0.1  # the unit is not an identity here


def test_glore_default_sizes_and_parameters():
    unit = GloRe()
    shapes = {k: tuple(v.shape) for k, v in unit.named_parameters()}
    assert shapes["conv_state.weight"] == (128, 512, 1, 1) and shapes["conv_state.bias"] == (128,)
    assert shapes["conv_proj.weight"] == (64, 512, 1, 1) and shapes["conv_proj.bias"] == (64,)
    assert shapes["gcn.conv1.weight"] == (64, 64, 1) and shapes["gcn.conv1.bias"] == (64,)
    assert shapes["gcn.conv2.weight"] == (128, 128, 1) and "gcn.conv2.bias" not in shapes
    assert shapes["conv_extend.weight"] == (512, 128, 1, 1) and "conv_extend.bias" not in shapes


# --- heads --------------------------------------------------------------------------------------------

def test_cam_head_logits_are_gap_of_maps_and_equal_conv_of_gap():
    torch.manual_seed(1)
    head = CAMHead(8, 3, bias=True).eval()
    x = torch.randn(2, 8, 4, 5)
    logits, maps = head(x)
    assert tuple(logits.shape) == (2, 3) and tuple(maps.shape) == (2, 3, 4, 5)
    torch.testing.assert_close(logits, head.classifier(x.mean((2, 3), keepdim=True)).flatten(1))
    assert CAMHead(8, 3).classifier.bias is None  # PSA's fc8 has no bias by default


def test_eps_head_background_last_no_bias_xavier():
    torch.manual_seed(2)
    head = EPSHead(64, 20)
    assert head.classifier.bias is None and tuple(head.classifier.weight.shape) == (21, 64, 1, 1)
    bound = (6 / (64 + 21)) ** 0.5  # Xavier-uniform
    assert head.classifier.weight.abs().max() <= bound and head.classifier.weight.abs().max() > 0.8 * bound
    x = torch.randn(2, 64, 3, 3)
    logits, maps = head(x)
    assert tuple(maps.shape) == (2, 21, 3, 3) and tuple(logits.shape) == (2, 20)
    torch.testing.assert_close(logits, maps[:, :20].mean((2, 3)))
    assert head.background_index == 20


def test_nsrom_head_layout():
    head = NSROMHead(512, 20)
    kinds = [type(m).__name__ for m in head.extra_convs]
    assert kinds == ["Conv2d", "ReLU", "Conv2d", "ReLU", "Conv2d"]  # no ReLU after the last conv
    assert all(m.kernel_size == (3, 3) and m.out_channels == 512 for m in head.extra_convs if isinstance(m, nn.Conv2d))
    assert isinstance(head.glore, GloRe)
    assert head.classifier.kernel_size == (1, 1) and head.classifier.bias is not None
    x = torch.randn(2, 512, 4, 4)
    head.eval()
    logits, maps = head(x)
    assert tuple(maps.shape) == (2, 20, 4, 4)
    torch.testing.assert_close(logits, maps.mean((2, 3)))


def test_iam_head_pixel_maps_without_logits():
    head = IAMHead(512, 20)
    kinds = [type(m).__name__ for m in head.extra_convs]
    assert kinds == ["Conv2d", "ReLU"] * 3
    logits, maps = head(torch.randn(1, 512, 4, 4))
    assert logits is None and tuple(maps.shape) == (1, 20, 4, 4)
    bare = IAMHead(16, 3, num_convs=0)
    x = torch.randn(1, 16, 2, 2)
    torch.testing.assert_close(bare(x)[1], bare.classifier(F.relu(x)))
    with pytest.raises(ConfigError, match="unknown head"):
        create_head("gap", 16, 3)


@pytest.mark.parametrize("head_name,channels", [("cam", 3), ("eps", 4), ("nsrom", 3), ("iam", 3)])
def test_any_head_on_any_backbone_gets_gradients(head_name, channels):
    torch.manual_seed(3)
    net = build_classifier("efficientnet_lite0", head_name, 3, output_stride=16,
                           head_kwargs={"mid_channels": 32} if head_name in ("nsrom", "iam") else None)
    assert isinstance(net, Classifier) and net.output_stride == 16
    net.train()
    logits, maps = net(torch.randn(2, 3, 32, 32))
    assert tuple(maps.shape) == (2, channels, 2, 2)
    loss = maps.square().mean() + (logits.sum() if logits is not None else 0)
    loss.backward()
    head_grads = [p.grad for p in net.head.parameters() if p.requires_grad]
    assert head_grads and all(g is not None for g in head_grads)
    assert net.head.classifier.weight.grad.abs().sum() > 0
    assert net.backbone._conv_stem.weight.grad.abs().sum() > 0


def test_nsrom_head_on_vgg16_d1():
    torch.manual_seed(4)
    net = Classifier(create_backbone("vgg16_d1"), NSROMHead(512, 5)).eval()
    with torch.no_grad():
        logits, maps = net(torch.randn(1, 3, 32, 32))
    assert tuple(logits.shape) == (1, 5) and tuple(maps.shape) == (1, 5, 4, 4)


# --- DeepLab-v2 ------------------------------------------------------------------------------------------

def test_aspp_sums_four_dilated_convs():
    torch.manual_seed(5)
    aspp = ASPP(256, 21)
    convs = [aspp.c0, aspp.c1, aspp.c2, aspp.c3]
    assert [c.dilation[0] for c in convs] == [6, 12, 18, 24] == [c.padding[0] for c in convs]
    assert all(c.kernel_size == (3, 3) and c.bias is not None and not c.bias.any() for c in convs)
    assert abs(float(torch.cat([c.weight.detach().flatten() for c in convs]).std()) - 0.01) < 0.001
    x = torch.randn(1, 256, 5, 5)
    torch.testing.assert_close(aspp(x), sum(c(x) for c in convs))


def test_multiscale_training_branches_and_eval_max_fusion():
    torch.manual_seed(6)
    model = MultiScale(DeepLabV2(create_backbone("efficientnet_lite0", output_stride=8), 4))
    freeze_bn(model)
    x = torch.randn(1, 3, 64, 64)
    model.train()
    outs = model(x)
    assert [tuple(o.shape[-2:]) for o in outs] == [(8, 8), (6, 6), (4, 4), (8, 8)]
    model.eval()
    with torch.no_grad():
        fused = model(x)
        base = model.base
        ref = [base(x), base(F.interpolate(x, size=(48, 48), mode="bilinear", align_corners=False)),
               base(F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False))]
        ref = [r if r.shape[-1] == 8 else F.interpolate(r, size=(8, 8), mode="bilinear", align_corners=False)
               for r in ref]
    assert tuple(fused.shape) == (1, 4, 8, 8)
    torch.testing.assert_close(fused, torch.maximum(torch.maximum(ref[0], ref[1]), ref[2]))
    torch.testing.assert_close(outs[-1], torch.stack([outs[0]] + [
        F.interpolate(o, size=(8, 8), mode="bilinear", align_corners=False) for o in outs[1:3]]).amax(0))


def test_deeplab_v2_on_caffe_resnet101_with_frozen_bn_and_deeplab_pytorch_keys():
    model = build_deeplab_v2("resnet101_caffe", num_classes=21)
    assert isinstance(model, MultiScale) and model.scales == (1.0, 0.75, 0.5)
    assert all(is_frozen_bn(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 33, 33))
    assert tuple(out.shape) == (1, 21, 5, 5)
    keys = {"module.base.layer2.block1.proj.conv.weight": torch.zeros(1), "base.aspp.c3.bias": torch.zeros(1)}
    assert sorted(convert_deeplab_pytorch_keys(keys)) == ["aspp.c3.bias", "backbone.layer2.block1.shortcut.conv.weight"]
    inner = set(model.base.state_dict())
    assert {"aspp.c3.bias", "backbone.layer2.block1.shortcut.conv.weight"} <= inner


# --- frozen BatchNorm and parameter groups --------------------------------------------------------------

def test_freeze_bn_survives_train_and_keeps_running_stats():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    assert freeze_bn(net) == 1
    net.train()
    bn = net[1]
    assert not bn.training and is_frozen_bn(bn) and isinstance(bn, nn.BatchNorm2d)
    assert not bn.weight.requires_grad and not bn.bias.requires_grad
    before = (bn.running_mean.clone(), bn.running_var.clone())
    net(torch.randn(4, 3, 8, 8) * 3 + 1)
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert set(net.state_dict()) == {"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                                     "1.running_var", "1.num_batches_tracked"}
    unfreeze_bn(net)
    net.train()
    assert bn.training and bn.weight.requires_grad
    net(torch.randn(4, 3, 8, 8) * 3 + 1)
    assert not torch.equal(bn.running_mean, before[0])


def test_param_groups_learning_rates_and_exclusions():
    torch.manual_seed(7)
    net = build_classifier("vgg16_d1", "nsrom", 4, frozen_stages=1, head_kwargs={"mid_channels": 16,
                                                                                 "glore_state": 8,
                                                                                 "glore_nodes": 4})
    groups = param_groups(net, lr=1e-3, weight_decay=5e-4)
    by_name = {g["name"]: g for g in groups}
    assert [g["name"] for g in groups] == ["backbone_weight", "backbone_bias", "new_weight", "new_bias"]
    assert by_name["backbone_weight"]["lr"] == pytest.approx(1e-3)
    assert by_name["backbone_bias"]["lr"] == pytest.approx(2e-3)
    assert by_name["new_weight"]["lr"] == pytest.approx(1e-2)
    assert by_name["new_bias"]["lr"] == pytest.approx(2e-2)
    assert by_name["backbone_weight"]["weight_decay"] == 5e-4 and by_name["new_bias"]["weight_decay"] == 0.0
    assert by_name["backbone_bias"]["weight_decay"] == 0.0 and by_name["new_weight"]["weight_decay"] == 5e-4
    assert len(by_name["backbone_weight"]["params"]) == 11  # 13 convs, conv1_x frozen
    assert len(by_name["backbone_bias"]["params"]) == 11
    ids = lambda key: {id(p) for p in by_name[key]["params"]}  # noqa: E731
    assert id(net.backbone.features[0].weight) not in ids("backbone_weight")
    assert id(net.head.glore.blocker.weight) in ids("new_weight")
    assert id(net.head.glore.blocker.bias) in ids("new_bias")
    head_params = [p for p in net.head.parameters()]
    assert len(by_name["new_weight"]["params"]) + len(by_name["new_bias"]["params"]) == len(head_params)
    optimizer = torch.optim.SGD(groups, lr=1e-3, momentum=0.9)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-3, 2e-3, 1e-2, 2e-2])


def test_param_groups_skip_frozen_batchnorm_and_find_nested_backbone():
    backbone = create_backbone("efficientnet_lite0", output_stride=32, freeze_bn=True)
    model = MultiScale(DeepLabV2(backbone, 3))
    groups = {g["name"]: g for g in param_groups(model, lr=2.5e-4, weight_decay=5e-4)}
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    assert len(groups["backbone_weight"]["params"]) == len(convs)  # BN gamma/beta are frozen: left out
    assert "backbone_bias" not in groups  # Lite convs have no bias
    assert len(groups["new_weight"]["params"]) == 4 and len(groups["new_bias"]["params"]) == 4
    assert groups["new_weight"]["lr"] == pytest.approx(2.5e-3) and groups["new_bias"]["lr"] == pytest.approx(5e-3)
