"""Online accumulated attention store (METHODS B.2): rules, checkpoint round trip, 2-process merge."""

import datetime

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from wsss.errors import DataError
from wsss.methods.oaa import AttentionAccumulator, scale_to_u8

torch.set_num_threads(1)

LOW = -5.0   # σ(−5) ≈ 0.0067 < 0.1: skipped
HIGH = 5.0   # σ(5) ≈ 0.993


def _cams(*maps):
    return torch.tensor(np.array(maps, dtype=np.float32))[None]  # (1, C, h, w)


def test_scale_to_u8_relu_own_max_and_rounding():
    cam = torch.tensor([[[-3.0, 0.0], [1.0, 2.0]]])
    assert scale_to_u8(cam).tolist() == [[[0, 0], [128, 255]]]  # 127.5 rounds half to even -> 128
    cam = torch.tensor([[[1.0, 3.0], [0.5, 6.0]]])
    assert scale_to_u8(cam).tolist() == [[[42, 128], [21, 255]]]  # 42.5 -> 42, 127.5 -> 128, 21.25 -> 21
    assert scale_to_u8(torch.full((1, 2, 2), -1.0)).tolist() == [[[0, 0], [0, 0]]]


def test_first_epoch_is_a_no_op():
    acc = AttentionAccumulator()
    cams = _cams([[1.0, 2.0]], [[3.0, 4.0]])
    written = acc.update(["a"], cams, torch.tensor([[HIGH, HIGH]]), torch.tensor([[1, 1]]),
                         epoch=0, num_epochs=3)
    assert written == 0 and len(acc) == 0


def test_max_rule_unlabelled_classes_and_low_score_skip():
    acc = AttentionAccumulator()
    labels = torch.tensor([[1, 0, 1]])
    first = _cams([[2.0, 0.0], [1.0, 4.0]], [[9.0, 9.0], [9.0, 9.0]], [[1.0, 1.0], [1.0, 1.0]])
    acc.update(["img"], first, torch.tensor([[HIGH, HIGH, LOW]]), labels, epoch=1, num_epochs=4)
    assert acc.get("img", 0).tolist() == [[128, 0], [64, 255]]   # 127.5 -> 128, 63.75 -> 64
    assert acc.get("img", 1) is None                             # not in the label
    assert acc.get("img", 2) is None                             # σ < 0.1, not the last epoch
    second = _cams([[0.0, 4.0], [4.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.0, 2.0], [0.0, 0.0]])
    acc.update(["img"], second, torch.tensor([[HIGH, HIGH, HIGH]]), labels, epoch=2, num_epochs=4)
    assert acc.get("img", 0).tolist() == [[128, 255], [255, 255]]  # element-wise max
    assert acc.get("img", 2).tolist() == [[0, 255], [0, 0]]        # first store
    # a low score leaves the stored map alone
    third = _cams([[5.0, 5.0], [5.0, 5.0]], [[0.0, 0.0], [0.0, 0.0]], [[5.0, 5.0], [5.0, 5.0]])
    acc.update(["img"], third, torch.tensor([[HIGH, HIGH, LOW]]), labels, epoch=3, num_epochs=5)
    assert acc.get("img", 2).tolist() == [[0, 255], [0, 0]]
    assert acc.get("img", 0).tolist() == [[255, 255], [255, 255]]


def test_last_epoch_stores_a_map_only_if_none_exists():
    acc = AttentionAccumulator()
    labels = torch.tensor([[1, 1]])
    acc.update(["x"], _cams([[1.0, 2.0]], [[2.0, 1.0]]), torch.tensor([[HIGH, LOW]]), labels,
               epoch=1, num_epochs=3)
    assert acc.get("x", 0).tolist() == [[128, 255]] and acc.get("x", 1) is None
    # last epoch (2 of 0..2), both scores low: class 1 has no map -> stored anyway;
    # class 0 has one -> the σ < 0.1 skip applies
    acc.update(["x"], _cams([[4.0, 0.0]], [[2.0, 1.0]]), torch.tensor([[LOW, LOW]]), labels,
               epoch=2, num_epochs=3)
    assert acc.get("x", 0).tolist() == [[128, 255]]
    assert acc.get("x", 1).tolist() == [[255, 128]]
    # last epoch with a high score: normal max rule
    acc.update(["x"], _cams([[4.0, 0.0]], [[0.0, 0.0]]), torch.tensor([[HIGH, HIGH]]), labels,
               epoch=2, num_epochs=3)
    assert acc.get("x", 0).tolist() == [[255, 255]]


def test_update_validates_shapes():
    acc = AttentionAccumulator()
    with pytest.raises(DataError):
        acc.update(["a", "b"], torch.zeros(1, 2, 2, 2), torch.zeros(1, 2), torch.ones(1, 2), 1, 3)
    acc.update(["a"], torch.ones(1, 1, 2, 2), torch.full((1, 1), HIGH), torch.ones(1, 1), 1, 3)
    with pytest.raises(DataError):
        acc.update(["a"], torch.ones(1, 1, 3, 3), torch.full((1, 1), HIGH), torch.ones(1, 1), 2, 3)


