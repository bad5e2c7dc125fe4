"""Joint transforms: image, saliency and mask stay aligned; fills, values and reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss.data.transforms import (
    IMAGENET_MEAN_COLOUR,
    ColorJitter,
    Compose,
    Normalize,
    RandomCrop,
    RandomHFlip,
    RandomLongSideResize,
    RandomScale,
    Resize,
    SquareResize,
)

H, W = 30, 50


def coordinate_sample(h: int = H, w: int = W) -> dict:
    """Image with R = x, G = y, B = 7; saliency and mask are functions of (x, y) too."""
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([x, y, np.full_like(x, 7)], axis=-1).astype(np.uint8)
    return {"id": "coords", "image": image, "saliency": ((x + 2 * y) % 256).astype(np.uint8),
            "mask": ((x + y) % 21).astype(np.uint8)}


def assert_aligned(s: dict, region=(slice(None), slice(None))) -> None:
    """Inside ``region``, saliency and mask are exactly what the image's (x, y) says they should be."""
    r = s["image"][..., 0][region].astype(int)
    g = s["image"][..., 1][region].astype(int)
    np.testing.assert_array_equal(s["image"][..., 2][region], 7)
    np.testing.assert_array_equal(s["saliency"][region], (r + 2 * g) % 256)
    np.testing.assert_array_equal(s["mask"][region], (r + g) % 21)


def assert_nearest_geometry(s: dict, src_hw: tuple[int, int]) -> None:
    """Each output pixel came from the nearest source pixel of a plain rescale."""
    h, w = s["image"].shape[:2]
    y, x = np.mgrid[0:h, 0:w]
    assert np.abs(s["image"][..., 0] - ((x + 0.5) * src_hw[1] / w - 0.5)).max() <= 1.0
    assert np.abs(s["image"][..., 1] - ((y + 0.5) * src_hw[0] / h - 0.5)).max() <= 1.0


def test_hflip_mirrors_everything():
    s = RandomHFlip(p=1.0)(coordinate_sample(), np.random.default_rng(0))
    assert s["flipped"] is True and s["id"] == "coords"
    x = np.arange(W)
    np.testing.assert_array_equal(s["image"][5, :, 0], W - 1 - x)
    np.testing.assert_array_equal(s["image"][:, 3, 1], np.arange(H))
    assert_aligned(s)
    s2 = RandomHFlip(p=1.0)(s, np.random.default_rng(0))
    assert s2["flipped"] is False
    np.testing.assert_array_equal(s2["mask"], coordinate_sample()["mask"])
    same = RandomHFlip(p=0.0)(coordinate_sample(), np.random.default_rng(0))
    assert same["flipped"] is False
    np.testing.assert_array_equal(same["image"], coordinate_sample()["image"])


@pytest.mark.parametrize("transform", [
    RandomScale(0.5, 1.7, image_interp="nearest", saliency_interp="nearest"),
    RandomLongSideResize(20, 80, image_interp="nearest", saliency_interp="nearest"),
    SquareResize(32, image_interp="nearest", saliency_interp="nearest"),
    Resize((17, 41), image_interp="nearest", saliency_interp="nearest"),
], ids=["scale", "long-side", "square", "fixed"])
def test_resizes_keep_alignment(transform):
    for seed in range(5):
        s = transform(coordinate_sample(), np.random.default_rng(seed))
        h, w = s["image"].shape[:2]
        assert s["saliency"].shape == s["mask"].shape == (h, w)
        assert_aligned(s)
        assert_nearest_geometry(s, (H, W))
        if isinstance(transform, RandomLongSideResize):
            assert 20 <= w <= 80 and h == round(w * H / W)
        if isinstance(transform, RandomScale):
            assert 0.5 * W - 1 <= w <= 1.7 * W + 1 and abs(h / H - w / W) < 0.05


def test_square_and_fixed_sizes():
    assert SquareResize(32)(coordinate_sample(), np.random.default_rng(0))["image"].shape == (32, 32, 3)
    s = Resize((17, 41))(coordinate_sample(), np.random.default_rng(0))
    assert s["image"].shape == (17, 41, 3) and s["mask"].shape == (17, 41)


def test_long_side_range_is_inclusive():
    t = RandomLongSideResize(24, 26)
    longs = {max(t(coordinate_sample(), np.random.default_rng(i))["image"].shape[:2]) for i in range(40)}
    assert longs == {24, 25, 26}


