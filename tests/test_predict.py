"""`wsss predict`: full-size label maps and probabilities from a segmenter file, flip averaging,
class restriction, skipping finished images, sharding and the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsss.cli import main
from wsss.config import Config, load_config
from wsss.config.loader import dump_yaml
from wsss.data.classes import voc_palette
from wsss.errors import DataError
from wsss.io import load_npz, write_image, write_label
from wsss.models import MultiScale, build_deeplab_v2
from wsss.stages.context import stage_context
from wsss.stages.predict import predict, predict_probs, probs_folder, restrict_probs, with_scales
from wsss.stages.train_segmenter import input_norm_of, segmenter_meta
from wsss.stages.trained import save_trained

from test_train_segmenter import TINY  # registers the tiny test-only backbone

CLASSES = ["background", "red", "green", "blue"]
SIZES = {"v0": (40, 52), "v1": (33, 47), "v2": (48, 48)}   # (H, W): odd sizes on purpose
PRESENT = {"v0": [1], "v1": [2, 3], "v2": [3]}


@pytest.fixture(autouse=True)
def _threads(one_torch_thread):
    """Every test of this module on one torch thread (conftest)."""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 3-image VOC-layout set and an untrained DeepLab-v2 (the tiny test backbone, OS 8) saved
    as ``<run>/segmenter/final.pt``; returns (data root, out dir)."""
    tmp = tmp_path_factory.mktemp("predict")
    root = tmp / "data"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for image_id, (h, w) in SIZES.items():
        write_image(root / "JPEGImages" / f"{image_id}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        mask = np.zeros((h, w), np.uint8)
        for k, cls in enumerate(PRESENT[image_id]):
            mask[4 + 8 * k:10 + 8 * k, 4:20] = cls
        write_label(root / "SegmentationClass" / f"{image_id}.png", mask, voc_palette())
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(SIZES) + "\n")

    torch.manual_seed(0)
    model = build_deeplab_v2(TINY, 4, output_stride=8, rates=(1, 2), scales=(1.0, 0.5))
    for conv in (model.base.aspp.c0, model.base.aspp.c1):
        torch.nn.init.normal_(conv.weight, 0.0, 0.3)          # logits far from uniform
    cfg = config(root, tmp / "runs")
    tcfg = cfg.train_seg
    tcfg.backbone, tcfg.aspp_rates, tcfg.msc_scales = TINY, (1, 2), (1.0, 0.5)
    save_trained(tmp / "runs" / "seg" / "segmenter" / "final.pt", model,
                 segmenter_meta(tcfg, 4, input_norm_of(model)))
    return root, tmp / "runs"


def config(root: Path, out_dir: Path, **predict_cfg) -> Config:
    return load_config(Config, [], base={
        "run": {"name": "seg", "out_dir": str(out_dir), "device": "cpu"},
        "data": {"root": str(root), "dataset": "shapes", "class_names": CLASSES, "image_ext": ".png",
                 "image_labels": "masks"},
        "predict": {"split": "val", "scales": [1.0, 0.5], **predict_cfg}})


def test_label_maps_have_the_image_size_and_probs_sum_to_one(setup, tmp_path):
    root, runs = setup
    ctx = stage_context(config(root, runs, out=str(tmp_path / "pred"), save_probs=True, flip=True))
    summary = predict(ctx)
    assert summary["predicted"] == 3 and summary["skipped"] == 0 and summary["images_per_s"] > 0
    assert summary["probs"] == str(tmp_path / "pred_probs")
    seen = set()
    for image_id, (h, w) in SIZES.items():
        png = Image.open(tmp_path / "pred" / f"{image_id}.png")
        assert png.mode == "P" and png.size == (w, h)
        label = np.asarray(png)
        assert label.max() <= 3
        seen |= set(np.unique(label).tolist())
        data = load_npz(tmp_path / "pred_probs" / f"{image_id}.npz")
        assert data["probs"].dtype == np.float16 and data["probs"].shape == (4, h, w)
        np.testing.assert_array_equal(data["labels"], np.arange(4))
        np.testing.assert_allclose(data["probs"].astype(np.float32).sum(0), 1.0, atol=3e-3)
        agree = (data["probs"].argmax(0) == label).mean()       # float16 rounding may flip ties
        assert agree > 0.99
    assert len(seen) >= 2                                       # not a constant map
    written = json.loads((tmp_path / "pred.summary.json").read_text())
    assert written["predicted"] == 3 and written["flip"] is True


def test_flip_averages_the_probabilities_of_both_passes(setup):
    from wsss.stages.trained import load_trained_segmenter

    root, runs = setup
    model, _ = load_trained_segmenter(runs / "seg" / "segmenter" / "final.pt")
    norm = input_norm_of(model)
    image = np.asarray(Image.open(root / "JPEGImages" / "v1.png"))
    plain = predict_probs(model, norm, image)
    mirrored = predict_probs(model, norm, np.ascontiguousarray(image[:, ::-1]))
    both = predict_probs(model, norm, image, flip=True)
    torch.testing.assert_close(both, (plain + mirrored.flip(-1)) / 2, atol=1e-5, rtol=0)
    assert plain.shape == (4, 33, 47)
    torch.testing.assert_close(plain.sum(0), torch.ones(33, 47), atol=1e-5, rtol=0)


