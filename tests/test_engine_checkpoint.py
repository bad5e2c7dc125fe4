"""Checkpoints: atomic saves, weights_only loads, exact random-state restore, the checkpoint folder."""

from __future__ import annotations

import random
from collections import OrderedDict

import numpy as np
import pytest
import torch

import wsss.engine.checkpoint as ckpt
from wsss.engine.checkpoint import (CheckpointError, CheckpointManager, capture_rng_state,
                                    find_last_checkpoint, load_checkpoint, restore_rank_rng_state,
                                    restore_rng_state, save_checkpoint, to_safe_state)
from wsss.engine.schedule import param_group
from wsss.errors import WsssError


def _draw() -> list[float]:
    """Numbers from every global generator, including the cached-Gaussian paths."""
    out = [random.random(), random.gauss(0.0, 1.0), random.randint(0, 10**9)]
    out += np.random.rand(3).tolist() + np.random.randn(1).tolist()
    out += torch.rand(3).tolist() + torch.randn(2).tolist()
    return out


def test_rng_state_round_trip_through_a_file_is_exact(tmp_path):
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    # leave a cached Gaussian in python's and numpy's generators: it must survive too
    random.gauss(0.0, 1.0)
    np.random.randn(1)
    assert random.getstate()[2] is not None
    assert np.random.get_state(legacy=False)["has_gauss"] == 1

    save_checkpoint(tmp_path / "last.pt", {"rng": capture_rng_state(), "iteration": 7})
    expected = _draw()
    assert _draw() != expected  # the generators really moved on

    state = load_checkpoint(tmp_path / "last.pt")
    assert state["iteration"] == 7
    restore_rng_state(state["rng"])
    assert _draw() == expected


def test_rank_rng_states_pick_this_ranks_entry():
    torch.manual_seed(1)
    first = capture_rng_state()
    a = torch.rand(2).tolist()
    torch.manual_seed(2)
    second = capture_rng_state()
    b = torch.rand(2).tolist()
    assert restore_rank_rng_state([first, second], rank=1, world_size=2)
    assert torch.rand(2).tolist() == b
    assert restore_rank_rng_state([first, second], rank=0, world_size=2)
    assert torch.rand(2).tolist() == a
    # made with another world size: nothing restored, the caller re-seeds
    assert not restore_rank_rng_state([first, second], rank=0, world_size=3)
    assert restore_rank_rng_state(first, rank=0, world_size=1)
    assert torch.rand(2).tolist() == a


def test_model_and_optimizer_state_round_trip(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    groups = [param_group([model[0].weight], 1.0), param_group([model[0].bias], 2.0, weight_decay=0.0),
              param_group(model[1].parameters(), 10.0)]
    opt = torch.optim.SGD(groups, lr=0.01, momentum=0.9, weight_decay=5e-4)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(5, 4)).square().mean().backward()
        opt.step()
    save_checkpoint(tmp_path / "c.pt", {"model": model.state_dict(), "optimizer": opt.state_dict()})

    state = load_checkpoint(tmp_path / "c.pt")
    model2 = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    model2.load_state_dict(state["model"])
    groups2 = [param_group([model2[0].weight]), param_group([model2[0].bias]),
               param_group(model2[1].parameters())]
    opt2 = torch.optim.SGD(groups2, lr=0.5, momentum=0.9)
    opt2.load_state_dict(state["optimizer"])
    for p, q in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(p, q)
    assert [g["lr_mult"] for g in opt2.param_groups] == [1.0, 2.0, 10.0]
    assert [g["weight_decay"] for g in opt2.param_groups] == [5e-4, 0.0, 5e-4]
    buf = opt.state[model[0].weight]["momentum_buffer"]
    assert torch.equal(opt2.state[model2[0].weight]["momentum_buffer"], buf)


def test_crash_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"iteration": 1, "w": torch.arange(4.0)})

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"iteration": 2, "w": torch.zeros(4)})
    monkeypatch.undo()

    state = load_checkpoint(path)
    assert state["iteration"] == 1
    assert torch.equal(state["w"], torch.arange(4.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_checkpoint_gives_a_wsss_error_naming_the_file(tmp_path, damage):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"w": torch.randn(1000), "iteration": 3})
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00not a checkpoint" * 10,
                      "empty": b""}[damage])
    with pytest.raises(WsssError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert "delete it" in str(info.value)


def test_missing_checkpoint_and_non_dict_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(tmp_path / "list.pt")


def test_a_pickled_object_is_refused_on_load(tmp_path):
    # written by plain torch.save (not save_checkpoint): weights_only must refuse the class
    torch.save({"obj": _Opaque()}, tmp_path / "unsafe.pt")
    with pytest.raises(CheckpointError, match="unsafe.pt"):
        load_checkpoint(tmp_path / "unsafe.pt")


class _Opaque:
    pass


def test_to_safe_state_converts_numpy_and_names_bad_keys():
    safe = to_safe_state({"a": np.float32(1.5), "b": np.arange(3, dtype=np.int16),
                          "c": OrderedDict(x=(1, np.int64(2))), "d": torch.Size([2, 3])})
    assert safe["a"] == 1.5 and type(safe["a"]) is float
    assert isinstance(safe["b"], torch.Tensor) and safe["b"].tolist() == [0, 1, 2]
    assert safe["b"].dtype == torch.int16
    assert isinstance(safe["c"], OrderedDict) and safe["c"]["x"] == (1, 2)
    assert safe["d"] == (2, 3)
    with pytest.raises(CheckpointError, match=r"state\['maps'\]\[0\]"):
        to_safe_state({"maps": [_Opaque()]})
    with pytest.raises(CheckpointError, match="key"):
        to_safe_state({(1, 2): 3})


def test_checkpoint_manager_keeps_every_n_and_finds_the_last(tmp_path):
    manager = CheckpointManager(tmp_path / "ckpt", keep_every=2)
    assert manager.find_last() is None and manager.load_last() is None
    for it in (1, 2, 3, 4):
        manager.save({"iteration": it}, iteration=it)
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["iter_0000002.pt", "iter_0000004.pt", "last.pt"]
    assert manager.load_last()["iteration"] == 4
    # without last.pt the newest kept one is used (by number, not by name order)
    (tmp_path / "ckpt" / "last.pt").unlink()
    manager.save({"iteration": 10}, iteration=10)
    (tmp_path / "ckpt" / "last.pt").unlink()
    assert find_last_checkpoint(tmp_path / "ckpt").name == "iter_0000010.pt"
    assert find_last_checkpoint(tmp_path / "absent") is None


class _Payload:
    def __reduce__(self):
        import os
        return (os.getcwd, ())


def test_a_checkpoint_holding_code_is_refused_for_safety_without_torchs_unsafe_hint(tmp_path):
    import torch

    from wsss.engine.checkpoint import CheckpointError, load_checkpoint

    torch.save({"x": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "evil.pt")
    message = str(info.value)
    assert "not loaded for safety" in message and "truncated" not in message
    assert "weights_only=False" not in message and "\n" not in message
