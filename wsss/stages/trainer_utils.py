"""Pieces every training stage shares: data loading per rank, SGD with lr multipliers, batch
statistics across ranks, a metrics log, and one resumable iteration loop.

The loop (:func:`run_training`) is the contract of the training stages (``train-cls``,
``train-iam``; the segmenter can use it too):

- the global batch is split over ranks (:func:`per_rank_batch_size`); the sampler's order is a
  function of ``(seed, epoch)`` only and the dataset's augmentation of ``(seed, epoch, index)``
  (:class:`EpochSampler` passes the epoch on to the dataset), so 1 and N processes see the same
  images with the same augmentation, and a resumed run the same as an uninterrupted one;
- ``step(model, it, batch)`` returns a dict of scalar losses whose ``"loss"`` is back-propagated;
- ``last.pt`` (:data:`CHECKPOINT_KEYS`) is written atomically every ``checkpoint_every``
  iterations and at the end; every rank's random state is in it, so ``resume`` continues with the
  same iteration, learning rate, optimiser state and random draws;
- rank 0 writes TensorBoard scalars, ``metrics.jsonl`` (one JSON row per logged iteration:
  ``iteration`` = completed iterations, ``epoch``, ``lr`` = base lr, and the losses averaged over
  ranks) and a progress line/bar with ETA.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sized

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.utils.data import DataLoader

from wsss.engine.checkpoint import (
    CheckpointError,
    CheckpointManager,
    gather_rng_states,
    restore_rank_rng_state,
)
from wsss.engine.distributed import DistContext, ResumableSampler, unwrap_model, wrap_ddp
from wsss.engine.logger import RunLogger
from wsss.engine.loop import IterationLoop
from wsss.engine.seed import derive_seed, seed_everything, worker_init_fn
from wsss.errors import ConfigError, WsssError
from wsss.io import write_text_atomic
from wsss.models import is_frozen_bn, param_groups

#: What ``last.pt`` of a training stage holds.
CHECKPOINT_KEYS = ("iteration", "model", "optimizer", "rng", "world_size", "lr", "extra")
METRICS_FILE = "metrics.jsonl"


# ----------------------------------------------------------------------------------- data

def per_rank_batch_size(global_batch: int, world_size: int, key: str) -> int:
    """``global_batch // world_size``; a :class:`ConfigError` naming ``key`` when it does not divide."""
    if global_batch < 1:
        raise ConfigError(f"config key '{key}' must be at least 1, got {global_batch}")
    if global_batch % world_size:
        raise ConfigError(f"config key '{key}' = {global_batch} is the global batch and must be divisible "
                          f"by the number of processes ({world_size}); change it or --nproc_per_node")
    return global_batch // world_size


class EpochSampler(ResumableSampler):
    """A :class:`ResumableSampler` that also calls ``dataset.set_epoch(epoch)`` (when the dataset
    has it), so the augmentation stream of every item follows the epoch (see
    :class:`wsss.data.voc.VOCDataset`). Call ``set_epoch`` before creating the epoch's iterator
    (:class:`wsss.engine.loop.IterationLoop` does) so worker processes receive the new epoch."""

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


def make_epoch_sampler(dataset: Sized, dist: DistContext, shuffle: bool = True,
                       seed: int = 0) -> EpochSampler:
    """This rank's share of a per-epoch permutation seeded by ``seed`` (DistributedSampler rule)."""
    return EpochSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=shuffle, seed=seed)


