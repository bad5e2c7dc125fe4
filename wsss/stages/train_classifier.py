"""`wsss train-cls`: the classifier of a method, trained on image-level labels.

Methods (``train_cls.method``):

- ``cam`` / ``eps`` (METHODS A.2-A.3): iteration-based (``train_cls.iterations``). Augmentation:
  random long side in ``resize_long`` (bicubic), horizontal flip (``flip``), colour jitter,
  normalisation with ``mean``/``std``, random crop ``crop_size`` with zero padding (the image is
  exactly 0 outside its content after normalisation; a smaller image is placed at a random offset;
  padded saliency = 0). EPS loads the saliency map, which follows every geometric step. Loss: cam =
  multilabel soft-margin; eps = :func:`wsss.methods.eps.eps_total_loss` (``tau``, ``lam``).
- ``nsrom`` (METHODS B.1-B.2): epoch-based (``train_cls.epochs``); images squashed to
  ``square_size`` with colour jitter only (no crop, no flip: online accumulation needs fixed
  positions); multilabel soft-margin. From the second epoch on the raw maps are max-accumulated per
  image id and labelled class (:class:`wsss.methods.oaa.AttentionAccumulator`): ids travel with the
  samples, ranks merge at the end of every epoch, the store is saved in ``last.pt``.

Optimiser: SGD with four parameter groups (backbone weights/biases x ``backbone_lr_mult``, new
layers x ``head_lr_mult``, biases without weight decay). Momentum is ``momentum`` unless
``official_momentum_quirk`` (default true, the EPS/PSA code): then it is ``weight_decay`` (5e-4),
because the official optimiser passes weight decay as SGD's momentum argument.
Schedule: ``poly`` per iteration, or ``step`` (x ``step_gamma`` at ``step_epochs``).

Outputs, in ``<run>/<train_cls.out>/`` (default ``classifier/``):

- ``last.pt``: resumable state (iteration, model, optimiser, every rank's random state, OAA store);
- ``final.pt``: weights + meta (:func:`wsss.stages.trained.save_trained`; kind ``classifier``,
  method, backbone, output_stride, head, num_classes, mean, std, input_size = square_size for
  nsrom else 0, class_names);
- ``metrics.jsonl``, ``train_cls.log`` and ``tensorboard/train_cls/`` (scalars loss, loss_cls,
  loss_sal, lr; eps also fg_share: the share of labelled classes in the foreground set);
- nsrom: ``<run>/<train_cls.oaa_out>/<id>.npz`` (default ``oaa/``) with ``classes`` (K,) int64
  1-based and ``maps`` (K, h, w) uint8 0..255 at the classifier's feature resolution.

Runs as one process or under ``torchrun`` (DDP; ``batch_size`` is the global batch).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss.config import Config
from wsss.data.transforms import (
    ColorJitter,
    Compose,
    Normalize,
    RandomCrop,
    RandomHFlip,
    RandomLongSideResize,
    SquareResize,
)
from wsss.data.voc import VOCDataset, build_dataset_info
from wsss.engine.distributed import DistContext, init_distributed
from wsss.engine.logger import RunLogger
from wsss.engine.schedule import PolySchedule, StepSchedule
from wsss.engine.seed import seed_everything
from wsss.errors import ConfigError, WsssError
from wsss.io import save_npz
from wsss.methods.eps import eps_total_loss
from wsss.methods.oaa import AttentionAccumulator
from wsss.models import build_classifier
from wsss.stages.context import StageContext
from wsss.stages.trained import save_trained
from wsss.stages.trainer_utils import (
    channels_last_enabled,
    EpochSampler,
    convert_sync_batchnorm,
    describe_speed,
    group_learning_rates,
    make_epoch_sampler,
    make_train_loader,
    per_rank_batch_size,
    run_training,
    sgd_with_lr_groups,
)

METHODS = ("cam", "eps", "nsrom")
FINAL_NAME = "final.pt"


# ----------------------------------------------------------------------------- transforms

class ZeroOutsideContent:
    """After :class:`Normalize`: set the image to exactly 0 outside ``sample["content_box"]`` (the
    padding of :class:`RandomCrop`), i.e. the PSA/EPS order "normalise, then crop with zero
    padding". The crop pads with the mean colour first, which is only ~0 after normalisation."""

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        box = sample.get("content_box")
        if box is None or "image" not in sample:
            return sample
        y0, x0, y1, x1 = (int(v) for v in box)
        image = sample["image"]
        if (y0, x0, y1, x1) == (0, 0, image.shape[1], image.shape[2]):
            return sample
        keep = torch.zeros(image.shape[1:], dtype=torch.bool)
        keep[y0:y1, x0:x1] = True
        out = dict(sample)
        out["image"] = image * keep
        return out


