"""`wsss data synth | coco-to-voc | check` end to end through the command line."""

import json

import numpy as np
from PIL import Image

from wsss.cli import main


def test_synth_then_check(tmp_path, capsys):
    out = tmp_path / "scenes"
    assert main(["data", "synth", "--out", str(out), "--num-train", "8", "--num-val", "3",
                 "--size", "96-128", "--seed", "2"]) == 0
    text = capsys.readouterr().out
    assert "wrote 8 train + 3 val images" in text and f"--config {out / 'dataset.yaml'}" in text

    report = tmp_path / "report.json"
    assert main(["data", "check", "--config", str(out / "dataset.yaml"), "--json", str(report)]) == 0
    text = capsys.readouterr().out
    assert "split train" in text and "8 of 8 ids loaded" in text and "3 of 3 ids loaded" in text
    data = json.loads(report.read_text())
    labels = json.loads((out / "cls_labels.json").read_text())
    train_ids = (out / "ImageSets/Segmentation/train.txt").read_text().split()
    expected = {name: sum(c in labels[i] for i in train_ids) for c, name in enumerate(data["classes"]) if c}
    assert data["splits"]["train"]["images_per_class"] == expected
    assert data["splits"]["train"]["problems"] == [] and data["saliency"] and data["masks"]
    train = data["splits"]["train"]
    assert train["saliency_on_objects"] > 0.7 and train["saliency_on_background"] < 0.1
    assert train["saliency_formats"] == {"L": 8} and 0 <= train["saliency_range"][0] < train["saliency_range"][1]

    # A 16-bit copy of a saliency map reads as the same map (not clipped to {0, 255}) and the
    # check names the format it found.
    sal8 = np.asarray(Image.open(out / "Saliency" / "train_0000.png"))
    Image.fromarray(sal8.astype(np.uint16) * 257).save(out / "Saliency" / "train_0000.png")
    assert main(["data", "check", "--config", str(out / "dataset.yaml"), "--json", str(report)]) == 0
    assert "files by mode: I;16: 1, L: 7" in capsys.readouterr().out
    assert json.loads(report.read_text())["splits"]["train"]["saliency_on_objects"] == train["saliency_on_objects"]

    # --root finds dataset.yaml; a missing saliency map and a wrong label are reported as problems.
    (out / "Saliency" / "train_0001.png").unlink()
    labels["train_0002"] = [c for c in range(1, 6) if c not in labels["train_0002"]][:1]
    (out / "cls_labels.json").write_text(json.dumps(labels))
    assert main(["data", "check", "--root", str(out), "--split", "train", "--json", str(report)]) == 1
    problems = json.loads(report.read_text())["splits"]["train"]["problems"]
    assert len(problems) == 2
    assert "saliency map missing for id train_0001" in problems[0]
    assert problems[1].startswith("train_0002: image-level labels")
    assert "7 of 8 ids loaded" in capsys.readouterr().out


def test_coco_to_voc_then_check(tmp_path, capsys):
    images = tmp_path / "coco"
    images.mkdir()
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(images / "000001.jpg")
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "000001.jpg", "height": 12, "width": 10}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 18, "iscrowd": 0, "area": 16,
                         "segmentation": [[1, 1, 4, 1, 4, 4, 1, 4]]}],
        "categories": [{"id": 18, "name": "dog"}]}))
    out = tmp_path / "voc"
    assert main(["data", "coco-to-voc", "--ann", str(ann), "--images", str(images), "--out", str(out),
                 "--mapping", "voc"]) == 0
    assert "1 of 1 images written" in capsys.readouterr().out
    # no dataset.yaml and no saliency: --root picks up classes.yaml, saliency is reported as absent
    assert main(["data", "check", "--root", str(out), "--split", "train"]) == 0
    text = capsys.readouterr().out
    assert "20 classes" in text and "1 of 1 ids loaded" in text and "saliency maps not loaded" in text
    assert main(["data", "coco-to-voc", "--ann", str(tmp_path / "none.json"), "--images", str(images),
                 "--out", str(out)]) == 2
    assert "COCO annotation file missing" in capsys.readouterr().err
