"""`wsss train-seg`: DeepLab-v2 on pseudo labels (METHODS.md B.5), resumable, under torchrun/DDP.

Recipe (defaults of ``train_seg``, the deeplab-pytorch / NSROM setting):

- network: :func:`~wsss.models.build_deeplab_v2` on ``backbone`` (ASPP ``aspp_rates``, multi-scale
  inputs ``msc_scales`` with max fusion, frozen BatchNorm), ``C + 1`` outputs, initialised from
  ``pretrained`` (a file or a known name; empty = random, logged as a warning);
- data: random scale in ``scale_range`` (bilinear image, nearest label), padding to ``crop_size``
  at the bottom/right (image: 0 after normalisation, i.e. the mean colour as deeplab-pytorch;
  label: 255), random ``crop_size`` crop, horizontal flip. Images enter the network normalised
  as the backbone's pretrained weights expect (``backbone.input_norm``: Caffe BGR minus the mean
  for ``resnet101_caffe``, (x - 127) / 128 for EfficientNet-Lite, ImageNet mean/std otherwise), so
  ``train_seg.mean`` / ``train_seg.std`` are not used;
- loss: cross-entropy ignoring 255 on **every** output of the multi-scale wrapper — each scale's
  logits against the label resized (nearest, PIL rule) to their size, plus the fused max — summed,
  as deeplab-pytorch does. Each term is the mean over the non-ignored pixels of the micro-batch
  (0 when all pixels are ignored, instead of NaN);
- batch: ``batch_size`` images per forward pass (global, split over the ranks), ``accumulate``
  forward/backward passes per optimiser step, each loss divided by ``accumulate``. One iteration =
  one optimiser step = ``batch_size * accumulate`` images (NSROM: 5 x 2 = 10; deeplab-pytorch's
  BATCH_SIZE.TRAIN x ITER_SIZE; ``iterations`` counts optimiser steps, as its ITER_MAX);
- optimiser: SGD with ``momentum`` and ``weight_decay``; lr groups: backbone weights/biases
  ``lr * backbone_lr_mult``, ASPP weights/biases ``lr * head_lr_mult`` (10x / 20x), biases without
  weight decay; poly schedule ``lr * (1 - it / iterations) ** poly_power`` set before every
  iteration (deeplab-pytorch updates it every 10 iterations; the difference is negligible).

The loop is :func:`wsss.stages.trainer_utils.run_training` (resume, checkpoints, metrics, DDP).
Outputs under ``<run>/<train_seg.out>/`` (default ``segmenter/``): ``last.pt`` (iteration,
weights, optimiser, every rank's random state; every ``checkpoint_every`` iterations and at the
end), ``final.pt`` (:func:`~wsss.stages.trained.save_trained`, segmenter meta + initialisation,
label source, recipe), ``train_seg.log``, ``metrics.jsonl`` (per ``log_every`` iterations:
``iteration``, ``epoch``, ``lr``, ``loss`` = the summed MSC loss, ``loss_scale<i>`` per scale and
``loss_fused``), ``tensorboard/train_seg/`` and ``label_source.json`` (folder + coverage, see
:mod:`wsss.stages.label_source`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wsss.data.transforms import Compose, Normalize, RandomCrop, RandomHFlip, RandomScale
from wsss.data.voc import VOCDataset, build_dataset_info
from wsss.engine.distributed import init_distributed, unwrap_model
from wsss.engine.logger import RunLogger
from wsss.engine.schedule import PolySchedule
from wsss.engine.seed import seed_everything
from wsss.errors import ConfigError, WsssError
from wsss.io import IGNORE
from wsss.models import build_deeplab_v2, find_backbone
from wsss.models.backbones.base import InputNorm
from wsss.stages.label_source import check_label_files, label_source, report_label_source, training_ids
from wsss.stages.trained import save_trained
from wsss.stages.trainer_utils import (
    channels_last_enabled,
    describe_speed,
    group_learning_rates,
    make_epoch_sampler,
    make_train_loader,
    per_rank_batch_size,
    run_training,
    sgd_with_lr_groups,
)

FINAL_NAME = "final.pt"


# ------------------------------------------------------------------------------------- network

def input_norm_of(model: nn.Module) -> InputNorm:
    """The input normalisation of the backbone inside ``model`` (DDP / MultiScale unwrapped)."""
    backbone = find_backbone(unwrap_model(model))
    return getattr(backbone, "input_norm", InputNorm())


def neutral_colour(norm: InputNorm) -> tuple[int, int, int]:
    """The RGB colour (0..255) that ``norm`` maps to (about) 0: the padding colour of crops."""
    rgb = [255.0 * m / norm.max_value for m in norm.mean]
    if norm.bgr:
        rgb = rgb[::-1]
    return tuple(int(round(min(255.0, max(0.0, v)))) for v in rgb)


def build_segmenter(tcfg, num_labels: int, pretrained: str | None) -> nn.Module:
    """DeepLab-v2 of ``train_seg`` with ``num_labels`` (C + 1) outputs."""
    return build_deeplab_v2(tcfg.backbone, num_labels, output_stride=tcfg.output_stride,
                            pretrained=pretrained or None, rates=tuple(tcfg.aspp_rates),
                            scales=tuple(tcfg.msc_scales), freeze_bn=tcfg.freeze_bn,
                            min_loaded_share=tcfg.pretrained_min_share)


def segmenter_meta(tcfg, num_labels: int, norm: InputNorm, extra: dict[str, Any] | None = None) -> dict:
    """Meta of a segmenter ``final.pt`` (see :mod:`wsss.stages.trained`), plus provenance.

    ``mean``/``std``: the backbone's input normalisation per RGB channel on the 0..1 scale (as in
    classifier files); ``input_norm``: the exact one (:class:`InputNorm` fields, e.g. Caffe BGR
    0..255 for ``resnet101_caffe``). Prediction rebuilds the backbone, which carries it."""
    order = slice(None, None, -1) if norm.bgr else slice(None)
    meta = {
        "kind": "segmenter",
        "backbone": tcfg.backbone,
        "output_stride": int(tcfg.output_stride),
        "num_classes": int(num_labels),
        "rates": [int(r) for r in tcfg.aspp_rates],
        "msc_scales": [float(s) for s in tcfg.msc_scales],
        "mean": [float(v) / norm.max_value for v in norm.mean[order]],
        "std": [float(v) / norm.max_value for v in norm.std[order]],
        "input_norm": {"mean": [float(v) for v in norm.mean], "std": [float(v) for v in norm.std],
                       "bgr": bool(norm.bgr), "max_value": float(norm.max_value)},
    }
    meta.update(extra or {})
    return meta


# ---------------------------------------------------------------------------------------- loss

def resize_labels(labels: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``(B, H, W)`` int64 labels -> ``(B, h, w)`` by nearest neighbour with PIL's rule (pixel
    centres), as deeplab-pytorch's ``resize_labels``."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    resized = F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest-exact")
    return resized[:, 0].long()


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """Mean cross-entropy over the pixels whose label is not ``ignore_index`` (0 when there is none).
    ``logits`` (B, K, h, w), ``labels`` (B, h, w) int64."""
    total = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    count = (labels != ignore_index).sum()
    return total / count.clamp(min=1)


def msc_loss(outputs: torch.Tensor | Sequence[torch.Tensor], labels: torch.Tensor
             ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Sum over the outputs (each scale's logits, then the fused max) of
    :func:`masked_cross_entropy` against ``labels`` (B, H, W) resized to each output's size.
    Returns ``(total, [term per output])``."""
    if isinstance(outputs, torch.Tensor):
        outputs = [outputs]
    terms = [masked_cross_entropy(logit, resize_labels(labels, logit.shape[-2:])) for logit in outputs]
    return torch.stack(terms).sum(), terms


