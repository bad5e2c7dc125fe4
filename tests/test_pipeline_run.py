"""`wsss run` end to end on a tiny synthetic set: a second run skips every step, a changed setting
re-runs that step and the later ones, and ``kill -9`` during classifier training and then during
label generation, followed by a re-run, gives the same labels as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from wsss.data.synth import CLASS_NAMES, generate_synthetic_dataset
from wsss.io import read_label
from wsss.pipeline.run import run_pipeline

REPO = Path(__file__).resolve().parents[1]
NUM_TRAIN = 40
ITERATIONS = 16
STEP_NAMES = ["train", "cams", "labels", "eval_labels"]


def tiny_config(data_root: Path, out_dir: Path) -> dict:
    """EPS on 64 px scenes: a random-init EfficientNet-Lite0 trained for a few iterations,
    single-scale maps, labels, evaluation. num_workers 0 so that resuming is exact."""
    return {
        "run": {"name": "tiny", "out_dir": str(out_dir), "seed": 0, "device": "cpu"},
        "data": {"root": str(data_root), "dataset": "synth", "class_names": list(CLASS_NAMES),
                 "image_ext": ".png", "image_labels": "json", "image_labels_file": "cls_labels.json"},
        "model": {"backbone": "efficientnet_lite0", "output_stride": 16, "pretrained": "",
                  "frozen_stages": 0},
        "train_cls": {"method": "eps", "iterations": ITERATIONS, "batch_size": 4, "num_workers": 0,
                      "resize_long": [56, 64], "crop_size": 64, "checkpoint_every": 2, "log_every": 4},
        "cams": {"scales": [1.0], "flip": True},
        "labels": {"method": "eps"},
        "eval": {"split": "train", "pred": "labels", "boundary": False, "workers": 1},
        "pipeline": {"steps": [
            {"name": "train", "stage": "train_cls"},
            {"name": "cams", "stage": "cams"},
            {"name": "labels", "stage": "labels"},
            {"name": "eval_labels", "stage": "eval"},
        ]},
    }


def read_labels(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: read_label(p, "label") for p in sorted(folder.glob("*.png"))}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    generate_synthetic_dataset(root, num_train=NUM_TRAIN, num_val=2, size=64, seed=0)
    return root


@pytest.fixture(scope="module")
def clean_run(tiny_data, tmp_path_factory):
    """One uninterrupted run (in this process, one thread); its labels are kept in memory."""
    out = tmp_path_factory.mktemp("clean")
    config = out / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_data, out)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_pipeline([config], log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    return config, result, read_labels(result["run_dir"] / "labels")


def test_run_directory_and_second_run_skips_every_step(clean_run):
    config, result, labels = clean_run
    run_dir = result["run_dir"]
    assert [(r["step"], r["action"]) for r in result["records"]] == [(s, "run") for s in STEP_NAMES]
    assert len(labels) == NUM_TRAIN
    for name in ("config.yaml", "meta.json", "summary.json", "classifier/final.pt", "eval/eval_labels.json"):
        assert (run_dir / name).is_file(), name
    for step in STEP_NAMES:
        done = json.loads((run_dir / ".steps" / f"{step}.done.json").read_text())
        assert done["fingerprint"] == next(p.fingerprint for p in result["plan"] if p.step.name == step)
        assert (run_dir / ".steps" / f"{step}.config.yaml").is_file()
    (row,) = json.loads((run_dir / "summary.json").read_text())["rows"]
    assert row["step"] == "eval_labels" and row["split"] == "train" and 0.0 <= row["miou"] <= 1.0
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["pipeline"]["steps"][0]["name"] == "train"

    mtimes = {p: p.stat().st_mtime_ns for p in (run_dir / "labels").glob("*.png")}
    again = run_pipeline([config], log=lambda _: None)
    assert [(r["step"], r["action"]) for r in again["records"]] == [(s, "skip") for s in STEP_NAMES]
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "labels").glob("*.png")} == mtimes


def test_a_changed_setting_reruns_that_step_and_the_later_ones(clean_run):
    config, result, labels = clean_run
    run_dir = result["run_dir"]
    changed = run_pipeline([config], ["labels.thr=1.01"], log=lambda _: None)
    assert [(r["step"], r["action"]) for r in changed["records"]] == [
        ("train", "skip"), ("cams", "skip"), ("labels", "run"), ("eval_labels", "run")]
    assert [p.reason for p in changed["plan"]][2:] == ["settings or inputs changed",
                                                       "an earlier step runs (labels)"]
    relabelled = read_labels(run_dir / "labels")
    assert relabelled.keys() == labels.keys()
    # maps are max-normalised to [0, 1]: a background score above 1 wins every pixel
    assert all(not relabelled[i].any() for i in labels) and any(labels[i].any() for i in labels)

    # back to the original setting: the labels step runs again and gives the original labels
    restored = run_pipeline([config], log=lambda _: None)
    assert [r["action"] for r in restored["records"]] == ["skip", "skip", "run", "run"]
    assert all(np.array_equal(read_labels(run_dir / "labels")[i], labels[i]) for i in labels)


def _start(config: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "wsss.cli", "run", str(config), "--set", f"run.out_dir={out}"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300.0) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` is true (polled every 2 ms)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before it could be killed:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the moment to kill the run")
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


def test_kill_9_during_training_and_labels_then_rerun_gives_identical_labels(clean_run, tmp_path):
    config, _, clean_labels = clean_run
    run_dir = tmp_path / "tiny"
    classifier, labels_dir = run_dir / "classifier", run_dir / "labels"

    # 1) killed during classifier training, once the first checkpoint exists
    _kill_when(_start(config, tmp_path), lambda: (classifier / "last.pt").is_file())
    assert not (classifier / "final.pt").exists(), "the kill should land before training ends"
    stopped_at = torch.load(classifier / "last.pt", map_location="cpu", weights_only=False)["iteration"]
    assert 0 < stopped_at < ITERATIONS

    # 2) re-run: training resumes; killed again as soon as the first labels are written
    _kill_when(_start(config, tmp_path), lambda: any(labels_dir.glob("*.png")))
    assert (classifier / "final.pt").is_file()
    written = len(list(labels_dir.glob("*.png")))
    assert 0 < written < NUM_TRAIN, "the kill should land during label generation"
    assert not (run_dir / ".steps" / "labels.done.json").exists()

    # 3) re-run to completion: only the unfinished steps run, the labels step resumes
    finished = subprocess.run([sys.executable, "-m", "wsss.cli", "run", str(config), "--set",
                               f"run.out_dir={tmp_path}"], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "[train] skipped" in finished.stdout and "[cams] skipped" in finished.stdout
    assert "[labels] labels: not done yet\n" in finished.stdout   # resumed, nothing removed
    resumed = read_labels(labels_dir)
    assert resumed.keys() == clean_labels.keys()
    assert all(np.array_equal(resumed[i], clean_labels[i]) for i in clean_labels)


# ------------------------------------------------------------------------- planning only (fast)

PIPELINES = sorted((REPO / "configs" / "pipelines").glob("*.yaml"))


@pytest.mark.parametrize("config", PIPELINES, ids=[p.stem for p in PIPELINES])
def test_every_pipeline_config_plans_with_distinct_outputs(config, tmp_path):
    result = run_pipeline([config], [f"data.root={tmp_path}/data", f"run.out_dir={tmp_path}"],
                          dry_run=True, log=lambda _: None)
    plan = result["plan"]
    assert result["run_dir"] == tmp_path / config.stem
    assert plan and all(p.action == "run" for p in plan)
    assert plan[0].reason == "not done yet"
    outputs = [o.path for p in plan for o in p.outputs]
    assert len(outputs) == len(set(outputs))   # no two steps write the same folder or file
    stages = [p.step.stage for p in plan]
    assert stages[0] == "train_cls" and stages[-1] == "eval" and "train_seg" in stages
    assert not (tmp_path / config.stem).exists()   # a dry run writes nothing


def _write(tmp_path, steps, file="w.yaml"):
    cfg = {"run": {"name": "w", "out_dir": str(tmp_path)}, "data": {"root": str(tmp_path / "data")},
           "pipeline": {"steps": steps}}
    path = tmp_path / file
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_inputs_no_step_writes_and_outputs_written_twice_are_refused_before_running(tmp_path):
    from wsss.errors import ConfigError

    typo = _write(tmp_path, [{"name": "cams", "stage": "cams", "set": ["cams.out=cams_eps"]},
                             {"name": "labels", "stage": "labels", "set": ["labels.cams=cams_esp"]}])
    with pytest.raises(ConfigError, match=r"step 'labels': labels.cams = .*cams_esp is written by no earlier step"):
        run_pipeline([typo], dry_run=True, log=lambda _: None)
    twice = _write(tmp_path, [{"name": "a", "stage": "crf", "set": ["crf.input=/", "crf.out=x"]},
                              {"name": "b", "stage": "crf", "set": ["crf.input=/", "crf.out=x"]}], "twice.yaml")
    with pytest.raises(ConfigError, match="steps 'a' and 'b' both write"):
        run_pipeline([twice], dry_run=True, log=lambda _: None)
    # an input that exists already (made by an earlier run, or by hand) is fine
    (tmp_path / "w" / "cams_esp").mkdir(parents=True)
    (tmp_path / "w" / "classifier").mkdir()
    (tmp_path / "w" / "classifier" / "final.pt").write_bytes(b"")   # the cams step's checkpoint
    assert len(run_pipeline([typo], dry_run=True, log=lambda _: None)["plan"]) == 2


def test_outputs_outside_the_run_directory_or_in_the_dataset_are_refused_at_planning(tmp_path):
    from wsss.config import Config, load_config
    from wsss.errors import ConfigError
    from wsss.pipeline.planner import parse_steps
    from wsss.pipeline.runner import make_plan

    (tmp_path / "data" / "SegmentationClass").mkdir(parents=True)
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "precious.txt").write_text("keep me")
    (tmp_path / "w").mkdir()
    cases = [
        ([{"name": "t", "stage": "crf", "set": ["crf.input=/", "crf.out=."]}], "not inside the run directory"),
        ([{"name": "t", "stage": "crf", "set": ["crf.input=/", f"crf.out={tmp_path / 'data' / 'SegmentationClass'}"]}],
         "not inside the run directory"),
        ([{"name": "t", "stage": "labels", "set": ["labels.cams=/", "labels.out=../victim"]}], "not inside the run directory"),
        ([{"name": "c", "stage": "crf", "set": ["crf.input=/", "crf.out=labels"]},
          {"name": "t", "stage": "crf", "set": ["crf.input=/", "crf.out=labels/inner"]}], "write into each other's folders"),
        # a cams step writing into the folder of the classifier another step trains
        ([{"name": "train", "stage": "train_cls"},
          {"name": "cams", "stage": "cams", "set": ["cams.out=classifier"]}], "'train' and 'cams' both write"),
    ]
    for steps, message in cases:
        cfg = load_config(Config, [_write(tmp_path, steps)], [f"data.root={tmp_path / 'data'}"])
        with pytest.raises(ConfigError, match=message):
            make_plan(cfg, parse_steps(cfg.pipeline.steps), tmp_path / "w")
    # inside the run directory but in the dataset (a dataset kept in the run directory)
    cfg = load_config(Config, [_write(tmp_path, [{"name": "t", "stage": "crf", "set": ["crf.input=/", "crf.out=d/x"]}])],
                      [f"data.root={tmp_path / 'w' / 'd'}"])
    with pytest.raises(ConfigError, match="lies in or holds the dataset"):
        make_plan(cfg, parse_steps(cfg.pipeline.steps), tmp_path / "w")
    for bad in ("../../../precious", ".hidden", "a/b"):
        with pytest.raises(ConfigError, match="not a plain name"):
            parse_steps([{"name": bad, "stage": "crf"}])
    assert (tmp_path / "victim" / "precious.txt").read_text() == "keep me"
    assert (tmp_path / "data" / "SegmentationClass").is_dir()


def test_a_fresh_step_removes_only_folders_it_wrote(tmp_path):
    from wsss.config import Config, load_config
    from wsss.errors import ConfigError
    from wsss.pipeline.planner import marker_dir, parse_steps
    from wsss.pipeline.runner import OWNER_FILE, claim_outputs, clear_outputs, make_plan
    from wsss.stages.context import StageContext

    cfg = load_config(Config, [_write(tmp_path, [{"name": "t", "stage": "crf", "set": ["crf.input=/", "crf.out=out"]}])])
    (planned,) = make_plan(cfg, parse_steps(cfg.pipeline.steps), tmp_path / "w")
    ctx = StageContext(planned.cfg, tmp_path / "w")
    out = tmp_path / "w" / "out"
    out.mkdir(parents=True)
    (out / "mine.png").write_bytes(b"x")
    with pytest.raises(ConfigError, match="written by no step of this run"):   # a folder it did not write
        clear_outputs(planned.step, planned.outputs, ctx)
    (out / OWNER_FILE).write_text("other\n")
    with pytest.raises(ConfigError, match="written by step 'other'"):
        clear_outputs(planned.step, planned.outputs, ctx)
    assert (out / "mine.png").is_file()
    claim_outputs(planned.step, planned.outputs)
    assert (out / OWNER_FILE).read_text() == "t\n"
    assert clear_outputs(planned.step, planned.outputs, ctx) == 1 and not out.exists()
    # a run from before owner files: the step's start marker vouches for its folder
    out.mkdir()
    marker_dir(tmp_path / "w").mkdir(parents=True, exist_ok=True)
    (marker_dir(tmp_path / "w") / "t.started.json").write_text("{}")
    assert clear_outputs(planned.step, planned.outputs, ctx) == 1 and not out.exists()

def test_a_second_run_on_the_same_directory_fails_with_the_holders_pid(tmp_path):
    import re
    import subprocess
    import sys
    import textwrap

    from wsss.errors import WsssError
    from wsss.pipeline.run import run_directory_lock

    run_dir = tmp_path / "r"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from wsss.pipeline.run import run_directory_lock
        with run_directory_lock(Path({str(run_dir)!r})):
            print("locked", flush=True)
            time.sleep(30)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WsssError, match=re.escape(f"in use by another `wsss run` (PID {holder.pid})")):
            with run_directory_lock(run_dir):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_directory_lock(run_dir):   # a killed holder leaves no stale lock
        pass