def mean_colour(mean: tuple[float, float, float]) -> tuple[int, int, int]:
    """The 0..255 RGB colour of a normalisation mean given on the 0..1 scale."""
    return tuple(int(round(255 * m)) for m in mean)


def classifier_transform(cfg: Config) -> Compose:
    """The training augmentation of ``train_cls.method`` (see the module docstring)."""
    tc = cfg.train_cls
    jitter = ColorJitter(*tc.color_jitter)
    normalize = Normalize(tc.mean, tc.std)
    if tc.method == "nsrom":
        return Compose([SquareResize(tc.square_size), jitter, normalize])
    steps: list = [RandomLongSideResize(tc.resize_long[0], tc.resize_long[1], image_interp="bicubic")]
    if tc.flip:
        steps.append(RandomHFlip())
    steps += [jitter,
              RandomCrop(tc.crop_size, image_fill=mean_colour(tc.mean), saliency_fill=0, pad_at="random"),
              normalize, ZeroOutsideContent()]
    return Compose(steps)


# ----------------------------------------------------------------------------- settings

def check_classifier_config(cfg: Config) -> None:
    """Errors for settings that cannot train (named by key)."""
    tc = cfg.train_cls
    if tc.method not in METHODS:
        raise ConfigError(f"config key 'train_cls.method' must be one of {list(METHODS)}, got {tc.method!r}")
    if tc.method == "nsrom":
        if tc.epochs < 1:
            raise ConfigError(f"config key 'train_cls.epochs' must be at least 1, got {tc.epochs}")
        if tc.flip:
            raise ConfigError("config key 'train_cls.flip' must be false for nsrom: the online accumulated "
                              "attention needs fixed positions (METHODS B.1)")
        if tc.square_size < 1:
            raise ConfigError(f"config key 'train_cls.square_size' must be positive, got {tc.square_size}")
    elif tc.iterations < 1:
        raise ConfigError(f"config key 'train_cls.iterations' must be at least 1, got {tc.iterations}")
    if not tc.lr >= 0:
        raise ConfigError(f"config key 'train_cls.lr' must not be negative, got {tc.lr}")
    if tc.schedule not in ("poly", "step"):
        raise ConfigError(f"config key 'train_cls.schedule' must be poly or step, got {tc.schedule!r}")
    if not cfg.data.root:
        raise ConfigError("config key 'data.root' is empty: give the dataset folder, "
                          "e.g. --set data.root=/data/VOC2012")


def effective_momentum(cfg: Config) -> float:
    """``train_cls.momentum``, or ``weight_decay`` with the official EPS/PSA quirk (A.3)."""
    tc = cfg.train_cls
    return tc.weight_decay if tc.official_momentum_quirk else tc.momentum


