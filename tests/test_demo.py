"""`wsss demo`: its pipeline fits together, its measures are right on hand-made maps, and (slow) a
reduced demo runs end to end with the methods' effects visible in its table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from wsss.config import Config, load_config
from wsss.data.synth import META_FILE
from wsss.demo import (
    FINAL_ROWS,
    PSEUDO_ROWS,
    DemoData,
    demo_config,
    format_demo_table,
    object_breakdown,
    prepare_data,
    run_demo,
)
from wsss.errors import DataError
from wsss.io import IGNORE, write_label
from wsss.pipeline.run import run_pipeline


@pytest.mark.parametrize("fast", [False, True])
def test_demo_pipeline_plans_and_every_table_row_has_its_step(tmp_path, fast):
    config = demo_config(fast)
    result = run_pipeline([config], [f"data.root={tmp_path}/data", f"run.out_dir={tmp_path}"],
                          dry_run=True, log=lambda _: None)
    assert all(p.action == "run" for p in result["plan"])
    steps = {p.step.name: p for p in result["plan"]}
    for row in PSEUDO_ROWS + FINAL_ROWS:
        planned = steps[row.eval_step]
        assert planned.step.stage == "eval"
        assert (planned.cfg.eval.pred, planned.cfg.eval.split) == (row.folder, row.split)
    # the NSRM steps read round 1's CRF'd training predictions and the labels of their own method
    assert steps["nsrom_nsrm"].cfg.labels.nsrm_labels == "labels_nsrom"
    assert steps["epspom_nsrm"].cfg.labels.nsrm_labels == "labels_epspom"
    assert steps["epspom_labels"].cfg.labels.pom_cams == "cams_cam"


def _scene(root, image_id, instances, objects):
    write_label(root / "SegmentationObject" / f"{image_id}.png", instances)
    return {"split": "train", "objects": objects}


def test_object_breakdown_counts_where_non_salient_pixels_go(tmp_path):
    root = tmp_path / "data"
    inst = np.zeros((4, 6), np.uint8)
    inst[0, :4] = 1            # salient train (class 1): 4 px
    inst[2:4, 0:3] = 2         # non-salient ball (class 3): 6 px
    inst[3, 5] = 3             # non-salient box (class 4): 1 px
    images = {"a": _scene(root, "a", inst, [
        {"instance": 1, "class_index": 1, "salient": True},
        {"instance": 2, "class_index": 3, "salient": False},
        {"instance": 3, "class_index": 4, "salient": False}])}
    inst_b = np.zeros((4, 6), np.uint8)
    images["b"] = _scene(root, "b", inst_b, [{"instance": 1, "class_index": 2, "salient": True}])
    (root / META_FILE).write_text(json.dumps({"images": images}))
    labels = tmp_path / "labels"
    pred = np.zeros((4, 6), np.uint8)
    pred[0, :2] = 1
    pred[2, 0:3] = 3           # ball: 3 px own class
    pred[3, 0] = IGNORE        # 1 px ignore, 2 px background
    pred[3, 5] = 1             # box pixel as another class
    write_label(labels / "a.png", pred)
    write_label(labels / "b.png", pred)   # b has no non-salient object: not read for them

    out = object_breakdown(labels, root, ["a", "b"])
    assert out["objects"] == 2 and out["pixels"] == 7
    assert out["as_class"] == pytest.approx(3 / 7) and out["as_background"] == pytest.approx(2 / 7)
    assert out["as_ignore"] == pytest.approx(1 / 7) and out["as_other"] == pytest.approx(1 / 7)
    salient = object_breakdown(labels, root, ["a"], salient=True)
    assert (salient["pixels"], salient["as_class"], salient["as_background"]) == (4, 0.5, 0.5)
    assert object_breakdown(labels, root, ["b"])["as_class"] is None   # no such pixel

    (labels / "a.png").unlink()
    with pytest.raises(DataError, match="a.png is missing"):
        object_breakdown(labels, root, ["a"])


def test_table_format_marks_missing_values():
    rows = [{"method": "EPS", "what": "pseudo labels", "split": "train", "miou": 0.5, "coverage": 1.0,
             "cooccurrence": {"train:rails": 0.25, "boat:water": None},
             "nonsalient": {"as_class": 0.1, "as_background": 0.9, "as_ignore": 0.0}},
            {"method": "EPS", "what": "DeepLab", "split": "val", "miou": float("nan"), "coverage": 1.0,
             "cooccurrence": {"train:rails": None, "boat:water": 1.5},
             "nonsalient": {"as_class": None, "as_background": None, "as_ignore": None}}]
    lines = format_demo_table(rows).splitlines()
    assert lines[0].split()[:4] == ["method", "labels", "split", "mIoU"]
    assert lines[2].split() == ["EPS", "pseudo", "labels", "train", "50.0", "100.0", "0.25", "-", "10.0", "90.0", "0.0"]
    assert lines[3] == ""   # a blank line between the training and validation rows
    assert lines[4].split() == ["EPS", "DeepLab", "val", "-", "100.0", "-", "1.50", "-", "-", "-"]


def test_prepare_data_reuses_matching_scenes_and_refuses_others(tmp_path):
    spec = DemoData(num_train=3, num_val=1, size="64", seed=0)
    made = prepare_data(tmp_path / "data", spec, log=lambda _: None)
    assert not made["reused"] and made["images"] == {"train": 3, "val": 1}
    cfg = load_config(Config, [tmp_path / "data" / "dataset.yaml"])
    assert cfg.data.root == str((tmp_path / "data").resolve())
    again = prepare_data(tmp_path / "data", spec, log=lambda _: None)
    assert again["reused"] and again["images"] == {"train": 3, "val": 1}
    with pytest.raises(DataError, match="holds other synthetic scenes"):
        prepare_data(tmp_path / "data", DemoData(num_train=4, num_val=1, size="64"), log=lambda _: None)


def test_demo_config_is_a_complete_pipeline_config():
    raw = yaml.safe_load(demo_config().read_text())
    assert raw["run"]["name"] == "demo" and raw["data"]["root"] == ""
    cfg = load_config(Config, [demo_config(fast=True)])
    assert cfg.run.name == "demo_fast" and cfg.train_seg.msc_scales == (1.0,)


@pytest.mark.slow
def test_reduced_demo_runs_and_shows_the_methods_effects(tmp_path):
    """The fast demo end to end (issues 5, 6, 8, 13): every row of the table is there, EPS puts less
    of the context strips into the object classes than the CAM baseline (co-occurrence ratio from
    the evaluator, with a margin) and scores higher, and POM moves the pixels of objects the saliency map missed from
    background to 255 (ignored), on NSROM's labels and on EPS's."""
    result = run_demo(tmp_path / "demo", fast=True, log=lambda _: None)
    rows = {(r["method"], r["what"]): r for r in result["rows"]}
    assert len(rows) == len(PSEUDO_ROWS) + len(FINAL_ROWS)
    cam, eps = rows[("CAM baseline", "pseudo labels")], rows[("EPS", "pseudo labels")]
    for pair in ("train:rails", "boat:water"):
        assert eps["cooccurrence"][pair] <= 0.8 * cam["cooccurrence"][pair], pair
    assert eps["miou"] >= cam["miou"] + 0.1                     # and EPS's labels are better overall
    saliency = rows[("Saliency baseline", "pseudo labels")]
    assert saliency["coverage"] == 1.0 and saliency["miou"] > cam["miou"]
    be, be_pom = rows[("NSROM BE", "pseudo labels")], rows[("NSROM BE+POM", "pseudo labels")]
    eps_pom = rows[("EPS+POM", "pseudo labels")]
    for before, after in ((be, be_pom), (eps, eps_pom)):
        assert after["nonsalient"]["as_background"] <= before["nonsalient"]["as_background"] - 0.1
        assert after["nonsalient"]["as_ignore"] >= before["nonsalient"]["as_ignore"] + 0.1
        assert after["coverage"] < before["coverage"]          # the price: fewer labelled pixels
    for row in result["rows"]:
        assert 0.0 < row["miou"] < 1.0 and 0.0 < row["coverage"] <= 1.0
    table = (tmp_path / "demo" / "demo_table.txt").read_text()
    assert "EPS+POM+NSRM" in table and "m[train:rails]" in table
