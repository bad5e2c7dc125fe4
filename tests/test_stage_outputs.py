"""No stage writes into the dataset: outputs inside (or holding) data.root are refused."""

from __future__ import annotations

import pytest

from wsss.config.schema import Config
from wsss.errors import ConfigError
from wsss.stages.context import StageContext


@pytest.fixture
def ctx(tmp_path):
    (tmp_path / "data" / "SegmentationClass").mkdir(parents=True)
    (tmp_path / "data" / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "data" / "ImageSets" / "Segmentation" / "train.txt").write_text("a\n")
    cfg = Config()
    cfg.data.root = str(tmp_path / "data")
    cfg.run.out_dir, cfg.run.name = str(tmp_path / "runs"), "r"
    return StageContext(cfg, tmp_path / "runs" / "r")


def test_output_path_refuses_the_dataset(ctx, tmp_path):
    assert ctx.output_path("labels", "labels.out") == tmp_path / "runs" / "r" / "labels"
    for bad in (str(tmp_path / "data" / "SegmentationClass"), str(tmp_path / "data"), "../../data/x", str(tmp_path)):
        with pytest.raises(ConfigError, match="lies in \\(or holds\\) the dataset"):
            ctx.output_path(bad, "predict.out")


@pytest.mark.parametrize("stage", ["labels", "crf", "predict"])
def test_stages_refuse_to_write_into_the_dataset(ctx, tmp_path, stage, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    gt = str(tmp_path / "data" / "SegmentationClass")
    (tmp_path / "runs" / "r" / "in").mkdir(parents=True)
    if stage == "labels":
        from wsss.stages.make_labels import make_labels as run
        ctx.cfg.labels.out = gt
    elif stage == "crf":
        from wsss.stages.crf import run_crf as run
        ctx.cfg.crf.input, ctx.cfg.crf.out = "in", gt
    else:
        from wsss.stages.predict import predict as run
        ctx.cfg.predict.out = gt
        ctx.cfg.run.device = "cpu"
    with pytest.raises(ConfigError, match="dataset"):
        run(ctx)
    assert list((tmp_path / "data" / "SegmentationClass").iterdir()) == []
