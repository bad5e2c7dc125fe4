"""NSROM label rules (METHODS B.3 background extraction, B.4 POM, the 1 % rule), the IAM loss
(B.2) and the single-scale inference maps, on small hand-made maps."""

import math

import cv2
import numpy as np
import pytest
import torch

from wsss.errors import DataError
from wsss.methods.cam import nsrom_inference_maps
from wsss.methods.nsrom import (
    background_extraction, class_threshold, iam_loss, min_class_fraction_rule, minmax_normalize,
    nsrom_pseudo_label, potential_object_mining,
)

torch.set_num_threads(1)

# Background channel 1 − S/255 per pixel:
#   0.000 0.216 0.961 0.412 / 0.922 0.608 0.882 1.000 / 1.000 0.878 0.902 0.059
SALIENCY = np.array([[255, 200, 10, 150],
                     [20, 100, 30, 0],
                     [0, 31, 25, 240]], dtype=np.uint8)
OA_CLASS2 = np.array([[0.95, 0.29, 0.0, 0.0],
                      [0.95, 0.20, 0.0, 0.0],
                      [0.0, 0.0, 0.0, 0.1]])
OA_CLASS5 = np.array([[0.1, 0.1, 0.0, 0.6],
                      [0.0, 0.25, 0.0, 0.95],
                      [0.85, 0.0, 0.0, 0.2]])


def test_background_extraction_every_branch():
    label = background_extraction(SALIENCY, [OA_CLASS5, OA_CLASS2], [5, 2])
    assert label.dtype == np.uint8
    assert label.tolist() == [
        # (0,0) bg 0 zeroed, class 2 wins; (0,1) every channel < 0.3 zeroed -> 0 -> S=200 -> 255;
        # (0,2) bg; (0,3) class 5 (0.6) beats bg (0.41)
        [2, 255, 0, 5],
        # (1,0) bg 0.92 and class 2 0.95 both > 0.9 -> conflict; (1,1) bg with S=100 >= 32 -> 255;
        # (1,2) bg, S=30 < 32; (1,3) bg 1.0 and class 5 0.95 -> conflict
        [255, 255, 0, 255],
        # (2,0) bg 1.0 beats class 5 0.85 but 0.85 > 0.8 puts 255 into sal_att -> 255;
        # (2,1) S=31 < 32 stays bg; (2,2) bg 0.902 alone above 0.9 (no conflict); (2,3) all zeroed, S=240
        [255, 0, 0, 255],
    ]
    # With sal_att disabled, the pixels that only sal_att made 255 are background.
    loose = background_extraction(SALIENCY, [OA_CLASS5, OA_CLASS2], [5, 2], sal_att_thr=256)
    assert loose.tolist() == [[2, 0, 0, 5], [255, 0, 0, 255], [0, 0, 0, 0]]
    # Without the 0.3 zeroing, (0,1) would go to class 2 (0.29 > bg 0.216).
    unzeroed = background_extraction(SALIENCY, [OA_CLASS5, OA_CLASS2], [5, 2], fg_thr=0.0, sal_att_thr=256)
    assert unzeroed[0, 1] == 2


def test_background_extraction_ties_and_missing_maps():
    sal = np.full((1, 3), 255, dtype=np.uint8)  # background channel 0 everywhere
    a = np.array([[0.7, 0.5, 0.0]])
    b = np.array([[0.7, 0.6, 0.0]])
    # tie at 0.7 -> lower class index (3), whatever the order given
    assert background_extraction(sal, [b, a], [9, 3], sal_att_thr=256).tolist() == [[3, 9, 0]]
    # a class without a map gets no channel
    assert background_extraction(sal, [None, a], [9, 3], sal_att_thr=256).tolist() == [[3, 3, 0]]
    assert background_extraction(sal, [], [], sal_att_thr=256).tolist() == [[0, 0, 0]]
    with pytest.raises(DataError):
        background_extraction(sal, [a], [3, 9])
    with pytest.raises(DataError):
        background_extraction(sal, [a, a], [3, 3])
    with pytest.raises(DataError):
        background_extraction(sal, [np.zeros((2, 3))], [3])


