"""COCO instance annotations (2014 or 2017 JSON) → a VOC-layout dataset.

``coco_to_voc`` writes, under ``out_root``::

    JPEGImages/<id>.jpg                  the source image (copied or symlinked); <id> = file stem
    SegmentationClass/<id>.png           palette PNG: 0 background, 1..C classes, 255 ignore
    cls_labels.json                      {id: sorted 1-based classes with a pixel in the mask}
    ImageSets/Segmentation/<split>.txt   one id per line
    classes.yaml                         the class names, background first (``data.classes_file``)

Rasterisation rules (as used to build ``../shared/data/cocovoc``):

- polygons are filled with PIL ``ImageDraw.polygon`` (fill and outline); RLE masks, uncompressed
  (``counts`` a list) or compressed (COCO's string encoding, decoded here: pycocotools is not
  needed) are column-major;
- instances are drawn onto a zero canvas in order of decreasing area (COCO ``area``), so smaller
  objects lie on top of larger ones;
- crowd regions (``iscrowd=1``) and categories without a target class are drawn as 255.

The class mapping is ``"all"`` (the 80 COCO classes), ``"voc"`` (COCO → PASCAL VOC 20) or a
YAML/JSON file, see :func:`load_mapping`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from wsss.data.classes import COCO_CLASSES, VOC_CLASSES, voc_palette
from wsss.errors import DataError
from wsss.io import IGNORE, atomic_write, read_label, write_label, write_text_atomic

# COCO category name → VOC class name; every other COCO category is ignored (255).
COCO_TO_VOC = {
    "airplane": "aeroplane", "bicycle": "bicycle", "bird": "bird", "boat": "boat",
    "bottle": "bottle", "bus": "bus", "car": "car", "cat": "cat", "chair": "chair", "cow": "cow",
    "dining table": "diningtable", "dog": "dog", "horse": "horse", "motorcycle": "motorbike",
    "person": "person", "potted plant": "pottedplant", "sheep": "sheep", "couch": "sofa",
    "train": "train", "tv": "tvmonitor",
}

IGNORE_NAMES = ("ignore", "255")
CLASSES_FILE = "classes.yaml"
LABELS_FILE = "cls_labels.json"


# ---------------------------------------------------------------------------------------------
# RLE: COCO's run-length encoding (column-major runs, starting with a run of zeros)
# ---------------------------------------------------------------------------------------------

def rle_string_to_counts(s: str | bytes) -> list[int]:
    """Decode COCO's compressed RLE string into run lengths.

    Each count is stored in 5-bit groups (least significant first) as characters ``48 + c``;
    bit 0x20 of a group means "more groups follow", bit 0x10 of the last group is the sign.
    From the fourth count on, the stored value is the difference to the count two places back.
    """
    data = s.encode("ascii") if isinstance(s, str) else bytes(s)
    counts: list[int] = []
    pos = 0
    while pos < len(data):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(data):
                raise ValueError("compressed RLE string ends inside a count")
            group = data[pos] - 48
            if group < 0 or group > 63:
                raise ValueError(f"invalid character {chr(data[pos])!r} in compressed RLE string")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            pos += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def counts_to_rle_string(counts: list[int]) -> str:
    """Encode run lengths as COCO's compressed RLE string (inverse of :func:`rle_string_to_counts`)."""
    out = []
    for i, count in enumerate(counts):
        value = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            group = value & 0x1F
            value >>= 5
            more = value != -1 if group & 0x10 else value != 0
            if more:
                group |= 0x20
            out.append(chr(group + 48))
    return "".join(out)