def test_smooth_interpolation_never_invents_mask_values():
    """Bicubic image / bilinear saliency, but the mask is still sampled like a nearest-resized image."""
    smooth = RandomScale(0.6, 1.6)(coordinate_sample(), np.random.default_rng(4))
    nearest = RandomScale(0.6, 1.6, "nearest", "nearest")(coordinate_sample(), np.random.default_rng(4))
    np.testing.assert_array_equal(smooth["mask"], nearest["mask"])
    assert_aligned(nearest)
    assert not np.array_equal(smooth["saliency"], nearest["saliency"])  # bilinear really used
    np.testing.assert_array_equal(smooth["image"][..., 2], 7)  # a constant stays constant


@pytest.mark.parametrize("pad_at", ["random", "end"])
def test_crop_larger_than_input_pads_with_fills(pad_at):
    fill = (124, 116, 104)
    crop = RandomCrop((40, 70), image_fill=fill, pad_at=pad_at)
    for seed in range(6):
        s = crop(coordinate_sample(), np.random.default_rng(seed))
        assert s["image"].shape == (40, 70, 3)
        y0, x0, y1, x1 = s["content_box"].tolist()
        assert (y1 - y0, x1 - x0) == (H, W) and s["crop_box"].tolist() == [0, 0, H, W]
        if pad_at == "end":
            assert (y0, x0) == (0, 0)
        inside = np.zeros((40, 70), bool)
        inside[y0:y1, x0:x1] = True
        np.testing.assert_array_equal(s["image"][inside].reshape(H, W, 3), coordinate_sample()["image"])
        assert_aligned(s, (slice(y0, y1), slice(x0, x1)))
        assert (s["image"][~inside] == fill).all()
        assert (s["saliency"][~inside] == 0).all()
        assert (s["mask"][~inside] == 255).all()


def test_crop_smaller_than_input_and_mixed():
    for seed in range(6):
        s = RandomCrop(20)(coordinate_sample(), np.random.default_rng(seed))
        y0, x0, y1, x1 = s["crop_box"].tolist()
        assert s["content_box"].tolist() == [0, 0, 20, 20] and (y1 - y0, x1 - x0) == (20, 20)
        assert s["image"][0, 0, 0] == x0 and s["image"][0, 0, 1] == y0
        assert_aligned(s)
    # taller than the input, narrower than it: pad rows, crop columns
    s = RandomCrop((36, 10))(coordinate_sample(), np.random.default_rng(1))
    y0, x0, y1, x1 = s["content_box"].tolist()
    assert (x0, x1) == (0, 10) and y1 - y0 == H
    assert (s["mask"][:y0] == 255).all() and (s["mask"][y1:] == 255).all()
    assert tuple(s["image"][0, 0]) == IMAGENET_MEAN_COLOUR == (124, 116, 104)


def test_pipeline_keeps_alignment_and_is_reproducible():
    tf = Compose([RandomLongSideResize(40, 90, "nearest", "nearest"), RandomHFlip(),
                  RandomScale(0.7, 1.3, "nearest", "nearest"), RandomCrop(48)])
    flips = set()
    for seed in range(10):
        s = tf(coordinate_sample(), np.random.default_rng(seed))
        y0, x0, y1, x1 = s["content_box"].tolist()
        assert_aligned(s, (slice(y0, y1), slice(x0, x1)))
        outside = np.ones((48, 48), bool)
        outside[y0:y1, x0:x1] = False
        assert (s["mask"][outside] == 255).all() and (s["saliency"][outside] == 0).all()
        row = s["image"][y0, x0:x1, 0].astype(int)
        assert (np.diff(row) <= 0).all() if s["flipped"] else (np.diff(row) >= 0).all()
        flips.add(s["flipped"])
    assert flips == {True, False}


def test_same_seed_same_output_different_seed_differs():
    tf = Compose([RandomLongSideResize(40, 90), RandomHFlip(), ColorJitter(0.3, 0.3, 0.3, 0.1),
                  RandomCrop(48), Normalize()])
    a = tf(coordinate_sample(), np.random.default_rng(123))
    b = tf(coordinate_sample(), np.random.default_rng(123))
    c = tf(coordinate_sample(), np.random.default_rng(124))
    for key in ("image", "saliency", "mask"):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["image"], c["image"])


