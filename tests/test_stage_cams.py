"""`wsss cams` stage: pass aggregation checked numerically, file format, skip/overwrite, sharding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import wsss.stages.infer_cams as infer_cams_module
from wsss.cli import main
from wsss.config.schema import Config
from wsss.io import load_npz, write_image
from wsss.models import build_classifier
from wsss.models.backbones.base import InputNorm
from wsss.stages.context import stage_context
from wsss.stages.infer_cams import PassPlan, infer_cams
from wsss.stages.trained import save_trained

CLASS_NAMES = ["background", "a", "b", "c"]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # a second thread only adds contention on a busy 2-core machine
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("WSSS_PROGRESS", "off")
    yield
    torch.set_num_threads(threads)


def make_dataset(root: Path, images: dict[str, tuple[np.ndarray, list[int]]]) -> Path:
    """A VOC-layout folder: PNG images, cls_labels.json, ImageSets/Segmentation/train.txt."""
    for image_id, (image, _) in images.items():
        write_image(root / "JPEGImages" / f"{image_id}.png", image)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(images) + "\n")
    (root / "cls_labels.json").write_text(json.dumps({i: c for i, (_, c) in images.items()}))
    return root


def make_config(root: Path, out_dir: Path, **cams) -> Config:
    cfg = Config()
    cfg.run.out_dir, cfg.run.name, cfg.run.device = str(out_dir), "run", "cpu"
    cfg.data.root, cfg.data.image_ext, cfg.data.class_names = str(root), ".png", list(CLASS_NAMES)
    for key, value in cams.items():
        setattr(cfg.cams, key, value)
    return cfg


def ramp_image(height: int, width: int, step: int = 20, seed: int = 0) -> np.ndarray:
    """Red channel = column · step (an asymmetric ramp); green/blue random."""
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image[..., 0] = (np.arange(width) * step)[None, :]
    return image


class RedTimesWeights(nn.Module):
    """Stand-in classifier: maps[k] = weights[k] · red channel, at input resolution (stride 1).

    Flip-equivariant and known in closed form, so the aggregation can be checked by hand. Inputs
    are in [0, 1] (identity normalisation); every input shape is recorded."""

    def __init__(self, weights):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.input_norm = InputNorm((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32).view(1, -1, 1, 1))
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return None, self.weights * x[:, :1]


def patch_loader(monkeypatch, models: dict[str, tuple[nn.Module, dict]]):
    """load_trained_classifier(path) -> models[name of the folder holding path]."""
    monkeypatch.setattr(infer_cams_module, "load_trained_classifier",
                        lambda path, device="cpu": models[Path(path).parent.name])


# ------------------------------------------------------------------------------- numeric checks

@pytest.mark.parametrize("flip", [True, False])
def test_cam_baseline_maps_match_hand_computation(tmp_path, monkeypatch, flip):
    image = ramp_image(6, 10)
    root = make_dataset(tmp_path / "data", {"img": (image, [1, 3])})
    net = RedTimesWeights([1.0, -1.0, 2.0])
    patch_loader(monkeypatch, {"classifier": (net, {"method": "cam", "head": "cam", "num_classes": 3})})
    cfg = make_config(root, tmp_path / "runs", scales=(1.0,), flip=flip)
    summary = infer_cams(stage_context(cfg))
    out = load_npz(tmp_path / "runs" / "run" / "cams" / "img.npz")
    assert summary["processed"] == 1 and summary["passes_per_image"] == (2 if flip else 1)
    assert out["classes"].dtype == np.int64 and out["classes"].tolist() == [1, 3]
    assert out["cams"].dtype == np.float16 and out["cams"].shape == (2, 6, 10)
    assert "bg" not in out
    red = image[..., 0].astype(np.float64) / 255.0
    passes = 2 if flip else 1
    for k, weight in enumerate([1.0, 2.0]):   # classes 1 and 3 -> weights 0 and 2
        summed = passes * weight * red      # un-flipped flipped pass == plain pass
        expected = summed / (summed.max() + 1e-5)
        np.testing.assert_allclose(out["cams"][k].astype(np.float64), expected, atol=1e-3)
    # a missing un-flip would give red + reversed red, constant along each row
    assert out["cams"][0, 0, 9] > 0.99 and out["cams"][0, 0, 0] == 0.0
    assert len(net.shapes) == 1 and net.shapes[0][0] == passes   # plain + flipped in one batch


def test_eps_maps_and_background_match_hand_computation(tmp_path, monkeypatch):
    image = ramp_image(5, 8, step=30)
    root = make_dataset(tmp_path / "data", {"img": (image, [2])})
    weights = [1.0, 3.0, -2.0, 0.5]                  # 3 classes + background (last)
    net = RedTimesWeights(weights)
    patch_loader(monkeypatch, {"classifier": (net, {"method": "eps", "head": "eps", "num_classes": 3})})
    infer_cams(stage_context(make_config(root, tmp_path / "runs", scales=(1.0,), flip=True)))
    out = load_npz(tmp_path / "runs" / "run" / "cams" / "img.npz")
    red = image[..., 0].astype(np.float64) / 255.0
    logits = np.stack([w * red for w in weights])
    probs = np.exp(logits) / np.exp(logits).sum(axis=0)
    for got, channel in ((out["cams"][0], 1), (out["bg"], 3)):
        summed = 2 * probs[channel]
        np.testing.assert_allclose(got.astype(np.float64), summed / (summed.max() + 1e-5), atol=1e-3)
    assert out["classes"].tolist() == [2] and out["bg"].dtype == np.float16 and out["bg"].shape == (5, 8)


def test_pass_plan_sizes():
    assert PassPlan((0.5, 1.0, 1.5), True).sizes((7, 10)) == [(4, 5), (7, 10), (10, 15)]
    assert PassPlan((1.0,), False, 256).sizes((7, 10)) == [(256, 256)]
    assert PassPlan((0.5, 1.0), True, 256).sizes((7, 10)) == [(128, 128), (256, 256)]


# ------------------------------------------------------------------ real architecture, file format

def save_tiny_classifier(path: Path, method: str = "eps") -> None:
    torch.manual_seed(0)
    net = build_classifier("efficientnet_lite0", method, 3, output_stride=16)
    meta = {"kind": "classifier", "method": method, "backbone": "efficientnet_lite0", "output_stride": 16,
            "head": method, "num_classes": 3, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "input_size": 0}
    save_trained(path, net, meta)


@pytest.fixture
def four_images(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    sizes = {"i0": (40, 56), "i1": (48, 32), "i2": (36, 36), "i3": (44, 40)}
    labels = {"i0": [1, 3], "i1": [2], "i2": [], "i3": [1, 2, 3]}
    return make_dataset(tmp_path / "data", {i: (rng.integers(0, 256, s + (3,), dtype=np.uint8), labels[i])
                                             for i, s in sizes.items()})


def test_multiscale_eps_files_on_real_architecture(tmp_path, four_images):
    save_tiny_classifier(tmp_path / "runs" / "run" / "classifier" / "final.pt")
    cfg = make_config(four_images, tmp_path / "runs", scales=(0.5, 1.0, 1.5), flip=True)
    summary = infer_cams(stage_context(cfg))
    assert summary["processed"] == 4 and summary["passes_per_image"] == 6
    assert summary["images_per_s"] > 0
    expected = {"i0": ((40, 56), [1, 3]), "i1": ((48, 32), [2]), "i2": ((36, 36), []),
                "i3": ((44, 40), [1, 2, 3])}
    for image_id, (size, classes) in expected.items():
        out = load_npz(tmp_path / "runs" / "run" / "cams" / f"{image_id}.npz")
        assert sorted(out) == ["bg", "cams", "classes"]
        assert out["classes"].dtype == np.int64 and out["classes"].tolist() == classes
        assert out["cams"].dtype == np.float16 and out["cams"].shape == (len(classes),) + size
        assert out["bg"].dtype == np.float16 and out["bg"].shape == size
        maps = np.concatenate([out["cams"], out["bg"][None]]).astype(np.float32)
        assert maps.min() >= 0.0 and np.allclose(maps.max(axis=(1, 2)), 1.0, atol=1e-3)
    # unbatched passes give the same maps
    first = load_npz(tmp_path / "runs" / "run" / "cams" / "i3.npz")["cams"].astype(np.float32)
    cfg.cams.batch_passes, cfg.cams.overwrite = False, True
    infer_cams(stage_context(cfg))
    again = load_npz(tmp_path / "runs" / "run" / "cams" / "i3.npz")["cams"].astype(np.float32)
    np.testing.assert_allclose(again, first, atol=2e-3)


def test_skip_done_overwrite_and_sharding(tmp_path, four_images, monkeypatch):
    net = RedTimesWeights([1.0, 1.0, 1.0])
    patch_loader(monkeypatch, {"classifier": (net, {"method": "cam", "head": "cam", "num_classes": 3})})
    cfg = make_config(four_images, tmp_path / "runs", scales=(1.0,), flip=False)
    out_dir = tmp_path / "runs" / "run" / "cams"

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    first = infer_cams(stage_context(cfg))
    assert (first["rank"], first["world_size"], first["images"], first["processed"]) == (1, 2, 2, 2)
    assert sorted(p.stem for p in out_dir.glob("*.npz")) == ["i1", "i3"]
    monkeypatch.setenv("RANK", "0")
    second = infer_cams(stage_context(cfg))
    assert second["processed"] == 2
    assert sorted(p.stem for p in out_dir.glob("*.npz")) == ["i0", "i1", "i2", "i3"]
    calls = len(net.shapes)
    assert calls == 3                       # i2 has no labelled class: no forward pass

    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    stamps = {p.name: p.stat().st_mtime_ns for p in out_dir.glob("*.npz")}
    again = infer_cams(stage_context(cfg))
    assert (again["processed"], again["done_before"]) == (0, 4) and len(net.shapes) == calls
    assert {p.name: p.stat().st_mtime_ns for p in out_dir.glob("*.npz")} == stamps
    cfg.cams.overwrite = True
    redo = infer_cams(stage_context(cfg))
    assert (redo["processed"], redo["done_before"]) == (4, 0) and len(net.shapes) == calls + 3
    empty = load_npz(out_dir / "i2.npz")
    assert empty["classes"].shape == (0,) and empty["cams"].shape == (0, 36, 36)


def test_nsrom_plain_and_oa_cams(tmp_path, four_images, monkeypatch):
    net = RedTimesWeights([1.0, 2.0, 3.0])
    iam = RedTimesWeights([-1.0, 1.0, 0.5])
    patch_loader(monkeypatch, {"classifier": (net, {"method": "nsrom", "head": "nsrom", "num_classes": 3}),
                               "iam": (iam, {"head": "iam", "num_classes": 3})})
    cfg = make_config(four_images, tmp_path / "runs", nsrom_size=24)
    infer_cams(stage_context(cfg))
    assert net.shapes == [(1, 3, 24, 24)] * 3 and iam.shapes == [(1, 3, 24, 24)] * 3
    run = tmp_path / "runs" / "run"
    for folder in ("cams", "oa_cams"):
        out = load_npz(run / folder / "i3.npz")
        assert sorted(out) == ["cams", "classes"] and out["classes"].tolist() == [1, 2, 3]
        assert out["cams"].shape == (3, 44, 40) and out["cams"].dtype == np.float16
        for k in range(3):
            if folder == "oa_cams" and k == 0:      # IAM weight -1: ReLU zero everywhere -> 0
                assert np.all(out["cams"][k] == 0)
                continue
            assert out["cams"][k].min() == 0.0 and out["cams"][k].max() == 1.0

    cfg.cams.nsrom_multiscale, cfg.cams.scales, cfg.cams.flip, cfg.cams.overwrite = True, (0.5, 1.0), True, True
    net.shapes.clear()
    infer_cams(stage_context(cfg))
    assert net.shapes == [(2, 3, 12, 12), (2, 3, 24, 24)] * 3


def test_cli_cams_prints_speed_and_folder(tmp_path, four_images, capsys):
    save_tiny_classifier(tmp_path / "runs" / "exp" / "classifier" / "final.pt", method="cam")
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({
        "run": {"out_dir": str(tmp_path / "runs"), "device": "cpu"},
        "data": {"root": str(four_images), "image_ext": ".png", "class_names": CLASS_NAMES},
        "cams": {"scales": [1.0], "flip": True}}))
    assert main(["cams", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert "cam maps of train: 4 images computed, 0 already done" in text
    assert "images/s" in text and str(tmp_path / "runs" / "exp" / "cams") in text
    assert len(list((tmp_path / "runs" / "exp" / "cams").glob("*.npz"))) == 4
    assert (tmp_path / "runs" / "exp" / "meta_cams.json").is_file()
    assert main(["cams", "--config", str(config), "--overwrite"]) == 0
    assert "4 images computed" in capsys.readouterr().out


def test_inference_normalises_exactly_as_training_did():
    """The cams stage must feed the classifier what its training transform fed it: for
    EfficientNet-Lite (pretrained convention: 0..255 pixels) the meta's mean/std are on the 0..1
    scale, and multiplying by the backbone's max_value first gave inputs up to ~500 (issue 13)."""
    from wsss.data.transforms import Normalize
    from wsss.stages.infer_cams import input_normalizer

    model = build_classifier("efficientnet_lite0", "eps", 3, output_stride=16)
    assert model.backbone.input_norm.max_value == 255.0
    mean, std = [0.498039] * 3, [0.501961] * 3
    image = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    trained_on = Normalize(mean, std)({"image": image})["image"]
    norm = input_normalizer(model, {"mean": mean, "std": std})
    fed = norm(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0)[0]
    torch.testing.assert_close(fed, trained_on, rtol=1e-5, atol=1e-5)
    assert float(fed.abs().max()) <= 1.01
    # without mean/std in the meta: the backbone's own convention
    assert input_normalizer(model, {}) == model.backbone.input_norm
