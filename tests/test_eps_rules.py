"""EPS saliency loss (METHODS A.2) on a hand-computed example, and the pseudo-mask rule (A.4)."""

import numpy as np
import pytest
import torch

from wsss.errors import DataError
from wsss.methods.eps import eps_pseudo_mask, eps_saliency_loss, eps_total_loss, overlap_ratio

torch.set_num_threads(1)

# Per-pixel probabilities [A, B, C, D, background] on a 3×3 map (rows sum to 1).
#   A (class 0, labelled): above 0.5 at (0,0), (0,1), both salient      -> O = 2/(2+9e-4) > tau
#   B (class 1, labelled): above 0.5 at (1,1), (1,2), (2,0); (2,0) only salient -> O = 1/(3+9e-4) <= tau
#   C (class 2, NOT labelled in image 0): above 0.5 at (1,0), salient    -> neither set
#   D (class 3, labelled): never above 0.5                               -> O = 0 -> background set
PROBS = np.array([
    [[0.6, 0.1, 0.1, 0.1, 0.1], [0.8, 0.05, 0.05, 0.05, 0.05], [0.1, 0.1, 0.1, 0.1, 0.6]],
    [[0.1, 0.1, 0.6, 0.1, 0.1], [0.1, 0.6, 0.1, 0.1, 0.1], [0.05, 0.7, 0.05, 0.1, 0.1]],
    [[0.1, 0.6, 0.1, 0.1, 0.1], [0.05, 0.1, 0.05, 0.4, 0.4], [0.1, 0.1, 0.1, 0.3, 0.4]],
])  # (3, 3, 5)
SALIENCY = np.array([[0.9, 0.8, 0.1], [0.7, 0.3, 0.2], [0.6, 0.0, 0.4]])


def _maps_from_probs(probs: np.ndarray) -> torch.Tensor:
    """Logits whose softmax is ``probs``: (H, W, K) -> (1, K, H, W)."""
    return torch.tensor(np.log(probs), dtype=torch.float64).permute(2, 0, 1)[None]


def _saliency_6x6() -> torch.Tensor:
    """Saliency at twice the map size; nearest resize to 3×3 picks rows/cols 0, 2, 4.
    The other pixels hold 1.0 so that a non-nearest resize would change the result."""
    big = np.ones((6, 6))
    big[::2, ::2] = SALIENCY
    return torch.tensor(big)[None]


def test_eps_saliency_loss_hand_computed():
    maps = _maps_from_probs(PROBS).repeat(2, 1, 1, 1).requires_grad_(True)
    saliency = _saliency_6x6().repeat(2, 1, 1)  # (B, H, W) form
    labels = torch.tensor([[1, 1, 0, 1], [0, 0, 1, 0]], dtype=torch.float64)
    loss, details = eps_saliency_loss(maps, saliency, labels, tau=0.4, lam=0.5)

    expected_overlap = torch.tensor([2 / 2.0009, 1 / 3.0009, 1 / 1.0009, 0.0], dtype=torch.float64)
    assert torch.allclose(details["overlap"][0], expected_overlap, atol=1e-9)
    assert torch.allclose(details["overlap"][1], expected_overlap, atol=1e-9)
    assert details["overlap"].requires_grad is False
    assert details["foreground_set"].tolist() == [[True, False, False, False, False],
                                                  [False, False, True, False, False]]
    assert details["background_set"].tolist() == [[False, True, False, True, True],
                                                  [False, False, False, False, True]]
    assert torch.allclose(details["saliency"][0, 0], torch.tensor(SALIENCY))

    # Image 0: Ŝ = 0.5·P_A + 0.5·(1 − P_B − P_D − P_bg), by hand per pixel.
    expected_s0 = torch.tensor([[0.65, 0.825, 0.15], [0.4, 0.15, 0.075], [0.15, 0.075, 0.15]],
                               dtype=torch.float64)
    # Image 1 (label {C}): Ŝ = 0.5·P_C + 0.5·(1 − P_bg).
    expected_s1 = torch.tensor([[0.5, 0.5, 0.25], [0.75, 0.5, 0.475], [0.5, 0.325, 0.35]],
                               dtype=torch.float64)
    assert torch.allclose(details["estimated_saliency"][0, 0], expected_s0, atol=1e-12)
    assert torch.allclose(details["estimated_saliency"][1, 0], expected_s1, atol=1e-12)
    # Σ(S − Ŝ)² = 0.464375 (image 0) + 0.50875 (image 1), mean over 18 pixels.
    assert loss.item() == pytest.approx((0.464375 + 0.50875) / 18, abs=1e-12)

    # The same selection with tau above O_A moves A into the background set too.
    _, strict = eps_saliency_loss(maps, saliency, labels, tau=0.9996, lam=0.5)
    assert strict["foreground_set"][0].tolist() == [False] * 5
    assert strict["background_set"][0].tolist() == [True, True, False, True, True]