class FixedRng:
    """Stands in for a Generator: identity permutation, scripted uniform draws."""

    def __init__(self, *uniforms):
        self.uniforms = list(uniforms)

    def permutation(self, n):
        return np.arange(n)

    def uniform(self, low, high):
        value = self.uniforms.pop(0)
        assert low <= value <= high
        return value


def test_color_jitter_hand_values():
    img = np.zeros((2, 2, 3), np.uint8)
    img[0] = 100
    img[1] = 200
    s = {"image": img, "saliency": np.full((2, 2), 9, np.uint8), "mask": np.full((2, 2), 3, np.uint8)}
    out = ColorJitter(brightness=0.5)(s, FixedRng(1.5))
    assert out["image"][0, 0].tolist() == [150] * 3 and out["image"][1, 0].tolist() == [255] * 3  # clipped
    assert out["saliency"] is s["saliency"] and out["mask"] is s["mask"]
    out = ColorJitter(contrast=0.5)(s, FixedRng(0.5))  # blend with the mean grey 150
    assert out["image"][0, 0].tolist() == [125] * 3 and out["image"][1, 0].tolist() == [175] * 3
    red = {"image": np.array([[[255, 0, 0]]], np.uint8)}
    out = ColorJitter(saturation=1.0)(red, FixedRng(0.0))  # fully desaturated: luma 0.299 * 255
    assert out["image"][0, 0].tolist() == [76, 76, 76]
    out = ColorJitter(hue=0.5)(red, FixedRng(1 / 3))  # +120 degrees: red -> green
    assert out["image"][0, 0].tolist() == [0, 255, 0]
    out = ColorJitter(hue=0.5)(red, FixedRng(1 / 6))  # +60 degrees: red -> yellow
    assert out["image"][0, 0].tolist() == [255, 255, 0]
    grey = {"image": np.full((3, 3, 3), 77, np.uint8)}
    out = ColorJitter(saturation=0.3, hue=0.1)(grey, FixedRng(1.2, 0.05))  # grey has no hue/saturation
    assert (out["image"] == 77).all()


def test_color_jitter_random_changes_image_only():
    s = coordinate_sample()
    out = ColorJitter(0.3, 0.3, 0.3, 0.1)(s, np.random.default_rng(0))
    assert out["image"].dtype == np.uint8 and not np.array_equal(out["image"], s["image"])
    np.testing.assert_array_equal(out["saliency"], s["saliency"])
    np.testing.assert_array_equal(out["mask"], s["mask"])


def test_normalize_to_tensors():
    img = np.zeros((2, 3, 3), np.uint8)
    img[..., 0] = 255
    s = {"image": img, "saliency": np.array([[0, 255, 51], [0, 0, 0]], np.uint8),
         "mask": np.array([[0, 255, 3], [1, 2, 20]], np.uint8), "id": "x"}
    out = Normalize()(s, np.random.default_rng(0))
    assert out["image"].shape == (3, 2, 3) and out["image"].dtype == torch.float32
    assert torch.allclose(out["image"][0], torch.tensor((1 - 0.485) / 0.229))
    assert torch.allclose(out["image"][1], torch.tensor(-0.456 / 0.224))
    assert out["saliency"].dtype == torch.float32
    assert torch.allclose(out["saliency"][0], torch.tensor([0.0, 1.0, 0.2]))
    assert out["mask"].dtype == torch.int64 and out["mask"].tolist() == [[0, 255, 3], [1, 2, 20]]
    lite = Normalize(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)(s)
    assert torch.allclose(lite["image"][0], torch.tensor(1.0))
    assert torch.allclose(lite["image"][2], torch.tensor(-127 / 128))
    # padding with the ImageNet mean colour is ~0 after normalisation
    mean_px = {"image": np.full((1, 1, 3), IMAGENET_MEAN_COLOUR, np.uint8)}
    assert Normalize()(mean_px)["image"].abs().max() < 0.01


def test_bad_arguments():
    with pytest.raises(ValueError):
        RandomLongSideResize(300, 200)
    with pytest.raises(ValueError):
        RandomScale(0, 1)
    with pytest.raises(ValueError):
        RandomCrop(10, image_fill=(1, 2))
    with pytest.raises(ValueError):
        Resize((10, 10), image_interp="lanczos9")
    with pytest.raises(ValueError):
        ColorJitter(hue=0.7)
