"""`wsss train-seg`: the recipe's pieces, a short run that learns, resume, DDP and the command.

The data is a tiny VOC-layout set written by :func:`make_shapes_dataset`: coloured shapes (red
squares = 1, green discs = 2, blue triangles = 3) on plain grey backgrounds, 48 x 48 px; the network
is a three-conv test-only backbone (:class:`TinyBackbone`, output stride 8) registered here.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from wsss.config import Config, load_config
from wsss.data.classes import voc_palette
from wsss.engine.checkpoint import load_checkpoint
from wsss.engine.schedule import poly_factor
from wsss.io import write_image, write_label
from wsss.models.backbones.base import Backbone, InputNorm
from wsss.models.registry import BackboneSpec, _REGISTRY, register_backbone
from wsss.stages.context import stage_context
from wsss.stages.train_segmenter import (
    masked_cross_entropy,
    msc_loss,
    neutral_colour,
    resize_labels,
    train_segmenter,
    zero_padding,
)
from wsss.stages.trained import load_trained_segmenter
from wsss.stages.trainer_utils import read_metrics

TINY = "test_tiny_cnn"
SHAPE_CLASSES = ["background", "red", "green", "blue"]
SHAPE_COLOURS = {1: (210, 40, 40), 2: (40, 190, 60), 3: (40, 60, 210)}


class TinyBackbone(Backbone):
    """Three 3x3 stride-2 convs (16, 32, 32 channels) with BatchNorm and ReLU: output stride 8."""

    out_channels = 32

    def __init__(self, output_stride: int = 8):
        super().__init__()
        self.output_stride = output_stride
        layers: list[nn.Module] = []
        strides = (2, 2, 2) if output_stride == 8 else (2, 2, 1)
        for (cin, cout), stride in zip(((3, 16), (16, 32), (32, 32)), strides):
            layers += [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def stages(self) -> list[list[nn.Module]]:
        return [[self.features]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def register_tiny_backbone() -> None:
    if TINY not in _REGISTRY:
        register_backbone(BackboneSpec(TINY, lambda output_stride=8, **kw: TinyBackbone(output_stride, **kw),
                                       (4, 8), 8, "test-only three-conv backbone"))


register_tiny_backbone()


# ------------------------------------------------------------------------------------- data set

def _draw_shape(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, cls: int) -> None:
    size = image.shape[0]
    half = int(rng.integers(size // 7, size // 4))
    cy, cx = (int(v) for v in rng.integers(half, size - half, 2))
    yy, xx = np.mgrid[:size, :size]
    if cls == 1:
        region = (abs(yy - cy) <= half) & (abs(xx - cx) <= half)
    elif cls == 2:
        region = (yy - cy) ** 2 + (xx - cx) ** 2 <= half ** 2
    else:
        region = (yy >= cy - half) & (yy <= cy + half) & (abs(xx - cx) <= (yy - (cy - half)) * 0.8)
    colour = np.clip(np.asarray(SHAPE_COLOURS[cls]) + rng.integers(-20, 21, 3), 0, 255)
    image[region] = colour
    mask[region] = cls


def make_shapes_dataset(root: Path, num_train: int = 16, num_val: int = 8, size: int = 48,
                        seed: int = 0) -> Path:
    """A VOC-layout folder: JPEGImages/*.png, SegmentationClass/*.png, ImageSets/Segmentation/
    {train,val}.txt. One or two shapes per image; image-level labels come from the masks."""
    rng = np.random.default_rng(seed)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "SegmentationClass").mkdir(exist_ok=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    for split, count in (("train", num_train), ("val", num_val)):
        ids = []
        for n in range(count):
            image_id = f"{split}_{n:03d}"
            grey = int(rng.integers(100, 170))
            image = np.clip(grey + rng.normal(0, 6, (size, size, 3)), 0, 255).astype(np.uint8)
            mask = np.zeros((size, size), np.uint8)
            for cls in rng.choice([1, 2, 3], size=2, replace=False):
                _draw_shape(rng, image, mask, int(cls))
            write_image(root / "JPEGImages" / f"{image_id}.png", image)
            write_label(root / "SegmentationClass" / f"{image_id}.png", mask, voc_palette())
            ids.append(image_id)
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def shapes_config(data_root: Path, out_dir: Path, **train_seg) -> Config:
    """A run config for the shapes set with a tiny, fast recipe (overridable by keyword)."""
    recipe = dict(labels="", supervision="full", backbone=TINY, output_stride=8, pretrained="",
                  aspp_rates=[1, 2], msc_scales=[1.0, 0.5], iterations=6, batch_size=4, accumulate=1,
                  num_workers=0, lr=0.01, momentum=0.9, weight_decay=1e-4, crop_size=48,
                  scale_range=[0.75, 1.25], checkpoint_every=1000, log_every=1)
    recipe.update(train_seg)
    data = {"root": str(data_root), "dataset": "shapes", "class_names": SHAPE_CLASSES,
            "image_ext": ".png", "mask_dir": "SegmentationClass", "image_labels": "masks"}
    return load_config(Config, [], base={
        "run": {"name": "seg", "out_dir": str(out_dir), "seed": 3, "device": "cpu"},
        "data": data, "train_seg": recipe,
        "predict": {"split": "val", "scales": [1.0, 0.5], "flip": False}})


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(autouse=True)
def _threads(one_torch_thread):
    """Every test of this module on one torch thread (conftest)."""


def pseudo_labels(shapes_root: Path, where: Path, split: str = "train") -> Path:
    """A copy of the training masks in a separate folder: stands in for pseudo labels."""
    where.mkdir(parents=True, exist_ok=True)
    for line in (shapes_root / "ImageSets/Segmentation" / f"{split}.txt").read_text().split():
        shutil.copyfile(shapes_root / "SegmentationClass" / f"{line}.png", where / f"{line}.png")
    return where


# ------------------------------------------------------------------------------------- recipe

def test_resize_labels_matches_pil_nearest():
    labels = torch.arange(7 * 9).reshape(1, 7, 9) % 5
    got = resize_labels(labels, (4, 5))[0].numpy()
    pil = np.asarray(Image.fromarray(labels[0].numpy().astype(np.uint8)).resize((5, 4), Image.NEAREST))
    np.testing.assert_array_equal(got, pil)


def test_masked_cross_entropy_ignores_255_and_is_zero_when_all_ignored():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 5.0]]]])          # (1, 2, 1, 2)
    labels = torch.tensor([[[0, 255]]])
    expected = -torch.log_softmax(torch.tensor([2.0, 0.0]), 0)[0]   # only the first pixel counts
    assert masked_cross_entropy(logits, labels).item() == pytest.approx(expected.item())
    assert masked_cross_entropy(logits, torch.full((1, 1, 2), 255)).item() == 0.0


def test_msc_loss_sums_every_branch_against_labels_resized_to_it():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 8, 8))
    labels[0, :2] = 255
    outputs = [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 8, 8)]
    total, terms = msc_loss(outputs, labels)
    assert len(terms) == 3
    small = resize_labels(labels, (4, 4))
    assert terms[1].item() == pytest.approx(masked_cross_entropy(outputs[1], small).item())
    assert total.item() == pytest.approx(sum(t.item() for t in terms))


def test_padding_is_exactly_zero_after_normalisation_also_when_flipped(shapes_root):
    images = torch.ones(3, 3, 4, 5)
    boxes = torch.tensor([[0, 0, 4, 5], [0, 0, 3, 2], [0, 0, 3, 2]])
    out = zero_padding(images, boxes, torch.tensor([False, False, True]))
    assert out[0].sum() == 60 and out[1, :, :3, :2].sum() == 18 and out[1].sum() == 18
    assert out[2, :, :3, 3:].sum() == 18 and out[2].sum() == 18        # content mirrored to the right
    # through the real transform: a 48 px image scaled by 0.5 and cropped to 48 is 3/4 padding
    from wsss.stages.train_segmenter import train_transform

    cfg = shapes_config(shapes_root, Path("."), scale_range=[0.5, 0.5], flip=True)
    transform = train_transform(cfg.train_seg, InputNorm())
    image = np.full((48, 48, 3), 200, np.uint8)
    flips = set()
    for seed in range(6):
        sample = transform({"image": image, "mask": np.ones((48, 48), np.uint8)}, np.random.default_rng(seed))
        x = zero_padding(InputNorm()(sample["image"][None]), sample["content_box"][None],
                         torch.tensor([sample["flipped"]]))[0]
        content = sample["mask"] != 255
        assert content.sum() == 24 * 24
        assert (x[:, ~content] == 0).all() and (x[:, content] > 0.5).all()
        flips.add(sample["flipped"])
    assert flips == {False, True}


def test_neutral_colour_maps_to_zero_after_normalisation():
    caffe = InputNorm(mean=(104.008, 116.669, 122.675), std=(1.0, 1.0, 1.0), bgr=True, max_value=255.0)
    assert neutral_colour(caffe) == (123, 117, 104)
    assert neutral_colour(InputNorm(mean=(127.0,) * 3, std=(128.0,) * 3, max_value=255.0)) == (127, 127, 127)
    colour = torch.tensor(neutral_colour(InputNorm()), dtype=torch.float32).view(1, 3, 1, 1) / 255
    assert InputNorm()(colour).abs().max().item() < 0.01


# ------------------------------------------------------------------------------------- training

def _mean_iou(pred_dir: Path, gt_dir: Path, ids: list[str], num_labels: int) -> float:
    from wsss.evaluation import confusion_counts, segmentation_metrics

    conf = sum(confusion_counts(np.asarray(Image.open(pred_dir / f"{i}.png")),
                                np.asarray(Image.open(gt_dir / f"{i}.png")), num_labels) for i in ids)
    return segmentation_metrics(conf).miou


def test_short_run_learns_the_shapes(shapes_root, tmp_path):
    """60 iterations of 4 crops (output stride 4): mIoU on the 8 held-out images >= 0.70
    (measured 0.80-0.82 with run seeds 1 to 5)."""
    from wsss.stages.predict import predict

    labels = pseudo_labels(shapes_root, tmp_path / "pseudo")
    cfg = shapes_config(shapes_root, tmp_path / "runs", supervision="weak", labels=str(labels),
                        iterations=60, lr=0.02, output_stride=4, log_every=10)
    ctx = stage_context(cfg)
    final = train_segmenter(ctx)
    model, meta = load_trained_segmenter(final)
    assert meta["num_classes"] == 4 and meta["supervision"] == "weak" and meta["pretrained"] == "random"
    assert meta["msc_scales"] == [1.0, 0.5] and meta["iterations"] == 60
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406]) and meta["input_norm"]["bgr"] is False
    report = json.loads((ctx.run_dir / "segmenter" / "label_source.json").read_text())
    assert report["folder"] == str(labels.resolve()) and report["coverage"]["images"] == 16
    assert report["byte_copies_of_ground_truth"]["identical"] == 5      # a copy: warned, not refused
    lines = [json.loads(x) for x in (ctx.run_dir / "segmenter" / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == [10, 20, 30, 40, 50, 60]
    assert lines[-1]["loss"] < 0.5 * lines[0]["loss"]
    branches = ("loss_scale0", "loss_scale1", "loss_fused")
    assert lines[-1]["loss"] == pytest.approx(sum(lines[-1][k] for k in branches), rel=1e-5)
    summary = predict(ctx)
    assert summary["predicted"] == 8
    ids = (shapes_root / "ImageSets/Segmentation/val.txt").read_text().split()
    miou = _mean_iou(ctx.run_dir / "pred", shapes_root / "SegmentationClass", ids, 4)
    assert miou >= 0.70, miou


def _weights(path: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(path)
    return state["model"]


def test_resume_after_stop_matches_an_uninterrupted_run(shapes_root, tmp_path):
    kw = dict(iterations=6, accumulate=2, batch_size=2, lr=0.01, checkpoint_every=2)
    whole = stage_context(shapes_config(shapes_root, tmp_path / "a", **kw))
    final_whole = train_segmenter(whole)

    parted = stage_context(shapes_config(shapes_root, tmp_path / "b", **kw))
    last = train_segmenter(parted, stop_after=3)
    assert last.name == "last.pt" and not (last.parent / "final.pt").exists()
    state = load_checkpoint(last)
    assert state["iteration"] == 3
    lr_mults = {g["name"]: g["lr_mult"] for g in state["optimizer"]["param_groups"]}
    assert lr_mults == {"backbone_weight": 1.0, "new_weight": 10.0, "new_bias": 20.0}
    # lr of the last step taken (iteration index 2), per group
    for group in state["optimizer"]["param_groups"]:
        assert group["lr"] == pytest.approx(0.01 * group["lr_mult"] * poly_factor(2, 6, 0.9))
    final_parted = train_segmenter(parted)
    assert final_parted.name == "final.pt"

    a, b = _weights(final_whole), _weights(final_parted)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    ma, mb = read_metrics(whole.run_dir / "segmenter"), read_metrics(parted.run_dir / "segmenter")
    assert [m["iteration"] for m in mb] == [1, 2, 3, 4, 5, 6]
    for x, y in zip(ma, mb):
        assert y["lr"] == pytest.approx(x["lr"]) and y["loss"] == pytest.approx(x["loss"], abs=1e-6)
    assert mb[3]["lr"] == pytest.approx(0.01 * poly_factor(3, 6, 0.9))


def test_no_resume_starts_again(shapes_root, tmp_path):
    ctx = stage_context(shapes_config(shapes_root, tmp_path, iterations=4))
    train_segmenter(ctx, stop_after=2)
    train_segmenter(ctx, resume=False, stop_after=1)
    assert load_checkpoint(ctx.run_dir / "segmenter" / "last.pt")["iteration"] == 1


def test_pretrained_weights_initialise_the_backbone_and_are_recorded(shapes_root, tmp_path):
    torch.manual_seed(5)
    weights = TinyBackbone().state_dict()
    path = tmp_path / "tiny_init.pth"
    torch.save(weights, path)
    ctx = stage_context(shapes_config(shapes_root, tmp_path / "runs", pretrained=str(path), iterations=1,
                                      lr=0.0))
    model, meta = load_trained_segmenter(train_segmenter(ctx))
    assert meta["pretrained"] == str(path)
    torch.testing.assert_close(model.base.backbone.features[0].weight, weights["features.0.weight"])
    log = (ctx.run_dir / "segmenter" / "train_seg.log").read_text()
    assert f"initialisation {path}" in log and "random weights" not in log


def test_batch_size_must_divide_over_processes_and_be_positive(shapes_root, tmp_path):
    from wsss.errors import ConfigError

    ctx = stage_context(shapes_config(shapes_root, tmp_path, batch_size=0))
    with pytest.raises(ConfigError, match="batch_size"):
        train_segmenter(ctx)


@pytest.mark.slow
def test_two_processes_with_torchrun(shapes_root, tmp_path):
    """torchrun with 2 CPU processes (gloo): each takes 2 of the global 4 images per pass."""
    cfg_path = tmp_path / "seg.yaml"
    cfg = shapes_config(shapes_root, tmp_path / "runs", iterations=3, batch_size=4, accumulate=2)
    from wsss.config.loader import to_dict

    cfg_path.write_text(yaml.safe_dump(to_dict(cfg)))
    script = tmp_path / "train.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import torch\n"
        "torch.set_num_threads(1)\n"
        "import test_train_segmenter\n"
        "from wsss.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", WSSS_PROGRESS="off")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(port), str(script),
                           "train-seg", "--config", str(cfg_path)],
                          capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "seg"
    model, meta = load_trained_segmenter(run / "segmenter" / "final.pt")
    assert meta["num_classes"] == 4
    assert json.loads((run / "meta_train_seg.json").read_text())["world_size"] == 2
    assert proc.stdout.count("segmenter: ") == 1     # only rank 0 prints
    assert load_checkpoint(run / "segmenter" / "last.pt")["world_size"] == 2


@pytest.mark.parametrize("name", ["deeplabv2_resnet101_voc12", "deeplabv2_effl0_cocovoc"])
def test_shipped_configs_load_with_the_b5_recipe(name):
    cfg = load_config(Config, [Path(__file__).parents[1] / "configs" / "seg" / f"{name}.yaml"])
    t = cfg.train_seg
    assert (t.supervision, t.labels, t.freeze_bn, t.flip) == ("weak", "labels", True, True)
    assert t.msc_scales == (1.0, 0.75, 0.5) and t.aspp_rates == (6, 12, 18, 24)
    assert t.head_lr_mult == (10.0, 20.0) and t.scale_range == (0.5, 1.5) and t.poly_power == 0.9
    assert cfg.data.root == ""                        # the data folder is always a setting
    if name == "deeplabv2_resnet101_voc12":
        assert (t.backbone, t.crop_size, t.batch_size, t.accumulate, t.iterations, t.lr) == \
            ("resnet101_caffe", 321, 5, 2, 20000, 2.5e-4)
        assert cfg.data.mask_dir == "SegmentationClassAug" and t.split == "train_aug"
