"""Synthetic scenes: deterministic, and their saliency and context masks say what the meta claims."""

import json

import numpy as np
import pytest

from wsss.data.synth import CLASS_NAMES, CONTEXT_NAMES, CONTEXT_OF_CLASS, generate_synthetic_dataset, parse_size
from wsss.errors import DataError
from wsss.io import read_label, read_saliency


def files_of(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """60 + 10 scenes of varying size (96..160 px)."""
    root = tmp_path_factory.mktemp("synth")
    summary = generate_synthetic_dataset(root, num_train=60, num_val=10, size=(96, 160), seed=3)
    meta = json.loads((root / "synth_meta.json").read_text())
    return root, summary, meta


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for root, seed in ((a, 5), (b, 5), (c, 6)):
        generate_synthetic_dataset(root, num_train=6, num_val=2, size=96, seed=seed)
    fa, fb, fc = files_of(a), files_of(b), files_of(c)
    assert fa.keys() == fb.keys() == fc.keys()
    assert len(fa) > 40
    for name in fa:
        if name == "dataset.yaml":   # holds the (different) absolute root
            assert fa[name].replace(str(a).encode(), b"ROOT") == fb[name].replace(str(b).encode(), b"ROOT")
        else:
            assert fa[name] == fb[name], name
    images = [n for n in fa if n.startswith("JPEGImages/")]
    assert all(fa[n] != fc[n] for n in images)


def test_first_images_do_not_depend_on_the_count(tmp_path):
    generate_synthetic_dataset(tmp_path / "few", num_train=3, num_val=1, size=96, seed=1)
    generate_synthetic_dataset(tmp_path / "more", num_train=5, num_val=1, size=96, seed=1)
    for i in range(3):
        name = f"Saliency/train_{i:04d}.png"
        assert (tmp_path / "few" / name).read_bytes() == (tmp_path / "more" / name).read_bytes()


def test_layout_labels_and_sizes(scenes):
    root, summary, meta = scenes
    train = (root / "ImageSets/Segmentation/train.txt").read_text().split()
    val = (root / "ImageSets/Segmentation/val.txt").read_text().split()
    assert len(train) == 60 and len(val) == 10 and train[0] == "train_0000"
    labels = json.loads((root / "cls_labels.json").read_text())
    sizes = set()
    for image_id in train + val:
        mask = read_label(root / "SegmentationClass" / f"{image_id}.png")
        sal = read_saliency(root / "Saliency" / f"{image_id}.png")
        assert sal.shape == mask.shape and mask.max() <= len(CLASS_NAMES) - 1
        assert labels[image_id] == sorted(int(v) for v in np.unique(mask) if v)
        assert meta["images"][image_id]["size"] == list(mask.shape)
        sizes.add(mask.shape)
        assert all(96 <= s <= 160 for s in mask.shape)
    assert len(sizes) > 10
    multi = sum(len(v) >= 2 for v in labels.values())
    assert multi >= 0.3 * len(labels)                       # (c) several classes per image
    assert summary["images"] == {"train": 60, "val": 10}
    assert all(summary["images_per_class"][c] >= 5 for c in CLASS_NAMES[1:])


def test_saliency_misses_exactly_the_nonsalient_objects(scenes):
    root, _, meta = scenes
    salient, missed = [], []
    for image_id, info in meta["images"].items():
        sal = read_saliency(root / "Saliency" / f"{image_id}.png").astype(np.float64)
        inst = read_label(root / "SegmentationObject" / f"{image_id}.png")
        mask = read_label(root / "SegmentationClass" / f"{image_id}.png")
        for obj in info["objects"]:
            pixels = inst == obj["instance"]
            assert pixels.sum() == obj["pixels"] > 0
            assert np.all(mask[pixels] == CLASS_NAMES.index(obj["class"]))
            x0, y0, x1, y1 = obj["bbox"]
            assert pixels[y0:y1, x0:x1].sum() == obj["pixels"]
            (salient if obj["salient"] else missed).append(sal[pixels].mean())
    assert len(missed) >= 8                                  # (b) non-salient objects occur
    assert max(missed) < 0.2 * 255
    assert min(salient) > 0.45 * 255                         # (d) soft, slightly wrong, but on the object
    assert np.mean(np.asarray(salient) > 0.6 * 255) > 0.9


def test_context_strips_only_with_their_class_background_and_not_salient(scenes):
    root, _, meta = scenes
    labels = json.loads((root / "cls_labels.json").read_text())
    seen = {k: 0 for k in CONTEXT_OF_CLASS.values()}
    strip_saliency = []
    for image_id, info in meta["images"].items():
        context = read_label(root / "SegmentationContext" / f"{image_id}.png")
        mask = read_label(root / "SegmentationClass" / f"{image_id}.png")
        sal = read_saliency(root / "Saliency" / f"{image_id}.png").astype(np.float64)
        for cls, ctx in CONTEXT_OF_CLASS.items():
            strip = context == CONTEXT_NAMES.index(ctx)
            has_class = CLASS_NAMES.index(cls) in labels[image_id]
            assert strip.any() == has_class, (image_id, cls)   # (a) strip iff its class
            if strip.any():
                seen[ctx] += 1
                assert np.all(mask[strip] == 0)                 # background in the ground truth
                assert info["strip"]["context"] == ctx
                strip_saliency.append(sal[strip].mean())
    assert min(seen.values()) >= 5
    assert max(strip_saliency) < 0.25 * 255 and np.mean(strip_saliency) < 0.1 * 255
    names = json.loads((root / "context.json").read_text())
    assert names["0"] == "void" and [names[str(i)] for i in range(len(CONTEXT_NAMES))] == list(CONTEXT_NAMES)


def test_parse_size():
    assert parse_size(160) == (160, 160)
    assert parse_size("128-192") == (128, 192)
    assert parse_size((100, 120)) == (100, 120)
    for bad in ("abc", 10, (200, 100)):
        with pytest.raises(DataError, match="image size"):
            parse_size(bad)


def test_dataset_yaml_names_the_context_masks_relative_to_the_dataset(tmp_path):
    import shutil

    import yaml

    from wsss.data.synth import generate_synthetic_dataset

    generate_synthetic_dataset(tmp_path / "a", num_train=2, num_val=1, size=(64, 64), seed=0)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    evaluation = yaml.safe_load((tmp_path / "b" / "dataset.yaml").read_text())["eval"]
    assert evaluation["context_dir"] == "SegmentationContext" and evaluation["context_classes"] == "context.json"