def rle_decode(counts: list[int], height: int, width: int) -> np.ndarray:
    """Run lengths (zeros first, column-major) → ``(height, width) bool`` mask."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.size and counts.min() < 0:
        raise ValueError("RLE has a negative run length")
    total = int(counts.sum())
    if total != height * width:
        raise ValueError(f"RLE covers {total} pixels; the mask has {height}x{width} = {height * width}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape((width, height)).T


def rle_encode(mask: np.ndarray) -> list[int]:
    """``(H, W)`` boolean mask → run lengths (zeros first, column-major), as COCO stores them."""
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0] + runs
    return runs


# ---------------------------------------------------------------------------------------------
# Rasterising one annotation
# ---------------------------------------------------------------------------------------------

def annotation_mask(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, RLE or compressed RLE) → ``(height, width) bool``."""
    if isinstance(segmentation, list):
        canvas = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        for poly in segmentation:
            coords = [float(v) for v in poly]
            if len(coords) % 2:
                raise ValueError(f"polygon has an odd number of coordinates ({len(coords)})")
            if len(coords) == 2:
                draw.point(coords, fill=1)
            elif coords:
                draw.polygon(coords, fill=1, outline=1)
        return np.asarray(canvas, dtype=bool)
    if isinstance(segmentation, dict) and "counts" in segmentation:
        size = segmentation.get("size")
        if not size or [int(size[0]), int(size[1])] != [height, width]:
            raise ValueError(f"RLE size {size} differs from the image size [{height}, {width}]")
        counts = segmentation["counts"]
        if isinstance(counts, (str, bytes)):
            counts = rle_string_to_counts(counts)
        return rle_decode(counts, height, width)
    raise ValueError(f"unsupported segmentation of type {type(segmentation).__name__}")


# ---------------------------------------------------------------------------------------------
# Class mapping
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassMapping:
    """Target class names (background first) and COCO category id → target index (255 = ignore)."""

    class_names: tuple[str, ...]
    category_to_index: dict[int, int]
    unused_names: tuple[str, ...] = ()   # names in a mapping file that no category of the JSON has


def load_mapping(mapping: str | os.PathLike, categories: list[dict]) -> ClassMapping:
    """Build the class mapping for the JSON's ``categories``.

    - ``"all"``: the 80 COCO classes (1..80 in the order of the standard category ids). A JSON
      whose category names are not all standard COCO names keeps its own categories, numbered
      1..K in the sorted order of their ids.
    - ``"voc"``: :data:`COCO_TO_VOC` onto the 21 VOC classes; other categories → 255.
    - a ``.yaml``/``.yml``/``.json`` file: either ``{coco name: target name}`` or
      ``{classes: [background, ...], mapping: {coco name: target name}}``; a target ``null`` or
      ``"ignore"`` means 255, ``"background"`` means 0; categories not listed → 255. Without
      ``classes`` the targets make the class list in order of first appearance.
    """
    by_id = sorted(categories, key=lambda c: int(c["id"]))
    names = {int(c["id"]): str(c["name"]) for c in by_id}
    key = str(mapping)
    if key == "all":
        if all(n in COCO_CLASSES[1:] for n in names.values()):
            return ClassMapping(COCO_CLASSES, {cid: COCO_CLASSES.index(n) for cid, n in names.items()})
        own = ("background",) + tuple(names[cid] for cid in names)
        return ClassMapping(own, {cid: i + 1 for i, cid in enumerate(names)})
    if key == "voc":
        table = {cid: VOC_CLASSES.index(COCO_TO_VOC[n]) if n in COCO_TO_VOC else IGNORE
                 for cid, n in names.items()}
        return ClassMapping(VOC_CLASSES, table)
    return _mapping_from_file(Path(key), names)


def _mapping_from_file(path: Path, names: dict[int, str]) -> ClassMapping:
    if not path.is_file():
        raise DataError(f"class mapping {str(path)!r} is neither 'all', 'voc' nor an existing file")
    try:
        text = path.read_text()
        if path.suffix == ".json":
            spec = json.loads(text)
        else:
            import yaml

            spec = yaml.safe_load(text)
    except (OSError, ValueError) as exc:
        raise DataError(f"class mapping file {path} is unreadable: {exc}") from None
    if not isinstance(spec, dict):
        raise DataError(f"class mapping file {path} must hold a mapping {{coco name: target name}}")
    if "mapping" in spec:
        table, classes = spec["mapping"], spec.get("classes")
    else:
        table, classes = spec, None
    if not isinstance(table, dict):
        raise DataError(f"class mapping file {path}: 'mapping' must be {{coco name: target name}}")
    targets = {str(k): (None if v is None or str(v).lower() in IGNORE_NAMES else str(v)) for k, v in table.items()}
    if classes is None:
        order = ["background"]
        for t in targets.values():
            if t is not None and t not in order:
                order.append(t)
        classes = order
    classes = tuple(str(c) for c in classes)
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise DataError(f"class mapping file {path}: 'classes' must list background and at least one "
                        f"class, without duplicates")
    for coco_name, target in targets.items():
        if target is not None and target not in classes:
            raise DataError(f"class mapping file {path}: target {target!r} of {coco_name!r} is not in "
                            f"classes {list(classes)}")
    lookup = {cid: (classes.index(targets[n]) if targets.get(n) is not None else IGNORE)
              for cid, n in names.items()}
    unused = tuple(sorted(set(targets) - set(names.values())))
    return ClassMapping(classes, lookup, unused)


