"""`wsss crf`: dense-CRF refinement of a folder of labels or probabilities (METHODS.md A.4).

Input: ``<crf.input>/<id>.npz`` probabilities (``probs`` (K, H, W) float over the labels
``labels`` (K,) int64, 0 = background; e.g. ``wsss predict`` with ``save_probs``) or
``<crf.input>/<id>.png`` hard labels (0..C, 255 = ignore; e.g. pseudo labels), for each id of
``crf.split`` (an npz is preferred when both exist), and the images of the dataset.
Output: ``<crf.out>/<id>.png`` palette PNGs of the refined labels, written atomically.

- probabilities: :func:`~wsss.postprocess.crf.dense_crf`; label = ``labels[argmax]``.
- labels: :func:`~wsss.postprocess.crf.crf_from_labels` over the labels present in the map plus
  background (as EPS's CRF runs over the image's classes and background; absent classes would
  only dilute the unary), with ``crf.gt_prob`` on the given label; 255 pixels get a uniform unary
  and stay 255 in the output. A map with fewer than two such labels is copied unchanged.

CRF values from ``crf.*`` (DeepLab-v2 defaults: bilateral 4 / xy 67 / rgb 3, Gaussian 3 / xy 1,
10 iterations). Ids are sharded by RANK / WORLD_SIZE, done ids skipped unless ``crf.overwrite``,
images processed by a pool of ``crf.workers`` processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsss.data.splits import dataset_root
from wsss.data.voc import build_dataset_info, image_path
from wsss.evaluation.confusion import check_values
from wsss.engine.sharding import pending_ids, process_imap, shard_ids
from wsss.errors import ConfigError, DataError
from wsss.io import IGNORE, load_npz, read_image, read_label, write_label
from wsss.postprocess.crf import CrfConfig, crf_from_labels, dense_crf
from wsss.stages.context import StageContext
from wsss.stages.offline import env_shard, require_dir, require_files

INPUT_KINDS = (".npz", ".png")


@dataclass(frozen=True)
class CrfJob:
    image_id: str
    image: Path
    source: Path          # <id>.npz (probabilities) or <id>.png (labels)
    out: Path
    config: CrfConfig = CrfConfig()
    gt_prob: float = 0.7
    palette: np.ndarray | None = field(default=None, compare=False, repr=False)
    num_labels: int = 256   # label values must lie in 0..num_labels-1 (or be 255)


def refine_probs(image_u8: np.ndarray, probs: np.ndarray, labels: np.ndarray,
                 config: CrfConfig = CrfConfig()) -> tuple[np.ndarray, np.ndarray]:
    """(refined label (H, W) uint8 = labels[argmax], input label = labels[argmax of probs])."""
    probs = np.asarray(probs, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if probs.ndim != 3 or probs.shape[0] != labels.size:
        raise DataError(f"probabilities {probs.shape} do not match {labels.size} labels")
    before = labels[np.argmax(probs, axis=0)].astype(np.uint8)
    if labels.size < 2:
        return before, before
    refined = dense_crf(image_u8, probs, **config.as_kwargs())
    return labels[np.argmax(refined, axis=0)].astype(np.uint8), before


def refine_label(image_u8: np.ndarray, label: np.ndarray, gt_prob: float = 0.7,
                 config: CrfConfig = CrfConfig()) -> np.ndarray:
    """Refined (H, W) uint8 label over {0} ∪ the labels present; 255 stays 255."""
    label = np.asarray(label)
    present = np.unique(label[label != IGNORE])
    values = np.union1d([0], present).astype(np.int64)
    if values.size < 2:
        return label.astype(np.uint8, copy=True)
    lookup = np.full(256, IGNORE, dtype=np.uint8)
    lookup[values] = np.arange(values.size, dtype=np.uint8)
    compact = lookup[label]
    refined = crf_from_labels(image_u8, compact, values.size, gt_prob, keep_ignore=True, config=config)
    back = np.full(256, IGNORE, dtype=np.uint8)
    back[:values.size] = values
    return back[refined]


def crf_one(job: CrfJob) -> tuple[str, str, float]:
    """Refine one image; returns ``(id, input kind, share of pixels whose label changed)``."""
    image = read_image(job.image)
    if job.source.suffix == ".npz":
        arrays = load_npz(job.source)
        for key in ("probs", "labels"):
            if key not in arrays:
                raise DataError(f"{job.source} has no '{key}' array (keys: {sorted(arrays)})")
        if arrays["probs"].shape[1:] != image.shape[:2]:
            raise DataError(f"{job.source}: probabilities are {arrays['probs'].shape[1:]} but the image "
                            f"{job.image} is {image.shape[:2]}")
        check_values(np.asarray(arrays["labels"]), job.num_labels, f"the 'labels' array of {job.source}")
        out, before = refine_probs(image, arrays["probs"], arrays["labels"], job.config)
        kind = "probs"
    else:
        before = read_label(job.source, "label map")
        check_values(before, job.num_labels, f"label map {job.source}")
        if before.shape != image.shape[:2]:
            raise DataError(f"{job.source} is {before.shape} but the image {job.image} is {image.shape[:2]}")
        out = refine_label(image, before, job.gt_prob, job.config)
        kind = "labels"
    write_label(job.out, out, job.palette)
    return job.image_id, kind, float(np.mean(out != before))


def crf_config(cc) -> CrfConfig:
    if cc.iterations < 0:
        raise ConfigError(f"config key 'crf.iterations' must be 0 or more, got {cc.iterations}")
    for key in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
        if getattr(cc, key) <= 0:
            raise ConfigError(f"config key 'crf.{key}' must be positive, got {getattr(cc, key)}")
    return CrfConfig(iterations=cc.iterations, gaussian_sxy=cc.gaussian_sxy,
                     gaussian_compat=cc.gaussian_compat, bilateral_sxy=cc.bilateral_sxy,
                     bilateral_srgb=cc.bilateral_srgb, bilateral_compat=cc.bilateral_compat)


def run_crf(ctx: StageContext) -> dict[str, Any]:
    """Refine this process's shard of ``crf.split``; see the module docstring.

    Returns a summary: ids of the shard, refined, done before, inputs by kind, mean share of
    changed pixels, seconds, images/s, input and output folders.
    """
    cfg, cc = ctx.cfg, ctx.cfg.crf
    rank, world_size, _ = env_shard()
    source = require_dir(ctx.path(cc.input), "crf.input",
                         "give a folder of <id>.npz probabilities or <id>.png labels")
    out = ctx.output_path(cc.out, "crf.out")
    if out.resolve() == source.resolve():
        raise ConfigError(f"crf.out and crf.input are the same folder {out}: give another crf.out")
    if not 0.0 < cc.gt_prob < 1.0:
        raise ConfigError(f"crf.gt_prob must lie in (0, 1), got {cc.gt_prob}")
    info = build_dataset_info(cfg.data)
    root = dataset_root(cfg.data)
    ids = shard_ids(ctx.split_ids(cc.split), rank, world_size)
    out.mkdir(parents=True, exist_ok=True)
    todo = pending_ids(ids, out, ".png", cc.overwrite)
    inputs = {}
    for image_id in todo:
        candidates = [source / f"{image_id}{s}" for s in INPUT_KINDS]
        inputs[image_id] = next((p for p in candidates if p.is_file()), candidates[0])
    require_files(list(inputs.values()), f"<id>.npz or <id>.png in {source}",
                  "run the stage that writes them (wsss predict / wsss labels) first")
    require_files([image_path(cfg.data, root, i) for i in todo], "image", "check data.image_dir")
    config = crf_config(cc)
    jobs = [CrfJob(i, image_path(cfg.data, root, i), inputs[i], out / f"{i}.png", config, cc.gt_prob,
                   info.palette, info.num_labels) for i in todo]
    if rank == 0:
        ctx.record("crf", "cpu", world_size)

    start = time.perf_counter()
    kinds = {"probs": 0, "labels": 0}
    changed = 0.0
    for _, kind, share in process_imap(crf_one, jobs, workers=cc.workers, ordered=False,
                                       desc="crf", progress=rank == 0):
        kinds[kind] += 1
        changed += share
    seconds = time.perf_counter() - start
    return {
        "split": cc.split, "input": str(source), "out": str(out), "images": len(ids),
        "refined": len(jobs), "done_before": len(ids) - len(jobs), "inputs": kinds,
        "changed_share": round(changed / len(jobs), 6) if jobs else 0.0,
        "seconds": round(seconds, 3),
        "images_per_s": round(len(jobs) / seconds, 3) if jobs and seconds > 0 else 0.0,
        "config": config.as_kwargs(), "gt_prob": cc.gt_prob, "rank": rank, "world_size": world_size,
    }
