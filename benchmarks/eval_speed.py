"""Speed and peak memory of `wsss eval` on the 1,464 VOC 2012 train masks (issue 3, "Measure").

The predictions are a perturbed copy of the ground truth, generated once (seeded) into --work:
255 bands filled with the nearest label, every object dilated or eroded by 1..4 px, some classes
swapped, some false-positive blobs, and in some images a rectangle of 255. Then

    /usr/bin/time -v python -m wsss.cli eval --pred W/pred --gt ROOT/SegmentationClassAug \
        --split ROOT/ImageSets/Segmentation/train.txt --workers N --out W/eval_wN_cli_all.json

runs for each N in --workers; then the same `eval` subcommand module alone (EVAL_ONLY below: its
parser and run() without the rest of the CLI, whose other modules may import torch at start-up),
also with --no-boundary, and on 366 and on 5,856 images (the 1,464 pairs four times over, as
symlinks) to show that memory does not grow with the number of images. Reported per run: wall
time; CPU time (user + system of the whole process tree: less disturbed than wall time when other
jobs share the CPUs); the largest single-process max RSS (GNU time); the peaks of the summed RSS
and PSS of the process tree (sampled every 20 ms from /proc; RSS counts the pages that forked
workers share with their parent once per process, PSS splits them). Rounds alternate 1 and 2
workers so that both meet the same background load; the 1-minute load average before each run
is recorded.

    python benchmarks/eval_speed.py --root ../shared/data/voc-samples --work /tmp/wsss_eval_bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from wsss.data.classes import voc_palette
from wsss.data.splits import read_split
from wsss.evaluation.boundary import fill_ignored
from wsss.io import read_label, write_label


def perturb(gt: np.ndarray, rng: np.random.Generator, num_classes: int = 20) -> np.ndarray:
    """A plausible wrong prediction from a ``(H, W)`` uint8 ground truth (0..C, 255)."""
    pred = fill_ignored(gt)
    h, w = pred.shape
    for c in np.unique(pred):
        if c == 0:
            continue
        mask = (pred == c).astype(np.uint8)
        k = int(rng.integers(1, 5)) * 2 + 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        if rng.random() < 0.5:
            pred[cv2.dilate(mask, kernel).astype(bool)] = c
        else:
            pred[mask.astype(bool) & ~cv2.erode(mask, kernel).astype(bool)] = 0
        if rng.random() < 0.15:
            pred[pred == c] = int(rng.integers(1, num_classes + 1))
    if rng.random() < 0.2:
        center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(5, w // 4 + 6)), int(rng.integers(5, h // 4 + 6)))
        cv2.ellipse(pred, center, axes, 0, 0, 360, int(rng.integers(1, num_classes + 1)), -1)
    if rng.random() < 0.3:
        y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        pred[y0:y0 + int(rng.integers(h // 8, h // 3)), x0:x0 + int(rng.integers(w // 8, w // 3))] = 255
    return pred


# The `wsss eval` subcommand alone: its own module's parser and run(), nothing else of the CLI.
EVAL_ONLY = ("import argparse, sys; from wsss.commands import eval as e; p = argparse.ArgumentParser(); "
             "e.add_arguments(p); sys.exit(e.run(p.parse_args(sys.argv[1:])))")


def make_predictions(gt_dir: Path, ids: list[str], out: Path, seed: int = 0) -> None:
    marker = out / ".done"
    if marker.is_file() and marker.read_text() == f"{len(ids)} {seed}\n":
        return
    palette = voc_palette()
    for n, image_id in enumerate(ids):
        rng = np.random.default_rng([seed, n])
        write_label(out / f"{image_id}.png", perturb(read_label(gt_dir / f"{image_id}.png"), rng), palette)
    marker.write_text(f"{len(ids)} {seed}\n")


def _tree_memory_kib(root_pid: int) -> tuple[int, int]:
    """Summed RSS and PSS (KiB) of ``root_pid`` and all its descendants. PSS shares the pages
    that forked workers have in common with their parent, so its sum is the tree's real use."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        p = frontier.pop()
        for child, parent in parents.items():
            if parent == p and child not in tree:
                tree.add(child)
                frontier.append(child)
    rss = pss = 0
    for pid in tree:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        m_rss, m_pss = re.search(r"^Rss:\s+(\d+) kB", text, re.M), re.search(r"^Pss:\s+(\d+) kB", text, re.M)
        rss += int(m_rss.group(1)) if m_rss else 0
        pss += int(m_pss.group(1)) if m_pss else 0
    return rss, pss


