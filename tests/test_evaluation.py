"""The evaluator's numbers on small maps whose metrics are worked out by hand in the comments."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.io
import scipy.ndimage as ndi
import scipy.sparse

from wsss.data.classes import dataset_info
from wsss.errors import DataError
from wsss.evaluation import (boundary_counts, boundary_scores, confusion_counts, coverage, evaluate,
                             label_boundaries, read_context_names, read_sbd_boundaries, segmentation_metrics)
from wsss.evaluation.boundary import fill_ignored
from wsss.evaluation.cooccurrence import context_fp_counts, make_pairs, parse_pairs
from wsss.io import write_gray, write_label

N = 255  # ignore
THREE = dataset_info("three", ["background", "cat", "dog"])


def approx(x):
    return pytest.approx(x, abs=1e-12)


def write_maps(folder, maps: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in maps.items():
        write_label(folder / f"{name}.png", np.asarray(arr, dtype=np.uint8))


# ---------------------------------------------------------------- 255 conventions and coverage
GT1 = np.array([[0, 0, 1, 1],
                [2, 2, 1, N]], np.uint8)
PRED1 = np.array([[0, 1, 1, N],
                  [2, N, 0, 2]], np.uint8)
# (gt, pred) pairs: (0,0) (0,1) (1,1) (1,255) (2,2) (2,255) (1,0); (255,2) is not counted.
# Confusion, rows gt 0..2, columns pred 0, 1, 2, 255:
#   gt 0: 1 1 0 0 | gt 1: 1 1 0 1 | gt 2: 0 0 1 1       -> 7 counted pixels, 2 predicted 255.
CONF1 = [[1, 1, 0, 0], [1, 1, 0, 1], [0, 0, 1, 1]]


def test_confusion_counts_keeps_predicted_255_in_the_last_column():
    conf = confusion_counts(PRED1, GT1, 3)
    assert conf.dtype == np.int64
    assert conf.tolist() == CONF1


def test_predicted_255_counted_as_miss():
    m = segmentation_metrics(np.array(CONF1), "ignore_as_miss")
    # class 0: TP 1, GT 2, predicted 2 -> union 3: IoU 1/3, P 1/2, R 1/2
    # class 1: TP 1, GT 3 (incl. the 255), predicted 2 -> union 4: IoU 1/4, P 1/2, R 1/3
    # class 2: TP 1, GT 2 (incl. the 255), predicted 1 -> union 2: IoU 1/2, P 1, R 1/2
    assert m.iou.tolist() == [approx(1 / 3), approx(1 / 4), approx(1 / 2)]
    assert m.precision.tolist() == [approx(1 / 2), approx(1 / 2), approx(1.0)]
    assert m.recall.tolist() == [approx(1 / 2), approx(1 / 3), approx(1 / 2)]
    assert m.miou == approx(13 / 36)              # (1/3 + 1/4 + 1/2) / 3
    assert m.miou_gt_present == approx(13 / 36)   # every class is in the GT
    assert m.pixel_accuracy == approx(3 / 7)
    assert m.fw_iou == approx(29 / 84)            # 2/7 * 1/3 + 3/7 * 1/4 + 2/7 * 1/2


def test_predicted_255_dropped_as_the_eps_evaluator():
    m = segmentation_metrics(np.array(CONF1), "ignore_dropped")
    # The two pixels predicted 255 vanish: class 1 GT 2, class 2 GT 1.
    # IoU: 1/3, 1/(2+2-1) = 1/3, 1/(1+1-1) = 1; recall 1/2, 1/2, 1; precision unchanged.
    assert m.iou.tolist() == [approx(1 / 3), approx(1 / 3), approx(1.0)]
    assert m.recall.tolist() == [approx(1 / 2), approx(1 / 2), approx(1.0)]
    assert m.precision.tolist() == [approx(1 / 2), approx(1 / 2), approx(1.0)]
    assert m.miou == approx(5 / 9)
    assert m.pixel_accuracy == approx(3 / 5)
    assert m.fw_iou == approx(7 / 15)             # 2/5 * 1/3 + 2/5 * 1/3 + 1/5 * 1


def test_coverage_is_the_share_of_valid_gt_pixels_not_predicted_255():
    assert coverage(np.array(CONF1)) == approx(5 / 7)
    assert coverage(np.array([[3, 0, 0], [0, 2, 0]])) == approx(1.0)


def test_classes_absent_from_one_side():
    info = dataset_info("five", ["background", "a", "b", "c", "d"])
    gt = np.array([[0, 0, 1, 1, 3, 3]], np.uint8)
    pred = np.array([[0, 2, 1, 1, 0, 0]], np.uint8)
    m = segmentation_metrics(confusion_counts(pred, gt, info.num_labels), "ignore_as_miss")
    # class 0: TP 1, GT 2, pred 3 -> IoU 1/4, P 1/3, R 1/2
    # class 1: TP 2, GT 2, pred 2 -> IoU 1
    # class 2 (predicted, not in GT): union 1 -> IoU 0, P 0, R undefined
    # class 3 (in GT, never predicted): union 2 -> IoU 0, P undefined, R 0
    # class 4 (on neither side): everything undefined
    assert m.iou[:4].tolist() == [approx(1 / 4), approx(1.0), 0.0, 0.0]
    assert math.isnan(m.iou[4])
    assert math.isnan(m.recall[2]) and math.isnan(m.precision[3]) and math.isnan(m.precision[4])
    assert m.miou == approx(5 / 16)               # classes 0..3: (1/4 + 1 + 0 + 0) / 4
    assert m.miou_gt_present == approx(5 / 12)    # classes 0, 1, 3: (1/4 + 1 + 0) / 3
    assert m.pixel_accuracy == approx(1 / 2)
    assert m.fw_iou == approx(5 / 12)             # 2/6 * 1/4 + 2/6 * 1 + 2/6 * 0
    assert m.mean_precision == approx(4 / 9)      # classes 0, 1, 2: (1/3 + 1 + 0) / 3
    assert m.mean_recall == approx(1 / 2)         # classes 0, 1, 3: (1/2 + 1 + 0) / 3


def test_values_outside_the_label_set_are_refused_naming_the_map():
    gt = np.array([[0, 1]], np.uint8)
    with pytest.raises(DataError, match=r"prediction p\.png has values 7 outside 0\.\.2"):
        confusion_counts(np.array([[0, 7]], np.uint8), gt, 3, pred_name="prediction p.png")
    with pytest.raises(DataError, match=r"ground truth g\.png has values 3"):
        confusion_counts(gt, np.array([[3, 255]], np.uint8), 3, gt_name="ground truth g.png")


# ---------------------------------------------------------------- boundaries
def two_regions(width: int, splits: list[int]) -> np.ndarray:
    """6 rows; label i+1 from column splits[i] on (vertical steps)."""
    row = np.zeros(width, np.uint8)
    for i, s in enumerate(splits):
        row[s:] = i + 1
    return np.tile(row, (6, 1))


def test_laplacian_boundaries_mark_both_sides_of_a_step():
    # Step between columns 2 and 3: column 2 sees a right neighbour 1 (response +1), column 3 a
    # left neighbour 0 (response -1); the image border (reflected) is no boundary.
    b = label_boundaries(two_regions(8, [3]))
    assert np.flatnonzero(b.any(axis=0)).tolist() == [2, 3]
    assert b[:, [2, 3]].all()


def test_ground_truth_255_band_puts_the_boundary_on_its_centre():
    band = np.tile(np.array([0, 0, 0, N, N, 1, 1, 1], np.uint8), (4, 1))
    # nearest fill: column 3 -> 0 (next to column 2), column 4 -> 1 (next to column 5)
    assert fill_ignored(band)[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert np.flatnonzero(label_boundaries(band).any(axis=0)).tolist() == [3, 4]
    assert not label_boundaries(np.full((3, 3), N, np.uint8)).any()


def test_boundary_precision_recall_with_and_without_tolerance():
    gt_b = label_boundaries(two_regions(8, [3]))        # columns 2, 3: 12 pixels
    pred_b = label_boundaries(two_regions(8, [4, 6]))   # columns 3, 4 and 5, 6: 24 pixels
    # tolerance 0: only column 3 overlaps -> P 6/24, R 6/12, F1 = 2*(1/4)(1/2)/(3/4) = 1/3
    c0 = boundary_counts(pred_b, gt_b, 0)
    assert c0.tolist() == [24, 6, 12, 6]
    s0 = boundary_scores(c0)
    assert (s0["precision"], s0["recall"], s0["f1"]) == (approx(1 / 4), approx(1 / 2), approx(1 / 3))
    # tolerance 1: predicted columns 3, 4 lie within 1 of GT column 3 -> P 12/24; GT columns 2, 3
    # are within 1 of predicted column 3 -> R 1; F1 = 2*(1/2)(1)/(3/2) = 2/3
    c1 = boundary_counts(pred_b, gt_b, 1)
    assert c1.tolist() == [24, 12, 12, 12]
    assert boundary_scores(c1)["f1"] == approx(2 / 3)
    # tolerance 2: predicted column 5 joins (2 from column 3), column 6 is 3 away -> P 18/24 = 3/4,
    # R 1, F1 = 2*(3/4)/(7/4) = 6/7
    c2 = boundary_counts(pred_b, gt_b, 2)
    assert c2.tolist() == [24, 18, 12, 12]
    assert boundary_scores(c2)["f1"] == approx(6 / 7)


def test_boundary_scores_undefined_without_boundaries():
    s = boundary_scores(np.array([0, 0, 0, 0]))
    assert all(math.isnan(v) for v in s.values())


def write_sbd_mat(path, boundaries: list[np.ndarray], num_classes: int = 20) -> None:
    """An SBD cls/<id>.mat: struct GTcls with Segmentation, Boundaries (cell of sparse), CategoriesPresent."""
    h, w = boundaries[0].shape
    cells = np.empty((num_classes, 1), dtype=object)
    for i in range(num_classes):
        dense = boundaries[i] if i < len(boundaries) else np.zeros((h, w), bool)
        cells[i, 0] = scipy.sparse.csc_matrix(dense.astype(np.float64))
    gtcls = {"Segmentation": np.zeros((h, w), np.uint8), "Boundaries": cells,
             "CategoriesPresent": np.array([[1]], np.uint8)}
    scipy.io.savemat(str(path), {"GTcls": gtcls})


def test_sbd_mat_boundaries_are_the_union_over_classes(tmp_path):
    a = np.zeros((6, 8), bool)
    a[:, 3] = True
    b = np.zeros((6, 8), bool)
    b[2, 6] = True
    write_sbd_mat(tmp_path / "x.mat", [a, b])
    got = read_sbd_boundaries(tmp_path / "x.mat")
    assert got.shape == (6, 8) and got.dtype == bool
    assert np.array_equal(got, a | b)


def test_evaluate_against_sbd_boundaries(tmp_path):
    info = dataset_info("two", ["background", "thing"])
    write_maps(tmp_path / "gt", {"x": two_regions(8, [3])})
    write_maps(tmp_path / "pred", {"x": two_regions(8, [4])})   # boundary columns 3, 4 (12 px)
    line = np.zeros((6, 8), bool)
    line[:, 3] = True                                           # thin SBD-style boundary, 6 px
    (tmp_path / "bdry").mkdir()
    write_sbd_mat(tmp_path / "bdry" / "x.mat", [line])
    r0 = evaluate(tmp_path / "pred", tmp_path / "gt", ["x"], info, tolerance=0, boundary_gt_dir=tmp_path / "bdry")
    # tolerance 0: predicted column 3 hits (6 of 12), the GT line is fully recalled (6 of 6)
    assert r0.boundary.tolist() == [12, 6, 6, 6]
    assert r0.boundary_scores["f1"] == approx(2 / 3)            # 2 * (1/2) * 1 / (3/2)
    r1 = evaluate(tmp_path / "pred", tmp_path / "gt", ["x"], info, tolerance=1, boundary_gt_dir=tmp_path / "bdry")
    assert r1.boundary.tolist() == [12, 12, 6, 6]
    # a PNG boundary map is read as non-zero = boundary
    write_gray(tmp_path / "bdry_png" / "x.png", line.astype(np.uint8) * 255)
    r2 = evaluate(tmp_path / "pred", tmp_path / "gt", ["x"], info, tolerance=0, boundary_gt_dir=tmp_path / "bdry_png")
    assert r2.boundary.tolist() == [12, 6, 6, 6]


# ---------------------------------------------------------------- co-occurrence
BOATS = dataset_info("boats", ["background", "boat", "cow"])
CONTEXT = ("void", "water", "grass", "boat")
GT_C = np.array([[1, 1, 0, 0],
                 [0, 0, 0, N],
                 [0, 0, 0, 0]], np.uint8)
PRED_C = np.array([[1, 1, 1, 1],
                   [1, 0, 2, 1],
                   [1, 2, 0, 2]], np.uint8)
CTX_C = np.array([[3, 3, 1, 1],
                  [1, 2, 2, 1],
                  [3, 0, 0, N]], np.uint8)
# Pixel by pixel (gt, pred, context):
#  (1,1,boat) x2: TP of boat | (0,1,water) x3: FP water->boat | (0,0,grass): correct
#  (0,2,grass): FP grass->cow | (255,1,water): GT ignored, not counted
#  (0,1,boat): FP boat(context)->boat | (0,2,void): FP void->cow | (0,0,void): correct
#  (0,2,no context 255): not counted
# TP: background 2, boat 2, cow 0.
FP_C = [[0, 0, 1],   # void
        [0, 3, 0],   # water
        [0, 0, 1],   # grass
        [0, 1, 0]]   # boat


def test_context_false_positives_by_hand():
    assert context_fp_counts(PRED_C, GT_C, CTX_C, 3, 4).tolist() == FP_C


def test_confusion_ratio_for_named_and_top_pairs(tmp_path):
    write_maps(tmp_path / "gt", {"a": GT_C})
    write_maps(tmp_path / "pred", {"a": PRED_C})
    write_maps(tmp_path / "ctx", {"a": CTX_C})
    (tmp_path / "context.json").write_text(json.dumps({str(i): n for i, n in enumerate(CONTEXT)}))
    r = evaluate(tmp_path / "pred", tmp_path / "gt", None, BOATS, context_dir=tmp_path / "ctx",
                 context_names=tmp_path / "context.json", pairs=["boat:water"], top_pairs=5, boundary=False)
    pairs = [(p.target, p.context, p.fp, p.tp) for p in r.cooccurrence["pairs"]]
    # requested boat:water first (m = 3 / 2 = 1.5); then the top pairs by FP among the rest:
    # cow:grass (1). void->cow is void; the context class "boat" is named like a class (an object).
    assert pairs == [("boat", "water", 3, 2), ("cow", "grass", 1, 0)]
    js = r.to_dict()["cooccurrence"]["pairs"]
    assert js[0]["ratio"] == approx(1.5)
    assert js[1]["ratio"] is None                 # TP of cow is 0: undefined
    # IoU of boat: TP 2, GT 2, predicted 6 (the pixel with GT 255 is not counted) -> 2 / 6
    assert js[0]["target_iou"] == approx(1 / 3)
    assert r.cooccurrence["fp"].tolist() == FP_C
    # an explicit list of context classes to leave out replaces the default (void): now void->cow
    # (1) is a candidate and grass->cow is not
    r = evaluate(tmp_path / "pred", tmp_path / "gt", None, BOATS, context_dir=tmp_path / "ctx",
                 context_names=tmp_path / "context.json", top_pairs=5, ignored_context=["grass"], boundary=False)
    assert [(p.target, p.context, p.fp) for p in r.cooccurrence["pairs"]] == [("boat", "water", 3), ("cow", "void", 1)]
    with pytest.raises(DataError, match="'sea' to ignore is not a context class"):
        evaluate(tmp_path / "pred", tmp_path / "gt", None, BOATS, context_dir=tmp_path / "ctx",
                 context_names=tmp_path / "context.json", top_pairs=5, ignored_context=["sea"])


def test_pair_names_are_checked():
    with pytest.raises(DataError, match="'tree' is not a context class"):
        parse_pairs(["boat:tree"], BOATS.class_names, CONTEXT)
    with pytest.raises(DataError, match="'ship' is not a class"):
        parse_pairs(["ship:water"], BOATS.class_names, CONTEXT)
    with pytest.raises(DataError, match="target:context"):
        parse_pairs(["boat"], BOATS.class_names, CONTEXT)
    assert parse_pairs(["boat:water,cow:grass", "cow:void"], BOATS.class_names, CONTEXT) == [(1, 1), (2, 2), (2, 0)]


def test_top_pairs_rank_by_false_positives():
    fp = np.array([[0, 5, 0], [0, 2, 7], [0, 2, 0]])
    tp = np.array([10, 4, 0])
    got = make_pairs(fp, tp, ["bg", "x", "y"], ["void", "k1", "k2"], top=2, ignored_context=(0,))
    # void (index 0) ignored; FP: k1->y 7, k1->x 2, k2->x 2 -> top 2: (y, k1), then the tie by
    # target index then context index: (x, k1)
    assert [(p.target, p.context, p.fp) for p in got] == [("y", "k1", 7), ("x", "k1", 2)]
    assert got[1].ratio == approx(0.5)
    # a context class named like a class of the label set (an object, e.g. MSRC "cow") is skipped
    got = make_pairs(fp, tp, ["bg", "x", "y"], ["void", "y", "k2"], top=2, ignored_context=(0,))
    assert [(p.target, p.context, p.fp) for p in got] == [("x", "k2", 2)]


def test_context_names_formats(tmp_path):
    (tmp_path / "c.json").write_text('{"0": "void", "1": "building", "3": "tree"}')
    assert read_context_names(tmp_path / "c.json") == ("void", "building", "2", "tree")
    (tmp_path / "l.json").write_text('["void", "water"]')
    assert read_context_names(tmp_path / "l.json") == ("void", "water")
    (tmp_path / "c.txt").write_text("0: unlabeled\n1: aeroplane\n2: bag\n")
    assert read_context_names(tmp_path / "c.txt") == ("unlabeled", "aeroplane", "bag")
    (tmp_path / "bad.json").write_text('{"300": "x"}')
    with pytest.raises(DataError, match="0..254"):
        read_context_names(tmp_path / "bad.json")


# ---------------------------------------------------------------- streaming equals direct numpy
def random_map(rng, h, w, num_labels, ignore_share):
    """Blocky random labels (regions, so boundaries are not everywhere) with some 255."""
    small = rng.integers(0, num_labels, size=(h // 4 + 1, w // 4 + 1))
    lab = np.kron(small, np.ones((4, 4), np.int64))[:h, :w].astype(np.uint8)
    lab[rng.random((h, w)) < ignore_share] = N
    return lab


def direct_boundaries(label):
    """Laplacian by scipy (mirror border = OpenCV's reflect-101), for 255-free maps."""
    kernel = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    return ndi.convolve(label.astype(np.int64), kernel, mode="mirror") != 0


def test_streaming_evaluator_equals_direct_numpy(tmp_path):
    rng = np.random.default_rng(0)
    L, K = 4, 3
    info = dataset_info("four", ["background", "a", "b", "c"])
    ids = [f"im{i:02d}" for i in range(12)]
    shapes = [(int(rng.integers(9, 30)), int(rng.integers(9, 30))) for _ in ids]
    gts = {i: random_map(rng, h, w, L, 0.1) for i, (h, w) in zip(ids, shapes)}
    preds = {i: random_map(rng, h, w, L, 0.1) for i, (h, w) in zip(ids, shapes)}
    ctxs = {i: random_map(rng, h, w, K, 0.1) for i, (h, w) in zip(ids, shapes)}
    write_maps(tmp_path / "gt", gts)
    write_maps(tmp_path / "pred", preds)
    write_maps(tmp_path / "ctx", ctxs)

    conf = np.zeros((L, L + 1), np.int64)
    fp = np.zeros((K, L), np.int64)
    for i in ids:
        g, p, c = (a.astype(np.int64).ravel() for a in (gts[i], preds[i], ctxs[i]))
        for gv, pv, cv in zip(g, p, c):
            if gv == N:
                continue
            conf[gv, L if pv == N else pv] += 1
            if cv != N and pv != N and pv != gv:
                fp[cv, pv] += 1
    for workers, chunk in ((1, None), (2, 1), (2, 5)):
        r = evaluate(tmp_path / "pred", tmp_path / "gt", ids, info, context_dir=tmp_path / "ctx",
                     context_names=["k0", "k1", "k2"], boundary=False, workers=workers, chunksize=chunk)
        assert r.confusion.tolist() == conf.tolist()
        assert r.cooccurrence["fp"].tolist() == fp.tolist()
        assert r.num_images == 12 and r.gt_ignored == sum(int((g == N).sum()) for g in gts.values())

    # boundaries on 255-free maps against scipy's Laplacian and Euclidean distance transform
    clean_gt = {i: random_map(rng, h, w, L, 0.0) for i, (h, w) in zip(ids, shapes)}
    clean_pred = {i: random_map(rng, h, w, L, 0.0) for i, (h, w) in zip(ids, shapes)}
    write_maps(tmp_path / "cgt", clean_gt)
    write_maps(tmp_path / "cpred", clean_pred)
    tol = 1.5
    expect = np.zeros(4, np.int64)
    for i in ids:
        gb, pb = direct_boundaries(clean_gt[i]), direct_boundaries(clean_pred[i])
        d_to_g = ndi.distance_transform_edt(~gb) if gb.any() else np.full(gb.shape, np.inf)
        d_to_p = ndi.distance_transform_edt(~pb) if pb.any() else np.full(pb.shape, np.inf)
        expect += [pb.sum(), (pb & (d_to_g <= tol)).sum(), gb.sum(), (gb & (d_to_p <= tol)).sum()]
    r = evaluate(tmp_path / "cpred", tmp_path / "cgt", ids, info, tolerance=tol, workers=2, chunksize=3)
    assert r.boundary.tolist() == expect.tolist()
    assert expect[1] < expect[0]   # the check is not vacuous


def test_fill_ignored_takes_a_nearest_valid_label():
    rng = np.random.default_rng(3)
    for _ in range(5):
        lab = rng.integers(0, 5, (20, 30)).astype(np.uint8)
        lab[rng.random((20, 30)) < rng.uniform(0.3, 0.9)] = N
        filled = fill_ignored(lab)
        vy, vx = np.nonzero(lab != N)
        assert np.array_equal(filled[lab != N], lab[lab != N])
        for y, x in zip(*np.nonzero(lab == N)):
            d = np.hypot(vy - y, vx - x)
            near = d <= d.min() + 0.6   # the 5x5-mask distance is approximate; ties are free
            assert filled[y, x] in set(lab[vy[near], vx[near]].tolist())
