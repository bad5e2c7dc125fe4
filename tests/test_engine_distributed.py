"""Distributed helpers in one process, and a real 2-process gloo job under torchrun."""

from __future__ import annotations

import json
import os
import runpy
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from wsss.engine.distributed import (DistContext, all_gather_object, all_reduce_mean, barrier,
                                     broadcast_object, cleanup, init_distributed, is_main,
                                     make_sampler, resolve_device, unwrap_model, wrap_ddp)
from wsss.errors import ConfigError

_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def no_torchrun_env(monkeypatch):
    for name in _TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)


def test_single_process_without_env_has_no_process_group(no_torchrun_env):
    with init_distributed("cpu") as ctx:
        assert (ctx.rank, ctx.world_size, ctx.local_rank) == (0, 1, 0)
        assert ctx.device == torch.device("cpu") and ctx.backend is None
        assert ctx.is_main and not ctx.distributed and is_main()
        assert not torch.distributed.is_initialized()
        assert all_reduce_mean(2.5) == 2.5
        t = torch.tensor([1.0, 3.0])
        assert all_reduce_mean(t) is t
        assert broadcast_object({"a": 1}) == {"a": 1}
        assert all_gather_object(7) == [7]
        barrier()
        model = torch.nn.Linear(2, 1)
        assert wrap_ddp(model, ctx) is model and unwrap_model(model) is model
    cleanup()  # harmless without a group


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto", local_rank=1) == torch.device("cpu")
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="run.device"):
        resolve_device("gpu0")


def test_bad_environment_is_a_config_error(no_torchrun_env, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="MASTER_ADDR"):
        init_distributed("cpu")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ConfigError, match="RANK=5"):
        init_distributed("cpu")
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ConfigError, match="RANK"):
        init_distributed("cpu")


def test_two_rank_shards_hold_the_one_process_batches():
    data = list(range(12))
    single = make_sampler(data, DistContext(), shuffle=True, seed=3)
    ranks = [make_sampler(data, DistContext(rank=r, world_size=2), shuffle=True, seed=3) for r in (0, 1)]
    assert isinstance(single, DistributedSampler)
    for epoch in (0, 1):
        for s in [single, *ranks]:
            s.set_epoch(epoch)
        order = list(single)
        per_rank = [list(s) for s in ranks]
        assert sorted(order) == data
        for k in range(3):  # global batch 4 = 2 ranks x 2
            assert sorted(order[4 * k:4 * k + 4]) == sorted(per_rank[0][2 * k:2 * k + 2]
                                                            + per_rank[1][2 * k:2 * k + 2])
    sequential = make_sampler(data, DistContext(), shuffle=False)
    sequential.skip_next(10)
    assert list(sequential) == [10, 11]
    assert list(sequential) == data  # the skip applies to one pass only
    assert len(sequential) == 12