def timed_run(cmd: list[str]) -> dict:
    """Run ``/usr/bin/time -v cmd``; return wall seconds, the largest single-process max RSS and the
    peaks of the process tree's summed RSS and PSS (MiB; sampled every 20 ms)."""
    proc = subprocess.Popen(["/usr/bin/time", "-v", *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0, 0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            rss, pss = _tree_memory_kib(proc.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    t.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    t.join()
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
    maxrss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1))
    elapsed = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", err).group(1)
    cpu = sum(float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", err).group(1)) for kind in ("User", "System"))
    return {"wall_s": round(wall, 2), "time_elapsed": elapsed, "cpu_s": round(cpu, 2),
            "max_rss_single_mib": round(maxrss / 1024, 1),
            "peak_tree_rss_mib": round(peak[0] / 1024, 1), "peak_tree_pss_mib": round(peak[1] / 1024, 1)}


def make_repeated_set(work: Path, gt_dir: Path, ids: list[str], times: int) -> tuple[Path, Path, Path]:
    """``times`` copies of every (prediction, ground truth) pair as symlinks with new ids
    (``<id>_r<k>``): the same pixels, ``times`` as many images. Returns (pred, gt, split)."""
    base = work / f"x{times}"
    pred, gt = base / "pred", base / "gt"
    pred.mkdir(parents=True, exist_ok=True)
    gt.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(times):
        for image_id in ids:
            name = f"{image_id}_r{k}"
            names.append(name)
            for folder, src in ((pred, work / "pred" / f"{image_id}.png"), (gt, gt_dir / f"{image_id}.png")):
                link = folder / f"{name}.png"
                if not link.is_symlink():
                    link.symlink_to(src.resolve())
    split = base / "list.txt"
    split.write_text("\n".join(names) + "\n")
    return pred, gt, split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared/data/voc-samples"))
    ap.add_argument("--work", default="/tmp/wsss_eval_bench")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=2, help="runs per setting")
    ap.add_argument("--only", nargs="+", metavar="TAG", help="run only these settings: cli_all all noboundary quarter x4")
    args = ap.parse_args()
    root, work = Path(args.root), Path(args.work)
    gt_dir, split = root / "SegmentationClassAug", root / "ImageSets/Segmentation/train.txt"
    ids = read_split(split)
    t0 = time.perf_counter()
    make_predictions(gt_dir, ids, work / "pred")
    print(f"predictions ready in {work / 'pred'} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    quarter = work / "train_quarter.txt"
    quarter.write_text("\n".join(ids[: len(ids) // 4]) + "\n")
    x4_pred, x4_gt, x4_split = make_repeated_set(work, gt_dir, ids, 4)

    # `wsss eval` as users run it, and the same eval command module without the rest of the CLI
    # (whose other subcommand modules may import torch at start-up): the evaluator's own cost.
    wsss_cli = [sys.executable, "-m", "wsss.cli", "eval"]
    eval_only = [sys.executable, "-c", EVAL_ONLY]
    # (tag, description, launcher, pred dir, gt dir, split, extra arguments)
    settings = [
        ("cli_all", "wsss eval, 1,464 train masks", wsss_cli, work / "pred", gt_dir, split, []),
        ("all", "eval module, 1,464 train masks", eval_only, work / "pred", gt_dir, split, []),
        ("noboundary", "eval module, 1,464, --no-boundary", eval_only, work / "pred", gt_dir, split, ["--no-boundary"]),
        ("quarter", "eval module, first 366", eval_only, work / "pred", gt_dir, quarter, []),
        ("x4", "eval module, 5,856 = 4 x 1,464", eval_only, x4_pred, x4_gt, x4_split, []),
    ]
    if args.only:
        settings = [st for st in settings if st[0] in args.only]
    startup = {"wsss_cli": timed_run([sys.executable, "-c", "import wsss.cli; wsss.cli.build_parser()"]),
               "eval_module": timed_run([sys.executable, "-c", "import wsss.commands.eval, wsss.evaluation"])}
    # Repeats outermost, so that 1 and 2 workers meet the same background load (other jobs may share
    # the CPUs): each setting runs once per round, rounds alternate.
    runs = {}
    for _ in range(args.repeat):
        for workers in args.workers:
            for tag, label, launcher, pred_dir, gt, split_file, extra in settings:
                cmd = [*launcher, "--pred", str(pred_dir), "--gt", str(gt),
                       "--split", str(split_file), "--workers", str(workers),
                       "--out", str(work / f"eval_w{workers}_{tag}.json"), *extra]
                entry = runs.setdefault((workers, tag), {"workers": workers, "images": len(read_split(split_file)),
                                                         "setting": label, "command": " ".join(cmd), "runs": []})
                load = os.getloadavg()[0]
                entry["runs"].append({**timed_run(cmd), "load_1min_before": round(load, 2)})
    for entry in runs.values():
        rs = entry["runs"]
        print(f"workers={entry['workers']} {entry['setting']:<34} images={entry['images']:>5} "
              f"wall={[r['wall_s'] for r in rs]} cpu={[r['cpu_s'] for r in rs]} load={[r['load_1min_before'] for r in rs]} "
              f"maxrss_single={[r['max_rss_single_mib'] for r in rs]} MiB "
              f"tree_rss={[r['peak_tree_rss_mib'] for r in rs]} MiB "
              f"tree_pss={[r['peak_tree_pss_mib'] for r in rs]} MiB", file=sys.stderr)
    runs = list(runs.values())
    res = json.loads((work / f"eval_w{args.workers[-1]}_{settings[0][0]}.json").read_text())
    summary = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "load_average_at_end": os.getloadavg(),
        "startup": startup,
        "runs": runs,
        "miou_ignore_as_miss": res["conventions"]["ignore_as_miss"]["miou"],
        "miou_ignore_dropped": res["conventions"]["ignore_dropped"]["miou"],
        "coverage": res["coverage"],
        "boundary_f1": (res.get("boundary") or {}).get("f1"),
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