# ---------------------------------------------------------------------------------------- data

def train_transform(tcfg, norm: InputNorm) -> Compose:
    """Random scale, pad + crop (``pad_at="end"``), flip, then tensors: image (3, S, S) float in
    [0, 1] (normalised on the device by ``norm``), mask (S, S) int64."""
    steps: list = [RandomScale(*tcfg.scale_range),
                   RandomCrop(tcfg.crop_size, image_fill=neutral_colour(norm), pad_at="end")]
    if tcfg.flip:
        steps.append(RandomHFlip())
    steps.append(Normalize(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)))
    return Compose(steps)


# ------------------------------------------------------------------------------------ training

def check_segmenter_config(tcfg) -> None:
    """Errors for settings that cannot train (named by key)."""
    if tcfg.iterations < 1:
        raise ConfigError(f"config key 'train_seg.iterations' must be at least 1, got {tcfg.iterations}")
    if not tcfg.lr >= 0:
        raise ConfigError(f"config key 'train_seg.lr' must not be negative, got {tcfg.lr}")
    if tcfg.accumulate < 1:
        raise ConfigError(f"config key 'train_seg.accumulate' must be at least 1, got {tcfg.accumulate}")
    if len(tcfg.scale_range) != 2 or not 0 < tcfg.scale_range[0] <= tcfg.scale_range[1]:
        raise ConfigError(f"config key 'train_seg.scale_range' = {list(tcfg.scale_range)}: give "
                          f"[min, max] with 0 < min <= max")
    if tcfg.crop_size < 1:
        raise ConfigError(f"config key 'train_seg.crop_size' must be positive, got {tcfg.crop_size}")


