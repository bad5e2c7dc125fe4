"""Joint transforms on a sample dict, reproducible from a ``numpy.random.Generator``.

A sample holds some of:

- ``image``    ``(H, W, 3) uint8`` RGB,
- ``saliency`` ``(H, W) uint8`` 0..255 (soft map),
- ``mask``     ``(H, W) uint8`` class indices, 255 = ignore,

plus any other keys, which pass through untouched. Every transform is a small object called as
``transform(sample, rng) -> sample``; geometric ones move the three arrays together (the image with
the chosen interpolation, the saliency map bilinearly by default, the mask always with nearest
neighbour), so they stay pixel-aligned. The same ``rng`` state gives the same output.

:class:`Normalize` comes last: it turns the arrays into tensors (image ``(3, H, W) float32``
normalised, saliency ``(H, W) float32`` in [0, 1], mask ``(H, W) int64``).

Typical pipelines (METHODS.md):

- EPS classifier: ``RandomLongSideResize(256, 512)``, ``RandomHFlip()``, ``ColorJitter(0.3, 0.3, 0.3, 0.1)``,
  ``RandomCrop(448)`` (image padded with the mean colour, i.e. zero after normalisation; saliency
  with 0), ``Normalize()``.
- NSROM classifier: ``SquareResize(256)``, ``ColorJitter(...)``, ``Normalize()`` (no crop, no flip).
- DeepLab: ``RandomScale(0.5, 1.5)``, ``RandomCrop(321, pad_at="end")``, ``RandomHFlip()``, ``Normalize()``.
"""

from __future__ import annotations

from typing import Literal, Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from wsss.io import IGNORE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The ImageNet mean colour in 0..255, rounded: padding an image with it gives ~0 after Normalize().
IMAGENET_MEAN_COLOUR = tuple(int(round(255 * m)) for m in IMAGENET_MEAN)

_INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


def sample_size(sample: dict) -> tuple[int, int]:
    """``(H, W)`` of the arrays in a sample (image, else saliency, else mask)."""
    for key in ("image", "saliency", "mask"):
        if key in sample:
            return tuple(np.asarray(sample[key]).shape[:2])
    raise ValueError("the sample holds no image, saliency or mask")


def _check_interp(name: str) -> str:
    if name not in _INTERPOLATION:
        raise ValueError(f"interpolation {name!r}: use one of {sorted(_INTERPOLATION)}")
    return name


def _resize_array(arr: np.ndarray, size: tuple[int, int], interp: str) -> np.ndarray:
    h, w = size
    if arr.shape[:2] == (h, w):
        return arr
    return np.asarray(Image.fromarray(arr).resize((w, h), resample=_INTERPOLATION[interp]))


class Compose:
    """Apply transforms in order, all drawing from the same ``rng``."""

    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        for t in self.transforms:
            sample = t(sample, rng)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class Resize:
    """Resize to a fixed ``(h, w)``. Image with ``image_interp``, saliency with ``saliency_interp``,
    mask with nearest neighbour."""

    def __init__(self, size: tuple[int, int], image_interp: str = "bilinear", saliency_interp: str = "bilinear"):
        self.size = (int(size[0]), int(size[1]))
        if min(self.size) < 1:
            raise ValueError(f"resize target {size} must be positive")
        self.image_interp = _check_interp(image_interp)
        self.saliency_interp = _check_interp(saliency_interp)

    def resize(self, sample: dict, size: tuple[int, int]) -> dict:
        out = dict(sample)
        if "image" in out:
            out["image"] = _resize_array(out["image"], size, self.image_interp)
        if "saliency" in out:
            out["saliency"] = _resize_array(out["saliency"], size, self.saliency_interp)
        if "mask" in out:
            out["mask"] = _resize_array(out["mask"], size, "nearest")
        return out

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        return self.resize(sample, self.size)


class SquareResize(Resize):
    """Squash to ``size x size`` whatever the aspect ratio (NSROM's 256x256 classifier input)."""

    def __init__(self, size: int = 256, image_interp: str = "bilinear", saliency_interp: str = "bilinear"):
        super().__init__((size, size), image_interp, saliency_interp)