def test_scales_of_prediction_replace_those_of_training(setup):
    from wsss.stages.trained import load_trained_segmenter

    root, runs = setup
    model, _ = load_trained_segmenter(runs / "seg" / "segmenter" / "final.pt")
    assert isinstance(model, MultiScale) and model.scales == (1.0, 0.5)
    assert with_scales(model, [1.0]) is model.base
    three = with_scales(model, [1.0, 0.75, 0.5])
    assert isinstance(three, MultiScale) and three.scales == (1.0, 0.75, 0.5) and three.base is model.base


def test_labelled_classes_only(setup, tmp_path):
    root, runs = setup
    ctx = stage_context(config(root, runs, out=str(tmp_path / "p"), save_probs=True, probs_classes="labelled"))
    predict(ctx)
    for image_id, present in PRESENT.items():
        data = load_npz(tmp_path / "p_probs" / f"{image_id}.npz")
        np.testing.assert_array_equal(data["labels"], [0] + present)
        np.testing.assert_allclose(data["probs"].astype(np.float32).sum(0), 1.0, atol=3e-3)
        label = np.asarray(Image.open(tmp_path / "p" / f"{image_id}.png"))
        assert set(np.unique(label).tolist()) <= set([0] + present)


def test_restrict_probs_renormalises():
    probs = torch.tensor([[[0.2]], [[0.5]], [[0.3]]])
    np.testing.assert_allclose(restrict_probs(probs, [0, 2]).flatten().numpy(), [0.4, 0.6], rtol=1e-6)


def test_finished_images_are_skipped_unless_overwrite(setup, tmp_path):
    root, runs = setup
    out = tmp_path / "pred"
    ctx = stage_context(config(root, runs, out=str(out)))
    predict(ctx)
    marker = np.full(SIZES["v0"], 3, np.uint8)
    write_label(out / "v0.png", marker, voc_palette())          # a "finished" image: kept as is
    (out / "v1.png").unlink()                                   # an unfinished one: redone
    summary = predict(ctx)
    assert (summary["predicted"], summary["skipped"]) == (1, 2)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "v0.png")), marker)
    assert (out / "v1.png").is_file()
    ctx.cfg.predict.save_probs = True                           # probabilities missing: redone
    assert predict(ctx)["predicted"] == 3
    ctx.cfg.predict.overwrite = True
    assert predict(ctx)["predicted"] == 3
    assert not np.array_equal(np.asarray(Image.open(out / "v0.png")), marker)


def test_each_rank_predicts_its_shard(setup, tmp_path, monkeypatch):
    root, runs = setup
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ctx = stage_context(config(root, runs, out=str(tmp_path / "pred")))
    summary = predict(ctx)
    assert summary["images"] == 1 and summary["rank"] == 1
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["v1.png"]
    assert (tmp_path / "pred.summary.rank1.json").is_file()


def test_a_segmenter_of_another_label_set_is_refused(setup, tmp_path):
    root, runs = setup
    cfg = config(root, runs, out=str(tmp_path / "pred"))
    cfg.data.class_names = CLASSES + ["yellow"]
    with pytest.raises(DataError, match="predicts 4 labels"):
        predict(stage_context(cfg))


def test_command_line(setup, tmp_path, capsys):
    root, runs = setup
    config_file = tmp_path / "seg.yaml"
    config_file.write_text(dump_yaml(config(root, runs)))
    code = main(["predict", "--config", str(config_file), "--split", "val", "--out", str(tmp_path / "cli"),
                 "--probs"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("predict val: 3 predicted, 0 already done") and str(tmp_path / "cli_probs") in out
    assert probs_folder(tmp_path / "cli") == tmp_path / "cli_probs"
    assert len(list((tmp_path / "cli_probs").glob("*.npz"))) == 3


def test_probabilities_land_beside_the_predictions_with_a_relative_run_directory(setup, tmp_path, monkeypatch):
    """A relative run.out_dir (as the demo's) must not be joined twice for <out>_probs."""
    import shutil

    root, runs = setup
    shutil.copytree(runs / "seg" / "segmenter", tmp_path / "runs" / "seg" / "segmenter")
    monkeypatch.chdir(tmp_path)
    summary = predict(stage_context(config(root, Path("runs"), out="pred", save_probs=True)))
    assert summary["predicted"] == 3
    assert sorted(p.name for p in (tmp_path / "runs" / "seg" / "pred_probs").glob("*.npz")) == \
        sorted(f"{i}.npz" for i in SIZES)
    assert not (tmp_path / "runs" / "seg" / "runs").exists()