def zero_padding(images: torch.Tensor, content_boxes: torch.Tensor,
                 flipped: torch.Tensor | None = None) -> torch.Tensor:
    """Set the normalised ``images`` (B, 3, S, S) to exactly 0 outside each crop's content:
    ``content_boxes`` (B, 4) = (y0, x0, y1, x1) from :class:`RandomCrop`, mirrored where
    ``flipped`` (B,) says the crop was flipped afterwards. (The padding colour is the mean rounded
    to integers, so it is only ~0 after normalisation.)"""
    width = images.shape[-1]
    keep = torch.zeros((images.shape[0], 1) + images.shape[2:], dtype=torch.bool, device=images.device)
    flips = [False] * len(keep) if flipped is None else [bool(f) for f in flipped.tolist()]
    for b, ((y0, x0, y1, x1), flip) in enumerate(zip(content_boxes.tolist(), flips)):
        if flip:
            x0, x1 = width - x1, width - x0
        keep[b, :, y0:y1, x0:x1] = True
    return images * keep


def make_step(norm: InputNorm, accumulate: int):
    """The forward/backward of one iteration for :func:`~wsss.stages.trainer_utils.run_training`.

    The loader's batch holds the ``accumulate`` micro-batches of one optimiser step (this rank's
    ``batch_size / world_size`` images each, consecutive in the sampler's order). The first
    ``accumulate - 1`` are back-propagated here (without DDP gradient sync); the last one is
    returned as ``"loss"`` for the loop to back-propagate (which syncs). Each micro-batch's loss
    is divided by ``accumulate``; the returned ``"loss"`` *value* is the mean over the
    micro-batches (the earlier ones enter as a constant), its gradient that of the last one.
    """

    def step(model: nn.Module, it: int, batch: dict) -> dict[str, torch.Tensor]:
        images = zero_padding(norm(batch["image"]), batch["content_box"], batch.get("flipped"))
        labels = batch["mask"]
        chunks = list(zip(images.chunk(accumulate), labels.chunk(accumulate)))
        earlier = torch.zeros((), device=images.device)
        branch_sum: torch.Tensor | None = None
        for k, (x, y) in enumerate(chunks):
            last = k == len(chunks) - 1
            no_sync = getattr(model, "no_sync", None)
            with contextlib.nullcontext() if last or no_sync is None else no_sync():
                total, terms = msc_loss(model(x), y)
                scaled = total / accumulate
                if not last:
                    scaled.backward()
                    earlier = earlier + scaled.detach()
            detached = torch.stack([t.detach() for t in terms]) / accumulate
            branch_sum = detached if branch_sum is None else branch_sum + detached
        out = {"loss": scaled + earlier}
        for i, value in enumerate(branch_sum):
            out[f"loss_{branch_name(i, len(branch_sum))}"] = value
        return out

    return step


def branch_name(i: int, count: int) -> str:
    """``single`` (no multi-scale), ``fused`` (the max, last output) or ``scale<i>``."""
    if count == 1:
        return "single"
    return "fused" if i == count - 1 else f"scale{i}"


