"""The VOC-layout dataset: loading, every label source, bad input, and the real data sets."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from wsss.config.schema import DataConfig
from wsss.data.image_labels import read_cls_labels_json, write_cls_labels_txt
from wsss.data.transforms import Compose, Normalize, RandomCrop, RandomHFlip
from wsss.data.voc import VOCDataset, build_dataset_info, load_image_labels
from wsss.errors import DataError
from wsss.io import write_gray, write_image, write_label

torch.set_num_threads(1)

# id -> (H, W, classes present in the mask)
TINY = {"img_a": (12, 16, [1, 15]), "img_b": (10, 8, [20]), "img_c": (9, 9, [3])}


def make_tiny_voc(root, ids=TINY):
    """A 3-image dataset in VOC layout with masks, saliency, a train split and cls_labels.json."""
    rng = np.random.default_rng(0)
    labels = {}
    for image_id, (h, w, classes) in ids.items():
        write_image(root / "JPEGImages" / f"{image_id}.jpg", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        mask = np.zeros((h, w), np.uint8)
        for k, c in enumerate(classes):
            mask[k::3, 1:] = c
        mask[0, 0] = 255
        write_label(root / "SegmentationClass" / f"{image_id}.png", mask)
        write_gray(root / "Saliency" / f"{image_id}.png", (mask > 0).astype(np.uint8) * 200)
        labels[image_id] = classes
    split = root / "ImageSets" / "Segmentation"
    split.mkdir(parents=True)
    (split / "train.txt").write_text("".join(f"{i}\n" for i in ids))
    (root / "cls_labels.json").write_text(json.dumps(labels))
    return DataConfig(root=str(root))


def hot(classes, n=20):
    v = np.zeros(n, np.float32)
    v[np.asarray(classes, dtype=int) - 1] = 1
    return v


def test_loads_every_array_with_shapes(tmp_path):
    cfg = make_tiny_voc(tmp_path)
    ds = VOCDataset(cfg, "train", load_mask=True, load_saliency=True)
    assert ds.ids == list(TINY) and ds.skipped == [] and len(ds) == 3
    assert ds.info.num_classes == 20
    assert ds.summary() == f"{tmp_path.name} train: 3 of 3 ids kept"
    s = ds[1]
    assert s["id"] == "img_b" and s["index"] == 1
    assert s["image"].shape == (10, 8, 3) and s["image"].dtype == np.uint8
    assert s["mask"].shape == (10, 8) and s["mask"].dtype == np.uint8
    assert s["saliency"].shape == (10, 8) and s["saliency"].dtype == np.uint8
    assert s["orig_size"].tolist() == [10, 8]
    np.testing.assert_array_equal(s["labels"], hot([20]))
    assert set(np.unique(s["mask"]).tolist()) == {0, 20, 255}
    np.testing.assert_array_equal(s["saliency"], np.where((s["mask"] > 0), 200, 0))
    np.testing.assert_array_equal(ds.labels, np.stack([hot(c) for _, _, c in TINY.values()]))


def test_only_requested_arrays(tmp_path):
    cfg = make_tiny_voc(tmp_path)
    s = VOCDataset(cfg, "train")[0]
    assert set(s) == {"id", "index", "labels", "image", "orig_size"}
    s = VOCDataset(cfg, "train", load_image=False)[0]
    assert set(s) == {"id", "index", "labels"}


@pytest.mark.parametrize("source", ["masks", "json", "npy", "txt"])
def test_every_label_source_gives_the_same_labels(tmp_path, source):
    cfg = make_tiny_voc(tmp_path)
    as_json = read_cls_labels_json(tmp_path / "cls_labels.json", 20)
    cfg.image_labels = source
    if source == "npy":
        np.save(tmp_path / "cls_labels.npy", as_json)
        cfg.image_labels_file = "cls_labels.npy"
    if source == "txt":
        write_cls_labels_txt(tmp_path / "train_cls.txt", as_json)
        cfg.image_labels_file = str(tmp_path / "train_cls.txt")  # absolute path works too
    ds = VOCDataset(cfg, "train", load_image=False)
    np.testing.assert_array_equal(ds.labels, np.stack([hot(c) for _, _, c in TINY.values()]))
    assert ds.labels.dtype == np.float32


def test_missing_image_is_error_naming_id_and_path(tmp_path):
    cfg = make_tiny_voc(tmp_path)
    (tmp_path / "JPEGImages" / "img_b.jpg").unlink()
    (tmp_path / "JPEGImages" / "img_c.jpg").unlink()
    with pytest.raises(DataError) as err:
        VOCDataset(cfg, "train")
    msg = str(err.value)
    assert f"image missing for id img_b: expected {tmp_path / 'JPEGImages' / 'img_b.jpg'}" in msg
    assert "and 1 more" in msg and "data.missing=skip" in msg
    # masks and saliency are not checked when they are not loaded; images are not when not loaded
    assert len(VOCDataset(cfg, "train", load_image=False, load_mask=True)) == 3


def test_missing_skip_counts_and_summarises(tmp_path, caplog):
    cfg = make_tiny_voc(tmp_path)
    (tmp_path / "JPEGImages" / "img_a.jpg").unlink()
    (tmp_path / "Saliency" / "img_c.png").unlink()
    cfg.missing = "skip"
    with caplog.at_level(logging.WARNING):
        ds = VOCDataset(cfg, "train", load_saliency=True)
    assert ds.ids == ["img_b"]
    assert [i for i, _ in ds.skipped] == ["img_a", "img_c"]
    assert ds.skipped[1][1] == f"saliency map missing for id img_c: expected {tmp_path / 'Saliency' / 'img_c.png'}"
    assert ds.summary().startswith(f"{tmp_path.name} train: 1 of 3 ids kept, 2 skipped "
                                   "(image missing: 1, saliency map missing: 1; first: image missing for id img_a")
    assert ds.summary() in caplog.text
    np.testing.assert_array_equal(ds[0]["labels"], hot([20]))


def test_missing_mask_matters_for_mask_labels(tmp_path):
    cfg = make_tiny_voc(tmp_path)
    (tmp_path / "SegmentationClass" / "img_a.png").unlink()
    assert len(VOCDataset(cfg, "train")) == 3  # json labels: the mask is not needed
    cfg.image_labels = "masks"
    with pytest.raises(DataError, match="mask missing for id img_a: expected .*SegmentationClass/img_a.png"):
        VOCDataset(cfg, "train")


def test_all_ids_skipped_is_error(tmp_path):
    cfg = make_tiny_voc(tmp_path)
    cfg.missing, cfg.image_ext = "skip", ".png"
    with pytest.raises(DataError, match=r"none of its 3 ids has all its files \(first: image missing for id img_a"):
        VOCDataset(cfg, "train")


def test_empty_split_and_missing_split(tmp_path):
    cfg = make_tiny_voc(tmp_path)
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("\n")
    with pytest.raises(DataError, match=r"val\.txt is empty"):
        VOCDataset(cfg, "val")
    with pytest.raises(DataError, match=r"split list missing: expected .*ImageSets/Segmentation/test\.txt"):
        VOCDataset(cfg, "test")


def test_saliency_size_mismatch_error_and_resize(tmp_path):
    cfg = make_tiny_voc(tmp_path)
    sal = np.tile(np.linspace(0, 250, 6).astype(np.uint8), (5, 1))
    write_gray(tmp_path / "Saliency" / "img_a.png", sal)
    ds = VOCDataset(cfg, "train", load_saliency=True)
    with pytest.raises(DataError) as err:
        ds[0]
    msg = str(err.value)
    assert str(tmp_path / "Saliency" / "img_a.png") in msg and "6x5 (WxH)" in msg and "16x12" in msg
    assert "saliency_size_mismatch=resize" in msg
    cfg.saliency_size_mismatch = "resize"
    s = VOCDataset(cfg, "train", load_saliency=True)[0]
    assert s["saliency"].shape == (12, 16)
    np.testing.assert_array_equal(s["saliency"], cv2.resize(sal, (16, 12), interpolation=cv2.INTER_LINEAR))
    assert s["saliency"][:, 0].tolist() == [0] * 12 and s["saliency"][:, -1].tolist() == [250] * 12


def test_mask_size_mismatch_is_error(tmp_path):
    cfg = make_tiny_voc(tmp_path)
    write_label(tmp_path / "SegmentationClass" / "img_c.png", np.zeros((9, 10), np.uint8))
    cfg.saliency_size_mismatch = "resize"  # never applies to masks
    ds = VOCDataset(cfg, "train", load_mask=True)
    with pytest.raises(DataError, match=r"mask .*img_c\.png is 10x9 \(WxH\) but .*img_c\.jpg is 9x9"):
        ds[2]


def test_mask_values_out_of_range_named_at_load(tmp_path):
    cfg = make_tiny_voc(tmp_path)
    bad = np.zeros((10, 8), np.uint8)
    bad[0, :3] = [21, 99, 255]
    write_label(tmp_path / "SegmentationClass" / "img_b.png", bad)
    ds = VOCDataset(cfg, "train", load_mask=True)  # json labels: masks are checked when loaded
    ds[0]
    with pytest.raises(DataError, match=r"mask .*img_b\.png has values \[21, 99\] outside 0\.\.20 and 255"):
        ds[1]
    cfg.image_labels = "masks"  # mask labels: checked at construction
    with pytest.raises(DataError, match=r"img_b\.png has values \[21, 99\]"):
        VOCDataset(cfg, "train", load_image=False)


def test_class_count_mismatch_with_description(tmp_path):
    cfg = make_tiny_voc(tmp_path)
    cfg.class_names = ["background", "cat", "dog"]  # 2 classes; labels mention 15, 20, 3
    with pytest.raises(DataError, match=r"cls_labels\.json: id 'img_a' has class 15, outside 1\.\.2"):
        VOCDataset(cfg, "train", load_image=False)
    cfg.image_labels, cfg.image_labels_file = "npy", "cls_labels.npy"
    np.save(tmp_path / "cls_labels.npy", {i: np.zeros(20, np.float32) for i in TINY})
    with pytest.raises(DataError, match=r"'img_a' has a vector of length 20, but .* 2 foreground classes"):
        VOCDataset(cfg, "train", load_image=False)


def test_split_id_missing_from_label_file(tmp_path):
    cfg = make_tiny_voc(tmp_path)
    (tmp_path / "cls_labels.json").write_text(json.dumps({"img_a": [1], "img_c": [3]}))
    with pytest.raises(DataError, match=r"cls_labels\.json have no entry for id 'img_b'"):
        VOCDataset(cfg, "train")


def test_truncated_jpeg_is_data_error(tmp_path):
    cfg = make_tiny_voc(tmp_path, {"big": (64, 80, [5])})
    path = tmp_path / "JPEGImages" / "big.jpg"
    img = np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    write_image(path, img)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    ds = VOCDataset(cfg, "train")
    with pytest.raises(DataError, match=r"image unreadable or truncated: .*big\.jpg"):
        ds[0]


def test_build_dataset_info_sources(tmp_path):
    assert build_dataset_info(DataConfig(dataset="coco")).num_classes == 80
    info = build_dataset_info(DataConfig(class_names=["background", "a", "b"]))
    assert info.class_names == ("background", "a", "b")
    (tmp_path / "classes.txt").write_text("background\nx\ny\nz\n")
    info = build_dataset_info(DataConfig(root=str(tmp_path), classes_file="classes.txt"))
    assert info.num_classes == 3 and info.class_names[3] == "z"


def test_load_image_labels_dispatch(tmp_path):
    cfg = make_tiny_voc(tmp_path)
    info = build_dataset_info(cfg)
    labels = load_image_labels(cfg, info, ["img_c", "img_a"])
    assert list(labels) == ["img_c", "img_a"]
    np.testing.assert_array_equal(labels["img_a"], hot([1, 15]))
    cfg.image_labels = "xml"
    with pytest.raises(DataError, match="data.image_labels = 'xml'"):
        load_image_labels(cfg, info, ["img_a"])


def test_transform_reproducible_per_epoch_and_collates(tmp_path):
    cfg = make_tiny_voc(tmp_path)
    tf = Compose([RandomHFlip(), RandomCrop(10), Normalize()])
    ds = VOCDataset(cfg, "train", load_mask=True, load_saliency=True, transform=tf, seed=3)
    a, b = ds[0], ds[0]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    boxes = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        boxes.add(tuple(ds[0]["crop_box"].tolist()) + (ds[0]["flipped"],))
    assert len(boxes) > 1  # another epoch, another augmentation
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 10, 10) and batch["image"].dtype == torch.float32
    assert batch["mask"].dtype == torch.int64 and batch["saliency"].shape == (3, 10, 10)
    assert batch["labels"].shape == (3, 20) and batch["id"] == list(TINY)
    # img_c is 9x9: the crop pads one row and one column with 255 in the mask
    assert (batch["mask"][2] == 255).sum() >= 19


# ---------------------------------------------------------------------------------------- real data

def test_cocovoc_train_labels_agree_with_masks(cocovoc_root):
    cfg = DataConfig(root=str(cocovoc_root))
    from_json = VOCDataset(cfg, "train", load_image=False)
    assert len(from_json) == 204 and from_json.skipped == []
    cfg_masks = DataConfig(root=str(cocovoc_root), image_labels="masks")
    from_masks = VOCDataset(cfg_masks, "train", load_image=False)
    assert from_masks.ids == from_json.ids
    # every id: classes present in its mask == cls_labels.json
    np.testing.assert_array_equal(from_masks.labels, from_json.labels)
    per_class = from_json.labels.sum(0).astype(int).tolist()
    # README table, train column (aeroplane .. tvmonitor)
    assert per_class == [6, 8, 6, 6, 34, 11, 28, 8, 29, 2, 35, 13, 2, 9, 128, 18, 2, 7, 5, 13]


def test_cocovoc_train_loads_images_masks_saliency(cocovoc_root):
    ds = VOCDataset(DataConfig(root=str(cocovoc_root)), "train", load_mask=True, load_saliency=True)
    assert len(ds) == 204
    for i in range(0, 204, 25):
        s = ds[i]
        h, w = s["image"].shape[:2]
        assert s["mask"].shape == (h, w) and s["saliency"].shape == (h, w)
        present = sorted(set(np.unique(s["mask"]).tolist()) - {0, 255})
        assert present == [int(c) + 1 for c in np.flatnonzero(s["labels"])]
    assert len(VOCDataset(DataConfig(root=str(cocovoc_root)), "val", load_image=False)) == 69


def test_voc_samples_skip_missing_images(voc_samples_root):
    cfg = DataConfig(root=str(voc_samples_root), mask_dir="SegmentationClassAug", image_labels="masks")
    with pytest.raises(DataError, match=r"image missing for id 2007_000032: expected .*JPEGImages/2007_000032\.jpg"):
        VOCDataset(cfg, "train")
    cfg.missing = "skip"
    ds = VOCDataset(cfg, "train", load_mask=True, load_saliency=True)
    assert ds.ids == ["2011_000003", "2011_000006", "2011_000025"]
    assert len(ds.skipped) == 1461 and ds.num_listed == 1464
    assert "3 of 1464 ids kept, 1461 skipped (image missing: 1461;" in ds.summary()
    voc = ds.info.class_names
    expected = [{"person", "bottle"}, {"chair", "person", "sofa"}, {"bus", "car"}]  # README
    for i, names in enumerate(expected):
        s = ds[i]
        assert {voc[c] for c in np.flatnonzero(s["labels"]) + 1} == names
        assert s["image"].shape[:2] == s["mask"].shape == s["saliency"].shape
        assert 255 in s["mask"]


def test_voc_samples_all_masks_load_without_images(voc_samples_root):
    cfg = DataConfig(root=str(voc_samples_root), mask_dir="SegmentationClassAug", image_labels="masks",
                     missing="skip")
    ds = VOCDataset(cfg, "train", load_image=False, load_mask=True)
    assert len(ds) == 1464 and ds.skipped == []
    # README table, train column
    assert ds.labels.sum(0).astype(int).tolist() == [88, 65, 105, 78, 87, 78, 128, 131, 148, 64, 82, 121, 68,
                                                      81, 442, 82, 63, 93, 83, 83]
    s = ds[0]
    assert s["id"] == "2007_000032" and s["mask"].dtype == np.uint8 and "image" not in s