def test_eps_saliency_loss_gradient_does_not_flow_through_overlap():
    torch.manual_seed(0)
    maps = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    saliency = torch.rand(2, 1, 5, 5, dtype=torch.float64)
    labels = torch.tensor([[1, 1, 0], [0, 1, 1]], dtype=torch.float64)
    loss, details = eps_saliency_loss(maps, saliency, labels, tau=0.2, lam=0.3)
    (grad,) = torch.autograd.grad(loss, maps)

    # Reference: the selected sets taken as constants (detached), the rest recomputed.
    fg = details["foreground_set"].double()[:, :, None, None]
    bg = details["background_set"].double()[:, :, None, None]
    maps_ref = maps.detach().clone().requires_grad_(True)
    probs = torch.softmax(maps_ref, dim=1)
    estimated = 0.3 * (probs * fg).sum(1, keepdim=True) + 0.7 * (1 - (probs * bg).sum(1, keepdim=True))
    loss_ref = ((estimated - saliency) ** 2).mean()
    (grad_ref,) = torch.autograd.grad(loss_ref, maps_ref)
    assert loss.item() == pytest.approx(loss_ref.item(), abs=1e-12)
    assert torch.allclose(grad, grad_ref, atol=1e-12)
    assert grad[:, -1].abs().sum() > 0  # the background map is trained by L_sal


def test_overlap_ratio_rounds_half_to_even_and_has_class_area_denominator():
    probs = torch.tensor([[[[0.5, 0.51], [0.9, 0.2]]]])  # one class, 2×2
    saliency = torch.tensor([[[[1.0, 1.0], [0.5, 1.0]]]])  # saliency 0.5 is not salient either
    overlap = overlap_ratio(probs, saliency)
    # B_c = {(0,1), (1,0)}, B_s ∩ B_c = {(0,1)} -> 1 / (2 + 4e-4)
    assert overlap.item() == pytest.approx(1 / 2.0004, rel=1e-6)


def test_eps_total_loss_adds_soft_margin_on_foreground_logits_only():
    torch.manual_seed(1)
    maps = torch.randn(2, 4, 3, 3)
    saliency = torch.rand(2, 1, 3, 3)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    logits = torch.tensor([[2.0, -1.0, 0.5, 100.0], [-3.0, 1.0, 0.0, -100.0]])
    total, details = eps_total_loss(logits, maps, saliency, labels)
    sal, _ = eps_saliency_loss(maps, saliency, labels)
    # multilabel soft margin by hand: mean over classes of softplus(-x) for y=1, softplus(x) for y=0
    sp = torch.nn.functional.softplus
    by_hand = torch.stack([
        (sp(torch.tensor(-2.0)) + sp(torch.tensor(-1.0)) + sp(torch.tensor(-0.5))) / 3,
        (sp(torch.tensor(-3.0)) + sp(torch.tensor(-1.0)) + sp(torch.tensor(0.0))) / 3,
    ]).mean()
    assert details["loss_cls"].item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert total.item() == pytest.approx(by_hand.item() + sal.item(), rel=1e-6)
    # (B, C) logits give the same value as (B, C+1)
    total_c, _ = eps_total_loss(logits[:, :3], maps, saliency, labels)
    assert total_c.item() == pytest.approx(total.item(), rel=1e-7)
    with pytest.raises(DataError):
        eps_total_loss(logits[:, :2], maps, saliency, labels)


