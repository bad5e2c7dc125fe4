"""The stage planner: order, skipping, invalidation when a setting changes, --from/--only."""

import json

import pytest

from wsss.config import Config, load_config
from wsss.errors import ConfigError
from wsss.pipeline.planner import fingerprint, marker_dir, parse_steps, plan

STEPS = parse_steps([
    {"name": "train", "stage": "train_cls"},
    {"name": "cams", "stage": "cams"},
    {"name": "labels", "stage": "labels", "set": ["labels.thr=0.25"]},
    {"name": "eval_labels", "stage": "eval", "set": ["eval.pred=labels", "eval.split=train"]},
])


def mark_done(run_dir, planned):
    marker_dir(run_dir).mkdir(parents=True, exist_ok=True)
    for p in planned:
        (marker_dir(run_dir) / f"{p.step.name}.done.json").write_text(json.dumps({"fingerprint": p.fingerprint}))


def always_complete(step, cfg):
    return True


def actions(planned):
    return [(p.step.name, p.action) for p in planned]


@pytest.fixture
def cfg():
    return load_config(Config, overrides=["run.name=t"])


def test_fresh_run_runs_every_step_in_order(tmp_path, cfg):
    planned = plan(cfg, STEPS, tmp_path, always_complete)
    assert actions(planned) == [("train", "run"), ("cams", "run"), ("labels", "run"), ("eval_labels", "run")]
    assert planned[2].cfg.labels.thr == 0.25 and planned[3].cfg.eval.split == "train"
    assert cfg.labels.thr == 0.20  # step overrides never leak into the pipeline config


def test_finished_unchanged_steps_are_skipped(tmp_path, cfg):
    mark_done(tmp_path, plan(cfg, STEPS, tmp_path, always_complete))
    assert [p.action for p in plan(cfg, STEPS, tmp_path, always_complete)] == ["skip"] * 4


def test_a_changed_setting_reruns_that_step_and_everything_after(tmp_path, cfg):
    mark_done(tmp_path, plan(cfg, STEPS, tmp_path, always_complete))
    changed = load_config(Config, overrides=["run.name=t", "cams.scales=[1.0]"])
    assert actions(plan(changed, STEPS, tmp_path, always_complete)) == [
        ("train", "skip"), ("cams", "run"), ("labels", "run"), ("eval_labels", "run")]
    # a setting no stage before eval reads only re-runs eval
    changed = load_config(Config, overrides=["run.name=t", "eval.boundary_tolerance=5"])
    assert actions(plan(changed, STEPS, tmp_path, always_complete))[-2:] == [("labels", "skip"), ("eval_labels", "run")]
    # data settings are read by every stage
    changed = load_config(Config, overrides=["run.name=t", "data.saliency_dir=SAL"])
    assert [p.action for p in plan(changed, STEPS, tmp_path, always_complete)] == ["run"] * 4


def test_missing_outputs_rerun_the_step(tmp_path, cfg):
    mark_done(tmp_path, plan(cfg, STEPS, tmp_path, always_complete))
    planned = plan(cfg, STEPS, tmp_path, lambda step, c: step.name != "cams")
    assert actions(planned) == [("train", "skip"), ("cams", "run"), ("labels", "run"), ("eval_labels", "run")]
    assert planned[1].reason == "outputs incomplete"


def test_from_and_only(tmp_path, cfg):
    mark_done(tmp_path, plan(cfg, STEPS, tmp_path, always_complete))
    assert actions(plan(cfg, STEPS, tmp_path, always_complete, start_from="labels")) == [
        ("train", "skip"), ("cams", "skip"), ("labels", "run"), ("eval_labels", "run")]
    assert actions(plan(cfg, STEPS, tmp_path, always_complete, only="cams")) == [("cams", "run")]
    with pytest.raises(ConfigError, match="--from nope: no such step"):
        plan(cfg, STEPS, tmp_path, always_complete, start_from="nope")


def test_until_stops_after_a_step(tmp_path, cfg):
    assert actions(plan(cfg, STEPS, tmp_path, always_complete, until="labels")) == [
        ("train", "run"), ("cams", "run"), ("labels", "run")]
    mark_done(tmp_path, plan(cfg, STEPS, tmp_path, always_complete))
    assert actions(plan(cfg, STEPS, tmp_path, always_complete, start_from="cams", until="cams")) == [
        ("train", "skip"), ("cams", "run")]
    with pytest.raises(ConfigError, match="--until nope: no such step"):
        plan(cfg, STEPS, tmp_path, always_complete, until="nope")
    with pytest.raises(ConfigError, match="--until cams comes before --from labels"):
        plan(cfg, STEPS, tmp_path, always_complete, start_from="labels", until="cams")


def test_fingerprint_depends_on_the_previous_step_and_split_contents(tmp_path):
    root = tmp_path / "d"
    (root / "ImageSets/Segmentation").mkdir(parents=True)
    split = root / "ImageSets/Segmentation/train.txt"
    split.write_text("a\nb\n")
    cfg = load_config(Config, overrides=[f"data.root={root}"])
    step = STEPS[0]
    fp = fingerprint(cfg, step)
    assert fingerprint(cfg, step) == fp
    assert fingerprint(cfg, step, previous="x") != fp
    split.write_text("a\nb\nc\n")
    assert fingerprint(cfg, step) != fp


@pytest.mark.parametrize("raw, message", [
    ([], "is empty"),
    ([{"stage": "bake"}], "unknown stage 'bake'"),
    ([{"stage": "cams"}, {"stage": "cams"}], "used twice"),
    ([{"stage": "cams", "sett": []}], "unknown config key 'pipeline.steps\\[0\\].sett'"),
])
def test_bad_step_lists_are_clear_errors(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_steps(raw)


def test_a_setting_at_its_default_does_not_change_the_fingerprint(cfg):
    from dataclasses import fields

    from wsss.config.schema import LabelsConfig

    step = STEPS[2]
    fp = fingerprint(cfg, step)
    explicit = load_config(Config, overrides=["run.name=t", "labels.thr=0.2", "labels.saliency_thr=0.5"])
    assert fingerprint(explicit, step) == fp          # the same settings, written out
    assert fingerprint(load_config(Config, overrides=["run.name=t", "labels.thr=0.3"]), step) != fp
    assert {f.name for f in fields(LabelsConfig)} >= {"thr", "saliency_thr"}
