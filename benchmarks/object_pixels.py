"""Where the ground-truth object pixels go in a label set, from `wsss eval` JSONs.

POM (NSROM B.4) is meant to turn false-negative background (object pixels labelled 0) into 255:
this prints, per eval JSON, the share of object pixels (ground truth 1..C) a label set gives
their own class, background, another class and 255, from the JSON's confusion matrix.

    .venv/bin/python benchmarks/object_pixels.py runs/x/eval_a.json runs/x/eval_b.json ...
"""

from __future__ import annotations

import json
import sys

import numpy as np


def object_pixel_shares(result: dict) -> dict[str, float]:
    """Shares in [0, 1] of ground-truth object pixels labelled own class / background / other / 255.
    ``confusion_matrix.counts`` is (C+1) x (C+2): rows ground truth 0..C, columns 0..C and 255."""
    counts = np.asarray(result["confusion_matrix"]["counts"], dtype=np.float64)
    objects = counts[1:]
    total = objects.sum()
    own = np.trace(objects[:, 1:counts.shape[0]])
    background, ignore = objects[:, 0].sum(), objects[:, -1].sum()
    return {"object_pixels": int(total), "own": own / total, "background": background / total,
            "other": (total - own - background - ignore) / total, "ignore": ignore / total}


def main(paths: list[str]) -> int:
    print(f"{'eval json':60s} {'object px':>10s} {'own %':>6s} {'bg %':>6s} {'other %':>7s} {'255 %':>6s}")
    for path in paths:
        with open(path) as f:
            s = object_pixel_shares(json.load(f))
        print(f"{path:60s} {s['object_pixels']:10d} {100 * s['own']:6.1f} {100 * s['background']:6.1f} "
              f"{100 * s['other']:7.1f} {100 * s['ignore']:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
