"""`wsss cams`: per-image class maps of a trained classifier (METHODS.md A.4, B.2 "Inference").

Input: ``<run>/<cams.checkpoint>`` (a ``final.pt`` of :func:`~wsss.stages.trained.save_trained`;
its meta gives the method ``cam | eps | nsrom``, the architecture and the input normalisation), the
images of ``cams.split`` and their image-level labels (never saliency or masks).

Output, one compressed npz per image, written atomically:

- ``<run>/<cams.out>/<id>.npz``: ``classes`` (K,) int64, the image's labelled classes (1-based,
  ascending); ``cams`` (K, H, W) float16 in [0, 1] at full image size, ``cams[k]`` the map of
  ``classes[k]``. An image without labelled class gets K = 0 (so it counts as done).
- EPS only, in the same file: ``bg`` (H, W) float16 in [0, 1], the background map aggregated
  exactly like the class maps: softmax probability of the background channel, bilinear upsample,
  un-flip, summed over the passes, divided by (its own spatial max + 1e-5).
- NSROM: ``<cams.out>`` holds the plain CAMs of the classifier and ``<run>/<cams.oa_out>/<id>.npz``
  the OA-CAMs (maps of the integral attention model ``<run>/<cams.iam_checkpoint>``), same keys,
  no ``bg``; each map min-max normalised to [0, 1].

Passes. EPS / CAM (A.4): every scale of ``cams.scales`` (image resized with PIL bicubic to
``round(H·s) × round(W·s)``, as the PSA/EPS loaders), each also horizontally flipped when
``cams.flip``; the plain and flipped copies of one scale run as one batch of 2
(``cams.batch_passes``; scales of different sizes cannot share a batch without padding, which
would change the maps). EPS: softmax over the C+1 maps, keep labelled classes, upsample, un-flip,
sum, divide by max + 1e-5. CAM baseline: ReLU instead of the softmax, otherwise the same.
NSROM (official): one pass on the image squashed to ``cams.nsrom_size`` squared (PIL bilinear, as
torchvision's Resize of the official loader); per labelled class ReLU, divide by the max, bicubic
resize to the image size, min-max normalise. ``cams.nsrom_multiscale``: passes on squares of side
``round(nsrom_size·s)`` for each scale (+ flips), each pass mapped as above, un-flipped, summed and
min-max normalised again (the classifier was trained on squares of that side, so the square is
scaled rather than the original image).

Images are decoded and resized in DataLoader workers (``cams.workers``); normalisation, the network
and the aggregation run on the device; npz files are compressed and written by a thread pool.
Ids are sharded by RANK / WORLD_SIZE (see :mod:`wsss.stages.offline`); finished images are skipped
unless ``cams.overwrite``.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from wsss.data.voc import VOCDataset, build_dataset_info
from wsss.engine.distributed import resolve_device
from wsss.engine.logger import RunLogger
from wsss.engine.sharding import pending_ids, shard_ids
from wsss.errors import ConfigError
from wsss.io import save_npz
from wsss.methods.cam import (
    aggregate_cam_maps,
    aggregate_eps_maps,
    minmax_normalize_maps,
    nsrom_inference_maps,
    scaled_size,
)
from wsss.models.backbones.base import InputNorm
from wsss.stages.context import StageContext
from wsss.stages.offline import env_shard
from wsss.stages.trained import load_trained_classifier

METHODS = ("cam", "eps", "nsrom")
#: npz files waiting to be compressed and written before the loop waits for the oldest.
MAX_PENDING_WRITES = 8


@dataclass(frozen=True)
class PassPlan:
    """How one image becomes network inputs: one resized copy per scale, plus its flip if ``flip``.

    ``square`` = 0: copy s is the image resized to ``round(H·s) × round(W·s)`` (PIL bicubic).
    ``square`` > 0: copy s is the image squashed to ``round(square·s)`` squared (PIL bilinear).
    """

    scales: tuple[float, ...]
    flip: bool
    square: int = 0

    def sizes(self, size: tuple[int, int]) -> list[tuple[int, int]]:
        """(h, w) of the resized copies of an image of ``size`` = (H, W)."""
        if self.square:
            return [(max(1, round(self.square * s)),) * 2 for s in self.scales]
        return [scaled_size(size, s) for s in self.scales]

    @property
    def resample(self) -> int:
        return Image.Resampling.BILINEAR if self.square else Image.Resampling.BICUBIC

    @property
    def num_passes(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)


def pass_plan_for(method: str, cams_cfg) -> PassPlan:
    """The passes of ``method`` under the ``cams`` config section."""
    if not cams_cfg.scales:
        raise ConfigError("cams.scales is empty: give at least one scale, e.g. [1.0]")
    if any(float(s) <= 0 for s in cams_cfg.scales):
        raise ConfigError(f"cams.scales must be positive, got {list(cams_cfg.scales)}")
    if method == "nsrom":
        if cams_cfg.nsrom_size < 1:
            raise ConfigError(f"cams.nsrom_size must be a positive side length, got {cams_cfg.nsrom_size}")
        if not cams_cfg.nsrom_multiscale:
            return PassPlan((1.0,), False, cams_cfg.nsrom_size)
        return PassPlan(tuple(float(s) for s in cams_cfg.scales), bool(cams_cfg.flip), cams_cfg.nsrom_size)
    return PassPlan(tuple(float(s) for s in cams_cfg.scales), bool(cams_cfg.flip))


class CamInputs(Dataset):
    """Items of ``base`` (a VOCDataset loading images only) at ``indices``, as network inputs.

    Item: ``id``; ``size`` (H, W); ``classes`` (K,) int64 0-based labelled classes (ascending);
    ``inputs`` list (one per scale) of (3, h, w) uint8 tensors.
    """

    def __init__(self, base: VOCDataset, indices: Sequence[int], plan: PassPlan):
        self.base, self.indices, self.plan = base, list(indices), plan

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self.base[self.indices[i]]
        image = sample["image"]
        size = image.shape[:2]
        pil = None
        inputs = []
        for h, w in self.plan.sizes(size):
            if (h, w) == size:
                resized = image
            else:
                if pil is None:
                    pil = Image.fromarray(image)
                resized = np.array(pil.resize((w, h), resample=self.plan.resample))
            inputs.append(torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1))
        classes = np.flatnonzero(np.asarray(sample["labels"]) > 0.5).astype(np.int64)
        return {"id": sample["id"], "size": (int(size[0]), int(size[1])), "classes": classes,
                "inputs": inputs}


def _first(batch: list) -> Any:
    return batch[0]


def input_normalizer(model: nn.Module, meta: dict[str, Any]) -> InputNorm:
    """The normalisation the classifier was trained with.

    With ``mean`` / ``std`` in the meta (every classifier trained by wsss): exactly the training
    transform (:class:`wsss.data.transforms.Normalize`), ``(x − mean) / std`` on RGB ``x`` in
    [0, 1], whatever the backbone's own pretrained convention (e.g. EfficientNet-Lite's 0..255
    scale, Caffe's BGR). Without them: the backbone's ``input_norm``.
    """
    if meta.get("mean") and meta.get("std"):
        return InputNorm(mean=tuple(float(v) for v in meta["mean"]),
                         std=tuple(float(v) for v in meta["std"]), bgr=False, max_value=1.0)
    backbone = getattr(model, "backbone", None)
    return getattr(backbone, "input_norm", None) or InputNorm()


@torch.inference_mode()
def forward_passes(model: nn.Module, inputs: Sequence[torch.Tensor], plan: PassPlan, norm: InputNorm,
                   device: torch.device, batch_passes: bool = True
                   ) -> tuple[list[torch.Tensor], list[bool]]:
    """Run every pass of one image. ``inputs``: per scale (3, h, w) uint8.

    Returns the raw maps of each pass, (1, C', h', w'), and whether its input was flipped, in the
    order of :func:`wsss.methods.cam.pass_plan` (per scale: plain, then flipped).
    """
    outputs: list[torch.Tensor] = []
    flips: list[bool] = []
    for image in inputs:
        x = norm(image.to(device, non_blocking=True).unsqueeze(0).float().div_(255.0))
        if not plan.flip:
            outputs.append(model(x)[1])
            flips.append(False)
            continue
        if batch_passes:
            maps = model(torch.cat([x, x.flip(-1)]))[1]
            outputs += [maps[0:1], maps[1:2]]
        else:
            outputs += [model(x)[1], model(x.flip(-1))[1]]
        flips += [False, True]
    return outputs, flips


def nsrom_pass_maps(outputs: Sequence[torch.Tensor], flips: Sequence[bool], size: tuple[int, int],
                    classes: Sequence[int]) -> torch.Tensor:
    """NSROM maps (1, K, H, W) in [0, 1]: one pass as :func:`nsrom_inference_maps`; several passes
    mapped each, un-flipped, summed and min-max normalised again."""
    total = None
    for output, flipped in zip(outputs, flips):
        maps = nsrom_inference_maps(output, size, classes)
        maps = maps.flip(-1) if flipped else maps
        total = maps if total is None else total + maps
    return total if len(outputs) == 1 else minmax_normalize_maps(total)


def _to_f16(maps: torch.Tensor) -> np.ndarray:
    return maps.clamp(0.0, 1.0).half().cpu().numpy()


def image_maps(method: str, model: nn.Module, item: dict[str, Any], plan: PassPlan, norm: InputNorm,
               device: torch.device, batch_passes: bool = True, iam: nn.Module | None = None,
               iam_norm: InputNorm | None = None) -> dict[str, dict[str, np.ndarray]]:
    """The npz contents of one item of :class:`CamInputs`: ``{"cams": {...}}`` and, for NSROM,
    ``{"oa_cams": {...}}``; each a dict of arrays ``classes``, ``cams`` (and ``bg`` for EPS)."""
    size, classes0 = item["size"], [int(c) for c in item["classes"]]
    classes = np.asarray(classes0, dtype=np.int64) + 1
    empty = {"classes": classes, "cams": np.zeros((0,) + tuple(size), dtype=np.float16)}
    if method == "eps":
        outputs, flips = forward_passes(model, item["inputs"], plan, norm, device, batch_passes)
        maps = aggregate_eps_maps(outputs, flips, size, classes0, with_background=True)[0]
        return {"cams": {"classes": classes, "cams": _to_f16(maps[:-1]), "bg": _to_f16(maps[-1])}}
    if not classes0:
        return {"cams": empty, "oa_cams": empty} if method == "nsrom" else {"cams": empty}
    outputs, flips = forward_passes(model, item["inputs"], plan, norm, device, batch_passes)
    if method == "cam":
        return {"cams": {"classes": classes, "cams": _to_f16(aggregate_cam_maps(outputs, flips, size, classes0)[0])}}
    plain = nsrom_pass_maps(outputs, flips, size, classes0)[0]
    outputs, flips = forward_passes(iam, item["inputs"], plan, iam_norm, device, batch_passes)
    oa = nsrom_pass_maps(outputs, flips, size, classes0)[0]
    return {"cams": {"classes": classes, "cams": _to_f16(plain)},
            "oa_cams": {"classes": classes, "cams": _to_f16(oa)}}


def _check_classifier(meta: dict[str, Any], path: Path, num_classes: int, heads: Sequence[str]) -> None:
    if meta.get("head") not in heads:
        raise ConfigError(f"{path}: a classifier with head {meta.get('head')!r}; expected {' or '.join(heads)}")
    if int(meta.get("num_classes", -1)) != num_classes:
        raise ConfigError(f"{path} predicts {meta.get('num_classes')} classes but the dataset has "
                          f"{num_classes}: check data.dataset / data.class_names")


def infer_cams(ctx: StageContext) -> dict[str, Any]:
    """Write the class maps of every pending image of ``cams.split`` in this process's shard.

    Returns a summary: method, split, output folders, ids of the shard, done before, processed,
    passes per image, seconds, images/s (processed images over the wall time of the loop, image
    decoding and writing included), device, rank and world size.
    """
    cfg, cc = ctx.cfg, ctx.cfg.cams
    rank, world_size, local_rank = env_shard()
    device = resolve_device(cfg.run.device, local_rank, world_size)
    info = build_dataset_info(cfg.data)
    checkpoint = ctx.path(cc.checkpoint)
    model, meta = load_trained_classifier(checkpoint, device)
    method = meta.get("method", meta.get("head"))
    if method not in METHODS:
        raise ConfigError(f"{checkpoint}: classifier method {method!r} has no CAM inference; "
                          f"expected one of {', '.join(METHODS)}")
    _check_classifier(meta, checkpoint, info.num_classes, (method,))
    norm = input_normalizer(model, meta)
    iam = iam_norm = None
    out_dirs = {"cams": ctx.output_path(cc.out, "cams.out")}
    if method == "nsrom":
        iam_path = ctx.path(cc.iam_checkpoint)
        iam, iam_meta = load_trained_classifier(iam_path, device)
        _check_classifier(iam_meta, iam_path, info.num_classes, ("iam",))
        iam_norm = input_normalizer(iam, iam_meta)
        out_dirs["oa_cams"] = ctx.output_path(cc.oa_out, "cams.oa_out")
        if out_dirs["oa_cams"].resolve() == out_dirs["cams"].resolve():
            raise ConfigError("cams.out and cams.oa_out name the same folder: give them different names")
    plan = pass_plan_for(method, cc)

    dataset = VOCDataset(cfg.data, cc.split, info, load_image=True)
    shard = shard_ids(dataset.ids, rank, world_size)
    pending: set[str] = set()
    for folder in out_dirs.values():
        folder.mkdir(parents=True, exist_ok=True)
        pending.update(pending_ids(shard, folder, ".npz", cc.overwrite))
    todo = [i for i in shard if i in pending]
    position = {image_id: k for k, image_id in enumerate(dataset.ids)}
    loader = DataLoader(CamInputs(dataset, [position[i] for i in todo], plan), batch_size=1,
                        shuffle=False, num_workers=max(0, cc.workers), collate_fn=_first,
                        pin_memory=device.type == "cuda")

    if rank == 0:
        ctx.record("cams", str(device), world_size)
    logger = RunLogger(ctx.run_dir, name="cams", is_main=rank == 0, tensorboard=False)
    logger.info(f"cams: {method} classifier {checkpoint} on {device}; {len(todo)} of {len(shard)} images "
                f"of {cc.split} to do (rank {rank}/{world_size}), {plan.num_passes} passes each")
    start = time.perf_counter()
    writes: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=2) as writer, \
            logger.progress(len(todo), desc="cams", every=max(1, len(todo) // 20), unit="img") as bar:
        for item in loader:
            contents = image_maps(method, model, item, plan, norm, device, cc.batch_passes, iam, iam_norm)
            for key, arrays in contents.items():
                writes.append(writer.submit(save_npz, out_dirs[key] / f"{item['id']}.npz", **arrays))
            while len(writes) > MAX_PENDING_WRITES:
                writes.popleft().result()
            bar.update(1)
        for future in writes:
            future.result()
    seconds = time.perf_counter() - start
    speed = len(todo) / seconds if todo and seconds > 0 else 0.0
    summary = {
        "method": method, "split": cc.split,
        "out": {key: str(path) for key, path in out_dirs.items()},
        "images": len(shard), "done_before": len(shard) - len(todo), "processed": len(todo),
        "passes_per_image": plan.num_passes, "seconds": round(seconds, 3),
        "images_per_s": round(speed, 3), "device": str(device), "rank": rank, "world_size": world_size,
    }
    logger.info(f"cams: {len(todo)} images in {seconds:.1f} s ({speed:.2f} images/s), "
                f"{summary['done_before']} already done; maps in {', '.join(summary['out'].values())}")
    logger.close()
    return summary
