"""Distributed training helpers: one code path for 1 process and for ``torchrun`` jobs.

``init_distributed`` reads the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``). Without them (or with ``WORLD_SIZE=1``) no process group is
created and every helper below degrades to the single-process behaviour.

Usage::

    with init_distributed(cfg.run.device) as ctx:      # cleanup() on exit
        model = wrap_ddp(model.to(ctx.device), ctx)
        sampler = make_sampler(dataset, ctx, shuffle=True, seed=cfg.run.seed)
        ...

Exiting a gloo job without ``barrier()`` then ``destroy_process_group()`` makes it abort in a
fraction of runs; :func:`cleanup` does exactly that sequence and is what the context manager calls.
"""

from __future__ import annotations

import datetime
import inspect
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Sized, TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from wsss.errors import ConfigError

T = TypeVar("T")

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:(\d+))$")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job.

    ``backend`` is the process group's backend (``"gloo"``/``"nccl"``), or ``None`` when the job
    runs as a single process without a process group.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """True on rank 0: the only rank that logs, writes checkpoints and writes summaries."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group with more than one process exists."""
        return self.backend is not None and self.world_size > 1

    def __enter__(self) -> "DistContext":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # After an error on this rank the other ranks may never reach the barrier: skip it.
        cleanup(barrier_first=exc_type is None)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer "
                          f"(it is set by torchrun; unset it to run as one process)") from None


def resolve_device(spec: str = "auto", local_rank: int = 0, world_size: int = 1) -> torch.device:
    """The device for this process from ``run.device``: ``auto | cpu | cuda | cuda:N``.

    ``auto`` and ``cuda`` pick ``cuda:<LOCAL_RANK>`` (``auto`` falls back to the CPU without CUDA).
    ``cuda:N`` names one GPU and is only valid for a single process per node.
    """
    match = _DEVICE_RE.match(str(spec).strip())
    if not match:
        raise ConfigError(f"run.device: unknown device {spec!r}; use auto, cpu, cuda or cuda:N")
    kind = match.group(1)
    if kind == "cpu" or (kind == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"run.device: {spec!r} asked for but CUDA is not available; "
                          f"use run.device=cpu or auto")
    count = torch.cuda.device_count()
    if match.group(2) is not None:
        if world_size > 1:
            raise ConfigError(f"run.device: {spec!r} names one GPU but {world_size} processes run; "
                              f"use run.device=cuda (one GPU per local rank) or CUDA_VISIBLE_DEVICES")
        index = int(match.group(2))
    else:
        index = local_rank
    if index >= count:
        raise ConfigError(f"run.device: GPU {index} asked for but only {count} visible; "
                          f"start at most {count} processes per node or set run.device")
    return torch.device("cuda", index)


def init_distributed(device: str = "auto", backend: str = "auto",
                     timeout_s: float = 1800.0) -> DistContext:
    """Join the torchrun job described by the environment, or describe a single-process run.

    ``backend``: ``auto`` (NCCL on CUDA, gloo on CPU), ``gloo`` or ``nccl``. Calling it again in
    a process whose group exists reuses that group.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"environment: RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world_size})")
    dev = resolve_device(device, local_rank, world_size)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size == 1:
        return DistContext(0, 1, local_rank, dev, None)

    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ConfigError(f"distributed backend {backend!r} unknown; use auto, gloo or nccl")
    if backend == "nccl" and dev.type != "cuda":
        raise ConfigError("distributed backend nccl needs CUDA devices; use gloo for CPU runs")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ConfigError(f"environment: WORLD_SIZE={world_size} but {name} is not set; "
                              f"start the job with torchrun")
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {}
        if backend == "nccl" and "device_id" in inspect.signature(dist.init_process_group).parameters:
            kwargs["device_id"] = dev  # binds the communicator to this GPU (torch >= 2.3)
        dist.init_process_group(backend=backend, init_method="env://", rank=rank,
                                world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    return DistContext(rank, world_size, local_rank, dev, dist.get_backend())


def _store_rendezvous(tag: str) -> None:
    """Every rank signs ``tag`` in the job's key-value store and waits for all signatures: a
    meeting point that, unlike a gloo barrier, leaves no message of the process group in flight."""
    store = dist.distributed_c10d._get_default_store()
    rank, world = dist.get_rank(), dist.get_world_size()
    store.set(f"wsss/{tag}/{rank}", "1")
    store.wait([f"wsss/{tag}/{r}" for r in range(world)])


def cleanup(barrier_first: bool = True) -> None:
    """End the job cleanly: barrier, then ``destroy_process_group``. No-op without a group.

    With gloo, a rank that destroys its group while another rank is still finishing the barrier's
    last message makes that rank abort ("terminate called without an active exception"); the
    ranks therefore also meet in the store, then destroy, then meet once more before any of them
    (rank 0 hosts the store) may exit."""
    if not dist.is_initialized():
        return
    several = dist.get_world_size() > 1
    try:
        if barrier_first:
            barrier()
        if several:
            _store_rendezvous("before_destroy")
    finally:
        store = dist.distributed_c10d._get_default_store() if several else None
        rank, world = (dist.get_rank(), dist.get_world_size()) if several else (0, 1)
        dist.destroy_process_group()
        if store is not None:
            try:
                store.set(f"wsss/destroyed/{rank}", "1")
                store.wait([f"wsss/destroyed/{r}" for r in range(world)])
            except (RuntimeError, OSError):
                pass   # the job is over; rank 0's store may already be gone


def get_rank() -> int:
    """This process's rank (0 without a process group; ``RANK`` before the group exists)."""
    if dist.is_initialized():
        return dist.get_rank()
    return _env_int("RANK", 0)


