"""`wsss crf` stage: label and probability inputs, shapes and values, config values, skip, shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from wsss.cli import main
from wsss.config.schema import Config
from wsss.data.classes import voc_palette
from wsss.errors import ConfigError, DataError
from wsss.io import read_label, save_npz, write_image, write_label
from wsss.postprocess.crf import dense_crf
from wsss.stages.context import stage_context
from wsss.stages.crf import run_crf

H, W = 24, 32


@pytest.fixture(autouse=True)
def _no_shard_env(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("WSSS_PROGRESS", "off")


def two_region_image(seed: int = 0) -> np.ndarray:
    """Left half dark, right half bright, slight noise."""
    rng = np.random.default_rng(seed)
    image = np.full((H, W, 3), 40, dtype=np.int64)
    image[:, W // 2:] = 210
    return np.clip(image + rng.integers(-3, 4, image.shape), 0, 255).astype(np.uint8)


def make_dataset(root: Path, ids: list[str]) -> Path:
    for i, image_id in enumerate(ids):
        write_image(root / "JPEGImages" / f"{image_id}.png", two_region_image(i))
    (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
    return root


def make_config(root: Path, out_dir: Path, **crf) -> Config:
    cfg = Config()
    cfg.run.out_dir, cfg.run.name = str(out_dir), "run"
    cfg.data.root, cfg.data.image_ext = str(root), ".png"
    cfg.crf.workers = 0
    for key, value in crf.items():
        setattr(cfg.crf, key, value)
    return cfg


def noisy_label() -> np.ndarray:
    """Right half class 3 (the bright side), left background, two wrong pixels, an ignore patch."""
    label = np.zeros((H, W), dtype=np.uint8)
    label[:, W // 2:] = 3
    label[5, 5] = 3          # wrong: dark side
    label[12, 24] = 0        # wrong: bright side
    label[18:21, 2:5] = 255
    return label


def test_labels_input_is_cleaned_and_keeps_ignore(tmp_path):
    root = make_dataset(tmp_path / "data", ["a", "b"])
    run = tmp_path / "runs" / "run"
    for image_id in ("a", "b"):
        write_label(run / "labels" / f"{image_id}.png", noisy_label(), voc_palette())
    summary = run_crf(stage_context(make_config(root, tmp_path / "runs", workers=2)))
    assert (summary["refined"], summary["inputs"]) == (2, {"probs": 0, "labels": 2})
    out = read_label(run / "labels_crf" / "a.png")
    assert out.shape == (H, W) and set(np.unique(out)) == {0, 3, 255}
    assert np.array_equal(out == 255, noisy_label() == 255)
    assert out[5, 5] == 0 and out[12, 24] == 3                   # isolated errors follow the colour
    expected = np.zeros((H, W), dtype=np.uint8)
    expected[:, W // 2:] = 3
    expected[18:21, 2:5] = 255
    np.testing.assert_array_equal(out, expected)
    assert summary["changed_share"] == pytest.approx(2 / (H * W), abs=1e-6)
    assert Image.open(run / "labels_crf" / "a.png").mode == "P"


def test_probs_input_matches_dense_crf_and_uses_the_config(tmp_path):
    root = make_dataset(tmp_path / "data", ["a"])
    run = tmp_path / "runs" / "run"
    probs = np.full((2, H, W), 0.5, dtype=np.float32)
    probs[1, :, W // 2:] = 0.8                                    # class 2 on the bright side ...
    probs[1, :, :W // 2] = 0.45                                   # ... weakly absent on the dark one
    probs[1, 3:6, 3:6] = 0.6                                      # a wrong blob on the dark side
    probs[0] = 1.0 - probs[1]
    save_npz(run / "pred_probs" / "a.npz", probs=probs.astype(np.float16), labels=np.array([0, 2]))
    cfg = make_config(root, tmp_path / "runs", input="pred_probs", out="pred_crf")
    summary = run_crf(stage_context(cfg))
    out = read_label(run / "pred_crf" / "a.png")
    image = two_region_image(0)
    refined = dense_crf(image, probs.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(out, np.array([0, 2], dtype=np.uint8)[refined.argmax(0)])
    assert out.shape == (H, W) and set(np.unique(out)) <= {0, 2}
    assert summary["inputs"] == {"probs": 1, "labels": 0}
    assert np.all(out[:, W // 2:] == 2) and np.all(out[3:6, 3:6] == 0)   # the blob is removed

    cfg.crf.iterations, cfg.crf.overwrite = 0, True                 # no mean-field step: the input argmax
    run_crf(stage_context(cfg))
    out = read_label(run / "pred_crf" / "a.png")
    np.testing.assert_array_equal(out, np.array([0, 2], dtype=np.uint8)[probs.argmax(0)])
    assert np.all(out[3:6, 3:6] == 2)


def test_skip_shards_and_input_errors(tmp_path, monkeypatch):
    ids = ["a", "b", "c"]
    root = make_dataset(tmp_path / "data", ids)
    run = tmp_path / "runs" / "run"
    for image_id in ids[:2]:
        write_label(run / "labels" / f"{image_id}.png", noisy_label(), voc_palette())
    cfg = make_config(root, tmp_path / "runs")
    with pytest.raises(DataError, match="1 of 3 images have no <id>.npz or <id>.png"):
        run_crf(stage_context(cfg))
    write_label(run / "labels" / "c.png", noisy_label()[:, :10], voc_palette())
    with pytest.raises(DataError, match="c.png"):
        run_crf(stage_context(cfg))                              # c's label is smaller than its image
    write_label(run / "labels" / "c.png", noisy_label(), voc_palette())
    for done in (run / "labels_crf").glob("*.png"):              # a and b of the failed run
        done.unlink()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert run_crf(stage_context(cfg))["refined"] == 1
    assert sorted(p.stem for p in (run / "labels_crf").glob("*.png")) == ["b"]
    monkeypatch.setenv("RANK", "0")
    shard = run_crf(stage_context(cfg))
    assert (shard["images"], shard["refined"], shard["done_before"]) == (2, 2, 0)
    assert sorted(p.stem for p in (run / "labels_crf").glob("*.png")) == ids
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert run_crf(stage_context(cfg))["refined"] == 0
    cfg.crf.overwrite = True
    assert run_crf(stage_context(cfg))["refined"] == 3
    cfg.crf.out = "labels"
    with pytest.raises(ConfigError, match="same folder"):
        run_crf(stage_context(cfg))


def test_cli_crf_input_and_out_flags(tmp_path, capsys):
    root = make_dataset(tmp_path / "data", ["a"])
    write_label(tmp_path / "runs" / "exp" / "nsrom_labels" / "a.png", noisy_label(), voc_palette())
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({"run": {"out_dir": str(tmp_path / "runs")},
                                      "data": {"root": str(root), "image_ext": ".png"},
                                      "crf": {"workers": 0}}))
    assert main(["crf", "--config", str(config), "--input", "nsrom_labels", "--out", "nsrom_crf"]) == 0
    text = capsys.readouterr().out
    assert "crf on train: 1 refined (1 from labels), 0 already done" in text
    assert str(tmp_path / "runs" / "exp" / "nsrom_crf") in text
    assert read_label(tmp_path / "runs" / "exp" / "nsrom_crf" / "a.png").shape == (H, W)


def test_crf_refuses_label_values_outside_the_label_set_and_bad_settings(tmp_path):
    from wsss.config.schema import Config
    from wsss.errors import ConfigError, DataError
    from wsss.io import write_image, write_label
    from wsss.stages.context import stage_context
    from wsss.stages.crf import run_crf

    root = tmp_path / "data"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\n")
    write_image(root / "JPEGImages" / "a.jpg", np.zeros((8, 8, 3), np.uint8))
    cfg = Config()
    cfg.run.out_dir, cfg.run.name = str(tmp_path / "runs"), "r"
    cfg.data.root = str(root)
    label = np.zeros((8, 8), np.uint8)
    label[2:5, 2:5] = 77                      # not a VOC class
    write_label(tmp_path / "runs" / "r" / "labels" / "a.png", label)
    with pytest.raises(DataError, match="values 77 outside 0..20"):
        run_crf(stage_context(cfg))
    assert not (tmp_path / "runs" / "r" / "labels_crf" / "a.png").exists()
    cfg.crf.iterations = -1
    with pytest.raises(ConfigError, match="crf.iterations"):
        run_crf(stage_context(cfg))