def _scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, int(round(size[0] * scale))), max(1, int(round(size[1] * scale)))


class RandomLongSideResize(Resize):
    """Resize so the long side is a random integer in ``[min_long, max_long]`` (both included),
    keeping the aspect ratio (EPS: 256..512, bicubic)."""

    def __init__(self, min_long: int, max_long: int, image_interp: str = "bicubic", saliency_interp: str = "bilinear"):
        if not 1 <= min_long <= max_long:
            raise ValueError(f"long-side range [{min_long}, {max_long}] must satisfy 1 <= min <= max")
        super().__init__((1, 1), image_interp, saliency_interp)
        self.min_long, self.max_long = int(min_long), int(max_long)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        target = int(rng.integers(self.min_long, self.max_long + 1))
        h, w = sample_size(sample)
        return self.resize(sample, _scaled((h, w), target / max(h, w)))


class RandomScale(Resize):
    """Rescale both sides by a factor drawn uniformly from ``[min_scale, max_scale]`` (DeepLab: 0.5..1.5)."""

    def __init__(self, min_scale: float, max_scale: float, image_interp: str = "bilinear",
                 saliency_interp: str = "bilinear"):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"scale range [{min_scale}, {max_scale}] must satisfy 0 < min <= max")
        super().__init__((1, 1), image_interp, saliency_interp)
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        scale = float(rng.uniform(self.min_scale, self.max_scale))
        return self.resize(sample, _scaled(sample_size(sample), scale))


class RandomHFlip:
    """Mirror left-right with probability ``p``; ``sample["flipped"]`` records whether it did (XOR
    with an earlier flip)."""

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        flip = bool(rng.random() < self.p)
        out = dict(sample)
        if flip:
            for key in ("image", "saliency", "mask"):
                if key in out:
                    out[key] = np.ascontiguousarray(out[key][:, ::-1])
        out["flipped"] = bool(sample.get("flipped", False)) ^ flip
        return out


class RandomCrop:
    """Crop a ``size`` window at a random position; where the input is smaller, pad.

    Padding: the image with ``image_fill`` (an RGB colour, by default the ImageNet mean, which is 0
    after :class:`Normalize`), the saliency map with ``saliency_fill`` (0 = not salient), the mask with
    ``mask_fill`` (255 = ignore). ``pad_at = "random"`` places a smaller input at a random offset in
    the window (PSA / EPS); ``"end"`` pads at the bottom and right only (DeepLab).

    Recorded: ``sample["crop_box"]`` = (y0, x0, y1, x1) of the input region that was kept, and
    ``sample["content_box"]`` = (y0, x0, y1, x1) where it lies in the output; both ``(4,) int64``.
    """

    def __init__(self, size: int | tuple[int, int], image_fill: Sequence[float] = IMAGENET_MEAN_COLOUR,
                 saliency_fill: int = 0, mask_fill: int = IGNORE, pad_at: Literal["random", "end"] = "random"):
        self.size = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
        if min(self.size) < 1:
            raise ValueError(f"crop size {size} must be positive")
        fill = np.asarray(image_fill, dtype=np.float64).reshape(-1)
        if fill.size not in (1, 3) or fill.min() < 0 or fill.max() > 255:
            raise ValueError(f"image_fill {image_fill!r} must be one value or an RGB triple in 0..255")
        self.image_fill = np.broadcast_to(np.round(fill), (3,)).astype(np.uint8)
        self.saliency_fill = int(saliency_fill)
        self.mask_fill = int(mask_fill)
        if pad_at not in ("random", "end"):
            raise ValueError(f"pad_at {pad_at!r}: use random or end")
        self.pad_at = pad_at

    def _offsets(self, have: int, want: int, rng: np.random.Generator) -> tuple[int, int, int]:
        """(source start, destination start, length) along one axis."""
        if have >= want:
            return int(rng.integers(0, have - want + 1)), 0, want
        dst = int(rng.integers(0, want - have + 1)) if self.pad_at == "random" else 0
        return 0, dst, have

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        h, w = sample_size(sample)
        ch, cw = self.size
        sy, dy, nh = self._offsets(h, ch, rng)
        sx, dx, nw = self._offsets(w, cw, rng)
        out = dict(sample)
        fills = {"image": self.image_fill, "saliency": self.saliency_fill, "mask": self.mask_fill}
        for key, fill in fills.items():
            if key not in out:
                continue
            arr = out[key]
            canvas = np.empty((ch, cw) + arr.shape[2:], dtype=arr.dtype)
            canvas[...] = fill
            canvas[dy:dy + nh, dx:dx + nw] = arr[sy:sy + nh, sx:sx + nw]
            out[key] = canvas
        out["crop_box"] = np.array([sy, sx, sy + nh, sx + nw], dtype=np.int64)
        out["content_box"] = np.array([dy, dx, dy + nh, dx + nw], dtype=np.int64)
        return out


