"""Synthetic scenes in the VOC layout: the embedded dataset of the demo and the end-to-end tests.

Each image is a noisy textured backdrop with one to three salient objects of a small custom label
set (``train``, ``boat``, ``ball``, ``box``, ``plant``), built to make the claims of EPS and NSROM
visible:

- **co-occurring context**: a ``train`` always stands on a textured ``rails`` strip and a ``boat``
  always floats on a ``water`` strip. A strip appears only together with its class, is background
  (0) in the ground truth, is labelled in ``SegmentationContext/`` and is *not* salient — a plain
  CAM learns it as evidence for the class;
- **non-salient objects**: now and then a small object near the border that the saliency map misses
  (``"salient": false`` in ``synth_meta.json``), so the image label names a class the saliency does
  not show;
- **several classes** per image;
- **imperfect saliency**: the salient-object masks, shifted by a few pixels, dilated or eroded,
  blurred, with noise; grey ``clutter`` objects (background in the ground truth) that the saliency
  map sometimes lights up, and now and then a stray blob.

Written under ``out_root``::

    JPEGImages/<id>.png                      RGB image (PNG: no compression artefacts)
    SegmentationClass/<id>.png               palette PNG: 0 background, 1..5 classes
    SegmentationObject/<id>.png              instance index of every object pixel (1..N, meta order)
    SegmentationContext/<id>.png             context class of every pixel (context.json)
    Saliency/<id>.png                        grayscale uint8 saliency map
    ImageSets/Segmentation/{train,val}.txt   one id per line
    cls_labels.json                          {id: sorted classes 1..5 with a pixel in the mask}
    classes.yaml, context.json               class names (background first); {index: context name}
    synth_meta.json                          per image: strip, objects (class, bbox, salient, ...)
    dataset.yaml                             a config with the ``data:`` section for this folder

Every image has its own generator seeded from ``(seed, split, index)``: the same seed gives
byte-identical files, and the first N images do not depend on how many are generated.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import yaml

from wsss.data.classes import voc_palette
from wsss.errors import DataError
from wsss.io import write_gray, write_image, write_label, write_text_atomic

CLASS_NAMES = ("background", "train", "boat", "ball", "box", "plant")
CONTEXT_OF_CLASS = {"train": "rails", "boat": "water"}
STUFF_NAMES = ("void", "backdrop", "rails", "water", "clutter")
CONTEXT_NAMES = STUFF_NAMES + CLASS_NAMES[1:]   # object pixels carry their class name, as in MSRC
SPLIT_CODES = {"train": 0, "val": 1}
META_FILE = "synth_meta.json"
DATASET_FILE = "dataset.yaml"
MIN_SIZE, MAX_SIZE = 64, 1024

Box = tuple[int, int, int, int]   # x0, y0, x1, y1 (exclusive)


@dataclass(frozen=True)
class SceneOptions:
    """Knobs of the scene generator (probabilities per image unless said otherwise)."""

    class_count_probs: tuple[float, ...] = (0.45, 0.4, 0.15)  # P(1, 2, 3 salient objects)
    nonsalient_prob: float = 0.35        # one extra small object near the border, missed by saliency
    nonsalient_scale: tuple[float, float] = (0.4, 0.55)   # its size relative to a salient one
    clutter_max: int = 2                 # 0..clutter_max grey clutter objects (background)
    clutter_salient_prob: float = 0.3    # per clutter object: lit up by the saliency map
    blob_prob: float = 0.1               # a stray blob in the saliency map only
    # Pixel sizes below are for a 160 px short side and scale with the image.
    saliency_shift: float = 2.0          # max shift (px) of the saliency mask
    saliency_morph: float = 2.0          # max dilation/erosion radius (px)
    saliency_blur: tuple[float, float] = (1.0, 2.5)   # Gaussian sigma range (px)
    saliency_noise: float = 4.0          # std of additive noise (0..255 scale)
    gap: float = 12.0                    # min distance (px) between a non-salient object and others


# ---------------------------------------------------------------------------------------------
# Object drawers: each draws part ids 1..n into ``parts`` inside the box and returns n colours.
# ---------------------------------------------------------------------------------------------

def _jitter(rng: np.random.Generator, colour, amount: float = 18.0) -> np.ndarray:
    return np.clip(np.asarray(colour, dtype=np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def _pick(rng: np.random.Generator, colours) -> tuple:
    return colours[int(rng.integers(len(colours)))]


def _pts(points) -> np.ndarray:
    return np.round(np.asarray(points, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)


def _draw_train(rng, parts, x0, y0, w, h):
    body = _jitter(rng, _pick(rng, [(200, 40, 40), (40, 70, 200), (150, 50, 170), (230, 130, 20)]))
    cv2.rectangle(parts, (x0, y0 + int(0.12 * h)), (x0 + w - 1, y0 + int(0.82 * h)), 1, -1)
    cv2.rectangle(parts, (x0 + int(0.03 * w), y0), (x0 + w - 1 - int(0.03 * w), y0 + int(0.16 * h)), 2, -1)
    win = max(2, int(0.26 * h))
    n_win = max(2, int(w / (1.8 * win)))
    step = w / n_win
    for i in range(n_win):
        wx = int(x0 + i * step + (step - win) / 2)
        cv2.rectangle(parts, (wx, y0 + int(0.26 * h)), (wx + win - 1, y0 + int(0.26 * h) + win - 1), 3, -1)
    radius = max(2, int(0.11 * h))
    n_wheels = max(2, int(w / (3.5 * radius)))
    for i in range(n_wheels):
        cx = int(x0 + radius + i * (w - 2 * radius - 1) / max(1, n_wheels - 1))
        cv2.circle(parts, (cx, y0 + h - 1 - radius), radius, 4, -1)
    return [body, body * 0.6, _jitter(rng, (225, 235, 250), 10), _jitter(rng, (30, 30, 30), 8)]


def _draw_boat(rng, parts, x0, y0, w, h):
    hull = _jitter(rng, _pick(rng, [(120, 70, 30), (150, 30, 35), (30, 40, 90)]))
    cv2.fillPoly(parts, [_pts([(x0, y0 + 0.62 * h), (x0 + w - 1, y0 + 0.62 * h),
                               (x0 + 0.8 * w, y0 + h - 1), (x0 + 0.2 * w, y0 + h - 1)])], 1)
    cv2.line(parts, (x0 + w // 2, y0 + int(0.62 * h)), (x0 + w // 2, y0), 2, max(1, w // 25))
    cv2.fillPoly(parts, [_pts([(x0 + 0.54 * w, y0 + 0.04 * h), (x0 + 0.54 * w, y0 + 0.56 * h),
                               (x0 + 0.96 * w, y0 + 0.56 * h)])], 3)
    cv2.fillPoly(parts, [_pts([(x0 + 0.46 * w, y0 + 0.14 * h), (x0 + 0.46 * w, y0 + 0.56 * h),
                               (x0 + 0.1 * w, y0 + 0.56 * h)])], 3)
    return [hull, _jitter(rng, (70, 45, 25), 10), _jitter(rng, (242, 236, 215), 10)]


def _draw_ball(rng, parts, x0, y0, w, h):
    colour = _jitter(rng, _pick(rng, [(240, 120, 20), (230, 200, 30), (230, 80, 150), (40, 200, 210)]))
    r = (min(w, h) - 1) / 2.0
    cy, cx = y0 + r, x0 + r
    yy, xx = np.mgrid[y0:y0 + h, x0:x0 + w].astype(np.float32)
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    angle = rng.uniform(0, np.pi)
    stripe = np.abs((yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)) < max(1.0, 0.14 * r)
    highlight = (yy - (cy - 0.4 * r)) ** 2 + (xx - (cx - 0.4 * r)) ** 2 <= (0.22 * r) ** 2
    region = parts[y0:y0 + h, x0:x0 + w]
    region[inside] = 1
    region[inside & stripe] = 2
    region[inside & highlight] = 3
    return [colour, _jitter(rng, (245, 245, 245), 8), np.minimum(colour + 70, 255)]


def _draw_box(rng, parts, x0, y0, w, h):
    face = _jitter(rng, _pick(rng, [(190, 140, 80), (160, 110, 60), (205, 170, 110)]))
    d = max(2, int(0.2 * min(w, h)))
    x1, y1 = x0 + w - 1, y0 + h - 1
    cv2.rectangle(parts, (x0, y0 + d), (x1 - d, y1), 1, -1)
    cv2.fillPoly(parts, [_pts([(x0, y0 + d), (x0 + d, y0), (x1, y0), (x1 - d, y0 + d)])], 2)
    cv2.fillPoly(parts, [_pts([(x1 - d, y0 + d), (x1, y0), (x1, y1 - d), (x1 - d, y1)])], 3)
    tape = max(1, int(0.07 * w))
    mid = x0 + (w - d) // 2
    cv2.rectangle(parts, (mid - tape, y0 + d), (mid + tape, y1), 4, -1)
    return [face, np.minimum(face * 1.25, 255), face * 0.65, _jitter(rng, (225, 210, 160), 8)]


def _draw_plant(rng, parts, x0, y0, w, h):
    cv2.fillPoly(parts, [_pts([(x0 + 0.2 * w, y0 + 0.62 * h), (x0 + 0.8 * w, y0 + 0.62 * h),
                               (x0 + 0.7 * w, y0 + h - 1), (x0 + 0.3 * w, y0 + h - 1)])], 1)
    leaves = np.zeros_like(parts)
    for _ in range(int(rng.integers(5, 8))):
        centre = (int(x0 + w * rng.uniform(0.25, 0.75)), int(y0 + h * rng.uniform(0.15, 0.45)))
        axes = (max(2, int(w * rng.uniform(0.18, 0.28))), max(1, int(h * rng.uniform(0.07, 0.11))))
        cv2.ellipse(leaves, centre, axes, float(rng.uniform(0, 180)), 0, 360, int(rng.integers(2, 4)), -1)
    window = np.zeros_like(parts)
    window[y0:y0 + int(0.66 * h), x0:x0 + w] = 1
    keep = (leaves > 0) & (window > 0)
    parts[keep] = leaves[keep]
    return [_jitter(rng, (180, 80, 40), 12), _jitter(rng, (40, 150, 50), 15), _jitter(rng, (80, 195, 60), 15)]


@dataclass(frozen=True)
class ClassSpec:
    """How a class is drawn: its drawer and its box size relative to the image's short side."""

    draw: Callable
    width: tuple[float, float]       # box width / short side
    aspect: tuple[float, float]      # box height / box width


