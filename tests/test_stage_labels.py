"""`wsss labels` stage on hand-made maps: eps / cam (+POM), nsrom BE+POM, nsrm, palette, summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from wsss.cli import main
from wsss.config.schema import Config
from wsss.data.classes import voc_palette
from wsss.errors import ConfigError, DataError
from wsss.io import read_label, save_npz, write_gray, write_label
from wsss.methods.eps import eps_pseudo_mask
from wsss.methods.nsrm import non_salient_region_masking
from wsss.methods.nsrom import minmax_normalize, nsrom_pseudo_label, potential_object_mining
from wsss.stages.context import stage_context
from wsss.stages.make_labels import make_labels

CLASS_NAMES = ["background", "a", "b", "c"]


@pytest.fixture(autouse=True)
def _no_shard_env(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("WSSS_PROGRESS", "off")


def make_dataset(root: Path, labels: dict[str, list[int]], saliency: dict[str, np.ndarray] | None = None) -> Path:
    (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(labels) + "\n")
    (root / "cls_labels.json").write_text(json.dumps(labels))
    for image_id, sal in (saliency or {}).items():
        write_gray(root / "Saliency" / f"{image_id}.png", sal)
    return root


def make_config(root: Path, out_dir: Path, **labels) -> Config:
    cfg = Config()
    cfg.run.out_dir, cfg.run.name = str(out_dir), "run"
    cfg.data.root, cfg.data.class_names = str(root), list(CLASS_NAMES)
    for key, value in labels.items():
        setattr(cfg.labels, key, value)
    return cfg


def save_maps(path: Path, classes: list[int], cams: np.ndarray) -> np.ndarray:
    """Write a CAM npz as `wsss cams` does; returns the float32 maps the stage will read."""
    cams = np.asarray(cams, dtype=np.float16)
    save_npz(path, classes=np.asarray(classes, dtype=np.int64), cams=cams)
    return cams.astype(np.float32)


# (4, 5) maps of classes 1 and 3
CAM_1 = np.array([[0.9, 0.8, 0.1, 0.0, 0.0],
                  [0.7, 0.6, 0.1, 0.0, 0.0],
                  [0.1, 0.15, 0.1, 0.05, 0.0],
                  [0.0, 0.0, 0.0, 0.0, 0.0]])
CAM_3 = np.array([[0.0, 0.0, 0.0, 0.3, 1.0],
                  [0.0, 0.0, 0.0, 0.5, 0.9],
                  [0.0, 0.1, 0.0, 0.19, 0.0],
                  [0.0, 0.0, 0.0, 0.1, 0.0]])


def test_eps_labels_palette_and_summary(tmp_path):
    root = make_dataset(tmp_path / "data", {"x0": [1, 3], "x1": []})
    run = tmp_path / "runs" / "run"
    maps = save_maps(run / "cams" / "x0.npz", [1, 3], np.stack([CAM_1, CAM_3]))
    save_maps(run / "cams" / "x1.npz", [], np.zeros((0, 4, 5)))
    summary = make_labels(stage_context(make_config(root, tmp_path / "runs", method="eps", workers=2)))

    label = read_label(run / "labels" / "x0.png")
    np.testing.assert_array_equal(label, eps_pseudo_mask(maps, [1, 3], 0.2))
    assert label[0, 0] == 1 and label[0, 4] == 3 and label[2, 3] == 0    # 0.19 < thr -> background
    assert np.all(read_label(run / "labels" / "x1.png") == 0)
    image = Image.open(run / "labels" / "x0.png")
    assert image.mode == "P"
    assert np.array_equal(np.array(image.getpalette()[:12]).reshape(4, 3), voc_palette()[:4])

    class_pixels = [int((label == v).sum()) for v in range(4)]          # of x0; x1 all background
    assert class_pixels[1] == 4 and class_pixels[3] == 4
    on_disk = json.loads((tmp_path / "runs" / "run" / "labels.summary.json").read_text())
    assert on_disk == summary
    assert summary["images"] == 2 and summary["pixels"] == 40 and summary["made"] == 2
    assert summary["ignore_share"] == 0.0 and summary["fully_ignored_images"] == 0
    assert summary["class_share"] == {"background": (class_pixels[0] + 20) / 40, "a": 4 / 40, "b": 0.0,
                                      "c": 4 / 40}
    assert not list((run / "labels").glob("*.json"))                    # summary next to the folder


def test_eps_with_pom_and_the_optional_fraction_rule(tmp_path):
    root = make_dataset(tmp_path / "data", {"x0": [1, 3]})
    run = tmp_path / "runs" / "run"
    maps = save_maps(run / "cams" / "x0.npz", [1, 3], np.stack([CAM_1, CAM_3]))
    cfg = make_config(root, tmp_path / "runs", method="eps", pom=True)
    summary = make_labels(stage_context(cfg))
    # Both classes own a region, and a region's values all exceed thr >= every background value
    # of the same map: POM with the maps that made the label marks nothing.
    np.testing.assert_array_equal(read_label(run / "labels" / "x0.png"), eps_pseudo_mask(maps, [1, 3], 0.2))
    assert summary["pom"] is True and summary["ignore_share"] == 0.0

    # class 3 below thr everywhere: no region, so T_3 = top quartile of its min-max normalised map
    # above T_bg (0.3): values {0.5, 0.5, 0.5, 0.75, 0.9, 1.0} -> median of {0.75, 0.9, 1.0} = 0.9
    weak_3 = np.array([[0.0, 0.0, 0.0, 0.1, 0.18],
                       [0.0, 0.0, 0.0, 0.15, 0.2],
                       [0.0, 0.1, 0.0, 0.1, 0.1],
                       [0.0, 0.0, 0.0, 0.05, 0.0]])
    maps = save_maps(run / "cams" / "x0.npz", [1, 3], np.stack([CAM_1, weak_3]))
    cfg.labels.overwrite = True
    make_labels(stage_context(cfg))
    label = read_label(run / "labels" / "x0.png")
    base = eps_pseudo_mask(maps, [1, 3], 0.2)
    np.testing.assert_array_equal(
        label, potential_object_mining(base, [minmax_normalize(m) for m in maps], [1, 3], t_bg=0.3))
    assert not np.any(base == 3) and label[1, 4] == 255                 # the only value above 0.9
    assert np.count_nonzero(label == 255) == 1 and label[0, 4] == 0

    # the 1 % rule only when labels.eps_min_fraction: at min_fraction 0.5 (class share 4/20) ...
    cfg.labels.min_fraction = 0.5
    make_labels(stage_context(cfg))
    assert np.count_nonzero(read_label(run / "labels" / "x0.png") == 255) == 1
    cfg.labels.eps_min_fraction = True
    summary = make_labels(stage_context(cfg))
    assert np.all(read_label(run / "labels" / "x0.png") == 255)
    assert summary["fully_ignored_images"] == 1 and summary["ignore_share"] == 1.0

    # POM with another classifier's maps (labels.pom_cams): there class 1 is weaker on its EPS
    # region (0.5, so T_1 = 0.5) than on the background pixel (3, 0) (1.0), which is mined
    cfg.labels.eps_min_fraction, cfg.labels.pom_cams = False, "cams_baseline"
    maps = save_maps(run / "cams" / "x0.npz", [1, 3], np.stack([CAM_1, CAM_3]))
    other_1 = np.zeros((4, 5))
    other_1[:2, :2], other_1[3, 0] = 0.5, 1.0
    other = save_maps(run / "cams_baseline" / "x0.npz", [1, 3], np.stack([other_1, CAM_3]))
    summary = make_labels(stage_context(cfg))
    label = read_label(run / "labels" / "x0.png")
    base = eps_pseudo_mask(maps, [1, 3], 0.2)
    np.testing.assert_array_equal(
        label, potential_object_mining(base, [minmax_normalize(m) for m in other], [1, 3], t_bg=0.3))
    assert label[3, 0] == 255 and np.count_nonzero(label == 255) == 1
    assert summary["pom_cams"].endswith("cams_baseline")


def test_nsrom_be_pom_against_the_pure_functions(tmp_path):
    saliency = np.array([[255, 255, 0, 0, 0],
                         [255, 200, 0, 40, 255],
                         [0, 0, 0, 0, 0],
                         [0, 0, 20, 0, 255]], dtype=np.uint8)
    root = make_dataset(tmp_path / "data", {"x0": [1, 3]}, {"x0": saliency})
    run = tmp_path / "runs" / "run"
    oa = save_maps(run / "oa_cams" / "x0.npz", [1, 3], np.stack([CAM_1 / 0.9, CAM_3]))
    plain = save_maps(run / "cams" / "x0.npz", [1, 3], np.stack([CAM_3, CAM_1 / 0.9]))
    cfg = make_config(root, tmp_path / "runs", method="nsrom", pom=False, out="be")
    make_labels(stage_context(cfg))
    be = read_label(run / "be" / "x0.png")
    oa_norm = [minmax_normalize(m) for m in oa]
    np.testing.assert_array_equal(be, nsrom_pseudo_label(saliency, oa_norm, [1, 3]))
    assert be[0, 0] == 1 and be[1, 1] == 1   # salient, class 1 above 0.3 (bg score 0 / 0.22 -> 0)
    assert be[1, 4] == 3              # salient, class 3 at 0.9 (not above the conflict threshold)
    assert be[0, 4] == 255            # no saliency (bg 1.0) and class 3 at 1.0: conflict
    assert be[3, 0] == 0              # no saliency, no attention: background
    assert be[3, 4] == 255            # salient, no class above 0.3: background with sal_att >= 32
    assert be[1, 3] == 255            # class 3 at 0.5 < bg 0.84; sal_att = 40 >= 32

    cfg.labels.pom, cfg.labels.out = True, "be_pom"
    summary = make_labels(stage_context(cfg))
    label = read_label(run / "be_pom" / "x0.png")
    expected = nsrom_pseudo_label(saliency, oa_norm, [1, 3], [minmax_normalize(m) for m in plain])
    np.testing.assert_array_equal(label, expected)
    assert summary["method"] == "nsrom" and summary["pom"] is True
    assert np.count_nonzero(label == 255) >= np.count_nonzero(be == 255)


def test_nsrom_fraction_rule_and_missing_inputs(tmp_path):
    saliency = np.zeros((4, 5), dtype=np.uint8)
    saliency[0, 0] = 255                     # bg score 0 where class 2's map is 1: no conflict
    root = make_dataset(tmp_path / "data", {"x0": [2], "x1": [2]}, {"x0": saliency, "x1": saliency})
    run = tmp_path / "runs" / "run"
    tiny = np.zeros((1, 4, 5))
    tiny[0, 0, 0] = 1.0                      # one pixel of class 2 = 5 % of the image
    save_maps(run / "oa_cams" / "x0.npz", [2], tiny)
    cfg = make_config(root, tmp_path / "runs", method="nsrom", min_fraction=0.06)
    with pytest.raises(DataError, match="1 of 2 images have no oa_cams"):
        make_labels(stage_context(cfg))
    save_maps(run / "oa_cams" / "x1.npz", [2], np.zeros((1, 4, 5)))
    make_labels(stage_context(cfg))
    assert np.all(read_label(run / "labels" / "x0.png") == 255)     # 5 % < 6 %
    cfg.labels.min_fraction, cfg.labels.overwrite = 0.05, True
    make_labels(stage_context(cfg))
    label = read_label(run / "labels" / "x0.png")
    assert label[0, 0] == 2 and np.count_nonzero(label == 255) == 0 # 5 % is kept


def test_nsrm_masks_complex_images_only(tmp_path):
    size = (40, 40)
    pred = np.zeros(size, dtype=np.uint8)
    pred[5:10, 5:10] = 1
    pseudo = np.zeros(size, dtype=np.uint8)
    pseudo[30:33, 30:33] = 2
    pseudo[0, :] = 255
    saliency = np.zeros(size, dtype=np.uint8)
    saliency[20, 20] = 3
    root = make_dataset(tmp_path / "data", {"m": [1, 2], "s": [1]}, {"m": saliency, "s": saliency})
    run = tmp_path / "runs" / "run"
    for image_id in ("m", "s"):
        write_label(run / "pred_r1" / f"{image_id}.png", pred, voc_palette())
        write_label(run / "labels" / f"{image_id}.png", pseudo, voc_palette())
    cfg = make_config(root, tmp_path / "runs", method="nsrm")
    with pytest.raises(ConfigError, match="nsrm_labels"):
        make_labels(stage_context(cfg))                               # out = labels = its input
    cfg.labels.out, cfg.labels.nsrm_kernel = "labels_nsrm", 5
    summary = make_labels(stage_context(cfg))
    complex_label = read_label(run / "labels_nsrm" / "m.png")
    np.testing.assert_array_equal(complex_label,
                                  non_salient_region_masking(pred, pseudo, saliency, [1, 2], 5, 0.01))
    assert complex_label[7, 7] == 1 and complex_label[31, 31] == 2    # prediction expanded by L
    assert complex_label[20, 20] == 0 and complex_label[18, 18] == 0  # saliency object, dilated by 2
    assert complex_label[0, 39] == 255 and complex_label[25, 5] == 255
    assert complex_label[3, 3] == 0 and complex_label[2, 2] == 255    # radius 2 around the object
    np.testing.assert_array_equal(read_label(run / "labels_nsrm" / "s.png"), pred)   # single class
    assert summary["made"] == 2 and 0 < summary["ignore_share"] < 1


def test_skip_done_and_rank_shards(tmp_path, monkeypatch):
    ids = {f"x{i}": [1] for i in range(5)}
    root = make_dataset(tmp_path / "data", ids)
    run = tmp_path / "runs" / "run"
    for image_id in ids:
        save_maps(run / "cams" / f"{image_id}.npz", [1], CAM_1[None])
    cfg = make_config(root, tmp_path / "runs", method="cam")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    first = make_labels(stage_context(cfg))
    assert sorted(p.stem for p in (run / "labels").glob("*.png")) == ["x0", "x2", "x4"]
    assert first["made"] == 3 and Path(first["summary_file"]).name == "labels.summary.rank0.json"
    monkeypatch.setenv("RANK", "1")
    assert make_labels(stage_context(cfg))["made"] == 2
    assert sorted(p.stem for p in (run / "labels").glob("*.png")) == sorted(ids)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    whole = make_labels(stage_context(cfg))
    assert (whole["made"], whole["done_before"], whole["images"]) == (0, 5, 5)
    assert whole["class_share"]["a"] == pytest.approx(4 / 20)
    cfg.labels.overwrite = True
    assert make_labels(stage_context(cfg))["made"] == 5


def test_cli_labels_method_flag(tmp_path, capsys):
    root = make_dataset(tmp_path / "data", {"x0": [1, 3]})
    save_maps(tmp_path / "runs" / "exp" / "cams" / "x0.npz", [1, 3], np.stack([CAM_1, CAM_3]))
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({"run": {"out_dir": str(tmp_path / "runs")},
                                      "data": {"root": str(root), "class_names": CLASS_NAMES},
                                      "labels": {"method": "nsrom"}}))
    assert main(["labels", "--config", str(config), "--method", "eps", "--no-pom"]) == 0
    text = capsys.readouterr().out
    assert "eps labels of train: 1 made, 0 already done" in text
    assert str(tmp_path / "runs" / "exp" / "labels.summary.json") in text
    assert (tmp_path / "runs" / "exp" / "labels" / "x0.png").is_file()


# ----------------------------------------------------------------------------- saliency baseline

SAL = np.array([[255, 200, 10, 128, 255],
                [255, 127, 0, 130, 255],
                [0, 0, 0, 0, 0],
                [0, 0, 0, 0, 255]], dtype=np.uint8)


def test_saliency_rule_single_class_needs_no_maps():
    from wsss.methods.saliency_baseline import saliency_label

    label = saliency_label(SAL, [3])
    # 127 / 255 < 0.5 <= 128 / 255
    np.testing.assert_array_equal(label, np.where(SAL >= 128, 3, 0).astype(np.uint8))
    np.testing.assert_array_equal(saliency_label(SAL, [3], thr=0.0), np.full(SAL.shape, 3, np.uint8))
    assert not saliency_label(SAL, []).any()


def test_saliency_rule_several_classes_take_the_highest_map():
    from wsss.methods.saliency_baseline import saliency_label

    maps = np.stack([CAM_3, CAM_1])          # given in the order of classes [3, 1]
    label = saliency_label(SAL, [3, 1], maps)
    expected = np.where(SAL >= 128, np.where(CAM_3 > CAM_1, 3, 1), 0)
    np.testing.assert_array_equal(label, expected)
    assert label[0, 0] == 1 and label[0, 4] == 3 and label[3, 4] == 1   # tie 0 = 0 -> lower class
    with pytest.raises(DataError, match="needs class maps"):
        saliency_label(SAL, [1, 3])
    with pytest.raises(DataError, match="shape"):
        saliency_label(SAL, [1, 3], maps[:1])


def test_saliency_labels_stage(tmp_path):
    root = make_dataset(tmp_path / "data", {"x0": [1, 3], "x1": [2]}, {"x0": SAL, "x1": SAL})
    run = tmp_path / "runs" / "run"
    save_maps(run / "cams" / "x0.npz", [1, 3], np.stack([CAM_1, CAM_3]))
    save_maps(run / "cams" / "x1.npz", [2], np.stack([CAM_1]))
    summary = make_labels(stage_context(make_config(root, tmp_path / "runs", method="saliency", out="sal")))
    assert summary["made"] == 2 and summary["method"] == "saliency"
    x0 = read_label(run / "sal" / "x0.png")
    np.testing.assert_array_equal(x0, np.where(SAL >= 128, np.where(CAM_3.astype(np.float16) > CAM_1.astype(np.float16), 3, 1), 0))
    np.testing.assert_array_equal(read_label(run / "sal" / "x1.png"), np.where(SAL >= 128, 2, 0))

    # No maps: a single-class image is fine, a multi-class one is an error that says so.
    cfg = make_config(root, tmp_path / "runs", method="saliency", out="sal_nomaps", cams="", overwrite=True)
    with pytest.raises(DataError, match="needs class maps"):
        make_labels(stage_context(cfg))
    single = make_dataset(tmp_path / "single", {"x1": [2]}, {"x1": SAL})
    cfg = make_config(single, tmp_path / "runs", method="saliency", out="sal_single", cams="", saliency_thr=0.9)
    make_labels(stage_context(cfg))
    np.testing.assert_array_equal(read_label(run / "sal_single" / "x1.png"), np.where(SAL >= 230, 2, 0))


def test_eps_labels_with_a_saliency_background_score(tmp_path):
    from wsss.methods.eps import saliency_background_score

    root = make_dataset(tmp_path / "data", {"x0": [1, 3]}, {"x0": SAL})
    run = tmp_path / "runs" / "run"
    maps = save_maps(run / "cams" / "x0.npz", [1, 3], np.stack([CAM_1, CAM_3]))
    make_labels(stage_context(make_config(root, tmp_path / "runs", method="eps", thr_by_saliency=[0.05, 0.85])))
    label = read_label(run / "labels" / "x0.png")
    score = saliency_background_score(SAL, 0.05, 0.85)
    np.testing.assert_array_equal(label, eps_pseudo_mask(maps, [1, 3], score))
    # salient (255): map 0.1 > 0.05 wins; non-salient (0): map 0.9 > 0.85 wins, 0.7 does not
    assert label[0, 2] == 0 and label[1, 0] == 1 and label[1, 2] == 0
    assert label[2, 1] == 0 and label[3, 4] == 0
    np.testing.assert_allclose(score[[0, 2], [0, 0]], [0.05, 0.85], rtol=1e-6)
    # the official constant is the special case of two equal thresholds
    np.testing.assert_array_equal(eps_pseudo_mask(maps, [1, 3], saliency_background_score(SAL, 0.2, 0.2)),
                                  eps_pseudo_mask(maps, [1, 3], 0.2))
    with pytest.raises(ConfigError, match="thr_by_saliency"):
        make_labels(stage_context(make_config(root, tmp_path / "runs", method="eps", out="l2",
                                              thr_by_saliency=[0.1])))


def test_maps_of_another_size_than_the_image_and_truncated_maps_are_refused(tmp_path):
    root = make_dataset(tmp_path / "data", {"x0": [1, 3]})
    (root / "JPEGImages").mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(root / "JPEGImages" / "x0.jpg")
    run = tmp_path / "runs" / "run"
    save_maps(run / "cams" / "x0.npz", [1, 3], np.stack([CAM_1, CAM_3]))    # 5x4 maps, 64x64 image
    with pytest.raises(DataError, match=r"x0.npz is 5x4 \(WxH\) but the image .*x0.jpg is 64x64"):
        make_labels(stage_context(make_config(root, tmp_path / "runs", method="eps")))
    assert not (run / "labels" / "x0.png").exists()
    data = (run / "cams" / "x0.npz").read_bytes()
    (run / "cams" / "x0.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"map file unreadable or truncated: .*x0.npz"):
        make_labels(stage_context(make_config(root, tmp_path / "runs", method="eps")))


def test_ids_without_their_files_are_skipped_by_the_labels_under_missing_skip(tmp_path):
    root = make_dataset(tmp_path / "data", {"x0": [2], "x1": [2], "x2": [2]}, {"x0": SAL, "x1": SAL})
    (root / "JPEGImages").mkdir()
    for image_id in ("x0", "x2"):     # x1 has no image, x2 no saliency map
        Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(root / "JPEGImages" / f"{image_id}.jpg")
    with pytest.raises(DataError, match="saliency map"):
        make_labels(stage_context(make_config(root, tmp_path / "runs", method="saliency", cams="")))
    cfg = make_config(root, tmp_path / "runs", method="saliency", cams="", out="skipped")
    cfg.data.missing = "skip"
    summary = make_labels(stage_context(cfg))
    assert summary["images"] == 1 and summary["made"] == 1
    assert sorted(p.name for p in (tmp_path / "runs" / "run" / "skipped").glob("*.png")) == ["x0.png"]