def test_state_dict_round_trip_with_weights_only(tmp_path):
    acc = AttentionAccumulator()
    labels = torch.tensor([[1, 0, 1], [0, 1, 0]])
    acc.update(["b", "a"], torch.rand(2, 3, 4, 5), torch.full((2, 3), HIGH), labels, epoch=1, num_epochs=5)
    acc.merge_entries([("c", 2, np.full((2, 3), 7, dtype=np.uint8))])  # a map of another size
    path = tmp_path / "store.pt"
    torch.save({"oaa": acc.state_dict()}, path)
    restored = AttentionAccumulator(skip_below=0.5)
    restored.load_state_dict(torch.load(path, weights_only=True)["oaa"])
    assert restored.skip_below == 0.1
    assert [(i, c) for i, c, _ in restored.items()] == [("a", 1), ("b", 0), ("b", 2), ("c", 2)]
    for (i1, c1, m1), (i2, c2, m2) in zip(acc.items(), restored.items()):
        assert (i1, c1) == (i2, c2) and m1.dtype == np.uint8 and np.array_equal(m1, m2)
    empty = AttentionAccumulator()
    empty.load_state_dict(AttentionAccumulator().state_dict())
    assert len(empty) == 0
    bad = acc.state_dict()
    bad["data"] = bad["data"][:-1]
    with pytest.raises(DataError):
        empty.load_state_dict(bad)


def test_merge_from_takes_the_element_wise_max():
    left, right = AttentionAccumulator(), AttentionAccumulator()
    u8 = np.uint8
    left.merge_entries([("a", 0, np.array([[1, 200]], dtype=u8)), ("b", 1, np.array([[5]], dtype=u8))])
    right.merge_entries([("a", 0, np.array([[100, 3]], dtype=u8)), ("c", 0, np.array([[9]], dtype=u8))])
    left.merge_from(right)
    assert left.get("a", 0).tolist() == [[100, 200]]
    assert left.get("b", 1).tolist() == [[5]] and left.get("c", 0).tolist() == [[9]]
    assert ("c", 0) in left and ("d", 0) not in left


# --------------------------------------------------------------- two processes, gloo, file:// init
NUM_IMAGES, NUM_CLASSES, NUM_EPOCHS, SIZE = 8, 3, 4, (4, 5)


def _epoch_data(epoch: int):
    """Deterministic per-epoch CAMs, logits and labels for all images (same in every process)."""
    gen = torch.Generator().manual_seed(100 + epoch)
    cams = torch.randn(NUM_IMAGES, NUM_CLASSES, *SIZE, generator=gen)
    logits = torch.randn(NUM_IMAGES, NUM_CLASSES, generator=gen) * 3.0  # many σ < 0.1
    logits[0, 1] = -10.0  # a labelled class that only the last-epoch rule stores
    labels = (torch.arange(NUM_IMAGES)[:, None] + torch.arange(NUM_CLASSES)[None]) % 2
    order = torch.randperm(NUM_IMAGES, generator=gen)
    return cams, logits, labels, order


def _ids(indices):
    return [f"img{int(i):02d}" for i in indices]


def _run_epochs(acc: AttentionAccumulator, rank: int, world_size: int, merge: bool,
                num_epochs: int = NUM_EPOCHS) -> None:
    for epoch in range(NUM_EPOCHS):
        cams, logits, labels, order = _epoch_data(epoch)
        mine = order[rank::world_size]  # ids move between ranks from epoch to epoch
        for start in range(0, len(mine), 2):
            batch = mine[start:start + 2]
            acc.update(_ids(batch), cams[batch], logits[batch], labels[batch], epoch, num_epochs)
        if merge:
            acc.all_gather_merge()


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=60))
    try:
        acc = AttentionAccumulator()
        _run_epochs(acc, rank, world_size, merge=True)
        torch.save(acc.state_dict(), f"{out_dir}/rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_merge_equals_one_process(tmp_path):
    single = AttentionAccumulator()
    _run_epochs(single, rank=0, world_size=1, merge=True)  # merge is a no-op without a process group
    assert len(single) > 0
    # the data exercise both the σ < 0.1 skip and the last-epoch store
    skipped = sum(int(((torch.sigmoid(_epoch_data(e)[1]) < 0.1) & (_epoch_data(e)[2] > 0)).sum())
                  for e in range(1, NUM_EPOCHS))
    assert skipped > 0
    never_last = AttentionAccumulator()
    _run_epochs(never_last, rank=0, world_size=1, merge=True, num_epochs=NUM_EPOCHS + 1)
    assert len(never_last) < len(single)  # some maps exist only through the last-epoch rule

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    expected = list(single.items())
    for rank in range(2):
        merged = AttentionAccumulator()
        merged.load_state_dict(torch.load(tmp_path / f"rank{rank}.pt", weights_only=True))
        got = list(merged.items())
        assert [(i, c) for i, c, _ in got] == [(i, c) for i, c, _ in expected]
        for (_, _, m1), (_, _, m2) in zip(got, expected):
            assert np.array_equal(m1, m2)

    # Without the per-epoch merge the ranks disagree with the single process (so the test can fail).
    unmerged = AttentionAccumulator()
    _run_epochs(unmerged, rank=0, world_size=2, merge=False)
    assert len(unmerged) < len(single) or any(
        not np.array_equal(m, single.get(i, c)) for i, c, m in unmerged.items())