_SCRIPT = textwrap.dedent('''
    """Train a linear model for 6 steps (4 per epoch): once straight through, once stopped after
    step 3, checkpointed, rebuilt from scratch and resumed. Rank 0 writes both results as JSON."""
    import json, sys
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from wsss.engine.checkpoint import (gather_rng_states, load_checkpoint, restore_rank_rng_state,
                                        save_checkpoint)
    from wsss.engine.distributed import (all_reduce_mean, barrier, init_distributed, make_sampler,
                                         unwrap_model, wrap_ddp)
    from wsss.engine.loop import IterationLoop
    from wsss.engine.seed import seed_everything

    MAX_ITERS, GLOBAL_BATCH = 6, 4

    def build(ctx, seed):
        seed_everything(seed, ctx.rank)  # ranks start from different weights: DDP broadcasts rank 0's
        gen = torch.Generator().manual_seed(123)
        x = torch.randn(16, 3, generator=gen, dtype=torch.float64)
        y = x @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64) + 0.1
        data = TensorDataset(x, y)
        model = wrap_ddp(torch.nn.Linear(3, 1).double(), ctx)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        sampler = make_sampler(data, ctx, shuffle=True, seed=7)
        loader = DataLoader(data, batch_size=GLOBAL_BATCH // ctx.world_size, sampler=sampler)
        return model, opt, loader, sampler

    def train(model, opt, loader, sampler, start, stop, losses):
        for it, (xb, yb) in IterationLoop(stop, loader, sampler, start_iter=start, seed=7):
            loss = torch.nn.functional.mse_loss(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(all_reduce_mean(loss.detach())))

    def run(ctx, resume_at, ckpt_path):
        model, opt, loader, sampler = build(ctx, 0)
        losses = []
        if resume_at:
            train(model, opt, loader, sampler, 0, resume_at, losses)
            rng = gather_rng_states()  # collective: every rank
            if ctx.is_main:
                save_checkpoint(ckpt_path, {"iteration": resume_at, "losses": losses, "rng": rng,
                                            "model": unwrap_model(model).state_dict(),
                                            "optimizer": opt.state_dict()})
            barrier()
            model, opt, loader, sampler = build(ctx, 99)  # forget everything, as a new process would
            state = load_checkpoint(ckpt_path)
            unwrap_model(model).load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            assert restore_rank_rng_state(state["rng"], ctx.rank, ctx.world_size)
            losses = list(state["losses"])
        train(model, opt, loader, sampler, resume_at, MAX_ITERS, losses)
        params = [p.detach().reshape(-1).tolist() for p in unwrap_model(model).parameters()]
        return {"losses": losses, "params": params, "model_type": type(model).__name__}

    def main(out_path):
        torch.set_num_threads(1)
        with init_distributed("cpu") as ctx:
            result = {"world_size": ctx.world_size, "backend": ctx.backend,
                      "full": run(ctx, 0, None), "resumed": run(ctx, 3, out_path + ".ckpt")}
            if ctx.is_main:
                with open(out_path, "w") as f:
                    json.dump(result, f)

    if __name__ == "__main__":
        main(sys.argv[1])
''')


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_gloo_ddp_matches_one_process_and_resumes(tmp_path, no_torchrun_env):
    script = tmp_path / "train_tiny.py"
    script.write_text(_SCRIPT)
    # the 1-process reference runs in this process, without torchrun's environment
    runpy.run_path(str(script), run_name="tiny")["main"](str(tmp_path / "single.json"))
    single = json.loads((tmp_path / "single.json").read_text())
    assert single["world_size"] == 1 and single["backend"] is None
    reference = single["full"]
    assert reference["model_type"] == "Linear" and len(reference["losses"]) == 6
    assert reference["losses"][-1] < reference["losses"][0]
    assert single["resumed"] == reference  # 1 process: resume is bit-identical

    env = {k: v for k, v in os.environ.items() if k not in _TORCHRUN_ENV}
    env.update(OMP_NUM_THREADS="1", WSSS_PROGRESS="off")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(script), str(tmp_path / "ddp.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    if proc.returncode != 0 and "terminate called without an active exception" in proc.stderr:
        # a known, still open gloo teardown race (issue 14, item 5): the store rendezvous in
        # cleanup() made it rare, not impossible; one retry keeps CI meaningful for the results
        cmd[cmd.index("--master_port") + 1] = str(_free_port())
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    # exit 0 also means no rank aborted at exit (cleanup: barrier, destroy_process_group)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    assert ddp["world_size"] == 2 and ddp["backend"] == "gloo"
    for run in (ddp["full"], ddp["resumed"]):
        assert run["model_type"] == DistributedDataParallel.__name__
        assert run["losses"] == pytest.approx(reference["losses"], abs=1e-6, rel=0)
        for p, q in zip(run["params"], reference["params"]):
            assert p == pytest.approx(q, abs=1e-6, rel=0)
    # resuming mid-epoch under DDP (each rank skips its own share) is bit-identical to not stopping
    assert ddp["resumed"]["losses"] == ddp["full"]["losses"]
    assert ddp["resumed"]["params"] == ddp["full"]["params"]