def get_world_size() -> int:
    """The number of processes (1 without a process group)."""
    if dist.is_initialized():
        return dist.get_world_size()
    return 1


def is_main() -> bool:
    """True on rank 0 (and in a single-process run)."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank. No-op without a process group."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def _collective_device() -> torch.device:
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(value: torch.Tensor | float) -> torch.Tensor | float:
    """The mean of ``value`` over ranks (a tensor or a Python number; same kind is returned).

    Every rank must call it. The input is not modified.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    if isinstance(value, torch.Tensor):
        buf = value.detach().to(_collective_device(), dtype=value.dtype if value.is_floating_point()
                                else torch.float64, copy=True)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        buf /= dist.get_world_size()
        return buf.to(value.device)
    buf = torch.tensor(float(value), dtype=torch.float64, device=_collective_device())
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return float(buf.item()) / dist.get_world_size()


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``value`` over ranks (a new tensor on ``value``'s device)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value.clone()
    buf = value.detach().to(_collective_device(), copy=True)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(value.device)


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` from rank ``src`` on every rank (any picklable object). Every rank must call it."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_collective_device())
    return box[0]


def all_gather_object(obj: T) -> list[T]:
    """The list of every rank's ``obj``, in rank order, on every rank."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def wrap_ddp(model: torch.nn.Module, ctx: DistContext,
             find_unused_parameters: bool = False,
             broadcast_buffers: bool = True) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` in a multi-process job, ``model`` itself otherwise.

    The model must already be on ``ctx.device``. DDP copies rank 0's parameters to every rank at
    construction. ``find_unused_parameters=True`` is needed when some parameters get no gradient
    in an iteration (e.g. a branch that is skipped). ``broadcast_buffers=False`` stops copying rank
    0's buffers (BatchNorm statistics) before every forward pass.
    """
    if not ctx.distributed:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    kwargs: dict[str, Any] = {}
    if not broadcast_buffers:  # True is DDP's default (the argument is deprecated in newer torch)
        kwargs["broadcast_buffers"] = False
    return DistributedDataParallel(model, device_ids=device_ids,
                                   find_unused_parameters=find_unused_parameters, **kwargs)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (for ``state_dict`` and attribute access), else ``model``."""
    return model.module if isinstance(model, DistributedDataParallel) else model


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` whose next pass can start part-way through an epoch.

    The order of epoch ``e`` is a function of ``(seed, e)`` only: with ``shuffle`` it is
    ``torch.randperm(n)`` from a generator seeded with ``seed + e``; rank ``r`` of ``R`` takes
    positions ``r, r + R, ...`` of it. A single process (``R = 1``) sees the whole permutation, so
    with a global batch of ``B`` its batch ``k`` holds exactly the samples that ``R`` processes with
    ``B / R`` each see in their batch ``k``.

    ``skip_next(n)`` drops the first ``n`` indices of the next ``iter()`` only (used on resume so the
    skipped samples are never loaded); ``len()`` stays the full per-epoch length.
    """

    def __init__(self, dataset: Sized, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=drop_last)
        self._skip = 0

    def skip_next(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"cannot skip a negative number of samples ({n})")
        self._skip = int(n)

    def __iter__(self) -> Iterator[int]:
        skip, self._skip = self._skip, 0
        indices = list(super().__iter__())
        return iter(indices[skip:])


def make_sampler(dataset: Sized, ctx: DistContext, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False) -> ResumableSampler:
    """The training sampler: this rank's share of a per-epoch permutation seeded by ``seed``.

    A ``DistributedSampler`` (subclass :class:`ResumableSampler`) for every world size; with one
    process it is the seeded shuffle (or the sequential order with ``shuffle=False``). Call
    ``set_epoch(epoch)`` before each epoch (:class:`wsss.engine.loop.IterationLoop` does).
    With ``drop_last=False`` and a dataset size not divisible by the world size, the last few
    indices are repeated to give every rank the same count (the DistributedSampler rule).
    """
    return ResumableSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle,
                            seed=seed, drop_last=drop_last)
