"""Seeding helpers and the rank-0 logger / progress display."""

from __future__ import annotations

import io
import random
import re

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from wsss.engine.logger import Progress, RunLogger, format_duration, resolve_progress_mode, track
from wsss.engine.seed import derive_seed, make_generator, seed_everything, worker_init_fn


class _RandomNumbers(Dataset):
    """Item i = (i, a numpy draw, a python draw) from the loading process's generators."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int):
        return i, float(np.random.rand()), random.random()


def _load_all(seed: int) -> list[tuple[int, float, float]]:
    loader = DataLoader(_RandomNumbers(), batch_size=1, num_workers=2,
                        worker_init_fn=worker_init_fn, generator=make_generator(seed))
    return [(int(i), float(a), float(b)) for i, a, b in loader]


def test_seed_everything_reproduces_and_offsets_by_rank():
    assert seed_everything(5, rank=0) == 5
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(5)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    assert seed_everything(5, rank=1) == 6
    assert torch.rand(1).item() != first[2]


def test_worker_init_fn_makes_workers_reproducible_and_distinct():
    torch.set_num_threads(1)
    run1, run2 = _load_all(3), _load_all(3)
    assert run1 == run2
    numpy_draws = [a for _, a, _ in run1]
    python_draws = [b for _, _, b in run1]
    # items 0 and 1 are loaded by different workers: their draws must differ
    assert numpy_draws[0] != numpy_draws[1] and python_draws[0] != python_draws[1]
    assert _load_all(4) != run1


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(0, "loader", 0, 1) == derive_seed(0, "loader", 0, 1)
    values = {derive_seed(s, "loader", r, e) for s in (0, 1) for r in (0, 1) for e in (0, 1, 2)}
    assert len(values) == 12
    assert all(0 <= v < 2**63 - 1 for v in values)
    # pinned (blake2b-64 of b"0/loader/0/0" mod 2**63-1): resumed runs depend on it never changing
    assert derive_seed(0, "loader", 0, 0) == 5004018499653659381
    g1, g2 = make_generator(42), make_generator(42)
    assert torch.equal(torch.randperm(10, generator=g1), torch.randperm(10, generator=g2))


def test_format_duration():
    assert format_duration(0) == "0:00:00"
    assert format_duration(3725.4) == "1:02:05"
    assert format_duration(90061) == "1 days 1:01:01"
    assert format_duration(float("nan")) == "?"


def test_progress_mode_resolution(monkeypatch):
    monkeypatch.delenv("WSSS_PROGRESS", raising=False)
    assert resolve_progress_mode("auto", stream=io.StringIO()) == "lines"  # not a TTY
    assert resolve_progress_mode("bar", stream=io.StringIO()) == "bar"     # forced
    assert resolve_progress_mode("bar", enabled=False) == "off"            # non-main rank
    monkeypatch.setenv("WSSS_PROGRESS", "off")
    assert resolve_progress_mode("auto", stream=io.StringIO()) == "off"
    monkeypatch.setenv("WSSS_PROGRESS", "sometimes")
    with pytest.raises(ValueError):
        resolve_progress_mode("auto")


def test_progress_lines_every_n_with_rate_and_eta(monkeypatch):
    monkeypatch.delenv("WSSS_PROGRESS", raising=False)
    lines: list[str] = []
    bar = Progress(total=10, initial=2, desc="train", every=3, stream=io.StringIO(), write=lines.append)
    for _ in range(8):
        bar.update(1, loss=0.123456, lr=0.01)
    bar.close()
    # lines at 5, 8 (every 3 steps from the resumed iteration 2) and at the end (10)
    assert [line.split(" |")[0] for line in lines] == ["train 5/10 (50.0%)", "train 8/10 (80.0%)",
                                                       "train 10/10 (100.0%)"]
    assert re.fullmatch(r"train 8/10 \(80\.0%\) \| [0-9.]+ it/s \| ETA [0-9?:]+ \| loss=0\.1235 lr=0\.01",
                        lines[1])


def test_progress_bar_mode_writes_a_tqdm_bar(monkeypatch):
    monkeypatch.delenv("WSSS_PROGRESS", raising=False)
    stream = io.StringIO()
    with Progress(total=4, desc="cams", mode="bar", stream=stream) as bar:
        for _ in range(4):
            bar.update(1, loss=1.0)
    assert "cams" in stream.getvalue() and "4/4" in stream.getvalue()
    assert list(track(range(3), enabled=False)) == [0, 1, 2]


def test_run_logger_main_rank_writes_log_and_tensorboard(tmp_path, monkeypatch):
    monkeypatch.delenv("WSSS_PROGRESS", raising=False)
    console = io.StringIO()
    with RunLogger(tmp_path, name="train_cls", console_stream=console) as log:
        log.info("iteration %d", 3)
        log.scalars({"loss/cls": 0.5, "lr": 0.01}, step=3, prefix="")
        progress = log.progress(total=4, every=2)
        for _ in range(4):
            progress.update(1, loss=0.25)
        progress.close()
        log.flush()
    text = (tmp_path / "train_cls.log").read_text()
    assert "iteration 3" in text and "4/4 (100.0%)" in text
    assert "iteration 3" in console.getvalue()
    events = list((tmp_path / "tensorboard" / "train_cls").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0


def test_run_logger_on_other_ranks_writes_nothing(tmp_path):
    console = io.StringIO()
    run_dir = tmp_path / "run"
    with RunLogger(run_dir, name="train", is_main=False, console_stream=console) as log:
        log.info("hello")
        log.scalar("loss", 1.0, step=0)
        progress = log.progress(total=3, every=1)
        progress.update(3)
        assert progress.mode == "off"
    assert console.getvalue() == ""
    assert not run_dir.exists()
