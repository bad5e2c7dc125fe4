"""COCO → VOC conversion: RLE codecs, rasterisation order, crowd/unmapped → 255, outputs, errors."""

import json

import numpy as np
import pytest
from PIL import Image

from wsss.data.coco import (annotation_mask, coco_to_voc, counts_to_rle_string, rle_decode, rle_encode,
                            rle_string_to_counts)
from wsss.errors import DataError, WsssError
from wsss.io import read_label

H, W = 16, 20
PERSON, DOG, CUP = 1, 18, 47          # COCO category ids
VOC_PERSON, VOC_DOG = 15, 12          # their VOC indices
ALL_DOG, ALL_CUP = 17, 42             # contiguous indices of ids 18 and 47 (ids 12, 26, 29, 30, 45 are unused)


# --------------------------------------------------------------------------------------------- RLE

def test_fixed_compressed_string_decodes_to_hand_computed_mask():
    # "5" -> 5; "X1" -> 8 + (1 << 5) = 40; "3" -> 3; "iN" -> 25 + (30 << 5) = 985, sign bit set -> 985 - 1024
    # = -39, a difference to the count two places back: 40 - 39 = 1.
    assert rle_string_to_counts("5X13iN") == [5, 40, 3, 1]
    mask = rle_decode([5, 40, 3, 1], 7, 7)
    expected = np.ones((7, 7), bool)      # column-major: 5 zeros, 40 ones, 3 zeros, 1 one
    expected[0:5, 0] = False
    expected[3:6, 6] = False
    np.testing.assert_array_equal(mask, expected)
    assert counts_to_rle_string([5, 40, 3, 1]) == "5X13iN"


