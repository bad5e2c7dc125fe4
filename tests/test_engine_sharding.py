"""Offline-stage sharding: rank shards, pending images, the process pool."""

from __future__ import annotations

import os

import pytest

from wsss.engine.sharding import pending_ids, process_imap, process_map, shard_ids


def _square_with_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"bad item {x}")
    return x


def test_shard_ids_partition_without_overlap():
    ids = [f"img{i:03d}" for i in range(11)]
    shards = [shard_ids(ids, r, 3) for r in range(3)]
    assert shards[0] == ["img000", "img003", "img006", "img009"]
    assert shards[1] == ["img001", "img004", "img007", "img010"]
    assert shards[2] == ["img002", "img005", "img008"]
    flat = [i for s in shards for i in s]
    assert sorted(flat) == ids and len(set(flat)) == len(ids)
    assert shard_ids(ids, 0, 1) == ids
    assert shard_ids(ids[:2], 2, 3) == []
    with pytest.raises(ValueError):
        shard_ids(ids, 3, 3)


def test_pending_ids_skips_finished_images(tmp_path):
    ids = ["a", "b", "c", "d"]
    (tmp_path / "a.npz").write_bytes(b"x")
    (tmp_path / "c.npz").write_bytes(b"x")
    (tmp_path / "c.png").write_bytes(b"x")
    (tmp_path / "d.png").write_bytes(b"x")
    assert pending_ids(ids, tmp_path, ".npz") == ["b", "d"]
    assert pending_ids(ids, tmp_path, (".npz", ".png")) == ["a", "b", "d"]  # done = every output
    assert pending_ids(ids, tmp_path, ".npz", overwrite=True) == ids
    assert pending_ids(ids, tmp_path / "absent", ".npz") == ids


def test_process_map_two_workers_equals_in_process():
    items = list(range(23))
    in_process = process_map(_square_with_pid, items, workers=0, progress=False)
    pooled = process_map(_square_with_pid, items, workers=2, chunksize=3, progress=False)
    assert [r for r, _ in pooled] == [r for r, _ in in_process] == [i * i for i in items]
    assert {pid for _, pid in in_process} == {os.getpid()}
    assert os.getpid() not in {pid for _, pid in pooled}


def test_process_map_under_spawn_and_unordered_streaming():
    items = list(range(8))
    spawned = process_map(_square_with_pid, items, workers=2, progress=False, start_method="spawn")
    assert [r for r, _ in spawned] == [i * i for i in items]
    streamed = list(process_imap(_square_with_pid, iter(items), workers=2, ordered=False,
                                 progress=False))
    assert sorted(r for r, _ in streamed) == [i * i for i in items]


@pytest.mark.parametrize("workers", [0, 2])
def test_worker_error_is_raised_in_the_caller(workers):
    with pytest.raises(ValueError, match="bad item 3"):
        process_map(_fail_on_three, range(6), workers=workers, progress=False)