def make_train_loader(dataset, sampler, batch_size: int, num_workers: int, drop_last: bool,
                      device: torch.device) -> DataLoader:
    """A training DataLoader over ``sampler`` (``batch_size`` per rank; workers seeded by
    :func:`wsss.engine.seed.worker_init_fn`, their base seed set per epoch by the loop)."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last, pin_memory=device.type == "cuda",
                      worker_init_fn=worker_init_fn if num_workers else None,
                      persistent_workers=False)


def channels_last_enabled(setting: str, device: torch.device) -> bool:
    """``run.channels_last``: ``always``, ``never``, or ``auto`` (on CUDA only)."""
    return setting == "always" or (setting == "auto" and device.type == "cuda")


def batch_to_device(batch: Mapping[str, Any], device: torch.device, channels_last: bool = False) -> dict[str, Any]:
    """Tensors of a collated batch moved to ``device`` (4-D float tensors in channels-last
    layout when ``channels_last``); other values (ids) unchanged."""
    non_blocking = device.type == "cuda"

    def move(v: torch.Tensor) -> torch.Tensor:
        v = v.to(device, non_blocking=non_blocking)
        if channels_last and v.dim() == 4 and v.is_floating_point():
            v = v.contiguous(memory_format=torch.channels_last)
        return v

    return {k: move(v) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


# ------------------------------------------------------------------------------ optimiser

def sgd_with_lr_groups(model: nn.Module, lr: float, weight_decay: float, momentum: float,
                       nesterov: bool = False, backbone_mult: tuple[float, float] = (1.0, 2.0),
                       head_mult: tuple[float, float] = (10.0, 20.0)) -> torch.optim.SGD:
    """SGD over :func:`wsss.models.param_groups` (backbone / new layers x weights / biases; biases
    without weight decay; frozen parameters left out). Every group carries ``lr_mult`` so the
    schedules of :mod:`wsss.engine.schedule` can set ``lr = base_lr * lr_mult * factor``."""
    groups = param_groups(model, lr, weight_decay, backbone_mult=tuple(backbone_mult),
                          new_mult=tuple(head_mult))
    mults = {"backbone_weight": backbone_mult[0], "backbone_bias": backbone_mult[1],
             "new_weight": head_mult[0], "new_bias": head_mult[1]}
    for group in groups:
        group["lr_mult"] = float(mults[group["name"]])
    if not groups:
        raise ConfigError("the model has no trainable parameter (every stage frozen?); "
                          "lower model.frozen_stages")
    if nesterov and momentum <= 0:
        raise ConfigError("Nesterov SGD needs a positive momentum; set train_cls.momentum "
                          "or turn train_cls.nesterov off")
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)


def group_learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``{group name: lr}`` (for the start-of-training log line)."""
    return {g.get("name", str(i)): g["lr"] for i, g in enumerate(optimizer.param_groups)}


# --------------------------------------------------------------------- batch statistics

