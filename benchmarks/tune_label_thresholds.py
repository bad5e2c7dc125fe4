"""Choose the label thresholds of EPS / CAM maps on a split with ground truth (use val, never test).

    .venv/bin/python benchmarks/tune_label_thresholds.py --cams runs/x/cams_val \
        --data ../shared/data/msrcvoc --split val [--json out.json]

Scores, from the saved maps of ``wsss cams`` (the files the label stage reads), with the label
rules of the toolkit:

- the constant background score ``labels.thr`` (EPS's rule) over a range;
- ``labels.thr_by_saliency = [t_s, t_n]`` over a grid (salient pixels become a class above t_s,
  non-salient ones above t_n);
- the saliency baseline (``labels.method = saliency``, threshold 0.5; the maps choose between
  several labelled classes).

mIoU over the 21 classes with 255 in a label counted as a miss (these rules never write 255).
Pure NumPy; one process.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsss.data.splits import read_split  # noqa: E402
from wsss.evaluation.confusion import confusion_counts, segmentation_metrics  # noqa: E402
from wsss.io import read_label, read_saliency  # noqa: E402
from wsss.methods.eps import eps_pseudo_mask, saliency_background_score  # noqa: E402
from wsss.methods.saliency_baseline import saliency_label  # noqa: E402
from wsss.stages.make_labels import read_maps  # noqa: E402

CONSTANT = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
SALIENT = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)
NON_SALIENT = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 0.9, 1.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cams", required=True, help="folder of <id>.npz maps from `wsss cams`")
    parser.add_argument("--data", required=True, help="dataset root (VOC layout)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--mask-dir", default="SegmentationClass")
    parser.add_argument("--saliency-dir", default="Saliency")
    parser.add_argument("--num-classes", type=int, default=21, help="label values incl. background")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    root = Path(args.data)
    ids = read_split(root / "ImageSets" / "Segmentation" / f"{args.split}.txt")
    n = args.num_classes
    zero = lambda: np.zeros((n, n + 1), np.int64)  # noqa: E731
    constant = {t: zero() for t in CONSTANT}
    grid = {(a, b): zero() for a in SALIENT for b in NON_SALIENT}
    baseline = zero()
    for image_id in ids:
        classes, cams = read_maps(Path(args.cams) / f"{image_id}.npz")
        gt = read_label(root / args.mask_dir / f"{image_id}.png", "ground truth")
        sal = read_saliency(root / args.saliency_dir / f"{image_id}.png")
        for t in CONSTANT:
            constant[t] += confusion_counts(eps_pseudo_mask(cams, classes, t), gt, n)
        for pair in grid:
            grid[pair] += confusion_counts(eps_pseudo_mask(cams, classes, saliency_background_score(sal, *pair)), gt, n)
        baseline += confusion_counts(saliency_label(sal, classes, cams if len(classes) > 1 else None), gt, n)

    def miou(c: np.ndarray) -> float:
        return round(100 * segmentation_metrics(c).miou, 2)

    best = max(grid, key=lambda p: miou(grid[p]))
    result = {
        "cams": args.cams, "split": args.split, "images": len(ids),
        "saliency_baseline": miou(baseline),
        "constant_thr": {str(t): miou(c) for t, c in constant.items()},
        "thr_by_saliency": {f"{a},{b}": miou(c) for (a, b), c in grid.items()},
        "best_thr_by_saliency": [best[0], best[1], miou(grid[best])],
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
