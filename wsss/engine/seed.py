"""Seeding: the global generators of a process, DataLoader workers, and derived seeds.

A run has one configured seed. Each rank seeds its global generators with ``seed + rank`` (so ranks
draw different augmentations); anything that must be identical on every rank (the data order) is
seeded from the configured seed alone, inside the sampler.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

_SEED_MOD = 2**63 - 1


def derive_seed(seed: int, *keys: object) -> int:
    """A deterministic seed in ``[0, 2**63 - 1)`` from ``seed`` and any keys (e.g. a name, an epoch).

    Unlike ``hash()``, the value is the same in every process and every Python session.
    """
    text = "/".join([str(int(seed))] + [str(k) for k in keys]).encode("utf-8")
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "little") % _SEED_MOD


def seed_everything(seed: int, rank: int = 0, deterministic: bool = False) -> int:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and CUDA) with ``seed + rank``.

    ``deterministic=True`` also asks cuDNN for deterministic kernels (slower). Returns the seed used.
    """
    effective = int(seed) + int(rank)
    random.seed(effective)
    np.random.seed(effective % 2**32)
    torch.manual_seed(effective)  # also seeds every CUDA device
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return effective


def worker_init_fn(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: seed ``random`` and numpy in a worker from its torch seed.

    torch already seeds each worker with ``base_seed + worker_id`` (``base_seed`` is drawn from the
    loader's generator when its iterator is created); this makes Python's and numpy's generators in
    the worker follow it, so augmentations are reproducible and differ between workers.
    """
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


def make_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (for samplers, DataLoaders, tensor draws)."""
    gen = torch.Generator()
    gen.manual_seed(int(seed) % _SEED_MOD)
    return gen