def _gray(img: np.ndarray) -> np.ndarray:
    """``(H, W, 3) float32`` RGB -> ``(H, W, 1)`` luma (ITU-R 601, as torchvision)."""
    return (img @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]


class ColorJitter:
    """Random brightness, contrast, saturation and hue, applied in a random order, to the image only.

    Factors are drawn uniformly from ``[max(0, 1 - b), 1 + b]`` (same for contrast and saturation);
    the hue shift from ``[-hue, hue]`` of a full turn (``hue <= 0.5``). As torchvision's ColorJitter:
    brightness scales, contrast blends with the mean grey level, saturation blends with the grey
    image, hue rotates the HSV hue; values are clipped to 0..255 after each step and rounded at the end.
    """

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0):
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    @staticmethod
    def _factor(rng: np.random.Generator, amount: float) -> float:
        return float(rng.uniform(max(0.0, 1.0 - amount), 1.0 + amount))

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        if "image" not in sample:
            return sample
        img = np.asarray(sample["image"], dtype=np.float32)
        for op in rng.permutation(4):
            if op == 0 and self.brightness > 0:
                img = np.clip(img * self._factor(rng, self.brightness), 0, 255)
            elif op == 1 and self.contrast > 0:
                f = self._factor(rng, self.contrast)
                img = np.clip(f * img + (1 - f) * float(_gray(img).mean()), 0, 255)
            elif op == 2 and self.saturation > 0:
                f = self._factor(rng, self.saturation)
                img = np.clip(f * img + (1 - f) * _gray(img), 0, 255)
            elif op == 3 and self.hue > 0:
                shift = float(rng.uniform(-self.hue, self.hue)) * 360.0
                hsv = cv2.cvtColor(img / 255.0, cv2.COLOR_RGB2HSV)
                hsv[..., 0] = np.mod(hsv[..., 0] + shift, 360.0)
                img = np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0, 0, 255)
        out = dict(sample)
        out["image"] = np.round(img).astype(np.uint8)
        return out


class Normalize:
    """Turn a sample into tensors: image ``(3, H, W) float32`` = (pixel / 255 - mean) / std, saliency
    ``(H, W) float32`` = value / 255 in [0, 1], mask ``(H, W) int64``. ``mean``/``std`` are per RGB
    channel on the 0..1 scale (default ImageNet; EfficientNet-Lite's (x - 127) / 128 is
    ``mean=(127/255,)*3, std=(128/255,)*3``)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, 1, -1)
        self.std = np.asarray(std, dtype=np.float32).reshape(1, 1, -1)
        if np.any(self.std <= 0):
            raise ValueError(f"std {std} must be positive")

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        out = dict(sample)
        if "image" in out:
            img = (np.asarray(out["image"], dtype=np.float32) / 255.0 - self.mean) / self.std
            out["image"] = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        if "saliency" in out:
            out["saliency"] = torch.from_numpy(np.asarray(out["saliency"], dtype=np.float32) / 255.0)
        if "mask" in out:
            out["mask"] = torch.from_numpy(np.asarray(out["mask"], dtype=np.int64))
        return out
