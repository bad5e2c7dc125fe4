"""Which of POM's class maps mine the objects the saliency map missed, on a `wsss demo` run.

For every training scene with a non-salient object (``synth_meta.json``), POM (NSROM B.4) turns a
background pixel into 255 when some labelled class c has K_c > T_c. This splits the missed
objects' pixels that the initial labels call background into those mined by the object's *own*
class map and those mined by *any* class map (what POM does), and reports the own-class share
separately for classes that also have a salient instance in the scene (T_c = the median of K_c
over the class's labelled pixels) and classes that appear only as the missed object (T_c from the
top quartile above T_bg).

    .venv/bin/python benchmarks/pom_missed_objects.py RUN_DIR [CAMS LABELS]
    RUN_DIR: a demo run directory (runs/demo) with data/, the plain CAMs and the initial labels;
    CAMS, LABELS: its folders (default cams_nsrom labels_nsrom_be; cams_cam labels_eps for EPS+POM).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.io import IGNORE
from wsss.methods.nsrom import minmax_normalize, potential_object_mining


def mined_masks(label: np.ndarray, cams: np.ndarray, classes: list[int]) -> dict[int, np.ndarray]:
    """{class: background pixels of ``label`` that POM with that class's map alone turns to 255}."""
    return {cls: (label == 0) & (potential_object_mining(label, [minmax_normalize(cam.astype(np.float32))],
                                                         [cls]) == IGNORE)
            for cam, cls in zip(cams, classes)}


def main(run: Path, cams_dir: str, labels_dir: str) -> int:
    meta = json.loads((run / "data" / "synth_meta.json").read_text())
    scenes = meta.get("images", meta)
    # counts: pixels labelled background in the initial labels, mined by own class, by any class
    counts = {True: np.zeros(3, np.int64), False: np.zeros(3, np.int64)}
    for image_id, scene in scenes.items():
        if not image_id.startswith("train") or not isinstance(scene, dict):
            continue
        missed = [o for o in scene.get("objects", []) if not o["salient"]]
        if not missed:
            continue
        instances = np.array(Image.open(run / "data" / "SegmentationObject" / f"{image_id}.png"))
        label = np.array(Image.open(run / labels_dir / f"{image_id}.png"))
        maps = np.load(run / cams_dir / f"{image_id}.npz")
        masks = mined_masks(label, maps["cams"], [int(c) for c in maps["classes"]])
        any_class = np.any(list(masks.values()), axis=0)
        for obj in missed:
            cls = obj["class_index"]
            also_salient = any(o["salient"] and o["class_index"] == cls for o in scene["objects"])
            pixels = (instances == obj["instance"]) & (label == 0)
            own = masks.get(cls, np.zeros(label.shape, bool))
            counts[also_salient] += [pixels.sum(), (pixels & own).sum(), (pixels & any_class).sum()]
    print(f"{run} ({cams_dir}, {labels_dir}): missed-object pixels labelled background, mined by POM")
    for also_salient, (total, own, anyc) in counts.items():
        kind = "class also salient in the scene" if also_salient else "class only in the missed object"
        print(f"  {kind:34s} {total:7d} px   own class {100 * own / max(total, 1):5.1f} %   "
              f"any class {100 * anyc / max(total, 1):5.1f} %")
    total, own, anyc = counts[True] + counts[False]
    print(f"  {'all':34s} {total:7d} px   own class {100 * own / max(total, 1):5.1f} %   "
          f"any class {100 * anyc / max(total, 1):5.1f} %")
    return 0


if __name__ == "__main__":
    if len(sys.argv) not in (2, 4):
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), *(sys.argv[2:] or ["cams_nsrom", "labels_nsrom_be"])))
