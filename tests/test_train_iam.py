"""`wsss train-iam`: targets from the accumulated maps, training, and the errors it can meet."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_train_classifier import make_tiny_voc, needs_lite0, tiny_config
from wsss.errors import DataError, WsssError
from wsss.io import save_npz
from wsss.stages.context import stage_context
from wsss.stages.train_iam import attention_targets, train_iam
from wsss.stages.trained import load_trained_classifier
from wsss.stages.trainer_utils import read_metrics

torch.set_num_threads(1)


def test_targets_hold_the_labelled_maps_over_255_and_zero_elsewhere():
    maps = np.array([[[0, 51], [255, 102]], [[255, 0], [0, 0]]], dtype=np.uint8)
    target = attention_targets(np.array([3, 1]), maps, num_classes=4)
    assert target.dtype == np.float32 and target.shape == (4, 2, 2)
    np.testing.assert_allclose(target[2], [[0.0, 0.2], [1.0, 0.4]], atol=1e-7)   # class 3
    np.testing.assert_allclose(target[0], [[1.0, 0.0], [0.0, 0.0]])              # class 1
    assert not target[1].any() and not target[3].any()        # classes absent from the image: 0
    with pytest.raises(DataError, match=r"outside 1\.\.4"):
        attention_targets(np.array([5]), maps[:1], num_classes=4)
    with pytest.raises(DataError, match="K = len"):
        attention_targets(np.array([1, 2, 3]), maps, num_classes=4)


def _write_attention(run_dir, data_root, size: int) -> None:
    """Accumulated maps as `wsss train-cls` exports them: a blob at the object's place."""
    labels = json.loads((data_root / "cls_labels.json").read_text())
    rng = np.random.default_rng(1)
    for image_id, classes in labels.items():
        maps = (rng.random((len(classes), size, size)) * 255).astype(np.uint8)
        maps[:, : size // 2] = 0
        save_npz(run_dir / "oaa" / f"{image_id}.npz", classes=np.array(classes, dtype=np.int64), maps=maps)


@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory):
    return make_tiny_voc(tmp_path_factory.mktemp("tiny_voc_iam"))


@needs_lite0
def test_iam_trains_on_the_exported_maps_and_writes_final_weights(tiny_voc, tmp_path):
    cfg = tiny_config(tiny_voc, tmp_path, "iam", method="nsrom")
    cfg.iam.epochs = 3
    cfg.iam.lr = 0.002
    _write_attention(tmp_path / "iam", tiny_voc, size=4)       # 64 px at output stride 16
    final = train_iam(stage_context(cfg))
    assert final == tmp_path / "iam" / "iam" / "final.pt"
    model, meta = load_trained_classifier(final)
    assert (meta["head"], meta["method"], meta["input_size"], meta["num_classes"]) == ("iam", "nsrom", 64, 2)
    logits, maps = model(torch.zeros(1, 3, 64, 64))
    assert logits is None and tuple(maps.shape) == (1, 2, 4, 4)
    rows = read_metrics(tmp_path / "iam" / "iam")
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["lr"] for r in rows] == pytest.approx([0.002] * 2 + [0.0002] * 4)   # x0.1 from epoch 1
    assert np.mean([r["loss"] for r in rows[-2:]]) < np.mean([r["loss"] for r in rows[:2]])
    assert json.loads((tmp_path / "iam" / "meta_train_iam.json").read_text())["world_size"] == 1


@needs_lite0
def test_maps_of_another_size_are_a_clear_error(tiny_voc, tmp_path):
    cfg = tiny_config(tiny_voc, tmp_path, "iam", method="nsrom")
    _write_attention(tmp_path / "iam", tiny_voc, size=5)
    with pytest.raises(WsssError, match=r"\(4, 4\).*\(5, 5\).*square_size"):
        train_iam(stage_context(cfg))


def test_missing_maps_name_the_file_and_the_stage_that_writes_them(tiny_voc, tmp_path):
    cfg = tiny_config(tiny_voc, tmp_path, "iam", method="nsrom")
    with pytest.raises(DataError, match=r"8 of 8.*oaa/img_000\.npz.*train_cls\.method=nsrom"):
        train_iam(stage_context(cfg))
