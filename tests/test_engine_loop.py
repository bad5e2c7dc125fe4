"""IterationLoop: epochs from iterations, and resume with the same data (and augmentation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from wsss.engine.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from wsss.engine.distributed import DistContext, make_sampler
from wsss.engine.loop import IterationLoop
from wsss.engine.seed import seed_everything, worker_init_fn
from wsss.errors import WsssError


class _Indexed(Dataset):
    """Item i = (i, a numpy draw standing for a random augmentation); counts the loads."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.loads = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        self.loads += 1
        return i, float(np.random.rand())


def _loop(dataset, max_iters, start_iter=0, batch_size=3, num_workers=0, skip="indices", seed=5):
    sampler = make_sampler(dataset, DistContext(), shuffle=True, seed=seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        worker_init_fn=worker_init_fn if num_workers else None)
    return IterationLoop(max_iters, loader, sampler, start_iter=start_iter, seed=seed, skip=skip)


def _indices(loop) -> list[list[int]]:
    return [batch[0].tolist() for _, batch in loop]


def test_epochs_are_seeded_permutations_and_the_loop_rolls_over():
    loop = _loop(_Indexed(10), max_iters=9)  # 4 batches per epoch (3, 3, 3, 1)
    assert loop.iters_per_epoch == 4 and len(loop) == 9 and loop.num_epochs == 3
    assert loop.position_of(6) == (1, 2) and loop.is_epoch_end(7) and loop.is_epoch_start(8)
    seen = [(it, batch[0].tolist()) for it, batch in loop]
    assert [it for it, _ in seen] == list(range(9))
    epoch0 = sum((b for _, b in seen[:4]), [])
    epoch1 = sum((b for _, b in seen[4:8]), [])
    assert sorted(epoch0) == sorted(epoch1) == list(range(10))
    assert epoch0 != epoch1  # set_epoch gave a new order
    assert [len(b) for _, b in seen] == [3, 3, 3, 1, 3, 3, 3, 1, 3]
    g = torch.Generator().manual_seed(5 + 1)  # DistributedSampler's rule: seed + epoch
    assert epoch1 == torch.randperm(10, generator=g).tolist()


@pytest.mark.parametrize("start", [1, 3, 4, 6, 10])
def test_resume_sees_the_same_batches_without_loading_skipped_ones(start):
    full = _indices(_loop(_Indexed(10), max_iters=11))
    dataset = _Indexed(10)
    resumed = _indices(_loop(dataset, max_iters=11, start_iter=start))
    assert resumed == full[start:]
    assert dataset.loads == sum(len(b) for b in resumed)  # skipped images were never loaded


def test_resume_from_a_checkpoint_reproduces_augmentation_exactly(tmp_path):
    seed_everything(0)
    stop = 6
    uninterrupted = []
    for it, (idx, aug) in _loop(_Indexed(10), max_iters=10):
        uninterrupted.append((idx.tolist(), aug.tolist(), torch.rand(1).item()))  # + a dropout draw
        if it + 1 == stop:  # a trainer saves at the end of an iteration, before the next batch loads
            save_checkpoint(tmp_path / "last.pt", {"iteration": it + 1, "rng": capture_rng_state()})

    seed_everything(123)  # a new process starts with another state
    state = load_checkpoint(tmp_path / "last.pt")
    restore_rng_state(state["rng"])
    resumed = [(idx.tolist(), aug.tolist(), torch.rand(1).item())
               for _, (idx, aug) in _loop(_Indexed(10), max_iters=10, start_iter=state["iteration"])]
    assert resumed == uninterrupted[stop:]


def test_resume_with_workers_and_skip_by_loading_is_exact():
    torch.set_num_threads(1)
    full = [(i.tolist(), a.tolist()) for _, (i, a) in _loop(_Indexed(8), 6, num_workers=2, skip="load")]
    resumed = [(i.tolist(), a.tolist())
               for _, (i, a) in _loop(_Indexed(8), 6, start_iter=4, num_workers=2, skip="load")]
    assert resumed == full[4:]
    again = [(i.tolist(), a.tolist()) for _, (i, a) in _loop(_Indexed(8), 6, num_workers=2, skip="load")]
    assert again == full  # worker seeds come from (seed, rank, epoch), not from the global state


def test_a_sampler_without_skip_falls_back_to_loading():
    dataset = _Indexed(7)
    loader = DataLoader(dataset, batch_size=2, sampler=SequentialSampler(dataset))
    batches = [b[0].tolist() for _, b in IterationLoop(6, loader, start_iter=3)]
    assert batches == [[6], [0, 1], [2, 3]]
    assert dataset.loads == 6 + 5  # 3 batches dropped (6 images), then 5 images used


def test_no_batch_per_epoch_is_a_user_error():
    loader = DataLoader(_Indexed(2), batch_size=4, drop_last=True)
    with pytest.raises(WsssError, match="batch size"):
        IterationLoop(5, loader)
