"""`wsss eval` end to end, every error case of the evaluator, and a look at the real masks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wsss.cli import main
from wsss.data.classes import dataset_info
from wsss.errors import DataError
from wsss.evaluation import evaluate
from wsss.io import write_label

N = 255
THREE = dataset_info("three", ["background", "cat", "dog"])
# The maps of test_evaluation.py's 255-convention test: strict mIoU 13/36, EPS mIoU 5/9,
# coverage 5/7, pixel accuracy 3/7 (strict) and 3/5 (EPS).
GT1 = np.array([[0, 0, 1, 1], [2, 2, 1, N]], np.uint8)
PRED1 = np.array([[0, 1, 1, N], [2, N, 0, 2]], np.uint8)


def approx(x):
    return pytest.approx(x, abs=1e-12)


@pytest.fixture
def small(tmp_path):
    """gt/ and pred/ with image a (the hand-worked maps) and image b (perfect, all background)."""
    for folder, a in (("gt", GT1), ("pred", PRED1)):
        write_label(tmp_path / folder / "a.png", a)
        write_label(tmp_path / folder / "b.png", np.zeros((2, 3), np.uint8))
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    return tmp_path


def test_cli_writes_json_with_numbers_and_protocol(small, capsys):
    (small / "split.txt").write_text("a\n")
    out = small / "res" / "eval.json"
    rc = main(["eval", "--pred", str(small / "pred"), "--gt", str(small / "gt"), "--split", str(small / "split.txt"),
               "--classes", str(small / "classes.txt"), "--tolerance", "1", "--workers", "1", "--out", str(out),
               "--protocol", "post_processing=crf", "--protocol", "scales=1.0,0.5", "--protocol", "note=x=y"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "cat" in table and "dog" in table and "36.11" in table and "55.56" in table   # 13/36, 5/9 in %
    res = json.loads(out.read_text())
    assert res["num_images"] == 1 and res["classes"] == ["background", "cat", "dog"]
    miss, eps = res["conventions"]["ignore_as_miss"], res["conventions"]["ignore_dropped"]
    assert miss["miou"] == approx(13 / 36) and eps["miou"] == approx(5 / 9)
    assert miss["pixel_accuracy"] == approx(3 / 7) and eps["pixel_accuracy"] == approx(3 / 5)
    assert miss["per_class"]["cat"]["recall"] == approx(1 / 3) and eps["per_class"]["cat"]["recall"] == approx(1 / 2)
    assert res["coverage"] == approx(5 / 7)
    assert res["pixels"] == {"counted": 7, "ground_truth_255": 1, "predicted_255": 2}
    assert res["confusion_matrix"]["counts"] == [[1, 1, 0, 0], [1, 1, 0, 1], [0, 0, 1, 1]]
    proto = res["protocol"]
    assert proto["split"].endswith("split.txt") and proto["num_images"] == 1
    assert proto["post_processing"] == "crf" and proto["scales"] == "1.0,0.5" and proto["note"] == "x=y"
    assert proto["initialisation"] is None and proto["saliency_source"] is None
    assert set(proto["ignore_255_in_prediction"]) == {"ignore_as_miss", "ignore_dropped"}
    assert "non-zero union" in proto["averaging"]["miou"]
    assert proto["boundary"]["tolerance_px"] == 1.0 and res["boundary"]["tolerance_px"] == 1.0
    assert proto["crop"].startswith("error")
    for key in ("precision", "recall", "f1", "pred_boundary_pixels", "matched_gt"):
        assert key in res["boundary"]


def test_cli_without_split_takes_every_gt_file_and_reads_context(small):
    write_label(small / "ctx" / "a.png", np.array([[0, 1, 1, 1], [1, 1, 1, 1]], np.uint8))
    write_label(small / "ctx" / "b.png", np.ones((2, 3), np.uint8))
    (small / "context.json").write_text('{"0": "void", "1": "grass"}')   # found beside ctx/
    out = small / "eval.json"
    rc = main(["eval", "--pred", str(small / "pred"), "--gt", str(small / "gt"), "--classes", str(small / "classes.txt"),
               "--context", str(small / "ctx"), "--pairs", "cat:grass", "--top-pairs", "3", "--no-boundary",
               "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    # a and b; b adds 6 correct background pixels: strict pixel accuracy (3 + 6) / (7 + 6)
    assert res["num_images"] == 2 and res["protocol"]["split"] is None
    assert res["conventions"]["ignore_as_miss"]["pixel_accuracy"] == approx(9 / 13)
    assert "boundary" not in res and res["protocol"]["boundary"] is None
    # FP on grass: (gt 0, pred 1) at (0,1) -> cat; (gt 1, pred 0) at (1,2) -> background (not a target).
    # TP cat = 1 -> m = 1. Top pairs: only grass->cat has foreground false positives, already listed.
    pairs = res["cooccurrence"]["pairs"]
    assert [(p["target"], p["context"], p["fp"], p["tp"], p["ratio"]) for p in pairs] == [("cat", "grass", 1, 1, 1.0)]


def test_cli_error_is_one_line_naming_the_file(small, capsys):
    (small / "pred" / "b.png").unlink()
    rc = main(["eval", "--pred", str(small / "pred"), "--gt", str(small / "gt"), "--classes", str(small / "classes.txt")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "prediction missing for b" in err and str(small / "pred" / "b.png") in err


def test_cli_eval_section_of_a_config(small):
    (small / "split.txt").write_text("a\n")
    cfg = small / "eval.yaml"
    cfg.write_text(f"data: {{class_names: [background, cat, dog]}}\n"
                   f"eval: {{boundary: false, workers: 1, protocol: {{initialisation: imagenet}}}}\n")
    out = small / "eval.json"
    assert main(["eval", "--config", str(cfg), "--pred", str(small / "pred"), "--gt", str(small / "gt"),
                 "--split", str(small / "split.txt"), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["protocol"]["initialisation"] == "imagenet" and "boundary" not in res
    assert res["conventions"]["ignore_dropped"]["miou"] == approx(5 / 9)


def test_cli_takes_ground_truth_split_and_context_from_the_config(small):
    # dataset root = small/: masks in gt/, split val = [a], context paths relative to the root
    (small / "ImageSets/Segmentation").mkdir(parents=True)
    (small / "ImageSets/Segmentation/val.txt").write_text("a\n")
    write_label(small / "ctx" / "a.png", np.array([[0, 1, 1, 1], [1, 1, 1, 1]], np.uint8))
    (small / "names.json").write_text('["void", "grass"]')
    cfg = small / "run.yaml"
    cfg.write_text(f"data: {{root: {small}, mask_dir: gt, class_names: [background, cat, dog]}}\n"
                   "eval: {split: val, context_dir: ctx, context_classes: names.json, pairs: ['cat:grass'],\n"
                   "       boundary: false, workers: 1}\n")
    out = small / "eval.json"
    assert main(["eval", "--config", str(cfg), "--pred", str(small / "pred"), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["num_images"] == 1 and res["protocol"]["split"].endswith("val.txt")
    assert res["protocol"]["context_dir"] == str(small / "ctx")
    # as in the test above: grass -> cat 1 false positive, TP of cat 1
    assert [(p["target"], p["context"], p["fp"], p["tp"]) for p in res["cooccurrence"]["pairs"]] == [("cat", "grass", 1, 1)]


# ---------------------------------------------------------------- errors
def test_size_mismatch_is_an_error_unless_crop(tmp_path):
    gt = np.array([[1, 1], [0, 0]], np.uint8)
    write_label(tmp_path / "gt" / "x.png", gt)
    pred = np.zeros((3, 3), np.uint8)
    pred[0, 0] = 1
    write_label(tmp_path / "pred" / "x.png", pred)
    with pytest.raises(DataError, match=r"prediction .*x\.png is 3x3 \(WxH\) but the ground truth .*x\.png is 2x2.*--crop"):
        evaluate(tmp_path / "pred", tmp_path / "gt", ["x"], THREE)
    r = evaluate(tmp_path / "pred", tmp_path / "gt", ["x"], THREE, crop=True, boundary=False)
    # cropped prediction [[1, 0], [0, 0]]: background TP 2, cat TP 1, one cat pixel predicted 0
    assert r.confusion.tolist() == [[2, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]
    assert r.protocol["crop"].startswith("EPS evaluator")
    # a smaller prediction is padded with 0 (background), as PIL's crop does in the EPS evaluator
    write_label(tmp_path / "pred" / "x.png", np.array([[1]], np.uint8))
    r = evaluate(tmp_path / "pred", tmp_path / "gt", ["x"], THREE, crop=True, boundary=False)
    assert r.confusion.tolist() == [[2, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]


def test_missing_prediction_names_the_id(small):
    write_label(small / "gt" / "c.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match=r"prediction missing for c: expected .*pred/c\.png"):
        evaluate(small / "pred", small / "gt", ["a", "c"], THREE)
    with pytest.raises(DataError, match=r"prediction missing for c"):
        evaluate(small / "pred", small / "gt", ["a", "b", "c"], THREE, workers=2, chunksize=1)


def test_values_outside_the_label_set(small):
    write_label(small / "pred" / "b.png", np.array([[0, 3, 0], [0, 0, 0]], np.uint8))
    with pytest.raises(DataError, match=r"prediction .*b\.png has values 3 outside 0\.\.2"):
        evaluate(small / "pred", small / "gt", ["b"], THREE)
    write_label(small / "pred" / "b.png", np.zeros((2, 3), np.uint8))
    write_label(small / "gt" / "b.png", np.array([[0, 0, 0], [0, 0, 21]], np.uint8))
    with pytest.raises(DataError, match=r"ground truth .*b\.png has values 21"):
        evaluate(small / "pred", small / "gt", ["b"], THREE)


def test_empty_or_duplicate_id_lists(small, tmp_path):
    (small / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="empty"):
        evaluate(small / "pred", small / "gt", None, THREE, split=small / "empty.txt")
    with pytest.raises(DataError, match="no images to evaluate"):
        evaluate(small / "pred", small / "gt", [], THREE)
    (tmp_path / "nogt").mkdir()
    with pytest.raises(DataError, match="no images to evaluate"):
        evaluate(small / "pred", tmp_path / "nogt", None, THREE)
    with pytest.raises(DataError, match="a is listed twice"):
        evaluate(small / "pred", small / "gt", ["a", "b", "a"], THREE)


def test_missing_folders_and_context_errors(small):
    with pytest.raises(DataError, match="prediction folder not found"):
        evaluate(small / "nope", small / "gt", ["a"], THREE)
    with pytest.raises(DataError, match="need context masks"):
        evaluate(small / "pred", small / "gt", ["a"], THREE, pairs=["cat:grass"])
    write_label(small / "ctx" / "a.png", np.array([[0, 1, 5, 1], [1, 1, 1, 1]], np.uint8))
    with pytest.raises(DataError, match=r"context mask .*a\.png has values 5 outside 0\.\.1"):
        evaluate(small / "pred", small / "gt", ["a"], THREE, context_dir=small / "ctx", context_names=["void", "grass"])
    with pytest.raises(DataError, match="context mask missing for b"):
        evaluate(small / "pred", small / "gt", ["b"], THREE, context_dir=small / "ctx", context_names=["void", "grass"])
    (small / "bdry").mkdir()
    with pytest.raises(DataError, match=r"boundary map missing for a: expected .*a\.mat or .*a\.png"):
        evaluate(small / "pred", small / "gt", ["a"], THREE, boundary_gt_dir=small / "bdry")
    with pytest.raises(DataError, match="set by the evaluator"):
        evaluate(small / "pred", small / "gt", ["a"], THREE, protocol={"split": "x"})


# ---------------------------------------------------------------- real data
def test_real_voc_masks_against_themselves(voc_samples_root, tmp_path):
    ids = (voc_samples_root / "ImageSets/Segmentation/train.txt").read_text().split()[:6]
    gt = voc_samples_root / "SegmentationClassAug"
    r = evaluate(gt, gt, ids, dataset_info("voc"))
    m = r.metrics("ignore_as_miss")
    assert r.num_images == 6 and m.miou == 1.0 and r.coverage == 1.0 and r.gt_ignored > 0
    assert r.boundary_scores == {"precision": 1.0, "recall": 1.0, "f1": 1.0}


def test_real_msrc_context_masks(msrcvoc_root, tmp_path):
    from wsss.io import read_label

    ids = (msrcvoc_root / "ImageSets/Segmentation/val.txt").read_text().split()[:8]
    gt_dir, ctx_dir = msrcvoc_root / "SegmentationClass", msrcvoc_root / "SegmentationContext"
    boat = 4
    expect = np.zeros(24, np.int64)
    for i in ids:
        gt = read_label(gt_dir / f"{i}.png")
        write_label(tmp_path / "pred" / f"{i}.png", np.full(gt.shape, boat, np.uint8))   # everything "boat"
        ctx = read_label(ctx_dir / f"{i}.png")
        counted = (gt != boat) & (gt != N)
        expect += np.bincount(ctx[counted], minlength=24)
    r = evaluate(tmp_path / "pred", gt_dir, ids, dataset_info("voc"), context_dir=ctx_dir,
                 context_names=msrcvoc_root / "context.json", pairs=["boat:water"], top_pairs=3, boundary=False)
    co = r.cooccurrence
    assert co["context_classes"][10] == "water" and co["ignored_context"] == (0,)
    assert co["fp"][:, boat].tolist() == expect.tolist()
    assert co["fp"][:, :boat].sum() == 0 and co["fp"][:, boat + 1:].sum() == 0
    assert co["pairs"][0].context == "water" and co["pairs"][0].fp == expect[10]
    assert len(co["pairs"]) == 1 + min(3, int((expect[1:] > 0).sum()) - (expect[10] > 0) - (expect[23] > 0))