def test_rle_roundtrip_on_random_masks():
    rng = np.random.default_rng(0)
    for shape, density in [((50, 40), 0.5), ((33, 70), 0.02), ((64, 64), 0.97), ((3, 5), 0.5)]:
        mask = rng.random(shape) < density
        mask[10 % shape[0]:, : shape[1] // 2] = True  # long runs: counts needing several 5-bit groups
        counts = rle_encode(mask)
        assert sum(counts) == mask.size
        string = counts_to_rle_string(counts)
        assert rle_string_to_counts(string) == counts
        np.testing.assert_array_equal(rle_decode(rle_string_to_counts(string), *shape), mask)


def test_rle_starting_with_foreground_has_leading_zero_run():
    mask = np.array([[1, 0], [1, 1]], bool)   # column-major: 1, 1, 0, 1
    assert rle_encode(mask) == [0, 2, 1, 1]


def test_polygon_is_filled_with_its_outline():
    mask = annotation_mask([[2, 2, 11, 2, 11, 11, 2, 11]], H, W)
    expected = np.zeros((H, W), bool)
    expected[2:12, 2:12] = True
    np.testing.assert_array_equal(mask, expected)


# --------------------------------------------------------------------------------------------- converter

def _square(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _block_rle(rows, cols):
    mask = np.zeros((H, W), bool)
    mask[rows, cols] = True
    return mask


def write_coco(tmp_path, annotations=None, images=("a.jpg", "b.jpg", "c.png"), write_files=True):
    """A tiny COCO JSON: image 1 a person with a dog inside it (dog listed first), a crowd block
    (uncompressed RLE) and a cup (compressed RLE); image 2 only a cup; image 3 a dog polygon."""
    image_dir = tmp_path / "images"
    image_dir.mkdir(exist_ok=True)
    entries = []
    for i, name in enumerate(images, start=1):
        entries.append({"id": i, "file_name": name, "height": H, "width": W})
        if write_files:
            Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(image_dir / name)
    cup_a = rle_encode(_block_rle(slice(10, 14), slice(15, 19)))
    cup_b = rle_encode(_block_rle(slice(0, 5), slice(0, 5)))
    if annotations is None:
        annotations = [
            {"id": 11, "image_id": 1, "category_id": DOG, "iscrowd": 0, "area": 9.0,
             "segmentation": _square(5, 5, 7, 7)},
            {"id": 12, "image_id": 1, "category_id": PERSON, "iscrowd": 0, "area": 81.0,
             "segmentation": _square(2, 2, 11, 11)},
            {"id": 13, "image_id": 1, "category_id": PERSON, "iscrowd": 1, "area": 12.0,
             "segmentation": {"size": [H, W], "counts": [224, 4, 12, 4, 12, 4, 60]}},  # rows 0-3, cols 14-16
            {"id": 14, "image_id": 1, "category_id": CUP, "iscrowd": 0, "area": 16.0,
             "segmentation": {"size": [H, W], "counts": counts_to_rle_string(cup_a)}},
            {"id": 21, "image_id": 2, "category_id": CUP, "iscrowd": 0, "area": 25.0,
             "segmentation": {"size": [H, W], "counts": counts_to_rle_string(cup_b)}},
            {"id": 31, "image_id": 3, "category_id": DOG, "iscrowd": 0, "area": 16.0,
             "segmentation": _square(0, 0, 3, 3)},
        ]
    data = {"images": entries, "annotations": annotations,
            "categories": [{"id": PERSON, "name": "person"}, {"id": DOG, "name": "dog"}, {"id": CUP, "name": "cup"}]}
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(data))
    return ann, image_dir


def expected_image_a(person, dog, cup):
    label = np.zeros((H, W), np.uint8)
    label[2:12, 2:12] = person
    label[5:8, 5:8] = dog          # smaller instance on top although listed first
    label[0:4, 14:17] = 255        # crowd
    label[10:14, 15:19] = cup
    return label


def test_voc_mapping_rasterises_in_area_order_with_crowd_and_unmapped_as_ignore(tmp_path):
    ann, image_dir = write_coco(tmp_path)
    out = tmp_path / "voc"
    summary = coco_to_voc(ann, image_dir, out, mapping="voc", split_name="val")

    np.testing.assert_array_equal(read_label(out / "SegmentationClass" / "a.png"),
                                  expected_image_a(VOC_PERSON, VOC_DOG, 255))
    dog = np.zeros((H, W), np.uint8)
    dog[0:4, 0:4] = VOC_DOG
    np.testing.assert_array_equal(read_label(out / "SegmentationClass" / "c.png"), dog)
    # b only has a cup (→ 255): no VOC class, skipped
    assert not (out / "SegmentationClass" / "b.png").exists()
    assert json.loads((out / "cls_labels.json").read_text()) == {"a": [VOC_DOG, VOC_PERSON], "c": [VOC_DOG]}
    assert (out / "ImageSets" / "Segmentation" / "val.txt").read_text() == "a\nc\n"
    assert (out / "JPEGImages" / "a.jpg").read_bytes() == (image_dir / "a.jpg").read_bytes()
    assert (out / "JPEGImages" / "c.png").is_file()
    img = Image.open(out / "SegmentationClass" / "a.png")
    assert img.mode == "P" and img.getpalette()[3 * 15:3 * 16] == [192, 128, 128]   # VOC colour of person
    import yaml
    assert yaml.safe_load((out / "classes.yaml").read_text())[VOC_PERSON] == "person"
    assert summary["written"] == 2 and summary["skipped_empty"] == 1
    assert summary["crowd_annotations"] == 1 and summary["unmapped_annotations"] == 2
    assert summary["images_per_class"]["dog"] == 2 and summary["images_per_class"]["person"] == 1


def test_all_mapping_uses_contiguous_coco_indices(tmp_path):
    ann, image_dir = write_coco(tmp_path)
    out = tmp_path / "coco"
    coco_to_voc(ann, image_dir, out, mapping="all")
    np.testing.assert_array_equal(read_label(out / "SegmentationClass" / "a.png"),
                                  expected_image_a(1, ALL_DOG, ALL_CUP))
    assert json.loads((out / "cls_labels.json").read_text()) == {"a": [1, ALL_DOG, ALL_CUP], "b": [ALL_CUP],
                                                                "c": [ALL_DOG]}
    assert (out / "ImageSets" / "Segmentation" / "train.txt").read_text() == "a\nb\nc\n"


def test_mapping_file_renames_and_ignores(tmp_path):
    ann, image_dir = write_coco(tmp_path)
    mapping = tmp_path / "map.yaml"
    mapping.write_text("person: human\ndog: null\nzebra: animal\n")
    out = tmp_path / "custom"
    summary = coco_to_voc(ann, image_dir, out, mapping=mapping)
    assert summary["class_names"] == ["background", "human", "animal"]
    assert summary["unused_mapping_names"] == ["zebra"]
    np.testing.assert_array_equal(read_label(out / "SegmentationClass" / "a.png"), expected_image_a(1, 255, 255))
    assert json.loads((out / "cls_labels.json").read_text()) == {"a": [1]}


def test_rerun_keeps_outputs_and_merges_splits(tmp_path):
    ann, image_dir = write_coco(tmp_path)
    out = tmp_path / "voc"
    coco_to_voc(ann, image_dir, out, mapping="voc", split_name="train", link="symlink")
    assert (out / "JPEGImages" / "a.jpg").is_symlink()
    mask_mtime = (out / "SegmentationClass" / "a.png").stat().st_mtime_ns
    again = coco_to_voc(ann, image_dir, out, mapping="voc", split_name="val", link="symlink")
    assert again["reused"] == 2 and again["written"] == 2   # b (no VOC class) has no mask to reuse
    assert (out / "SegmentationClass" / "a.png").stat().st_mtime_ns == mask_mtime
    assert (out / "ImageSets" / "Segmentation" / "train.txt").read_text() == "a\nc\n"
    assert (out / "ImageSets" / "Segmentation" / "val.txt").read_text() == "a\nc\n"
    with pytest.raises(DataError, match="other classes"):
        coco_to_voc(ann, image_dir, out, mapping="all")
    assert not list(out.rglob("*.tmp"))


def test_missing_json_and_invalid_json(tmp_path):
    with pytest.raises(WsssError, match="missing.*nope.json"):
        coco_to_voc(tmp_path / "nope.json", tmp_path, tmp_path / "out")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(WsssError, match="bad.json is not valid JSON"):
        coco_to_voc(bad, tmp_path, tmp_path / "out")
    bad.write_text('{"images": []}')
    with pytest.raises(WsssError, match="must have the lists"):
        coco_to_voc(bad, tmp_path, tmp_path / "out")


def test_unknown_image_id_and_missing_image_file(tmp_path):
    ann, image_dir = write_coco(tmp_path, annotations=[
        {"id": 99, "image_id": 7, "category_id": DOG, "iscrowd": 0, "area": 1.0, "segmentation": _square(0, 0, 2, 2)}])
    with pytest.raises(WsssError, match="annotation 99 refers to unknown image id 7"):
        coco_to_voc(ann, image_dir, tmp_path / "out")

    ann, image_dir = write_coco(tmp_path)
    (image_dir / "c.png").unlink()
    with pytest.raises(WsssError, match=r"image of COCO id 3 missing: expected .*images/c\.png"):
        coco_to_voc(ann, image_dir, tmp_path / "out2", mapping="voc")
    summary = coco_to_voc(ann, image_dir, tmp_path / "out3", mapping="voc", missing="skip")
    assert summary["skipped_missing"] == ["c"] and summary["written"] == 1
    assert (tmp_path / "out3" / "ImageSets" / "Segmentation" / "train.txt").read_text() == "a\n"