CLASS_SPECS = {
    "train": ClassSpec(_draw_train, (0.45, 0.65), (0.32, 0.42)),
    "boat": ClassSpec(_draw_boat, (0.3, 0.42), (0.9, 1.15)),
    "ball": ClassSpec(_draw_ball, (0.2, 0.32), (1.0, 1.0)),
    "box": ClassSpec(_draw_box, (0.2, 0.32), (0.85, 1.2)),
    "plant": ClassSpec(_draw_plant, (0.2, 0.3), (1.3, 1.7)),
}


# ---------------------------------------------------------------------------------------------
# Backdrop, strips, clutter
# ---------------------------------------------------------------------------------------------

def _backdrop(rng, height, width) -> np.ndarray:
    """Muted colour (optionally split at a horizon) + low-frequency colour noise: ``(H, W, 3) float32``."""
    img = np.empty((height, width, 3), dtype=np.float32)
    img[:] = rng.uniform(60, 190, 3)
    if rng.random() < 0.5:
        img[int(height * rng.uniform(0.3, 0.7)):] = rng.uniform(60, 190, 3)
    low = rng.normal(0, 22, (5, 5, 3)).astype(np.float32)
    img += cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
    return img


def _rails(rng, strip_h, width) -> np.ndarray:
    """Grey ballast, brown sleepers, two steel rails: ``(strip_h, W, 3) float32``."""
    tex = 118 + rng.normal(0, 18, (strip_h, width, 1)).astype(np.float32) + np.float32([6, 0, -6])
    period = int(rng.integers(9, 13))
    xs = (np.arange(width) + int(rng.integers(period))) % period < max(3, period // 3)
    rows = slice(int(0.12 * strip_h), int(0.92 * strip_h))
    tex[rows, xs] = np.float32([95, 65, 40]) + rng.normal(0, 8, (rows.stop - rows.start, int(xs.sum()), 1))
    thick = max(2, strip_h // 10)
    for frac in (0.3, 0.7):
        y = int(frac * strip_h)
        tex[y:y + thick] = np.float32([205, 205, 215])
    return tex


def _water(rng, strip_h, width) -> np.ndarray:
    """Blue water with wavy bright crests: ``(strip_h, W, 3) float32``."""
    yy, xx = np.mgrid[0:strip_h, 0:width].astype(np.float32)
    wavelength, bend = rng.uniform(10, 16), rng.uniform(5, 9)
    wave = np.sin(2 * np.pi * xx / wavelength + 1.5 * np.sin(2 * np.pi * yy / bend) + rng.uniform(0, 2 * np.pi))
    tex = _jitter(rng, (35, 85, 165), 12)[None, None, :] + wave[..., None] * np.float32([10, 25, 35])
    tex = tex + (wave > 0.85)[..., None] * np.float32([90, 80, 50])
    return tex + rng.normal(0, 6, (strip_h, width, 1)).astype(np.float32)


STRIP_TEXTURES = {"rails": _rails, "water": _water}


def _draw_clutter(rng, parts, x0, y0, w, h):
    """A grey irregular polygon (not a class: background in the ground truth)."""
    n = int(rng.integers(5, 8))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.6, 1.0, n)
    cx, cy = x0 + (w - 1) / 2, y0 + (h - 1) / 2
    pts = np.stack([cx + radii * np.cos(angles) * (w - 1) / 2, cy + radii * np.sin(angles) * (h - 1) / 2], 1)
    cv2.fillPoly(parts, [_pts(pts)], 1)
    grey = rng.uniform(90, 200)
    return [np.clip(grey + rng.uniform(-12, 12, 3), 0, 255).astype(np.float32)]


# ---------------------------------------------------------------------------------------------
# Placement
# ---------------------------------------------------------------------------------------------

def _overlap(a: Box, b: Box, gap: int = 0) -> int:
    """Intersection area of ``a`` grown by ``gap`` with ``b``."""
    ix = min(a[2] + gap, b[2]) - max(a[0] - gap, b[0])
    iy = min(a[3] + gap, b[3]) - max(a[1] - gap, b[1])
    return max(0, ix) * max(0, iy)


def _area(b: Box) -> int:
    return (b[2] - b[0]) * (b[3] - b[1])


def _object_size(rng, spec: ClassSpec, short: int, width: int, scale: float = 1.0) -> tuple[int, int]:
    w = int(round(short * rng.uniform(*spec.width) * scale))
    w = max(8, min(w, width - 4))
    h = max(8, int(round(w * rng.uniform(*spec.aspect))))
    return w, h


def _fit(w: int, h: int, max_h: int) -> tuple[int, int]:
    """Shrink ``(w, h)`` proportionally so that ``h <= max_h``."""
    if h <= max_h:
        return w, h
    f = max_h / h
    return max(8, int(w * f)), max(8, max_h)


# ---------------------------------------------------------------------------------------------
# One scene
# ---------------------------------------------------------------------------------------------

@dataclass
class Scene:
    """One generated image with its ground truth and metadata."""

    image: np.ndarray       # (H, W, 3) uint8
    label: np.ndarray       # (H, W) uint8, 0..C
    instances: np.ndarray   # (H, W) uint8, 0 or object index (1-based, meta order)
    context: np.ndarray     # (H, W) uint8, index into CONTEXT_NAMES
    saliency: np.ndarray    # (H, W) uint8
    meta: dict


def _choose_classes(rng, opts: SceneOptions) -> list[str]:
    probs = np.asarray(opts.class_count_probs, dtype=np.float64)
    names = list(CLASS_NAMES[1:])
    most = len(names) - len(CONTEXT_OF_CLASS) + 1   # at most one context class per scene
    k = min(int(rng.choice(len(probs), p=probs / probs.sum())) + 1, most)
    while True:
        chosen = [names[i] for i in rng.permutation(len(names))[:k]]
        if sum(c in CONTEXT_OF_CLASS for c in chosen) <= 1:
            return chosen


def make_scene(rng: np.random.Generator, height: int, width: int, opts: SceneOptions = SceneOptions()) -> Scene:
    """Draw one scene; all randomness comes from ``rng``."""
    short = min(height, width)
    image = _backdrop(rng, height, width)
    label = np.zeros((height, width), np.uint8)
    instances = np.zeros((height, width), np.uint8)
    context = np.full((height, width), CONTEXT_NAMES.index("backdrop"), np.uint8)
    salient_extra = np.zeros((height, width), bool)   # salient clutter pixels
    classes = _choose_classes(rng, opts)
    # Context classes first: their strip, then the object standing on it.
    classes.sort(key=lambda c: c not in CONTEXT_OF_CLASS)

    strip = None
    if classes[0] in CONTEXT_OF_CLASS:
        ctx_name = CONTEXT_OF_CLASS[classes[0]]
        strip_h = max(8, int(height * rng.uniform(0.15, 0.22)))
        ys = int(rng.integers(int(0.55 * height), height - strip_h - 1))
        image[ys:ys + strip_h] = STRIP_TEXTURES[ctx_name](rng, strip_h, width)
        context[ys:ys + strip_h] = CONTEXT_NAMES.index(ctx_name)
        strip = {"context": ctx_name, "class": classes[0], "y0": ys, "y1": ys + strip_h}

    placed: list[dict] = []   # objects: class, box, salient, context
    for cls in classes:
        spec = CLASS_SPECS[cls]
        w, h = _object_size(rng, spec, short, width)
        if cls in CONTEXT_OF_CLASS:
            depth = 0.45 if cls == "train" else rng.uniform(0.35, 0.65)
            bottom = strip["y0"] + int(depth * (strip["y1"] - strip["y0"]))
            w, h = _fit(w, h, bottom - 2)
            x0 = int(rng.integers(2, max(3, width - w - 1)))
            placed.append({"class": cls, "box": (x0, bottom - h, x0 + w, bottom), "salient": True,
                           "context": CONTEXT_OF_CLASS[cls]})
            continue
        limit = height if strip is None else strip["y0"] + (strip["y1"] - strip["y0"]) // 2
        w, h = _fit(w, h, limit - 4)
        for _ in range(30):
            x0 = int(rng.integers(2, max(3, width - w - 1)))
            y0 = int(rng.integers(2, max(3, limit - h - 1)))
            box = (x0, y0, x0 + w, y0 + h)
            if all(_overlap(box, o["box"]) <= 0.2 * min(_area(box), _area(o["box"])) for o in placed):
                placed.append({"class": cls, "box": box, "salient": True, "context": None})
                break

    clutter: list[dict] = []
    for _ in range(int(rng.integers(0, opts.clutter_max + 1))):
        s = int(short * rng.uniform(0.12, 0.22))
        x0, y0 = int(rng.integers(1, width - s - 1)), int(rng.integers(1, height - s - 1))
        clutter.append({"box": (x0, y0, x0 + s, y0 + s), "salient": bool(rng.random() < opts.clutter_salient_prob)})

    gap = _px(opts.gap, short, 8)
    if rng.random() < opts.nonsalient_prob:
        candidates = [c for c in CLASS_NAMES[1:] if c not in CONTEXT_OF_CLASS]
        cls = candidates[int(rng.integers(len(candidates)))]
        w, h = _object_size(rng, CLASS_SPECS[cls], short, width, rng.uniform(*opts.nonsalient_scale))
        for _ in range(30):
            side, margin = int(rng.integers(4)), int(rng.integers(1, 6))
            x0 = int(rng.integers(1, width - w - 1))
            y0 = int(rng.integers(1, height - h - 1))
            if side == 0:
                y0 = margin
            elif side == 1:
                y0 = height - h - margin
            elif side == 2:
                x0 = margin
            else:
                x0 = width - w - margin
            box = (x0, y0, x0 + w, y0 + h)
            if all(_overlap(box, o["box"], gap) == 0 for o in placed + clutter):
                placed.append({"class": cls, "box": box, "salient": False, "context": None})
                break

    # Draw: clutter below the objects; objects in placement order (later ones on top).
    for item in clutter:
        parts = np.zeros((height, width), np.uint8)
        x0, y0, x1, y1 = item["box"]
        lut = _draw_clutter(rng, parts, x0, y0, x1 - x0, y1 - y0)
        m = parts > 0
        image[m] = np.float32(lut[0])
        context[m] = CONTEXT_NAMES.index("clutter")
        if item["salient"]:
            salient_extra |= m
    for idx, obj in enumerate(placed, start=1):
        parts = np.zeros((height, width), np.uint8)
        x0, y0, x1, y1 = obj["box"]
        colours = CLASS_SPECS[obj["class"]].draw(rng, parts, x0, y0, x1 - x0, y1 - y0)
        lut = np.zeros((len(colours) + 1, 3), np.float32)
        lut[1:] = np.asarray(colours, np.float32)
        m = parts > 0
        image[m] = lut[parts[m]]
        label[m] = CLASS_NAMES.index(obj["class"])
        instances[m] = idx
        context[m] = CONTEXT_NAMES.index(obj["class"])
    salient_extra &= context == CONTEXT_NAMES.index("clutter")   # drop clutter pixels now covered

    image += rng.normal(0, 6, image.shape).astype(np.float32)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    salient_ids = [i for i, o in enumerate(placed, start=1) if o["salient"]]
    salient_mask = np.isin(instances, salient_ids) | salient_extra
    avoid = [o["box"] for o in placed if not o["salient"]]
    saliency, blob = _imperfect_saliency(rng, salient_mask, avoid, opts)

    objects = []
    for idx, obj in enumerate(placed, start=1):
        ys_, xs_ = np.nonzero(instances == idx)
        if len(xs_):
            bbox = [int(xs_.min()), int(ys_.min()), int(xs_.max()) + 1, int(ys_.max()) + 1]
        else:
            bbox = list(obj["box"])
        objects.append({"instance": idx, "class": obj["class"], "class_index": CLASS_NAMES.index(obj["class"]),
                        "bbox": bbox, "pixels": int(len(xs_)), "salient": obj["salient"], "context": obj["context"]})
    meta = {"size": [height, width], "strip": strip, "objects": objects,
            "clutter": [{"bbox": list(c["box"]), "salient": c["salient"]} for c in clutter],
            "saliency_blob": blob}
    return Scene(image, label, instances, context, saliency, meta)


def _px(value: float, short: int, minimum: int = 1) -> int:
    """A pixel size given for a 160 px short side, scaled to ``short`` (at least ``minimum``)."""
    return max(minimum, int(round(value * short / 160)))


def _imperfect_saliency(rng, mask: np.ndarray, avoid: list[Box], opts: SceneOptions) -> tuple[np.ndarray, bool]:
    """A soft, slightly wrong saliency map of ``mask``: shifted, dilated/eroded, blurred, noisy.

    Returns ``(H, W) uint8`` and whether a stray blob was added (never on a box of ``avoid``).
    """
    height, width = mask.shape
    short = min(height, width)
    max_shift, max_morph = _px(opts.saliency_shift, short), _px(opts.saliency_morph, short)
    gap = _px(opts.gap, short, 8)
    # Salient-object detectors give blobby masks: close thin gaps (leaves, masts) first.
    close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    sal = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, close)
    dx, dy = (int(v) for v in rng.integers(-max_shift, max_shift + 1, 2))
    shift = np.float32([[1, 0, dx], [0, 1, dy]])
    sal = cv2.warpAffine(sal, shift, (width, height), flags=cv2.INTER_NEAREST, borderValue=0)
    radius = int(rng.integers(-max_morph, max_morph + 1))
    if radius:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(radius) + 1, 2 * abs(radius) + 1))
        sal = cv2.dilate(sal, kernel) if radius > 0 else cv2.erode(sal, kernel)
    soft = sal.astype(np.float32) * np.float32(rng.uniform(0.88, 1.0))
    blob = False
    if rng.random() < opts.blob_prob:
        r = int(min(height, width) * rng.uniform(0.06, 0.12))
        cx, cy = int(rng.integers(r, width - r)), int(rng.integers(r, height - r))
        box = (cx - r, cy - r, cx + r, cy + r)
        if all(_overlap(box, a, gap) == 0 for a in avoid):
            stray = np.zeros_like(sal)
            axes = (r, max(2, int(r * rng.uniform(0.5, 1.0))))
            cv2.ellipse(stray, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
            soft = np.maximum(soft, stray.astype(np.float32) * np.float32(rng.uniform(0.3, 0.6)))
            blob = True
    sigma = float(rng.uniform(*opts.saliency_blur)) * short / 160
    soft = cv2.GaussianBlur(soft, (0, 0), sigma)
    soft = soft * 255 + rng.normal(0, opts.saliency_noise, soft.shape).astype(np.float32)
    return np.clip(np.round(soft), 0, 255).astype(np.uint8), blob


# ---------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------

def parse_size(size) -> tuple[int, int]:
    """``160``, ``"160"``, ``(128, 192)`` or ``"128-192"`` → an inclusive side-length range."""
    if isinstance(size, str):
        parts = size.replace(":", "-").split("-")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise DataError(f"image size {size!r} must be an integer or a range like 128-192") from None
    elif isinstance(size, int):
        values = [size]
    else:
        values = [int(v) for v in size]
    if len(values) == 1:
        values = values * 2
    lo, hi = values
    if not (MIN_SIZE <= lo <= hi <= MAX_SIZE):
        raise DataError(f"image size {size!r}: sides must lie in {MIN_SIZE}..{MAX_SIZE} with min <= max")
    return lo, hi


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``: independent of every other image."""
    return np.random.default_rng([int(seed), SPLIT_CODES[split], int(index)])


def generate_synthetic_dataset(out_root: str | os.PathLike, num_train: int = 200, num_val: int = 50,
                               size=160, seed: int = 0, options: SceneOptions | None = None) -> dict:
    """Write a synthetic VOC-layout dataset under ``out_root`` (see the module docstring).

    ``size`` is a side length or an inclusive ``(min, max)`` range from which each image's height
    and width are drawn. Returns a summary: counts per split and class, non-salient objects,
    context strips, and the paths of ``dataset.yaml`` and the meta file.
    """
    if num_train < 1 or num_val < 0:
        raise DataError(f"need at least one training image and no negative counts (got {num_train}, {num_val})")
    opts = options or SceneOptions()
    lo, hi = parse_size(size)
    root = Path(out_root)
    palette = voc_palette()
    start = time.perf_counter()
    labels: dict[str, list[int]] = {}
    meta_images: dict[str, dict] = {}
    split_ids: dict[str, list[str]] = {}
    # Scenes are drawn in order; PNG encoding and fsync run in threads (both release the GIL).
    with ThreadPoolExecutor(max_workers=4) as pool:
        pending = []
        for split, count in (("train", num_train), ("val", num_val)):
            digits = max(4, len(str(max(0, count - 1))))
            split_ids[split] = []
            for index in range(count):
                rng = scene_rng(seed, split, index)
                height, width = (int(v) for v in rng.integers(lo, hi + 1, 2))
                scene = make_scene(rng, height, width, opts)
                img_id = f"{split}_{index:0{digits}d}"
                pending += [
                    pool.submit(write_image, root / "JPEGImages" / f"{img_id}.png", scene.image),
                    pool.submit(write_label, root / "SegmentationClass" / f"{img_id}.png", scene.label, palette),
                    pool.submit(write_label, root / "SegmentationObject" / f"{img_id}.png", scene.instances, palette),
                    pool.submit(write_gray, root / "SegmentationContext" / f"{img_id}.png", scene.context),
                    pool.submit(write_gray, root / "Saliency" / f"{img_id}.png", scene.saliency),
                ]
                labels[img_id] = sorted(int(v) for v in np.unique(scene.label) if v > 0)
                meta_images[img_id] = dict(split=split, **scene.meta)
                split_ids[split].append(img_id)
                if len(pending) > 200:   # bound the memory held by queued writes
                    _wait(pending)
                    pending = []
        _wait(pending)
    for split, ids in split_ids.items():
        write_text_atomic(root / "ImageSets" / "Segmentation" / f"{split}.txt", "".join(f"{i}\n" for i in ids))

    write_text_atomic(root / "cls_labels.json", json.dumps(labels, indent=0) + "\n")
    write_text_atomic(root / "classes.yaml", "# class names, background first (data.classes_file)\n"
                      + yaml.safe_dump(list(CLASS_NAMES), sort_keys=False))
    context_names = {str(i): n for i, n in enumerate(CONTEXT_NAMES)}
    write_text_atomic(root / "context.json", json.dumps(context_names, indent=1) + "\n")
    meta = {"generator": "wsss data synth", "seed": seed, "size": [lo, hi], "classes": list(CLASS_NAMES),
            "context_names": list(CONTEXT_NAMES), "context_of_class": CONTEXT_OF_CLASS,
            "images": meta_images}
    write_text_atomic(root / META_FILE, json.dumps(meta, indent=1, sort_keys=True) + "\n")
    dataset_yaml = root / DATASET_FILE
    write_text_atomic(dataset_yaml, dataset_config_text(root, seed))

    objects = [o for m in meta_images.values() for o in m["objects"]]
    return {
        "out_root": str(root),
        "dataset_yaml": str(dataset_yaml),
        "images": {s: len(v) for s, v in split_ids.items()},
        "images_per_class": {c: sum(ci in v for v in labels.values()) for ci, c in enumerate(CLASS_NAMES) if ci},
        "multi_class_images": sum(len(v) >= 2 for v in labels.values()),
        "nonsalient_objects": sum(not o["salient"] for o in objects),
        "context_strips": {c: sum(1 for m in meta_images.values() if m["strip"] and m["strip"]["context"] == c)
                           for c in CONTEXT_OF_CLASS.values()},
        "seconds": round(time.perf_counter() - start, 2),
    }


def _wait(futures) -> None:
    for future in futures:
        future.result()   # re-raises a write error


def dataset_config_text(root: Path, seed: int) -> str:
    """The ``dataset.yaml`` of a synthetic dataset: a config whose ``data:`` section loads it."""
    data = {
        "root": str(root.resolve()),
        "dataset": "synth",
        "class_names": list(CLASS_NAMES),
        "image_ext": ".png",
        "mask_dir": "SegmentationClass",
        "saliency_dir": "Saliency",
        "train_split": "train",
        "val_split": "val",
        "image_labels": "json",
        "image_labels_file": "cls_labels.json",
    }
    config = {"data": data}
    if _schema_has("eval", ("context_dir", "context_classes", "pairs")):
        # relative to data.root, so a copy of the folder (with its own data.root) reads its own masks
        config["eval"] = {"context_dir": "SegmentationContext",
                          "context_classes": "context.json",
                          "pairs": [f"{c}:{k}" for c, k in CONTEXT_OF_CLASS.items()]}
    header = (f"# Synthetic scenes written by `wsss data synth` (seed {seed}).\n"
              f"# Use it as a base config (--config this file, or _base_: in another config).\n"
              f"# Context masks: SegmentationContext/ with context.json; objects: {META_FILE}.\n")
    return header + yaml.safe_dump(config, sort_keys=False)


def _schema_has(section: str, keys: tuple[str, ...]) -> bool:
    """Whether the config schema has ``section`` with all ``keys`` (written only where it loads)."""
    import dataclasses

    from wsss.config.schema import Config

    fields = {f.name: f for f in dataclasses.fields(Config)}
    if section not in fields:
        return False
    sub = fields[section].default_factory()
    return all(hasattr(sub, k) for k in keys)