def make_lr_setter(cfg: Config, optimizer: torch.optim.Optimizer, base_lr: float, max_iters: int,
                   iters_per_epoch: int):
    """``set_lr(it)`` for ``train_cls.schedule``: poly per iteration or step per epoch."""
    tc = cfg.train_cls
    if tc.schedule == "poly":
        poly = PolySchedule(base_lr, max_iters, tc.poly_power)
        return lambda it: poly.apply(optimizer, it)
    step = StepSchedule(base_lr, tuple(tc.step_epochs), tc.step_gamma)
    return lambda it: step.apply(optimizer, it // iters_per_epoch)


def warn_on_normalisation(cfg: Config, backbone: nn.Module, logger: RunLogger) -> None:
    """Log a warning when ``train_cls.mean/std`` differ from what pretrained weights expect."""
    norm = getattr(backbone, "input_norm", None)
    if norm is None or not cfg.model.pretrained:
        return
    scale = float(norm.max_value)
    expected_mean = [m / scale for m in norm.mean]
    expected_std = [s / scale for s in norm.std]
    if norm.bgr or not (np.allclose(expected_mean, cfg.train_cls.mean, atol=2e-3)
                        and np.allclose(expected_std, cfg.train_cls.std, atol=2e-3)):
        logger.warning("train_cls.mean/std = %s/%s but %s's pretrained weights expect mean %s std %s%s "
                       "(on the 0..1 scale)", list(cfg.train_cls.mean), list(cfg.train_cls.std),
                       cfg.model.backbone, [round(v, 4) for v in expected_mean],
                       [round(v, 4) for v in expected_std], " in BGR order" if norm.bgr else "")


def classifier_meta(cfg: Config, model: nn.Module, num_classes: int, class_names: list[str],
                    head: str, iterations: int) -> dict[str, Any]:
    """The meta of ``final.pt`` (see :mod:`wsss.stages.trained`)."""
    tc = cfg.train_cls
    return {"kind": "classifier", "method": tc.method, "backbone": cfg.model.backbone,
            "output_stride": int(model.output_stride), "head": head, "num_classes": int(num_classes),
            "mean": [float(v) for v in tc.mean], "std": [float(v) for v in tc.std],
            "input_size": int(tc.square_size) if tc.method == "nsrom" else 0,
            "class_names": list(class_names), "iterations": int(iterations)}


def build_training_model(cfg: Config, head: str, num_classes: int, dist: DistContext) -> nn.Module:
    """``build_classifier`` from ``model.*`` on ``dist.device`` (+ global BatchNorm if ``sync_bn``)."""
    m = cfg.model
    model = build_classifier(m.backbone, head, num_classes, output_stride=m.output_stride,
                             pretrained=m.pretrained or None, freeze_bn=m.freeze_bn,
                             frozen_stages=m.frozen_stages,
                             backbone_kwargs={"min_loaded_share": m.pretrained_min_share})
    if cfg.train_cls.sync_bn:
        convert_sync_batchnorm(model, dist.device)
    return model.to(dist.device)


# ------------------------------------------------------------------------------ OAA export

def export_attention(accumulator: AttentionAccumulator, out_dir: str | Path) -> int:
    """Write ``<out_dir>/<id>.npz`` (``classes`` (K,) int64 1-based, ``maps`` (K, h, w) uint8) for
    every image in the store. Returns the number of files written."""
    per_image: dict[str, list[tuple[int, np.ndarray]]] = defaultdict(list)
    for image_id, cls, amap in accumulator.items():
        per_image[image_id].append((cls + 1, amap))
    out_dir = Path(out_dir)
    for image_id, entries in per_image.items():
        save_npz(out_dir / f"{image_id}.npz", classes=np.array([c for c, _ in entries], dtype=np.int64),
                 maps=np.stack([m for _, m in entries]).astype(np.uint8))
    return len(per_image)


# ------------------------------------------------------------------------------- training

def train_classifier(ctx: StageContext, resume: bool = True, stop_after: int | None = None) -> Path:
    """Train the classifier of ``train_cls.method``; returns the path of ``final.pt`` (or of
    ``last.pt`` when ``stop_after`` stopped the run early, as if interrupted; tests only).

    ``resume``: continue from ``<out>/last.pt`` when it exists (same iteration, learning rate,
    optimiser state, random state and, for nsrom, accumulated maps). A run already finished only
    rewrites ``final.pt`` (and the OAA export).
    """
    cfg = ctx.cfg
    check_classifier_config(cfg)
    tc = cfg.train_cls
    out_dir = ctx.output_path(tc.out, "train_cls.out")
    with init_distributed(cfg.run.device) as dist:
        if dist.is_main:
            ctx.record("train_cls", str(dist.device), dist.world_size)
        seed_everything(cfg.run.seed, dist.rank)
        info = build_dataset_info(cfg.data)
        num_classes = info.num_classes
        per_rank = per_rank_batch_size(tc.batch_size, dist.world_size, "train_cls.batch_size")
        dataset = VOCDataset(cfg.data, cfg.data.train_split, info, load_image=True,
                             load_saliency=tc.method == "eps", transform=classifier_transform(cfg),
                             seed=cfg.run.seed)
        sampler: EpochSampler = make_epoch_sampler(dataset, dist, shuffle=True, seed=cfg.run.seed)
        # PSA/EPS drop the last incomplete batch; NSROM must see every image each epoch.
        loader = make_train_loader(dataset, sampler, per_rank, tc.num_workers,
                                   drop_last=tc.method != "nsrom", device=dist.device)
        iters_per_epoch = len(loader)
        if iters_per_epoch == 0:
            raise WsssError(f"train_cls.batch_size = {tc.batch_size} is larger than the training split "
                            f"({len(dataset)} images): lower it")
        max_iters = tc.epochs * iters_per_epoch if tc.method == "nsrom" else tc.iterations

        head = tc.method
        model = build_training_model(cfg, head, num_classes, dist)
        optimizer = sgd_with_lr_groups(model, tc.lr, tc.weight_decay, effective_momentum(cfg), tc.nesterov,
                                       tc.backbone_lr_mult, tc.head_lr_mult)
        set_lr = make_lr_setter(cfg, optimizer, tc.lr, max_iters, iters_per_epoch)

        with RunLogger(out_dir, "train_cls", is_main=dist.is_main) as logger:
            logger.info("train-cls %s: %s, %d classes, %d training images, global batch %d (%d per process), "
                        "%d iterations", tc.method, cfg.model.backbone, num_classes, len(dataset),
                        tc.batch_size, per_rank, max_iters)
            logger.info("SGD momentum %g%s, nesterov %s, weight decay %g, lr per group %s",
                        effective_momentum(cfg), " (official quirk: = weight decay)"
                        if tc.official_momentum_quirk else "", tc.nesterov, tc.weight_decay,
                        {k: round(v, 8) for k, v in group_learning_rates(optimizer).items()})
            warn_on_normalisation(cfg, model.backbone, logger)

            accumulator = AttentionAccumulator(tc.oaa_skip_below) if tc.method == "nsrom" else None
            step = _make_step(cfg, num_classes, accumulator, iters_per_epoch)
            hooks: dict[str, Any] = {}
            if accumulator is not None:
                def save_extra() -> dict:
                    accumulator.all_gather_merge()
                    return {"oaa": accumulator.state_dict()}

                def load_extra(extra: dict) -> None:
                    if "oaa" in extra:
                        accumulator.load_state_dict(extra["oaa"])

                hooks = {"save_extra": save_extra, "load_extra": load_extra,
                         "on_epoch_end": lambda epoch: accumulator.all_gather_merge()}

            result = run_training(model, optimizer, loader, sampler, dist=dist, out_dir=out_dir,
                                  logger=logger, max_iters=max_iters, set_lr=set_lr, step=step,
                                  seed=cfg.run.seed, resume=resume, checkpoint_every=tc.checkpoint_every,
                                  log_every=tc.log_every, stop_after=stop_after, desc="train-cls",
                                  channels_last=channels_last_enabled(cfg.run.channels_last, dist.device), **hooks)
            if result.iterations_run:
                logger.info("trained %d iterations in %s", result.iterations_run,
                            describe_speed(result, tc.batch_size))
            if not result.finished:
                logger.info("stopped at iteration %d of %d; %s resumes", result.iterations, max_iters,
                            result.checkpoint)
                return result.checkpoint
            final = out_dir / FINAL_NAME
            if dist.is_main:
                save_trained(final, result.model,
                             classifier_meta(cfg, result.model, num_classes, info.class_names, head, max_iters))
                logger.info("final weights: %s", final)
                if accumulator is not None:
                    oaa_dir = ctx.output_path(tc.oaa_out, "train_cls.oaa_out")
                    count = export_attention(accumulator, oaa_dir)
                    logger.info("accumulated attention of %d images: %s", count, oaa_dir)
                    if count < len(dataset):
                        logger.warning("%d of %d training images have no accumulated map (epochs < 2, or "
                                       "images without a label)", len(dataset) - count, len(dataset))
    return final


def foreground_share(foreground_set: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Share of the batch's labelled classes that EPS's map selection put in the foreground set.

    foreground_set: (B, C+1) bool; labels: (B, C) multi-hot. Returns a 0-d float tensor in [0, 1]
    (0 for a batch without labels). It is the first thing to look at when EPS's maps stay
    background: a class that never reaches P > 0.5 on salient pixels never leaves the background set.
    """
    in_label = labels.detach() > 0
    count = in_label.sum()
    chosen = (foreground_set[:, :in_label.shape[1]] & in_label).sum()
    return (chosen.float() / count.clamp(min=1)).detach()


def _make_step(cfg: Config, num_classes: int, accumulator: AttentionAccumulator | None,
               iters_per_epoch: int):
    """The forward pass + loss of ``train_cls.method`` (and the OAA update for nsrom)."""
    tc = cfg.train_cls

    def step(model: nn.Module, it: int, batch: dict) -> dict[str, torch.Tensor]:
        logits, maps = model(batch["image"])
        labels = batch["labels"]
        if tc.method == "eps":
            loss, details = eps_total_loss(logits, maps, batch["saliency"], labels, tau=tc.tau, lam=tc.lam)
            return {"loss": loss, "loss_cls": details["loss_cls"], "loss_sal": details["loss_sal"],
                    "fg_share": foreground_share(details["foreground_set"], labels)}
        loss = F.multilabel_soft_margin_loss(logits, labels)
        if accumulator is not None:
            accumulator.update(batch["id"], maps, logits, labels, epoch=it // iters_per_epoch,
                               num_epochs=tc.epochs)
        return {"loss": loss, "loss_cls": loss.detach()}

    return step