def test_eps_pseudo_mask_background_score_and_ties():
    cams = np.array([
        [[0.10, 0.20, 0.90], [0.50, 0.70, 0.00]],  # class 12
        [[0.05, 0.10, 0.30], [0.50, 0.80, 0.20]],  # class 3
    ], dtype=np.float32)
    mask = eps_pseudo_mask(cams, classes=[12, 3], thr=0.20)
    # (0,0) both below thr -> 0; (0,1) class 12 equals thr -> tie goes to background;
    # (0,2) 12 wins; (1,0) tie 12 vs 3 -> lower class index 3; (1,1) 3 wins; (1,2) 3 equals thr -> 0
    assert mask.dtype == np.uint8
    assert mask.tolist() == [[0, 0, 12], [3, 3, 0]]
    assert eps_pseudo_mask(cams, classes=[12, 3], thr=0.0).tolist() == [[12, 12, 12], [3, 3, 3]]
    assert eps_pseudo_mask(np.zeros((0, 2, 3)), classes=[]).tolist() == [[0, 0, 0], [0, 0, 0]]
    with pytest.raises(DataError):
        eps_pseudo_mask(cams, classes=[3])


# ---------------------------------------------------------------- multi-scale + flip aggregation
from wsss.methods.cam import (  # noqa: E402
    aggregate_cam_maps, aggregate_eps_maps, max_normalize, minmax_normalize_maps, pass_plan, scaled_size,
)


def test_pass_plan_and_scaled_size():
    assert pass_plan([0.5, 1.0], flip=True) == [(0.5, False), (0.5, True), (1.0, False), (1.0, True)]
    assert pass_plan([1.0], flip=False) == [(1.0, False)]
    assert scaled_size((375, 500), 0.5) == (188, 250)   # round(187.5) -> 188 (half to even)
    assert scaled_size((281, 500), 0.5) == (140, 250)   # round(140.5) -> 140 (half to even)
    assert scaled_size((281, 500), 1.5) == (422, 750)


def test_aggregate_eps_maps_shapes_and_background():
    torch.manual_seed(0)
    outputs = [torch.randn(2, 4, 3, 4), torch.randn(2, 4, 3, 4),
               torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 8)]
    flips = [False, True, False, True]
    maps = aggregate_eps_maps(outputs, flips, (12, 16), classes=[0, 2])
    assert maps.shape == (2, 2, 12, 16) and maps.dtype == torch.float32
    assert float(maps.min()) >= 0.0 and float(maps.max()) < 1.0
    assert torch.allclose(maps.amax(dim=(-2, -1)), torch.ones(2, 2), atol=1e-4)
    with_bg = aggregate_eps_maps(outputs, flips, (12, 16), classes=[0, 2], with_background=True)
    assert with_bg.shape == (2, 3, 12, 16)
    assert torch.equal(with_bg[:, :2], maps)
    assert aggregate_eps_maps(outputs, flips, (12, 16)).shape == (2, 3, 12, 16)  # all C classes
    assert aggregate_eps_maps(outputs, flips, (12, 16), classes=[]).shape == (2, 0, 12, 16)
    with pytest.raises(DataError):
        aggregate_eps_maps(outputs, flips, (12, 16), classes=[3])  # 3 is the background channel


def test_aggregate_eps_maps_exact_values_single_pass():
    maps = torch.tensor([[[[1.0, 2.0]], [[0.0, 0.0]], [[0.5, -1.0]]]])  # (1, 3, 1, 2): C = 2
    out = aggregate_eps_maps([maps], [False], (1, 2), classes=[0, 1])
    probs = torch.softmax(maps, dim=1)[:, :2]
    expected = probs / (probs.amax(dim=(-2, -1), keepdim=True) + 1e-5)
    assert torch.allclose(out, expected, atol=1e-7)
    assert out[0, 0, 0, 1].item() == pytest.approx(1 / (1 + 1e-5 / probs[0, 0, 0, 1].item()), rel=1e-6)


