"""`wsss predict`: full-resolution label maps (and class probabilities for the CRF) from a trained
DeepLab-v2 (METHODS.md B.5: "predict with MSC").

Per image of ``predict.split`` (this process's shard: ids ``rank, rank + N, ...`` with RANK /
WORLD_SIZE from the environment, so ``torchrun --nproc_per_node N wsss predict ...`` splits the
work):

1. the whole image (no resize, no crop), normalised as the backbone expects, goes through the
   multi-scale wrapper with ``predict.scales`` (each scale's logits resized to the first scale's
   and fused by an element-wise max, as in training);
2. the fused logits are upsampled bilinearly to the image size and turned into probabilities by a
   softmax over the C + 1 labels;
3. with ``predict.flip`` the mirrored image goes through steps 1-2 too; its probabilities are
   mirrored back and **averaged** with the unflipped ones (softmax first, then the mean);
4. label = argmax of the probabilities (ties to the lower index).

Outputs (written atomically; images whose outputs exist are skipped unless ``predict.overwrite``):

- ``<run>/<predict.out>/<id>.png``: palette PNG (dataset palette), values 0..C;
- with ``predict.save_probs``: ``<run>/<predict.out>_probs/<id>.npz`` with ``probs`` (K, H, W)
  float16 (each pixel sums to 1 up to float16 rounding) over ``labels`` (K,) int64 (0 =
  background). ``predict.probs_classes = all`` (default) keeps every label, K = C + 1, and uses no
  image-level label. ``labelled`` keeps background + the classes of the image-level label,
  renormalised over them, and the PNG is the argmax over the same classes: meant for training
  splits (NSRM round 1), where image labels are the weak supervision; never for evaluation;
- ``<run>/<predict.out>.summary.json`` (``.summary.rank<r>.json`` for several processes): counts,
  seconds and images per second.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from wsss.data.image_labels import present_classes
from wsss.data.splits import dataset_root
from wsss.data.voc import build_dataset_info, image_path, load_image_labels
from wsss.engine.distributed import resolve_device
from wsss.engine.logger import Progress
from wsss.engine.sharding import shard_ids
from wsss.errors import ConfigError, DataError
from wsss.io import read_image, save_npz, write_label
from wsss.models import MultiScale
from wsss.models.backbones.base import InputNorm
from wsss.stages.offline import env_shard, require_files, summary_path, write_summary
from wsss.stages.train_segmenter import input_norm_of
from wsss.stages.trained import load_trained_segmenter


def probs_folder(out_dir: Path) -> Path:
    """``<out>_probs`` beside the label folder."""
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}_probs"


def with_scales(model: nn.Module, scales) -> nn.Module:
    """The network of ``model`` (a :class:`MultiScale` or a bare DeepLab) run at ``scales``."""
    base = model.base if isinstance(model, MultiScale) else model
    scales = tuple(float(s) for s in scales)
    if not scales:
        raise ConfigError("predict.scales is empty: give at least one scale, e.g. [1.0]")
    if scales == (1.0,):
        return base
    return MultiScale(base, scales).eval()


@torch.inference_mode()
def predict_probs(model: nn.Module, norm: InputNorm, image: np.ndarray | torch.Tensor,
                  flip: bool = False, device: torch.device | str = "cpu") -> torch.Tensor:
    """Class probabilities of one image: ``image`` (H, W, 3) uint8 RGB -> (K, H, W) float32 on
    ``device``, softmax of the upsampled fused logits (mean with the mirrored pass when ``flip``)."""
    image = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.array(image, np.uint8))
    h, w = image.shape[:2]
    x = image.to(device).permute(2, 0, 1)[None].float().div_(255.0)
    x = norm(x)
    if flip:
        x = torch.cat([x, x.flip(-1)])
    logits = model(x)
    logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    probs = logits.softmax(dim=1)
    if flip:
        return (probs[0] + probs[1].flip(-1)) / 2
    return probs[0]


def restrict_probs(probs: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """``probs`` (C+1, H, W) -> the rows ``keep``, renormalised to sum to 1 per pixel."""
    kept = probs[keep]
    return kept / kept.sum(dim=0, keepdim=True).clamp(min=1e-12)


class _Images(Dataset):
    """``(id, (H, W, 3) uint8)`` for a list of ids (decoded in DataLoader workers)."""

    def __init__(self, paths: list[tuple[str, Path]]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        image_id, path = self.paths[i]
        return image_id, read_image(path)


def _pending(ids: list[str], out_dir: Path, probs_dir: Path | None, overwrite: bool) -> list[str]:
    if overwrite:
        return list(ids)
    return [i for i in ids if not (out_dir / f"{i}.png").is_file()
            or (probs_dir is not None and not (probs_dir / f"{i}.npz").is_file())]


def predict(ctx) -> dict:
    """Predict ``predict.split`` with ``predict.checkpoint`` (module docstring). Returns the
    summary: ``split``, ``images`` (this shard), ``predicted``, ``skipped``, ``seconds``,
    ``images_per_s``, ``out``, ``probs`` (folder or None), ``rank``, ``world_size``."""
    cfg = ctx.cfg
    pcfg = cfg.predict
    rank, world_size, local_rank = env_shard()
    device = resolve_device(cfg.run.device, local_rank, world_size)
    info = build_dataset_info(cfg.data)
    out_dir = ctx.output_path(pcfg.out, "predict.out")
    probs_dir = ctx.output_path(probs_folder(Path(pcfg.out)), "predict.out") if pcfg.save_probs else None
    root = dataset_root(cfg.data)

    ids = ctx.split_ids(pcfg.split)
    mine = shard_ids(ids, rank, world_size)
    todo = _pending(mine, out_dir, probs_dir, pcfg.overwrite)
    paths = [(i, image_path(cfg.data, root, i)) for i in todo]
    require_files([p for _, p in paths], "image", f"check data.root and data.image_dir ({root})")

    model, meta = load_trained_segmenter(ctx.path(pcfg.checkpoint), device)
    if int(meta["num_classes"]) != info.num_labels:
        raise DataError(f"{ctx.path(pcfg.checkpoint)} predicts {meta['num_classes']} labels but dataset "
                        f"{info.name!r} has {info.num_labels} (background + {info.num_classes}); "
                        f"use the data settings the segmenter was trained with")
    net = with_scales(model, pcfg.scales).to(device).eval()
    norm = input_norm_of(net)
    image_labels = None
    if pcfg.probs_classes == "labelled":
        image_labels = load_image_labels(cfg.data, info, todo) if todo else {}
    elif pcfg.probs_classes != "all":
        raise ConfigError(f"predict.probs_classes = {pcfg.probs_classes!r}: use all or labelled")

    out_dir.mkdir(parents=True, exist_ok=True)
    if probs_dir is not None:
        probs_dir.mkdir(parents=True, exist_ok=True)
    loader = DataLoader(_Images(paths), batch_size=None, num_workers=pcfg.workers)
    all_labels = np.arange(info.num_labels, dtype=np.int64)
    started = time.monotonic()
    with Progress(len(todo), desc=f"predict {pcfg.split}", enabled=rank == 0,
                  every=max(1, len(todo) // 20), unit="img") as bar:
        for image_id, image in loader:
            probs = predict_probs(net, norm, image, pcfg.flip, device)
            labels = all_labels
            if image_labels is not None:
                labels = np.asarray([0] + present_classes(image_labels[image_id]), dtype=np.int64)
                probs = restrict_probs(probs, labels.tolist())
            prediction = labels[probs.argmax(dim=0).cpu().numpy()].astype(np.uint8)
            if probs_dir is not None:
                save_npz(probs_dir / f"{image_id}.npz", probs=probs.cpu().numpy().astype(np.float16),
                         labels=labels)
            write_label(out_dir / f"{image_id}.png", prediction, info.palette)
            bar.update(1)
    seconds = time.monotonic() - started
    summary = {
        "split": str(pcfg.split), "images": len(mine), "predicted": len(todo),
        "skipped": len(mine) - len(todo), "seconds": round(seconds, 3),
        "images_per_s": round(len(todo) / seconds, 3) if todo and seconds > 0 else None,
        "out": str(out_dir), "probs": str(probs_dir) if probs_dir is not None else None,
        "probs_classes": pcfg.probs_classes, "scales": [float(s) for s in pcfg.scales],
        "flip": bool(pcfg.flip), "checkpoint": str(ctx.path(pcfg.checkpoint)),
        "device": str(device), "rank": rank, "world_size": world_size,
    }
    write_summary(summary_path(out_dir, rank, world_size), summary)
    if rank == 0:
        ctx.record("predict", device=str(device), world_size=world_size)
    return summary
