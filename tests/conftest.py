"""Shared fixtures: the real data beside the checkout (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("WSSS_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_dataset(name: str) -> Path:
    """Path of ``../shared/data/<name>``; skips the calling test when it is not there."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data not available: {path} is absent (set WSSS_SHARED_DATA to its folder)")
    return path


@pytest.fixture
def cocovoc_root() -> Path:
    return shared_dataset("cocovoc")


@pytest.fixture
def voc_samples_root() -> Path:
    return shared_dataset("voc-samples")


@pytest.fixture
def msrcvoc_root() -> Path:
    return shared_dataset("msrcvoc")


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test (2 threads on a busy 2-core machine are several times
    slower), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
