"""One markdown table of label sets from `wsss eval` JSONs: mIoU (both 255 conventions), coverage,
precision, recall, and where the ground-truth object pixels go (own class / background / other
class / 255).

    .venv/bin/python benchmarks/label_table.py "Saliency baseline=runs/x/eval/eval_labels_saliency.json" \
        "EPS=runs/x/eval/eval_labels.json" ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from object_pixels import object_pixel_shares  # noqa: E402

HEAD = ("| labels | images | mIoU % (255 = miss) | mIoU % (255 dropped) | coverage % | precision % | recall % "
        "| object px: own / bg / other / 255 % |")


def row(name: str, path: str) -> str:
    result = json.loads(Path(path).read_text())
    miss, dropped = result["conventions"]["ignore_as_miss"], result["conventions"]["ignore_dropped"]
    px = object_pixel_shares(result)
    split = " / ".join(f"{100 * px[k]:.1f}" for k in ("own", "background", "other", "ignore"))
    return (f"| {name} | {result['num_images']} | {100 * miss['miou']:.2f} | {100 * dropped['miou']:.2f} | "
            f"{100 * result['coverage']:.1f} | {100 * miss['mean_precision']:.1f} | {100 * miss['mean_recall']:.1f} "
            f"| {split} |")


def main(args: list[str]) -> int:
    if not args:
        print(__doc__)
        return 2
    print(HEAD)
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for arg in args:
        name, _, path = arg.partition("=")
        print(row(name, path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