class _GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics span every rank's batch (sums all-reduced with a
    differentiable collective, so gradients are those of one big batch). Works with gloo on the
    CPU, where ``torch.nn.SyncBatchNorm`` does not. Same parameters, buffers and state-dict keys
    as ``nn.BatchNorm2d``; in eval mode (or without a process group) it is a plain BatchNorm2d
    except that the batch variance is computed from float64 sums."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = (0, 2, 3)
        local = torch.stack([torch.full((x.shape[1],), float(x.numel() // x.shape[1]), dtype=torch.float64,
                                        device=x.device),
                             x.double().sum(dims), (x.double() ** 2).sum(dims)])
        if torch_dist.is_initialized() and torch_dist.get_world_size() > 1:
            local = all_reduce(local)
        count, total, total_sq = local[0], local[1], local[2]
        mean = total / count
        var = (total_sq / count - mean ** 2).clamp_min(0.0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * count / (count - 1).clamp_min(1.0)
                self.running_mean.mul_(1 - factor).add_(factor * mean.to(self.running_mean.dtype))
                self.running_var.mul_(1 - factor).add_(factor * unbiased.to(self.running_var.dtype))
        shape = (1, -1, 1, 1)
        y = (x - mean.to(x.dtype).view(shape)) * torch.rsqrt(var.to(x.dtype).view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> int:
    """Make every trainable (not frozen) BatchNorm2d compute its statistics over the global batch:
    ``torch.nn.SyncBatchNorm`` on CUDA, :class:`_GlobalBatchNorm2d` on the CPU. Parameters stay
    the same objects (build the optimiser afterwards anyway). Returns the number converted."""
    if device.type == "cuda":
        count = sum(isinstance(m, nn.BatchNorm2d) and not is_frozen_bn(m) for m in model.modules())
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if converted is not model:  # only happens when model itself is a BatchNorm
            raise ValueError("convert_sync_batchnorm needs a container module")
        return count
    count = 0
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = _GlobalBatchNorm2d
            count += 1
    return count


# ------------------------------------------------------------------------------- metrics

class MetricsLog:
    """``<dir>/metrics.jsonl`` on the main rank: one JSON object per logged iteration. Opening it
    at ``start_iter`` drops rows past that iteration (left by a run that died after its last
    checkpoint), so a resumed run's file reads like an uninterrupted one."""

    def __init__(self, directory: str | Path, start_iter: int = 0, enabled: bool = True):
        self.path = Path(directory) / METRICS_FILE
        self.enabled = enabled
        if not enabled:
            return
        kept = [row for row in read_metrics(self.path) if row.get("iteration", 0) <= start_iter] \
            if start_iter and self.path.is_file() else []
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def append(self, row: Mapping[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(dict(row)) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` file (a folder is taken as the file's folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _mean_over_ranks(values: Mapping[str, torch.Tensor], dist: DistContext) -> dict[str, float]:
    names = sorted(values)
    stacked = torch.stack([values[k].detach().float().reshape(()) for k in names])
    if dist.distributed:
        stacked = stacked.to(dist.device if dist.backend == "nccl" else torch.device("cpu"))
        torch_dist.all_reduce(stacked, op=torch_dist.ReduceOp.SUM)
        stacked = stacked / dist.world_size
    return {k: float(v) for k, v in zip(names, stacked.cpu().tolist())}


# ---------------------------------------------------------------------------- the loop

@dataclass
class TrainResult:
    """What :func:`run_training` did: ``iterations`` completed in total (resumed ones included),
    ``finished`` when that reached ``max_iters``, ``model`` the trained network (unwrapped),
    ``checkpoint`` the path of ``last.pt``, ``seconds`` and ``iterations_run`` of this call."""

    iterations: int
    finished: bool
    model: nn.Module
    checkpoint: Path
    seconds: float
    iterations_run: int

    @property
    def iterations_per_second(self) -> float:
        return self.iterations_run / self.seconds if self.seconds > 0 else 0.0


StepFn = Callable[[nn.Module, int, dict], Mapping[str, torch.Tensor]]


def _load_state(manager: CheckpointManager, model: nn.Module, optimizer: torch.optim.Optimizer,
                dist: DistContext, seed: int, logger: RunLogger) -> tuple[int, dict | None]:
    state = manager.load_last(map_location="cpu")
    if state is None:
        return 0, None
    path = manager.find_last()
    missing = [k for k in ("iteration", "model", "optimizer") if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}: it was not written by this "
                              f"stage; delete it or start again with --no-resume")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {path} does not fit the configured model/optimiser ({first}); "
                              f"it comes from another configuration: delete it or use --no-resume") from None
    iteration = int(state["iteration"])
    if not restore_rank_rng_state(state.get("rng", []), dist.rank, dist.world_size):
        seed_everything(derive_seed(seed, "resume", iteration) % 2**31, dist.rank)
        logger.warning("checkpoint written by %s processes, resumed with %s: random state re-seeded "
                       "(the run continues correctly but not bit-identically)",
                       state.get("world_size", "?"), dist.world_size)
    logger.info("resumed from %s at iteration %d", path, iteration)
    return iteration, state


def run_training(model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader,
                 sampler: EpochSampler, *, dist: DistContext, out_dir: str | Path, logger: RunLogger,
                 max_iters: int, set_lr: Callable[[int], float], step: StepFn, seed: int,
                 resume: bool = True, checkpoint_every: int = 500, log_every: int = 20,
                 stop_after: int | None = None,
                 save_extra: Callable[[], dict] | None = None,
                 load_extra: Callable[[dict], None] | None = None,
                 on_epoch_end: Callable[[int], None] | None = None,
                 find_unused_parameters: bool = False, desc: str = "train",
                 channels_last: bool = False) -> TrainResult:
    """Train ``model`` (unwrapped, already on ``dist.device``) for ``max_iters`` iterations.

    ``set_lr(it)`` sets the optimiser's rates for 0-based iteration ``it`` and returns the base lr.
    ``step(ddp_model, it, batch)`` runs the forward pass and returns scalar losses with a
    ``"loss"`` key (the batch is already on the device). ``save_extra()`` is called on every rank
    before a checkpoint (it may use collectives) and its dict is stored under ``extra``;
    ``load_extra(extra)`` receives it on resume. ``on_epoch_end(epoch)`` runs on every rank after
    the last iteration of each epoch, before a checkpoint of that iteration.
    ``stop_after``: stop (as if interrupted) once that many iterations are complete, after
    writing ``last.pt`` (tests). ``channels_last``: the model and the batches' images in NHWC
    layout (same results up to float rounding). Returns a :class:`TrainResult`.
    """
    out_dir = Path(out_dir)
    manager = CheckpointManager(out_dir)
    start_iter, state = 0, None
    if resume:
        start_iter, state = _load_state(manager, model, optimizer, dist, seed, logger)
        if state is not None and load_extra is not None:
            load_extra(state.get("extra") or {})
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ddp_model = wrap_ddp(model, dist, find_unused_parameters=find_unused_parameters)
    loop = IterationLoop(max_iters, loader, sampler, start_iter=min(start_iter, max_iters), seed=seed,
                         rank=dist.rank)
    metrics = MetricsLog(out_dir, start_iter, enabled=dist.is_main)
    checkpoint_every = max(1, int(checkpoint_every))
    log_every = max(1, int(log_every))

    def save(done: int, lr: float) -> None:
        extra = save_extra() if save_extra is not None else {}
        rng = gather_rng_states()
        if dist.is_main:
            manager.save({"iteration": done, "model": unwrap_model(ddp_model).state_dict(),
                          "optimizer": optimizer.state_dict(), "rng": rng, "world_size": dist.world_size,
                          "lr": lr, "extra": extra}, done)

    done = loop.start_iter
    started = time.monotonic()
    lr = float("nan")
    if done < max_iters:
        logger.info("%s: iterations %d -> %d (%d per epoch), %d process(es) on %s", desc, done, max_iters,
                    loop.iters_per_epoch, dist.world_size, dist.device)
    ddp_model.train()
    with logger.progress(max_iters, initial=done, desc=desc, every=log_every) as progress:
        for it, batch in loop:
            lr = set_lr(it)
            optimizer.zero_grad(set_to_none=True)
            losses = step(ddp_model, it, batch_to_device(batch, dist.device, channels_last))
            losses["loss"].backward()
            optimizer.step()
            done = it + 1
            stopping = stop_after is not None and done >= stop_after
            if done % log_every == 0 or done == max_iters or stopping:
                values = _mean_over_ranks(losses, dist)
                if not all(math.isfinite(v) for v in values.values()):
                    raise WsssError(f"{desc}: the loss became {values} at iteration {done}; "
                                    f"lower the learning rate or check the data")
                epoch = loop.epoch_of(it)
                logger.scalars({**values, "lr": lr}, done)
                metrics.append({"iteration": done, "epoch": epoch, "lr": lr, **values})
                progress.update(1, loss=values["loss"], lr=lr)
            else:
                progress.update(1)
            if loop.is_epoch_end(it) and on_epoch_end is not None:
                on_epoch_end(loop.epoch_of(it))
            if done % checkpoint_every == 0 or done == max_iters or stopping:
                save(done, lr)
            if stopping:
                break
    logger.flush()
    seconds = time.monotonic() - started
    return TrainResult(done, done >= max_iters, unwrap_model(ddp_model), manager.last_path, seconds,
                       done - loop.start_iter)


def describe_speed(result: TrainResult, images_per_iteration: int) -> str:
    """``12.3 s, 4.05 it/s, 32.4 images/s`` for this call's iterations (global batch)."""
    rate = result.iterations_per_second
    return f"{result.seconds:.1f} s, {rate:.2f} it/s, {rate * images_per_iteration:.1f} images/s"
