"""How well a classifier head fits the first N training images of a VOC-layout dataset in a few
iterations: the check behind the "NSROM fits poorly on cocovoc" finding (RESULTS.md, issue 6).

Images are squashed to a square (NSROM's input, B.1), normalised as EfficientNet-Lite expects,
kept in memory; batches are drawn at random (seeded); SGD with the lr groups of the trainers
(head x10 / x20), Nesterov momentum 0.9, weight decay 5e-4, constant lr. Prints the mean training
loss every 20 iterations and, at the end, the multilabel soft-margin loss of the model in eval
mode on the same images next to the loss of predicting each class's frequency (the prior).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/head_fit.py ../shared/data/cocovoc nsrom --lr 0.001
    variants: cam | nsrom | noglore (NSROM head without GloRe) | glorenorm (GloRe with 1/L)
              | kaiming (NSROM head, He-normal init of the three 3x3 convs)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from wsss.data.image_labels import read_cls_labels_json
from wsss.models.classifier import build_classifier
from wsss.stages.trainer_utils import sgd_with_lr_groups

VARIANTS = ("cam", "nsrom", "noglore", "glorenorm", "kaiming")


def load_images(root: Path, count: int, size: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` train images: (N, 3, size, size) in (x - 127) / 128, (N, C) multi-hot."""
    ids = (root / "ImageSets/Segmentation/train.txt").read_text().split()[:count]
    labels = read_cls_labels_json(root / "cls_labels.json", num_classes)
    images = []
    for image_id in ids:
        rgb = Image.open(root / "JPEGImages" / f"{image_id}.jpg").convert("RGB").resize((size, size), Image.BILINEAR)
        images.append((torch.from_numpy(np.asarray(rgb, np.float32)).permute(2, 0, 1) - 127.0) / 128.0)
    return torch.stack(images), torch.from_numpy(np.stack([labels[i] for i in ids]))


def build_variant(variant: str, num_classes: int) -> torch.nn.Module:
    head = "cam" if variant == "cam" else "nsrom"
    head_kwargs = {"use_glore": False} if variant == "noglore" else {}
    model = build_classifier("efficientnet_lite0", head, num_classes, output_stride=16, pretrained="imagenet",
                             freeze_bn=True, frozen_stages=2, head_kwargs=head_kwargs)
    if variant == "glorenorm":
        model.head.glore.normalize = True
    if variant == "kaiming":
        for module in model.head.extra_convs.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                torch.nn.init.zeros_(module.bias)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="dataset folder in VOC layout with cls_labels.json")
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3, help="base lr (head weights x10, head biases x20)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--classes", type=int, default=20)
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)
    images, targets = load_images(args.root, args.images, args.size, args.classes)
    model = build_variant(args.variant, args.classes)
    optimizer = sgd_with_lr_groups(model, args.lr, 5e-4, 0.9, True, (1.0, 2.0), (10.0, 20.0))
    model.train()
    generator = torch.Generator().manual_seed(0)
    start, history = time.time(), []
    for it in range(args.iters):
        batch = torch.randint(0, len(images), (args.batch,), generator=generator)
        logits, _ = model(images[batch])
        loss = F.multilabel_soft_margin_loss(logits, targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
        if (it + 1) % 20 == 0:
            print(f"{args.variant} it {it + 1} loss(avg20) {np.mean(history[-20:]):.4f} "
                  f"{time.time() - start:.0f}s", flush=True)
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(images[i:i + 10])[0] for i in range(0, len(images), 10)])
    prior = torch.logit(targets.mean(0).clamp(1e-3, 1 - 1e-3)).expand_as(targets)
    print(f"{args.variant} lr {args.lr}: final eval loss {F.multilabel_soft_margin_loss(logits, targets).item():.4f}, "
          f"prior-only loss {F.multilabel_soft_margin_loss(prior, targets).item():.4f}")


if __name__ == "__main__":
    main()