def test_flipped_pass_is_unflipped_before_summing():
    torch.manual_seed(2)
    plain = torch.randn(1, 3, 4, 6)
    assert not torch.allclose(plain, plain.flip(-1))  # asymmetric
    # A flip-equivariant network: the flipped input gives the mirrored map.
    outputs = [plain, plain.flip(-1)]
    both = aggregate_eps_maps(outputs, [False, True], (8, 12), classes=[0, 1])
    probs = torch.nn.functional.interpolate(torch.softmax(plain, 1)[:, :2], size=(8, 12), mode="bilinear",
                                            align_corners=False)
    assert torch.allclose(both, max_normalize(2 * probs), atol=1e-6)
    not_unflipped = aggregate_eps_maps(outputs, [False, False], (8, 12), classes=[0, 1])
    assert (not_unflipped - both).abs().max() > 0.05
    cam_both = aggregate_cam_maps([plain[:, :2], plain[:, :2].flip(-1)], [False, True], (4, 6))
    assert torch.allclose(cam_both, max_normalize(2 * torch.relu(plain[:, :2])), atol=1e-6)


def test_aggregate_cam_maps_relu_bilinear_and_normalisation():
    cams = torch.tensor([[[[2.0, 6.0]], [[-1.0, 4.0]], [[9.0, 9.0]]]])  # (1, 3, 1, 2)
    out = aggregate_cam_maps([cams, cams], [False, False], (1, 4), classes=[0, 1])
    # bilinear 1×2 -> 1×4 (align_corners=False): [a, .75a+.25b, .25a+.75b, b]; two passes summed
    class0 = torch.tensor([2.0, 3.0, 5.0, 6.0]) * 2
    class1 = torch.tensor([0.0, 1.0, 3.0, 4.0]) * 2  # ReLU before upsampling
    assert torch.allclose(out[0, 0, 0], class0 / (12 + 1e-5))
    assert torch.allclose(out[0, 1, 0], class1 / (8 + 1e-5))
    zero = aggregate_cam_maps([-torch.ones(1, 2, 2, 2)], [False], (2, 2))
    assert torch.equal(zero, torch.zeros(1, 2, 2, 2))  # no activation -> zero map, no NaN


def test_minmax_normalize_maps():
    maps = torch.tensor([[[[1.0, 3.0], [5.0, 2.0]], [[4.0, 4.0], [4.0, 4.0]]]])
    out = minmax_normalize_maps(maps)
    assert torch.allclose(out[0, 0], torch.tensor([[0.0, 0.5], [1.0, 0.25]]))
    assert torch.equal(out[0, 1], torch.zeros(2, 2))


def test_eps_aggregation_resizes_all_maps_before_selecting_as_the_official_code():
    """Bit-exact with the official order: softmax, bilinear resize of all C+1 maps together, then
    select (torch's CPU kernel rounds a many-channel resize differently from a few-channel one)."""
    import torch.nn.functional as F

    from wsss.methods.cam import aggregate_eps_maps

    torch.manual_seed(0)
    outputs = [torch.randn(1, 21, 13, 17) * 4, torch.randn(1, 21, 9, 11) * 4]
    flips = [False, True]
    classes = [2, 14]
    size = (101, 131)
    total = 0
    for out, flipped in zip(outputs, flips):
        probs = F.interpolate(torch.softmax(out, 1), size=size, mode="bilinear", align_corners=False)
        probs = probs.flip(-1) if flipped else probs
        total = total + torch.cat([probs[:, classes], probs[:, 20:]], 1)
    expected = total / (total.amax(dim=(-2, -1), keepdim=True) + 1e-5)
    got = aggregate_eps_maps(outputs, flips, size, classes, with_background=True)
    assert torch.equal(got, expected)
