"""`wsss report`: exact colours, the page and its images, the mIoU table, folder and id selection,
and one-line errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss.cli import main
from wsss.data.classes import voc_palette
from wsss.data.synth import generate_synthetic_dataset
from wsss.errors import ConfigError, DataError
from wsss.io import IGNORE, read_label, save_npz, write_label
from wsss.report import (
    Folder,
    blend,
    choose_ids,
    class_maps,
    heat_rgb,
    label_rgb,
    load_run_config,
    overlay_heat,
    overlay_label,
    spaced,
    thumb_size,
    write_report,
)

PAL = voc_palette()


# ------------------------------------------------------------------------------ pure functions

def test_label_rgb_uses_the_palette_and_shows_255_as_white():
    label = np.array([[0, 1], [2, IGNORE]], np.uint8)
    rgb = label_rgb(label, PAL)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [0, 0, 0]
    assert rgb[0, 1].tolist() == [128, 0, 0]
    assert rgb[1, 0].tolist() == [0, 128, 0]
    assert rgb[1, 1].tolist() == [255, 255, 255]


def test_blend_rounds_half_up():
    a = np.full((1, 1, 3), 100, np.uint8)
    b = np.array([[[128, 0, 255]]], np.uint8)
    assert blend(a, b, 0.5).tolist() == [[[114, 50, 178]]]   # 177.5 -> 178
    assert blend(a, b, 0.0).tolist() == a.tolist()
    assert blend(a, b, 1.0).tolist() == b.tolist()


def test_overlay_label_blends_colours_and_hatches_ignore():
    image = np.full((1, 6, 3), 100, np.uint8)
    label = np.array([[1, 0, IGNORE, IGNORE, IGNORE, IGNORE]], np.uint8)
    out = overlay_label(image, label, PAL, alpha=0.5)
    assert out[0, 0].tolist() == [114, 50, 50]           # (100 + 128) / 2, 100 / 2, 100 / 2
    assert out[0, 1].tolist() == [50, 50, 50]            # background is black in the palette
    assert out[0, 2].tolist() == [255, 255, 255]         # (x + y) % 6 = 2 < 3: on a stripe
    assert out[0, 3].tolist() == [178, 178, 178]         # off the stripe: image blended with white
    assert out[0, 5].tolist() == [178, 178, 178]


def test_heat_rgb_anchors_clipping_and_nan():
    values = np.array([[0.0, 0.125, 0.25, 0.5, 0.875, 1.0, -1.0, 2.0, np.nan]])
    rgb = heat_rgb(values)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 9, 3)
    assert rgb[0].tolist() == [[0, 0, 128], [0, 0, 255], [0, 128, 255], [128, 255, 128], [255, 0, 0],
                               [128, 0, 0], [0, 0, 128], [128, 0, 0], [0, 0, 128]]


def test_overlay_heat_blends_the_heat_colours():
    image = np.zeros((1, 2, 3), np.uint8)
    out = overlay_heat(image, np.array([[0.0, 1.0]], np.float32), alpha=0.5)
    assert out.tolist() == [[[0, 0, 64], [64, 0, 0]]]


def test_thumb_size_keeps_aspect_and_never_enlarges():
    assert thumb_size(480, 640, 256) == (192, 256)
    assert thumb_size(640, 480, 256) == (256, 192)
    assert thumb_size(40, 30, 256) == (40, 30)
    assert thumb_size(1000, 1, 100) == (100, 1)


def test_spaced_picks_first_and_last_evenly():
    items = [str(i) for i in range(10)]
    assert spaced(items, 3) == ["0", "4", "9"]      # round(4.5) = 4 (banker's), 9
    assert spaced(items, 1) == ["0"]
    assert spaced(items[:2], 5) == ["0", "1"]


def test_class_maps_reads_the_three_npz_layouts():
    cams = class_maps({"classes": np.array([2, 5]), "cams": np.ones((2, 3, 4), np.float16),
                       "bg": np.zeros((3, 4), np.float16)})
    assert cams.classes.tolist() == [2, 5] and cams.maps.shape == (2, 3, 4) and cams.bg.shape == (3, 4)
    oaa = class_maps({"classes": np.array([1]), "maps": np.full((1, 2, 2), 255, np.uint8)})
    assert oaa.maps.max() == 1.0 and oaa.bg is None
    probs = class_maps({"labels": np.array([0, 3]), "probs": np.stack([np.full((2, 2), 0.25), np.full((2, 2), 0.75)])})
    assert probs.classes.tolist() == [3] and float(probs.maps.max()) == 0.75 and float(probs.bg.max()) == 0.25
    empty = class_maps({"classes": np.zeros(0, np.int64), "cams": np.zeros((0, 3, 4), np.float16)})
    assert empty.max_map().shape == (3, 4) and empty.max_map().max() == 0
    with pytest.raises(DataError):
        class_maps({"x": np.zeros(1)})


def test_choose_ids_selection_and_errors():
    split = ["a", "b", "c", "d", "e"]
    folders = [Folder("x", Path("x"), "labels", {"b", "c", "e"})]
    assert choose_ids(split, folders, 2) == ["b", "e"]
    assert choose_ids(split, folders, given=["d", "c", "d"]) == ["d", "c"]
    with pytest.raises(DataError, match="'z' is not in the"):
        choose_ids(split, folders, given=["z"])
    with pytest.raises(DataError, match="none of the folders"):
        choose_ids(split, folders, given=["a"])
    with pytest.raises(DataError, match="none of the folders"):
        choose_ids(["a", "d"], folders)
    with pytest.raises(ConfigError):
        choose_ids(split, folders, 0)


# ------------------------------------------------------------------------------ a fake run

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    summary = generate_synthetic_dataset(root, 3, 2, size="64", seed=0)
    return root, Path(summary["dataset_yaml"])


def _ids(root: Path, split: str) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def _eval_json(path: Path, pred_dir: Path, miou: float, dropped: float, split: str = "train") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "protocol": {"pred_dir": str(pred_dir), "split": None, "split_name": split},
        "num_images": 3,
        "conventions": {"ignore_as_miss": {"miou": miou}, "ignore_dropped": {"miou": dropped}},
    }))


@pytest.fixture
def run(tmp_path, dataset):
    """A run: config.yaml, labels_a (all train ids, with 255), labels_b (val only), cams (train
    npz), eval/eval_labels_a.json, eval_other.json (another folder) and a non-eval JSON."""
    root, dataset_yaml = dataset
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(dataset_yaml, run / "config.yaml")
    for i, image_id in enumerate(_ids(root, "train")):
        gt = read_label(root / "SegmentationClass" / f"{image_id}.png")
        label = gt.copy()
        label[:4] = IGNORE
        write_label(run / "labels_a" / f"{image_id}.png", label, PAL)
        h, w = gt.shape
        save_npz(run / "cams" / f"{image_id}.npz", classes=np.array([1, 3], np.int64),
                 cams=np.stack([np.linspace(0, 1, h * w).reshape(h, w)] * 2).astype(np.float16),
                 bg=np.zeros((h, w), np.float16))
    for image_id in _ids(root, "val"):
        write_label(run / "labels_b" / f"{image_id}.png", np.zeros((64, 64), np.uint8), PAL)
    (run / "classifier").mkdir()
    (run / "classifier" / "metrics.jsonl").write_text("{}\n")
    _eval_json(run / "eval" / "eval_labels_a.json", run / "labels_a", 0.43214, 0.5)
    _eval_json(run / "eval_other.json", run / "elsewhere", 0.9876, 0.9876)
    (run / "eval" / "summary.json").write_text(json.dumps({"images": 3}))
    return run


def _page(path: Path) -> tuple[str, list[str]]:
    text = path.read_text()
    return text, re.findall(r"<img src='([^']+)'", text)


def test_report_writes_a_page_whose_images_all_exist(run, dataset):
    root, _ = dataset
    cfg = load_run_config(run)
    page = write_report(cfg, run, size=32)
    assert page == run / "report" / "index.html"
    text, srcs = _page(page)
    assert srcs and len(srcs) == len(set(srcs))
    for src in srcs:
        assert not src.startswith(("/", "http")), src
        path = page.parent / src
        assert path.is_file(), src
        with Image.open(path) as img:
            assert max(img.size) <= 32 and img.mode == "RGB"
    # every file under img/ is on the page
    written = {p.relative_to(page.parent).as_posix() for p in (page.parent / "img").rglob("*.png")}
    assert written == set(srcs)
    train = _ids(root, "train")
    # default split: train (the folders hold more of its ids); all 3 train ids shown
    for image_id in train:
        assert f"img/data/image/{image_id}.png" in srcs
        assert f"img/data/gt/{image_id}.png" in srcs
        assert f"img/data/saliency/{image_id}.png" in srcs
        assert f"img/run/labels_a/{image_id}.png" in srcs
        assert f"img/run/cams/{image_id}.png" in srcs          # max over the classes
        assert f"img/run/cams/{image_id}_1.png" in srcs        # class 1 (train)
        assert f"img/run/cams/{image_id}_3.png" in srcs        # class 3 (ball)
        assert f"img/run/cams/{image_id}_bg.png" in srcs
    # folders: sorted by name, labels_b (val only) and classifier (no maps) left out
    header = re.search(r"<table class='images'>\n<tr>(.*?)</tr>", text).group(1)
    titles = re.findall(r"<th>([^<]*)<br>", header)
    assert titles == ["image", "ground truth", "saliency", "cams", "labels_a"]
    assert "not shown (none of these ids): labels_b" in text
    # legend: class names with their palette colours
    assert "rgb(128,0,0)'></span> 1 train" in text and "255 ignore" in text


def test_header_table_shows_the_miou_of_the_matching_eval_json(run):
    page = write_report(load_run_config(run), run, size=32)
    text, _ = _page(page)
    rows = {m.group(1): m.group(0) for m in re.finditer(r"<tr><td>([^<]+)</td><td>(?:labels|maps)</td>.*?</tr>", text)}
    assert "<td>43.21</td><td>50.00</td><td>train</td><td>3</td><td>eval/eval_labels_a.json</td>" in rows["labels_a"]
    assert "<td>-</td>" in rows["cams"] and "98.76" not in text


def test_a_corrupt_eval_json_is_named_not_hidden(run, capsys):
    (run / "eval" / "eval_broken.json").write_text('{"protocol": {"pred_dir": ')
    page = write_report(load_run_config(run), run, size=32)
    assert "eval/eval_broken.json: unreadable or corrupt (JSONDecodeError" in capsys.readouterr().err
    assert "left out of the scores: eval/eval_broken.json" in page.read_text()
    (run / "eval" / "eval_broken.json").unlink()


def test_eval_json_matches_a_moved_run(tmp_path, run):
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.copytree(run, moved)
    text, _ = _page(write_report(load_run_config(moved), moved, size=32))
    assert "<td>43.21</td>" in text        # pred_dir still names the old location .../run/labels_a


def test_folder_and_id_selection(run, dataset, tmp_path):
    root, _ = dataset
    train, val = _ids(root, "train"), _ids(root, "val")
    out = tmp_path / "rep"
    page = write_report(load_run_config(run), run, out, folders=["labels_a"], ids=[train[1]], size=32)
    assert page == out / "index.html"
    text, srcs = _page(page)
    assert sorted(s for s in srcs if "/run/" in s) == [f"img/run/labels_a/{train[1]}.png"]
    assert f"img/data/image/{train[0]}.png" not in srcs
    # val split: only labels_b holds its ids
    text, srcs = _page(write_report(load_run_config(run), run, out, split="val", num_ids=1, size=32))
    assert [s for s in srcs if "/run/" in s] == [f"img/run/labels_b/{val[0]}.png"]
    assert "split <b>val</b>" in text
    # per-class maps can be left out
    _, srcs = _page(write_report(load_run_config(run), run, out, folders=["cams"], num_ids=1, per_class=False,
                                 size=32))
    assert [s for s in srcs if "/run/" in s] == [f"img/run/cams/{train[0]}.png"]


def test_errors(run, dataset, tmp_path):
    root, _ = dataset
    cfg = load_run_config(run)
    with pytest.raises(ConfigError, match="no config.yaml"):
        load_run_config(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_run_config(tmp_path / "nope")
    with pytest.raises(DataError, match="'nope' is not in the train split"):
        write_report(cfg, run, ids=["nope"])
    with pytest.raises(DataError, match="none of the folders"):
        write_report(cfg, run, split="train", folders=["labels_b"])
    with pytest.raises(ConfigError, match="no folder 'missing'"):
        write_report(cfg, run, folders=["missing"])
    with pytest.raises(ConfigError, match="holds no"):
        write_report(cfg, run, folders=["classifier"])
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(run / "config.yaml", empty / "config.yaml")
    with pytest.raises(DataError, match="has no folder"):
        write_report(cfg, empty)


def test_cli_writes_the_report_and_reports_errors_in_one_line(run, dataset, tmp_path, capsys):
    root, _ = dataset
    out = tmp_path / "cli"
    assert main(["report", str(run), "--out", str(out), "--ids", "2", "--folders", "labels_a,cams",
                 "--size", "32", "--set", "data.val_split=val"]) == 0
    assert f"wrote {out / 'index.html'}" in capsys.readouterr().out
    assert len([s for s in _page(out / "index.html")[1] if s.startswith("img/data/image/")]) == 2
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert main(["report", str(run), "--id", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("wsss report: error: ") for line in err)


def test_report_help_does_not_import_torch():
    code = ("import sys\nfrom wsss.cli import main\ntry:\n    main(['report', '--help'])\nexcept SystemExit:\n"
            "    pass\nassert 'torch' not in sys.modules, 'torch imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Input:" in proc.stdout and "Output:" in proc.stdout
