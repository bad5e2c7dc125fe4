"""Atomic writes and label/image I/O."""

import numpy as np
import pytest
from PIL import Image

from wsss.data.classes import dataset_info, voc_palette
from wsss.errors import DataError
from wsss.io import atomic_write, load_npz, read_image, read_label, read_saliency, save_npz, write_label


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b"new, half written")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # no temp file left behind


def test_label_png_round_trip_with_palette_and_ignore(tmp_path):
    label = np.array([[0, 1, 20], [255, 7, 0]], dtype=np.uint8)
    write_label(tmp_path / "l.png", label, voc_palette())
    img = Image.open(tmp_path / "l.png")
    assert img.mode == "P"
    assert tuple(img.getpalette()[3 * 255: 3 * 256]) == (224, 224, 192)
    np.testing.assert_array_equal(read_label(tmp_path / "l.png"), label)


def test_rgb_label_is_refused(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="RGB image"):
        read_label(tmp_path / "rgb.png")


def test_truncated_and_missing_images_are_clear_errors(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.jpg", quality=90)
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "b.jpg").write_bytes(data[: len(data) // 2])
    assert read_image(tmp_path / "a.jpg").shape == (64, 64, 3)
    with pytest.raises(DataError, match="unreadable or truncated.*b.jpg"):
        read_image(tmp_path / "b.jpg")
    with pytest.raises(DataError, match="saliency map missing: expected .*c.png"):
        read_saliency(tmp_path / "c.png")


def test_npz_round_trip(tmp_path):
    maps = np.random.default_rng(1).random((2, 5, 6)).astype(np.float16)
    save_npz(tmp_path / "m.npz", maps=maps, classes=np.array([3, 7]))
    out = load_npz(tmp_path / "m.npz")
    np.testing.assert_array_equal(out["maps"], maps)
    np.testing.assert_array_equal(out["classes"], [3, 7])


def test_dataset_descriptions():
    voc = dataset_info("voc")
    assert voc.num_classes == 20 and voc.class_names[15] == "person"
    coco = dataset_info("coco")
    assert coco.num_classes == 80 and coco.num_labels == 81
    custom = dataset_info("mine", ["background", "cat", "dog"])
    assert custom.num_classes == 2 and custom.index("dog") == 2
    with pytest.raises(DataError, match="unknown dataset"):
        dataset_info("imagenet")
    with pytest.raises(DataError, match="duplicate"):
        dataset_info("x", ["background", "a", "a"])


def test_saliency_of_any_bit_depth_is_rescaled_not_clipped(tmp_path):
    sixteen = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "s16.png")
    assert Image.open(tmp_path / "s16.png").mode.startswith("I;16")
    np.testing.assert_array_equal(read_saliency(tmp_path / "s16.png"), [[0, 4, 128, 255]])
    Image.fromarray(np.array([[False, True]])).save(tmp_path / "s1.png")
    np.testing.assert_array_equal(read_saliency(tmp_path / "s1.png"), [[0, 255]])
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(tmp_path / "sf.tif")
    np.testing.assert_array_equal(read_saliency(tmp_path / "sf.tif"), [[0, 128, 255]])
    eight = np.array([[0, 7, 200, 255]], dtype=np.uint8)
    Image.fromarray(eight).save(tmp_path / "s8.png")
    np.testing.assert_array_equal(read_saliency(tmp_path / "s8.png"), eight)


def test_temp_files_of_killed_writers_are_removed_and_live_ones_kept(tmp_path):
    import os
    import subprocess
    import sys

    from wsss.io import remove_stale_temp_files

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f".last.pt.{dead_pid}~abc.tmp").write_bytes(b"x" * 10)
    (tmp_path / f".a.png.{os.getpid()}~def.tmp").write_bytes(b"x")     # this process: alive
    (tmp_path / "keep.tmp").write_bytes(b"x")                           # not ours
    assert remove_stale_temp_files(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".a.png.{os.getpid()}~def.tmp", "keep.tmp"])
    with atomic_write(tmp_path / "x.bin") as f:
        f.write(b"1")
        (name,) = [p.name for p in tmp_path.glob(".x.bin.*.tmp")]
        assert name.startswith(f".x.bin.{os.getpid()}~")
