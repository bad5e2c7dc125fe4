"""`wsss train-iam`: NSROM's integral attention model (IAM, METHODS B.2).

A second network (backbone ``model.*``, head ``iam``: 3x3 convs with ReLU, then a bare 1x1 conv
to C, no GAP) learns pixel targets t = map / 255 from the accumulated attention maps that
``wsss train-cls`` (method nsrom) exported to ``<run>/<iam.attention>/<id>.npz`` (``classes`` (K,)
int64 1-based, ``maps`` (K, h, w) uint8). Loss: :func:`wsss.methods.nsrom.iam_loss` over **all C
channels**: a class absent from the image (or without a map) has target 0 everywhere, as the
official OAA code (its IAM dataset fills a zero (C, h, w) array with the labelled classes' maps).

The maps were accumulated at the classifier's feature size for ``train_cls.square_size`` inputs;
the IAM squashes images to the same size (colour jitter only, no flip, no crop: the targets have
fixed positions), so with the same backbone and output stride the sizes match. A mismatch is an
error that says so.

Recipe: ``iam.epochs``, ``iam.batch_size`` (global), base lr ``iam.lr`` with the multipliers,
momentum / Nesterov / weight decay and schedule (``step_epochs``, ``step_gamma``) of
``train_cls``. Checkpoints, resume, logs and DDP as ``train-cls``
(:func:`wsss.stages.trainer_utils.run_training`). Outputs in ``<run>/<iam.out>/`` (default
``iam/``): ``last.pt``, ``final.pt`` (meta: kind classifier, method nsrom, head ``iam``,
input_size = square_size), ``metrics.jsonl``, ``train_iam.log``, ``tensorboard/train_iam/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from wsss.config import Config
from wsss.data.transforms import ColorJitter, Compose, Normalize, SquareResize
from wsss.data.voc import VOCDataset, build_dataset_info
from wsss.engine.logger import RunLogger
from wsss.engine.distributed import init_distributed
from wsss.engine.seed import seed_everything
from wsss.errors import ConfigError, DataError, WsssError
from wsss.io import load_npz
from wsss.methods.nsrom import iam_loss
from wsss.stages.context import StageContext
from wsss.stages.train_classifier import (
    FINAL_NAME,
    build_training_model,
    classifier_meta,
    effective_momentum,
    make_lr_setter,
    warn_on_normalisation,
)
from wsss.stages.trained import save_trained
from wsss.stages.trainer_utils import (
    channels_last_enabled,
    describe_speed,
    make_epoch_sampler,
    make_train_loader,
    per_rank_batch_size,
    run_training,
    sgd_with_lr_groups,
)

IAM_HEAD = "iam"


def attention_targets(classes: np.ndarray, maps: np.ndarray, num_classes: int,
                      where: str = "attention maps") -> np.ndarray:
    """Pixel targets of one image: ``(C, h, w) float32`` in [0, 1]; channel ``c - 1`` holds
    ``maps[k] / 255`` for ``classes[k] == c`` (1-based) and every other channel is 0."""
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    maps = np.asarray(maps)
    if maps.ndim != 3 or maps.shape[0] != classes.size:
        raise DataError(f"{where}: 'maps' must be (K, h, w) with K = len(classes) = {classes.size}, "
                        f"got {maps.shape}")
    if classes.size and (classes.min() < 1 or classes.max() > num_classes):
        raise DataError(f"{where}: classes {classes.tolist()} are outside 1..{num_classes}")
    target = np.zeros((num_classes,) + maps.shape[1:], dtype=np.float32)
    target[classes - 1] = maps.astype(np.float32) / 255.0
    return target


class AttentionTargetDataset(Dataset):
    """Items of ``base`` (a :class:`VOCDataset`) plus ``target`` ``(C, h, w) float32`` from
    ``<attention_dir>/<id>.npz``. Every id must have its file (checked at construction)."""

    def __init__(self, base: VOCDataset, attention_dir: str | Path, num_classes: int):
        self.base = base
        self.attention_dir = Path(attention_dir)
        self.num_classes = num_classes
        missing = [i for i in base.ids if not self.path(i).is_file()]
        if missing:
            raise DataError(f"accumulated attention missing for {len(missing)} of {len(base.ids)} training "
                            f"images (first: expected {self.path(missing[0])}); run `wsss train-cls` with "
                            f"train_cls.method=nsrom (it exports them) or set iam.attention")

    def path(self, image_id: str) -> Path:
        return self.attention_dir / f"{image_id}.npz"

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        sample = self.base[index]
        path = self.path(sample["id"])
        arrays = load_npz(path)
        if "classes" not in arrays or "maps" not in arrays:
            raise DataError(f"{path} must hold 'classes' and 'maps' (written by wsss train-cls, method nsrom)")
        sample["target"] = torch.from_numpy(attention_targets(arrays["classes"], arrays["maps"],
                                                              self.num_classes, str(path)))
        return sample


def iam_transform(cfg: Config) -> Compose:
    """Square resize to ``train_cls.square_size`` + colour jitter + normalisation (no flip/crop)."""
    tc = cfg.train_cls
    return Compose([SquareResize(tc.square_size), ColorJitter(*tc.color_jitter), Normalize(tc.mean, tc.std)])


def check_iam_config(cfg: Config) -> None:
    """Errors for settings that cannot train (named by key)."""
    if cfg.iam.epochs < 1:
        raise ConfigError(f"config key 'iam.epochs' must be at least 1, got {cfg.iam.epochs}")
    if not cfg.iam.lr >= 0:
        raise ConfigError(f"config key 'iam.lr' must not be negative, got {cfg.iam.lr}")
    if not cfg.data.root:
        raise ConfigError("config key 'data.root' is empty: give the dataset folder, "
                          "e.g. --set data.root=/data/VOC2012")


def train_iam(ctx: StageContext, resume: bool = True, stop_after: int | None = None) -> Path:
    """Train the integral attention model; returns the path of ``final.pt`` (or ``last.pt`` when
    ``stop_after`` stopped it early; tests only). See the module docstring."""
    cfg = ctx.cfg
    check_iam_config(cfg)
    tc, ic = cfg.train_cls, cfg.iam
    out_dir = ctx.output_path(ic.out, "iam.out")
    attention_dir = ctx.path(ic.attention)
    with init_distributed(cfg.run.device) as dist:
        if dist.is_main:
            ctx.record("train_iam", str(dist.device), dist.world_size)
        seed_everything(cfg.run.seed, dist.rank)
        info = build_dataset_info(cfg.data)
        num_classes = info.num_classes
        per_rank = per_rank_batch_size(ic.batch_size, dist.world_size, "iam.batch_size")
        base = VOCDataset(cfg.data, cfg.data.train_split, info, load_image=True,
                          transform=iam_transform(cfg), seed=cfg.run.seed)
        dataset = AttentionTargetDataset(base, attention_dir, num_classes)
        sampler = make_epoch_sampler(dataset, dist, shuffle=True, seed=cfg.run.seed)
        loader = make_train_loader(dataset, sampler, per_rank, tc.num_workers, drop_last=False,
                                   device=dist.device)
        iters_per_epoch = len(loader)
        max_iters = ic.epochs * iters_per_epoch

        model = build_training_model(cfg, IAM_HEAD, num_classes, dist)
        optimizer = sgd_with_lr_groups(model, ic.lr, tc.weight_decay, effective_momentum(cfg), tc.nesterov,
                                       tc.backbone_lr_mult, tc.head_lr_mult)
        set_lr = make_lr_setter(cfg, optimizer, ic.lr, max_iters, iters_per_epoch)

        def step(net: nn.Module, it: int, batch: dict) -> dict[str, torch.Tensor]:
            _, maps = net(batch["image"])
            target = batch["target"]
            if maps.shape != target.shape:
                raise WsssError(
                    f"the IAM's maps are {tuple(maps.shape[-2:])} but the accumulated maps in {attention_dir} "
                    f"are {tuple(target.shape[-2:])}: train the IAM with the classifier's model.backbone, "
                    f"model.output_stride and train_cls.square_size ({tc.square_size}), or re-export the maps")
            loss = iam_loss(maps, target)
            return {"loss": loss}

        with RunLogger(out_dir, "train_iam", is_main=dist.is_main) as logger:
            logger.info("train-iam: %s, %d classes, %d images at %dx%d, targets from %s, global batch %d "
                        "(%d per process), %d epochs", cfg.model.backbone, num_classes, len(dataset),
                        tc.square_size, tc.square_size, attention_dir, ic.batch_size, per_rank, ic.epochs)
            warn_on_normalisation(cfg, model.backbone, logger)
            result = run_training(model, optimizer, loader, sampler, dist=dist, out_dir=out_dir, logger=logger,
                                  max_iters=max_iters, set_lr=set_lr, step=step, seed=cfg.run.seed,
                                  resume=resume, checkpoint_every=tc.checkpoint_every,
                                  log_every=tc.log_every, stop_after=stop_after, desc="train-iam",
                                  channels_last=channels_last_enabled(cfg.run.channels_last, dist.device))
            if result.iterations_run:
                logger.info("trained %d iterations in %s", result.iterations_run,
                            describe_speed(result, ic.batch_size))
            if not result.finished:
                logger.info("stopped at iteration %d of %d; %s resumes", result.iterations, max_iters,
                            result.checkpoint)
                return result.checkpoint
            final = out_dir / FINAL_NAME
            if dist.is_main:
                meta = classifier_meta(cfg, result.model, num_classes, info.class_names, IAM_HEAD, max_iters)
                meta.update(method="nsrom", input_size=int(tc.square_size))
                save_trained(final, result.model, meta)
                logger.info("final weights: %s", final)
    return final
