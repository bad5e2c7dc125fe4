"""The label source of `wsss train-seg`: the ground truth is refused as pseudo labels however it is
reached, `supervision: full` uses it on purpose, and the coverage summary is exact."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from wsss.cli import main
from wsss.config import Config, load_config
from wsss.data.classes import voc_palette
from wsss.errors import DataError
from wsss.io import write_image, write_label
from wsss.stages.context import stage_context
from wsss.stages.label_source import (
    GroundTruthAsPseudoLabels,
    check_label_files,
    label_coverage,
    label_source,
    report_label_source,
    resolve_training_labels,
)

IDS = ["a", "b", "c"]
#: 4x4 ground-truth masks: a = classes 1 and 2 with 4 ignore pixels, b = all ignore, c = background.
MASKS = {
    "a": np.array([[1, 1, 0, 0], [1, 1, 0, 0], [2, 2, 255, 255], [2, 2, 255, 255]], np.uint8),
    "b": np.full((4, 4), 255, np.uint8),
    "c": np.zeros((4, 4), np.uint8),
}


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "data"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for image_id, mask in MASKS.items():
        write_image(root / "JPEGImages" / f"{image_id}.png", np.zeros((4, 4, 3), np.uint8))
        write_label(root / "SegmentationClass" / f"{image_id}.png", mask, voc_palette())
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(IDS) + "\n")
    return root


def make_ctx(root: Path, tmp_path: Path, **train_seg):
    cfg = load_config(Config, [], base={
        "run": {"name": "r", "out_dir": str(tmp_path / "runs")},
        "data": {"root": str(root), "dataset": "toy", "class_names": ["background", "one", "two"],
                 "image_ext": ".png", "image_labels": "masks"},
        "train_seg": train_seg})
    return stage_context(cfg)


def gt_dir(root: Path) -> Path:
    return root / "SegmentationClass"


# ------------------------------------------------------------------------------------- refusal

def test_ground_truth_folder_is_refused_directly(dataset, tmp_path):
    ctx = make_ctx(dataset, tmp_path, labels=str(gt_dir(dataset)))
    with pytest.raises(GroundTruthAsPseudoLabels, match="is the ground truth"):
        resolve_training_labels(ctx)


def test_ground_truth_is_refused_with_a_trailing_slash_and_dot_segments(dataset, tmp_path):
    ctx = make_ctx(dataset, tmp_path, labels=str(dataset / "JPEGImages" / ".." / "SegmentationClass") + "/")
    with pytest.raises(GroundTruthAsPseudoLabels):
        resolve_training_labels(ctx)


def test_ground_truth_is_refused_through_a_symlink(dataset, tmp_path):
    link = tmp_path / "my_pseudo_labels"
    link.symlink_to(gt_dir(dataset), target_is_directory=True)
    ctx = make_ctx(dataset, tmp_path, labels=str(link))
    with pytest.raises(GroundTruthAsPseudoLabels, match="train_seg.supervision=full"):
        resolve_training_labels(ctx)


def test_ground_truth_is_refused_through_a_run_relative_path(dataset, tmp_path):
    ctx = make_ctx(dataset, tmp_path)
    relative = os.path.relpath(gt_dir(dataset), ctx.run_dir)
    assert relative.startswith("..")
    ctx.cfg.train_seg.labels = relative
    with pytest.raises(GroundTruthAsPseudoLabels):
        resolve_training_labels(ctx)


def test_a_folder_of_symlinks_to_the_ground_truth_files_is_refused(dataset, tmp_path):
    links = tmp_path / "labels"
    links.mkdir()
    for image_id in IDS:
        (links / f"{image_id}.png").symlink_to(gt_dir(dataset) / f"{image_id}.png")
    ctx = make_ctx(dataset, tmp_path, labels=str(links))
    with pytest.raises(GroundTruthAsPseudoLabels, match="ground-truth files"):
        resolve_training_labels(ctx)


def test_a_folder_of_hard_links_to_the_ground_truth_files_is_refused(dataset, tmp_path):
    links = tmp_path / "labels"
    links.mkdir()
    for image_id in IDS:
        os.link(gt_dir(dataset) / f"{image_id}.png", links / f"{image_id}.png")
    with pytest.raises(GroundTruthAsPseudoLabels):
        resolve_training_labels(make_ctx(dataset, tmp_path, labels=str(links)))


def test_the_cli_refuses_ground_truth_in_one_line(dataset, tmp_path, capsys):
    config = tmp_path / "seg.yaml"
    config.write_text(f"run: {{name: r, out_dir: {tmp_path / 'runs'}}}\n"
                      f"data: {{root: {dataset}, class_names: [background, one, two], image_ext: .png, "
                      f"image_labels: masks}}\n")
    code = main(["train-seg", "--config", str(config), "--labels", str(gt_dir(dataset))])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("wsss train-seg: error: train_seg.labels") and "is the ground truth" in err
    assert len(err.strip().splitlines()) == 1


def test_cli_labels_relative_to_the_working_directory_are_refused_too(dataset, tmp_path, monkeypatch, capsys):
    config = tmp_path / "seg.yaml"
    config.write_text(f"run: {{name: r, out_dir: {tmp_path / 'runs'}}}\n"
                      f"data: {{root: {dataset}, class_names: [background, one, two], image_ext: .png, "
                      f"image_labels: masks}}\n")
    monkeypatch.chdir(dataset / "JPEGImages")
    assert main(["train-seg", "--config", str(config), "--labels", "../SegmentationClass"]) == 2
    assert "is the ground truth" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- accepted

def test_full_supervision_uses_the_ground_truth_on_purpose(dataset, tmp_path):
    ctx = make_ctx(dataset, tmp_path, labels=str(gt_dir(dataset)), supervision="full")
    folder, description = resolve_training_labels(ctx)
    assert folder == gt_dir(dataset)
    assert "ground truth" in description and "fully supervised reference" in description
    assert label_source(ctx).ext == ".png"


def test_full_supervision_with_a_relative_data_root_names_the_folder_once(dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ctx = make_ctx(Path("data"), tmp_path, supervision="full")
    folder, _ = resolve_training_labels(ctx)
    assert folder.is_absolute() and folder == gt_dir(dataset).resolve()
    # the segmentation data joins mask_dir to data.root: an absolute folder is not joined twice
    assert (Path("data") / folder / "a.png").is_file()


def test_pseudo_labels_in_the_run_directory_are_used(dataset, tmp_path):
    ctx = make_ctx(dataset, tmp_path)              # train_seg.labels defaults to "labels"
    shutil.copytree(gt_dir(dataset), ctx.run_dir / "labels")   # a copy is not the ground truth
    folder, description = resolve_training_labels(ctx)
    assert folder == (ctx.run_dir / "labels").resolve()
    assert description.startswith("pseudo labels")


def test_missing_folder_and_missing_files_are_named(dataset, tmp_path):
    ctx = make_ctx(dataset, tmp_path)
    with pytest.raises(DataError, match="pseudo-label folder not found"):
        label_source(ctx)
    (ctx.run_dir / "labels").mkdir()
    write_label(ctx.run_dir / "labels" / "b.png", MASKS["b"])
    source = label_source(ctx)
    with pytest.raises(DataError, match=r"2 of 3 training ids have no label file .*first: a"):
        check_label_files(source, IDS)


# ------------------------------------------------------------------------------------- coverage

def test_coverage_counts_hand_computed(dataset, tmp_path):
    ctx = make_ctx(dataset, tmp_path, supervision="full")
    source = label_source(ctx)
    cov = label_coverage(source, IDS, num_classes=2)
    # 48 pixels: a has 12 labelled + 4 ignore, b 16 ignore, c 16 background
    assert cov["images"] == 3 and cov["pixels"] == 48
    assert cov["labelled_fraction"] == pytest.approx(28 / 48)
    assert cov["ignore_fraction"] == pytest.approx(20 / 48)
    assert cov["all_ignore_images"] == 1 and cov["all_ignore_fraction"] == pytest.approx(1 / 3)
    assert cov["class_pixel_fraction"] == pytest.approx([20 / 28, 4 / 28, 4 / 28])


def test_report_is_written_and_byte_copies_are_counted(dataset, tmp_path):
    ctx = make_ctx(dataset, tmp_path)
    shutil.copytree(gt_dir(dataset), ctx.run_dir / "labels")
    write_label(ctx.run_dir / "labels" / "c.png", np.ones((4, 4), np.uint8), voc_palette())

    class Log:
        lines: list[str] = []

        def info(self, msg, *args):
            self.lines.append(msg % args)

        warning = info

    log = Log()
    cov = report_label_source(ctx, label_source(ctx), IDS, 2, log)
    report = json.loads((ctx.run_dir / "segmenter" / "label_source.json").read_text())
    assert report["supervision"] == "weak" and report["split"] == "train"
    assert report["coverage"] == cov and cov["class_pixel_fraction"][1] == pytest.approx(20 / 28)
    assert report["byte_copies_of_ground_truth"] == {"identical": 2, "compared": 3}
    assert any("byte copies" in line for line in log.lines)
    assert any(line.startswith("training labels: pseudo labels") for line in log.lines)


def test_values_outside_the_label_set_are_an_error(dataset, tmp_path):
    ctx = make_ctx(dataset, tmp_path)
    (ctx.run_dir / "labels").mkdir()
    for image_id in IDS:
        write_label(ctx.run_dir / "labels" / f"{image_id}.png", np.full((4, 4), 7, np.uint8))
    with pytest.raises(DataError, match="outside 0..2"):
        label_coverage(label_source(ctx), IDS, num_classes=2)