def test_background_extraction_exact_thresholds():
    sal = np.full((1, 4), 255, dtype=np.uint8)  # background channel 0: only the class competes
    # 0.3 (float32 comparison): exactly 0.3 is kept; a float64 value just below 0.3 rounds to
    # float32(0.3) and is kept too; 0.2999 is zeroed.
    below = np.nextafter(0.3, 0.0)
    assert below < 0.3
    att = np.array([[0.3, below, 0.2999, 0.31]])
    assert background_extraction(sal, [att], [4], sal_att_thr=256).tolist() == [[4, 4, 0, 4]]

    # 0.9 (float32): equal is not above -> no conflict; a float64 value just above 0.9 is 0.9 in
    # float32 -> no conflict; clearly above -> conflict.
    just_above = np.nextafter(0.9, 1.0)
    first = np.array([[0.9, 0.9, 0.95, 0.9]])
    second = np.array([[0.9, just_above, 0.91, 0.9000001]])
    label = background_extraction(sal, [first, second], [1, 2], sal_att_thr=256)
    # (0,0) equal -> tie -> class 1; (0,1) equal in float32 -> tie -> class 1;
    # (0,2) both > 0.9 -> 255; (0,3) only class 2 > 0.9 in float32 -> no conflict, class 2 wins
    assert label.tolist() == [[1, 1, 255, 2]]

    # 0.8 (float64): exactly 0.8 does not enter sal_att; the next float64 above 0.8 does
    # (in float32 it would round to 0.8 and not).
    dark = np.zeros((1, 2), dtype=np.uint8)  # background channel 1.0 wins the argmax
    att = np.array([[0.8, np.nextafter(0.8, 1.0)]])
    assert np.float32(att[0, 1]) == np.float32(0.8)
    assert background_extraction(dark, [att], [6]).tolist() == [[0, 255]]


INITIAL = np.array([[2, 2, 0, 0],
                    [0, 0, 0, 0],
                    [0, 0, 255, 0]], dtype=np.uint8)
CAM2 = np.array([[0.6, 0.8, 0.75, 0.7],
                 [0.1, 0.0, 0.0, 0.0],
                 [0.0, 0.0, 0.9, 0.0]])
CAM5 = np.array([[0.0, 0.0, 0.0, 0.0],
                 [0.4, 0.5, 0.6, 0.8],
                 [0.9, 0.3, 0.0, 0.0]])
CAM7 = np.array([[0.3, 0.3, 0.1, 0.0],
                 [0.2, 0.0, 0.0, 0.0],
                 [0.0, 0.0, 0.3, 0.0]])


def test_class_threshold_branches():
    # present class: median of K_c over the pixels labelled c = median(0.6, 0.8)
    assert class_threshold(INITIAL, CAM2, 2) == pytest.approx(0.7)
    # absent class: values > 0.3 are {0.4, 0.5, 0.6, 0.8, 0.9} (0.3 itself excluded), median 0.6,
    # values above it {0.8, 0.9}, median 0.85
    assert class_threshold(INITIAL, CAM5, 5) == pytest.approx(0.85)
    # no value above T_bg (0.3 is not above) -> nothing mined
    assert class_threshold(INITIAL, CAM7, 7) is None
    # present class whose CAM is zero on its region falls through to the top quartile
    zero_region = CAM5.copy()
    zero_region[0, :2] = 0.0
    assert class_threshold(INITIAL, zero_region, 2) == pytest.approx(0.85)
    # all values above T_bg equal: nothing lies above their median -> nothing mined
    flat = np.where(CAM5 > 0.3, 0.5, 0.0)
    assert class_threshold(INITIAL, flat, 5) is None
    # T_bg 0.55: {0.6, 0.8, 0.9}, median 0.8, above it {0.9}
    assert class_threshold(INITIAL, CAM5, 5, t_bg=0.55) == pytest.approx(0.9)


def test_potential_object_mining():
    out = potential_object_mining(INITIAL, [CAM7, CAM2, CAM5], [7, 2, 5])
    assert out.dtype == np.uint8
    # class 2: 0.75 > 0.7 at (0,2) -> 255, 0.7 at (0,3) is not above; class 5: 0.9 > 0.85 at (2,0);
    # class 7 mines nothing; labelled pixels and existing 255 are untouched
    assert out.tolist() == [[2, 2, 255, 0],
                            [0, 0, 0, 0],
                            [255, 0, 255, 0]]
    assert INITIAL[0, 2] == 0  # input not modified
    assert potential_object_mining(INITIAL, [None, CAM2], [5, 2]).tolist() == [[2, 2, 255, 0],
                                                                               [0, 0, 0, 0],
                                                                               [0, 0, 255, 0]]


def test_min_class_fraction_rule():
    label = np.zeros((10, 10), dtype=np.uint8)
    label[0, 0] = 3
    label[5, :] = 255
    assert np.array_equal(min_class_fraction_rule(label), label)  # exactly 1 % is kept
    wide = np.zeros((10, 20), dtype=np.uint8)
    wide[0, 0] = 3
    wide[1, :] = 255
    assert (min_class_fraction_rule(wide) == 255).all()  # 0.5 % -> whole image ignored
    assert np.array_equal(min_class_fraction_rule(wide, min_fraction=0.005), wide)
    only_ignore = np.full((4, 4), 255, dtype=np.uint8)
    only_ignore[0, 0] = 0
    assert (min_class_fraction_rule(only_ignore) == 255).all()  # 255 is not a class


