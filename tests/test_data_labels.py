"""Split lists and image-level label files: every format, round trips and bad input."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from wsss.config.schema import DataConfig
from wsss.data.image_labels import (
    labels_from_mask,
    multi_hot,
    present_classes,
    read_cls_labels_json,
    read_cls_labels_npy,
    read_cls_labels_txt,
    read_labels_from_masks,
    select_labels,
    write_cls_labels_json,
    write_cls_labels_txt,
)
from wsss.data.splits import read_split, resolve_split
from wsss.errors import DataError
from wsss.io import write_label

C = 20


def hot(*classes: int, n: int = C) -> np.ndarray:
    v = np.zeros(n, np.float32)
    for c in classes:
        v[c - 1] = 1
    return v


# ------------------------------------------------------------------------------------------ splits

def test_split_plain_ids_and_blank_lines(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text("2007_000032\n\n  2007_000039  \n2011_000003\n\n")
    assert read_split(p) == ["2007_000032", "2007_000039", "2011_000003"]


def test_split_path_pair_form(tmp_path):
    p = tmp_path / "train_aug.txt"
    p.write_text("/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n"
                 "/JPEGImages/2008_000123.jpg /SegmentationClassAug/2008_000123.png\n")
    assert read_split(p) == ["2007_000032", "2008_000123"]


def test_split_empty_is_error_naming_file(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_text("\n  \n")
    with pytest.raises(DataError, match=r"empty\.txt is empty"):
        read_split(p)


def test_split_duplicate_is_error(tmp_path):
    p = tmp_path / "dup.txt"
    p.write_text("a\nb\na\n")
    with pytest.raises(DataError, match=r"'a' is listed twice \(lines 1 and 3\)"):
        read_split(p)


def test_split_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"split list missing: expected .*nope\.txt"):
        read_split(tmp_path / "nope.txt")


def test_resolve_split_name_and_paths(tmp_path, monkeypatch):
    cfg = DataConfig(root=str(tmp_path), split_dir="lists")
    assert resolve_split(cfg, "train") == tmp_path / "lists" / "train.txt"
    other = tmp_path / "elsewhere.txt"
    other.write_text("x\n")
    assert resolve_split(cfg, str(other)) == other
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "aug.txt").write_text("x\n")
    monkeypatch.chdir(tmp_path.parent)
    assert resolve_split(cfg, "lists/aug.txt") == tmp_path / "lists" / "aug.txt"


def test_resolve_split_without_root():
    with pytest.raises(DataError, match="data.root is not set"):
        resolve_split(DataConfig(), "train")


# -------------------------------------------------------------------------------------------- json

def test_json_labels_read(tmp_path):
    p = tmp_path / "cls_labels.json"
    p.write_text(json.dumps({"a": [15], "b": [1, 20, 5], "c": []}))
    labels = read_cls_labels_json(p, C)
    assert list(labels) == ["a", "b", "c"]
    np.testing.assert_array_equal(labels["a"], hot(15))
    np.testing.assert_array_equal(labels["b"], hot(1, 5, 20))
    np.testing.assert_array_equal(labels["c"], np.zeros(C, np.float32))
    assert labels["b"].dtype == np.float32 and labels["b"].shape == (C,)


@pytest.mark.parametrize("bad", [0, 21])
def test_json_class_out_of_range(tmp_path, bad):
    p = tmp_path / "cls_labels.json"
    p.write_text(json.dumps({"ok": [3], "img_7": [2, bad]}))
    with pytest.raises(DataError) as err:
        read_cls_labels_json(p, C)
    msg = str(err.value)
    assert str(p) in msg and "'img_7'" in msg and f"class {bad}" in msg and "1..20" in msg


def test_json_not_integer_and_not_object(tmp_path):
    p = tmp_path / "l.json"
    p.write_text(json.dumps({"x": [1.5]}))
    with pytest.raises(DataError, match=r"'x' has class 1\.5, not an integer"):
        read_cls_labels_json(p, C)
    p.write_text(json.dumps([[1], [2]]))
    with pytest.raises(DataError, match="must be a JSON object"):
        read_cls_labels_json(p, C)
    p.write_text("{broken")
    with pytest.raises(DataError, match="not valid JSON"):
        read_cls_labels_json(p, C)


def test_json_write_round_trip_and_format(tmp_path):
    labels = {"000000000036": hot(15), "000000000049": hot(16, 13, 15), "empty": np.zeros(C, np.float32)}
    p = tmp_path / "out" / "cls_labels.json"
    write_cls_labels_json(p, labels)
    assert p.read_text() == ('{\n"000000000036": [15],\n"000000000049": [13, 15, 16],\n"empty": []\n}\n')
    back = read_cls_labels_json(p, C)
    assert list(back) == list(labels)
    for k in labels:
        np.testing.assert_array_equal(back[k], labels[k])


# --------------------------------------------------------------------------------------------- txt

def test_txt_labels_zero_based(tmp_path):
    p = tmp_path / "train_cls.txt"
    p.write_text("2007_000032 0 14\n\n2007_000039 19\nJPEGImages/2007_000063.jpg 8 11\n2007_000068\n")
    labels = read_cls_labels_txt(p, C)
    assert list(labels) == ["2007_000032", "2007_000039", "2007_000063", "2007_000068"]
    np.testing.assert_array_equal(labels["2007_000032"], hot(1, 15))   # aeroplane, person
    np.testing.assert_array_equal(labels["2007_000039"], hot(20))      # tvmonitor
    np.testing.assert_array_equal(labels["2007_000063"], hot(9, 12))   # chair, dog
    np.testing.assert_array_equal(labels["2007_000068"], np.zeros(C, np.float32))


def test_txt_class_out_of_range_and_garbage(tmp_path):
    p = tmp_path / "train_cls.txt"
    p.write_text("a 0\nb 3 20\n")
    with pytest.raises(DataError) as err:
        read_cls_labels_txt(p, C)
    msg = str(err.value)
    assert str(p) in msg and "'b'" in msg and "class 20" in msg and "0..19" in msg
    p.write_text("a 1 x\n")
    with pytest.raises(DataError, match=r"line 1: id 'a' has class 'x'"):
        read_cls_labels_txt(p, C)
    p.write_text("a 1\na 2\n")
    with pytest.raises(DataError, match="'a' is listed twice"):
        read_cls_labels_txt(p, C)


def test_txt_write_round_trip_and_format(tmp_path):
    labels = {"2007_000032": hot(1, 15), "x": np.zeros(C, np.float32), "y": hot(20)}
    p = tmp_path / "train_cls.txt"
    write_cls_labels_txt(p, labels)
    assert p.read_text() == "2007_000032 0 14\nx\ny 19\n"
    back = read_cls_labels_txt(p, C)
    for k in labels:
        np.testing.assert_array_equal(back[k], labels[k])


# --------------------------------------------------------------------------------------------- npy

def test_npy_dict_with_str_and_int_ids(tmp_path):
    p = tmp_path / "cls_labels.npy"
    np.save(p, {"2007_000032": hot(1, 15), 2007000039: hot(20).astype(np.float64),
                np.int64(36): hot(3).astype(np.uint8)})
    labels = read_cls_labels_npy(p, C)
    assert sorted(labels) == ["2007000039", "2007_000032", "36"]
    np.testing.assert_array_equal(labels["2007_000032"], hot(1, 15))
    assert all(v.dtype == np.float32 for v in labels.values())
    # IRN stores ids as integers: split ids are matched in that form too
    picked = select_labels(labels, ["2007_000039", "000000000036", "2007_000032"], p)
    assert list(picked) == ["2007_000039", "000000000036", "2007_000032"]
    np.testing.assert_array_equal(picked["2007_000039"], hot(20))
    np.testing.assert_array_equal(picked["000000000036"], hot(3))


def test_npy_wrong_length_is_class_count_mismatch(tmp_path):
    p = tmp_path / "cls_labels.npy"
    np.save(p, {"a": hot(2), "b": np.zeros(80, np.float32)})
    with pytest.raises(DataError) as err:
        read_cls_labels_npy(p, C)
    msg = str(err.value)
    assert str(p) in msg and "'b'" in msg and "length 80" in msg and "20 foreground classes" in msg


def test_npy_bad_contents(tmp_path):
    p = tmp_path / "cls_labels.npy"
    np.save(p, {"a": np.array([0, 2] + [0] * 18)})
    with pytest.raises(DataError, match=r"'a' has values \[2\.0\]"):
        read_cls_labels_npy(p, C)
    np.save(p, {"a": np.zeros((2, C))})
    with pytest.raises(DataError, match=r"'a' must map to a 1-D numeric vector"):
        read_cls_labels_npy(p, C)
    np.save(p, np.zeros((3, C), np.float32))
    with pytest.raises(DataError, match="must hold a dict"):
        read_cls_labels_npy(p, C)
    np.save(p, {("tuple", "id"): hot(1)})
    with pytest.raises(DataError, match="not a string or an integer"):
        read_cls_labels_npy(p, C)


def _npy_with_pickle(path: Path, payload: bytes) -> None:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    path.write_bytes(buf.getvalue() + payload)


def test_npy_legacy_numpy_core_pickle_loads(tmp_path):
    """Files saved by numpy 1.x name numpy.core.multiarray (protocol 2/3 GLOBAL opcodes)."""
    arr = np.empty((), dtype=object)
    arr[()] = {"2007_000032": hot(1, 15)}
    payload = pickle.dumps(arr, protocol=2)
    assert b"numpy._core.multiarray" in payload
    payload = payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    p = tmp_path / "legacy.npy"
    _npy_with_pickle(p, payload)
    labels = read_cls_labels_npy(p, C)
    np.testing.assert_array_equal(labels["2007_000032"], hot(1, 15))


class _Exploit:
    def __reduce__(self):
        import os
        return (os.system, ("touch pwned",))


def test_npy_refuses_code_in_pickle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "evil.npy"
    _npy_with_pickle(p, pickle.dumps({"a": _Exploit()}, protocol=2))
    with pytest.raises(DataError, match=r"refusing to load (posix|os)\.system"):
        read_cls_labels_npy(p, C)
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------------------------- masks

def test_labels_from_mask_ignores_background_and_255():
    mask = np.array([[0, 0, 255], [3, 3, 255], [20, 0, 0]], np.uint8)
    np.testing.assert_array_equal(labels_from_mask(mask, C), hot(3, 20))
    assert labels_from_mask(np.full((2, 2), 255, np.uint8), C).sum() == 0


def test_labels_from_mask_bad_values_named():
    mask = np.array([[0, 21], [30, 254]], np.uint8)
    with pytest.raises(DataError, match=r"mask m\.png has values \[21, 30, 254\] outside 0\.\.20 and 255"):
        labels_from_mask(mask, C, "m.png")


def test_read_labels_from_mask_files(tmp_path):
    m1 = np.zeros((4, 5), np.uint8)
    m1[1:3, 1:3] = 7
    m1[0, 0] = 255
    m2 = np.full((3, 3), 2, np.uint8)
    write_label(tmp_path / "a.png", m1)
    write_label(tmp_path / "b.png", m2)
    labels = read_labels_from_masks({"a": tmp_path / "a.png", "b": tmp_path / "b.png"}, C)
    np.testing.assert_array_equal(labels["a"], hot(7))
    np.testing.assert_array_equal(labels["b"], hot(2))
    with pytest.raises(DataError, match=r"mask .*a\.png has values \[7\] outside 0\.\.3"):
        read_labels_from_masks({"a": tmp_path / "a.png"}, 3)


# --------------------------------------------------------------------------------------------- ids

def test_select_labels_missing_id_named(tmp_path):
    labels = {"a": hot(1), "b": hot(2)}
    with pytest.raises(DataError, match=r"cls_labels\.json have no entry for id 'zz'"):
        select_labels(labels, ["a", "zz"], tmp_path / "cls_labels.json")


def test_multi_hot_and_present_classes():
    v = multi_hot([1, 4, 20], C)
    assert v.dtype == np.float32 and v.shape == (C,)
    assert np.flatnonzero(v).tolist() == [0, 3, 19]
    assert present_classes(v) == [1, 4, 20]
    assert multi_hot([], 5).tolist() == [0, 0, 0, 0, 0]