def train_segmenter(ctx, resume: bool = True, stop_after: int | None = None) -> Path:
    """Train DeepLab-v2 on the training labels of ``ctx.cfg.train_seg`` (module docstring).

    ``resume``: continue from ``<out>/last.pt`` when it exists (same iteration, lr, optimiser
    state and random state). ``stop_after``: stop once this many iterations are done in total and
    return ``last.pt`` (an interruption on purpose, for tests and time-sliced jobs). Returns the
    path of ``final.pt`` otherwise. Every rank calls it; rank 0 logs and writes.
    """
    cfg = ctx.cfg
    tcfg = cfg.train_seg
    check_segmenter_config(tcfg)
    out_dir = ctx.output_path(tcfg.out, "train_seg.out")
    with init_distributed(cfg.run.device) as dist:
        per_rank = per_rank_batch_size(tcfg.batch_size, dist.world_size, "train_seg.batch_size")
        if dist.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            ctx.record("train_seg", str(dist.device), dist.world_size)
        seed_everything(cfg.run.seed, dist.rank)
        if dist.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        info = build_dataset_info(cfg.data)
        num_labels = info.num_labels

        # The labels: an explicit source, every file present, coverage logged and written (rank 0).
        ids = training_ids(ctx)
        source = label_source(ctx, ids)
        check_label_files(source, ids)
        with RunLogger(out_dir, "train_seg", is_main=dist.is_main) as logger:
            if dist.is_main:
                report_label_source(ctx, source, ids, info.num_classes, logger, workers=tcfg.num_workers)
            fresh = not (resume and (out_dir / "last.pt").is_file())
            if fresh and not tcfg.pretrained:
                logger.warning("train_seg.pretrained is empty: the backbone starts from random weights")
            # pretrained weights are only read for a fresh run (a resumed one loads last.pt)
            model = build_segmenter(tcfg, num_labels, tcfg.pretrained if fresh else None)
            norm = input_norm_of(model)
            report = getattr(find_backbone(model), "load_report", None)
            if report is not None:
                logger.info("initialisation %s: %s", tcfg.pretrained, report.summary())
            model.to(dist.device)
            optimizer = sgd_with_lr_groups(model, tcfg.lr, tcfg.weight_decay, tcfg.momentum,
                                           backbone_mult=tuple(tcfg.backbone_lr_mult),
                                           head_mult=tuple(tcfg.head_lr_mult))
            poly = PolySchedule(tcfg.lr, tcfg.iterations, tcfg.poly_power)

            data_cfg = dataclasses.replace(cfg.data, mask_dir=str(source.folder), mask_ext=source.ext)
            dataset = VOCDataset(data_cfg, tcfg.split, info, load_image=True, load_mask=True,
                                 transform=train_transform(tcfg, norm), seed=cfg.run.seed)
            sampler = make_epoch_sampler(dataset, dist, shuffle=True, seed=cfg.run.seed)
            # one loader batch = the `accumulate` micro-batches of one optimiser step
            loader = make_train_loader(dataset, sampler, per_rank * tcfg.accumulate, tcfg.num_workers,
                                       drop_last=True, device=dist.device)
            if len(loader) == 0:
                raise WsssError(f"train_seg.batch_size x accumulate = {tcfg.batch_size * tcfg.accumulate} "
                                f"images per iteration, more than the {len(dataset)} training images: lower them")
            images_per_it = tcfg.batch_size * tcfg.accumulate
            logger.info("train-seg: DeepLab-v2 %s (output stride %d, ASPP %s, MSC %s, initialisation %s), "
                        "%d labels, %d training images; %d iterations of %d images (%d per pass x %d "
                        "accumulated, %d per process per pass)", tcfg.backbone, tcfg.output_stride,
                        list(tcfg.aspp_rates), list(tcfg.msc_scales), tcfg.pretrained or "random",
                        num_labels, len(dataset), tcfg.iterations, images_per_it, tcfg.batch_size,
                        tcfg.accumulate, per_rank)
            logger.info("SGD momentum %g, weight decay %g, lr per group %s", tcfg.momentum, tcfg.weight_decay,
                        {k: round(v, 8) for k, v in group_learning_rates(optimizer).items()})
            result = run_training(model, optimizer, loader, sampler, dist=dist, out_dir=out_dir,
                                  logger=logger, max_iters=tcfg.iterations,
                                  set_lr=lambda it: poly.apply(optimizer, it),
                                  step=make_step(norm, tcfg.accumulate), seed=cfg.run.seed, resume=resume,
                                  checkpoint_every=tcfg.checkpoint_every, log_every=tcfg.log_every,
                                  stop_after=stop_after, desc="train-seg",
                                  channels_last=channels_last_enabled(cfg.run.channels_last, dist.device))
            if result.iterations_run:
                logger.info("trained %d iterations in %s", result.iterations_run,
                            describe_speed(result, images_per_it))
            if not result.finished:
                logger.info("stopped at iteration %d of %d; %s resumes", result.iterations,
                            tcfg.iterations, result.checkpoint)
                return result.checkpoint
            final = out_dir / FINAL_NAME
            if dist.is_main:
                extra = {"dataset": info.name, "class_names": list(info.class_names),
                         "supervision": source.supervision, "labels": str(source.folder),
                         "label_source": source.description, "split": tcfg.split,
                         "pretrained": tcfg.pretrained or "random", "iterations": int(tcfg.iterations),
                         "images_per_iteration": int(images_per_it), "crop_size": int(tcfg.crop_size)}
                save_trained(final, result.model, segmenter_meta(tcfg, num_labels, norm, extra))
                logger.info("final weights: %s", final)
    return final