def test_nsrom_pseudo_label_composes_be_pom_and_the_one_percent_rule():
    be = background_extraction(SALIENCY, [OA_CLASS2, OA_CLASS5], [2, 5])
    pom = potential_object_mining(be, [CAM2, CAM5], [2, 5])
    assert np.array_equal(nsrom_pseudo_label(SALIENCY, [OA_CLASS2, OA_CLASS5], [2, 5]), be)
    full = nsrom_pseudo_label(SALIENCY, [OA_CLASS2, OA_CLASS5], [2, 5], cams=[CAM2, CAM5])
    assert np.array_equal(full, pom)
    # 2 class pixels of 12 (16.7 %): a 20 % minimum ignores the whole image
    assert (nsrom_pseudo_label(SALIENCY, [OA_CLASS2, OA_CLASS5], [2, 5], min_fraction=0.2) == 255).all()


def test_minmax_normalize():
    np.testing.assert_array_equal(minmax_normalize(np.array([[2, 4], [6, 10]], dtype=np.uint8)),
                                  np.array([[0.0, 2.0], [4.0, 8.0]]) / (8.0 + 1e-8))
    assert minmax_normalize(np.full((2, 2), 7.0)).tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_iam_loss_hand_example():
    ln3 = math.log(3.0)
    logits = torch.tensor([[[[0.0, ln3], [-ln3, 2.0]]]], dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[[[0.5, 1.0], [0.0, 0.0]]]], dtype=torch.float64)
    loss = iam_loss(logits, targets)
    positive = (0.5 * math.log(2.0) + math.log(4.0 / 3.0)) / 2   # −t·log σ(x): σ(0)=1/2, σ(ln3)=3/4
    negative = (math.log(4.0 / 3.0) + math.log(1.0 + math.e ** 2)) / 2  # −log(1−σ(x))
    assert loss.item() == pytest.approx(positive + negative, abs=1e-12)
    loss.backward()
    assert torch.isfinite(logits.grad).all()

    # uint8 targets are divided by 255
    as_u8 = iam_loss(logits.detach(), torch.tensor([[[[255, 255], [0, 0]]]], dtype=torch.uint8))
    assert as_u8.item() == pytest.approx((math.log(2.0) + math.log(4 / 3)) / 2 + negative, abs=1e-12)
    # an empty set contributes 0; large logits stay finite
    only_positive = iam_loss(torch.tensor([[[[-100.0]]]]), torch.tensor([[[[1.0]]]]))
    assert only_positive.item() == pytest.approx(100.0, rel=1e-6)
    only_negative = iam_loss(torch.tensor([[[[100.0, 0.0]]]]), torch.zeros(1, 1, 1, 2))
    assert only_negative.item() == pytest.approx((100.0 + math.log(2.0)) / 2, rel=1e-6)


def test_nsrom_inference_maps_match_opencv_bicubic_then_minmax():
    rng = np.random.RandomState(0)
    raw = rng.randn(1, 4, 5, 7).astype(np.float32)
    out = nsrom_inference_maps(torch.from_numpy(raw), (13, 17), classes=[1, 3])
    assert out.shape == (1, 2, 13, 17)
    for k, cls in enumerate([1, 3]):
        att = np.maximum(raw[0, cls], 0)
        att = att / (att.max() + 1e-8)
        resized = cv2.resize(att, (17, 13), interpolation=cv2.INTER_CUBIC)
        expected = (resized - resized.min()) / (resized.max() - resized.min())
        assert np.allclose(out[0, k].numpy(), expected, atol=1e-5)
        assert out[0, k].min().item() == 0.0 and out[0, k].max().item() == pytest.approx(1.0)


def test_nsrom_inference_maps_quantized_match_the_official_uint8_round_trip():
    # official: uint8(att / (max + 1e-8) * 255) (truncation), cv2 INTER_CUBIC on uint8, min-max
    rng = np.random.RandomState(0)
    raw = rng.randn(1, 4, 5, 7).astype(np.float32)
    out = nsrom_inference_maps(torch.from_numpy(raw), (13, 17), classes=[1, 3], quantize=True)
    for k, cls in enumerate([1, 3]):
        att = np.maximum(raw[0, cls], 0)
        as_u8 = np.array(att / (att.max() + 1e-8) * 255, dtype=np.uint8)
        resized = cv2.resize(as_u8, (17, 13), interpolation=cv2.INTER_CUBIC).astype(np.float64)
        expected = (resized - resized.min()) / (resized.max() - resized.min())
        assert np.allclose(out[0, k].numpy(), expected, atol=1e-6)
    # the uint8 clipping of bicubic undershoot makes a visible difference to the float path
    floating = nsrom_inference_maps(torch.from_numpy(raw), (13, 17), classes=[1, 3])
    assert np.abs(out.numpy() - floating.numpy()).max() > 0.05


def test_minmax_normalisation_adds_the_official_epsilon():
    from wsss.methods.nsrom import minmax_normalize

    out = minmax_normalize(np.array([2.0, 2.5, 3.0]))
    np.testing.assert_array_equal(out, np.array([0.0, 0.5, 1.0]) / (1.0 + 1e-8))
    assert out.max() < 1.0
    assert not minmax_normalize(np.full(4, 7.0)).any()