# ---------------------------------------------------------------------------------------------
# The converter
# ---------------------------------------------------------------------------------------------

def load_coco_json(path: str | os.PathLike) -> dict:
    """Read a COCO instance annotation file; checks the three top-level lists exist."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"COCO annotation file missing: expected {path}")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise DataError(f"COCO annotation file {path} is not valid JSON: {exc}") from None
    keys = ("images", "annotations", "categories")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in keys):
        raise DataError(f"COCO annotation file {path} must have the lists 'images', 'annotations' and 'categories'")
    return data


def render_label(image: dict, annotations: list[dict], mapping: ClassMapping) -> np.ndarray:
    """Draw one image's annotations: ``(H, W) uint8`` with 0 background, 1..C, 255 ignore.

    Larger instances first (COCO ``area``, ties keep the JSON order); crowd or unmapped → 255.
    """
    height, width = int(image["height"]), int(image["width"])
    label = np.zeros((height, width), dtype=np.uint8)
    order = sorted(annotations, key=lambda a: -float(a.get("area", 0.0)))
    for ann in order:
        try:
            mask = annotation_mask(ann["segmentation"], height, width)
        except (KeyError, ValueError, TypeError) as exc:
            raise DataError(f"annotation {ann.get('id')} of image {image['id']} ({image.get('file_name')}) "
                            f"has an invalid segmentation: {exc}") from None
        value = IGNORE if ann.get("iscrowd", 0) else mapping.category_to_index[int(ann["category_id"])]
        label[mask] = value
    return label


def _place_image(src: Path, dst: Path, link: str) -> None:
    """Copy or symlink ``src`` to ``dst`` atomically."""
    if link == "symlink":
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.parent / f".{dst.name}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(src.resolve(), tmp)
        os.replace(tmp, dst)
    else:
        with open(src, "rb") as fin, atomic_write(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout)


def _merge_labels_json(path: Path, new: dict[str, list[int]]) -> dict[str, list[int]]:
    merged: dict[str, list[int]] = {}
    if path.is_file():
        try:
            merged = json.loads(path.read_text())
        except ValueError as exc:
            raise DataError(f"existing {path} is not valid JSON ({exc}); remove it to re-create it") from None
    merged.update(new)
    return merged


def _check_or_write_classes(path: Path, class_names: tuple[str, ...]) -> None:
    import yaml

    if path.is_file():
        existing = yaml.safe_load(path.read_text())
        if existing != list(class_names):
            raise DataError(f"{path} lists other classes than this mapping ({existing} vs {list(class_names)}); "
                            f"convert into a new folder or remove it")
        return
    header = "# class names of this dataset, background first (data.classes_file)\n"
    write_text_atomic(path, header + yaml.safe_dump(list(class_names), sort_keys=False))


def coco_to_voc(ann_json: str | os.PathLike, image_dir: str | os.PathLike, out_root: str | os.PathLike,
                mapping: str | os.PathLike = "all", split_name: str = "train", link: str = "copy",
                skip_empty: bool = True, missing: str = "error", overwrite: bool = False,
                progress: bool = False) -> dict:
    """Convert a COCO instance JSON to the VOC layout under ``out_root``; returns a summary dict.

    ``image_dir`` holds the images named by each entry's ``file_name``; ``link`` is ``"copy"`` or
    ``"symlink"``; ``skip_empty`` leaves out images without a pixel of a target class;
    ``missing="skip"`` counts images whose file is absent instead of raising; existing outputs are
    kept (not re-rasterised) unless ``overwrite``. Several splits may be converted into one root:
    ``cls_labels.json`` is merged and ``classes.yaml`` must agree.
    """
    if link not in ("copy", "symlink"):
        raise DataError(f"link must be 'copy' or 'symlink', got {link!r}")
    if missing not in ("error", "skip"):
        raise DataError(f"missing must be 'error' or 'skip', got {missing!r}")
    ann_json, image_dir, out_root = Path(ann_json), Path(image_dir), Path(out_root)
    if not image_dir.is_dir():
        raise DataError(f"COCO image folder missing: expected {image_dir}")
    data = load_coco_json(ann_json)
    cmap = load_mapping(mapping, data["categories"])
    images = {}
    for img in data["images"]:
        if not all(k in img for k in ("id", "file_name", "height", "width")):
            raise DataError(f"{ann_json}: image entry {img} lacks id, file_name, height or width")
        images[img["id"]] = img
    per_image: dict = {img_id: [] for img_id in images}
    for ann in data["annotations"]:
        if ann.get("image_id") not in per_image:
            raise DataError(f"{ann_json}: annotation {ann.get('id')} refers to unknown image id "
                            f"{ann.get('image_id')!r}")
        if int(ann.get("category_id", -1)) not in cmap.category_to_index:
            raise DataError(f"{ann_json}: annotation {ann.get('id')} has unknown category id "
                            f"{ann.get('category_id')!r}")
        per_image[ann["image_id"]].append(ann)

    palette = voc_palette()
    _check_or_write_classes(out_root / CLASSES_FILE, cmap.class_names)
    labels: dict[str, list[int]] = {}
    ids: list[str] = []
    skipped_empty: list[str] = []
    skipped_missing: list[str] = []
    reused = 0
    crowd = sum(1 for a in data["annotations"] if a.get("iscrowd", 0))
    unmapped = sum(1 for a in data["annotations"]
                   if not a.get("iscrowd", 0) and cmap.category_to_index[int(a["category_id"])] == IGNORE)
    seen_ids: dict[str, str] = {}
    extensions: set[str] = set()
    for img in tqdm(sorted(images.values(), key=lambda im: str(im["file_name"])), desc="coco-to-voc",
                    unit="img", disable=not progress):
        src = image_dir / img["file_name"]
        img_id = Path(img["file_name"]).stem
        if img_id in seen_ids:
            raise DataError(f"{ann_json}: two images share the id {img_id!r} ({seen_ids[img_id]}, {img['file_name']})")
        seen_ids[img_id] = img["file_name"]
        mask_path = out_root / "SegmentationClass" / f"{img_id}.png"
        if mask_path.is_file() and not overwrite:
            label = read_label(mask_path, "mask")
            reused += 1
        else:
            label = render_label(img, per_image[img["id"]], cmap)
        present = sorted(int(v) for v in np.unique(label) if 0 < v < IGNORE)
        if skip_empty and not present:
            skipped_empty.append(img_id)
            continue
        if not src.is_file():
            if missing == "skip":
                skipped_missing.append(img_id)
                continue
            raise DataError(f"image of COCO id {img['id']} missing: expected {src}")
        dst = out_root / "JPEGImages" / f"{img_id}{src.suffix.lower()}"
        if overwrite or not (dst.is_file() or dst.is_symlink()):
            _place_image(src, dst, link)
        if overwrite or not mask_path.is_file():
            write_label(mask_path, label, palette)
        labels[img_id] = present
        ids.append(img_id)
        extensions.add(dst.suffix)

    if not ids:
        raise DataError(f"{ann_json}: no image with a pixel of a target class (mapping {str(mapping)!r}); "
                        f"nothing written")
    labels_path = out_root / LABELS_FILE
    merged = _merge_labels_json(labels_path, labels)
    write_text_atomic(labels_path, json.dumps(dict(sorted(merged.items())), indent=0) + "\n")
    split_path = out_root / "ImageSets" / "Segmentation" / f"{split_name}.txt"
    write_text_atomic(split_path, "".join(f"{i}\n" for i in ids))

    class_images = {name: 0 for name in cmap.class_names[1:]}
    for present in labels.values():
        for c in present:
            class_images[cmap.class_names[c]] += 1
    return {
        "out_root": str(out_root),
        "split": split_name,
        "split_file": str(split_path),
        "classes_file": str(out_root / CLASSES_FILE),
        "class_names": list(cmap.class_names),
        "images_in_json": len(images),
        "written": len(ids),
        "reused": reused,
        "skipped_empty": len(skipped_empty),
        "skipped_missing": skipped_missing,
        "crowd_annotations": crowd,
        "unmapped_annotations": unmapped,
        "unused_mapping_names": list(cmap.unused_names),
        "images_per_class": class_images,
        "image_ext": sorted(extensions)[0] if len(extensions) == 1 else sorted(extensions),
    }
