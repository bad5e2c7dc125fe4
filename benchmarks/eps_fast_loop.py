"""Fast diagnostic loop for a classifier's pseudo-masks (issue 13): train on a few images, score
the pseudo-masks of those same images, and compare with the no-learning saliency rule.

    .venv/bin/python benchmarks/eps_fast_loop.py -c configs/eps/eps_effl0_cocovoc.yaml \
        --set data.root=../shared/data/msrcvoc --images 40 --iterations 150 [--set key=value ...]

What it prints (and writes as JSON with ``--json``):

- during training, every ``train_cls.log_every`` iterations: the losses and, for EPS, the share
  of labelled classes in the foreground set (``fg_share``: overlap > tau);
- after training, on the training images (one pass at ``--eval-long`` px + flip): classification
  mAP, the pseudo-mask mIoU of the method's rule over a range of background thresholds, the
  per-image best-threshold mIoU (if it is low, the maps are the problem; if not, the rule),
  the saliency rule (salient pixel -> the labelled class with the highest map) and, for EPS, the
  mean |S - S_hat| of the estimated saliency.

The training uses the toolkit's own pieces (transform, model, optimiser groups, schedule, loss
step), not a copy, without checkpoints. Keep it to one heavy job per core.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsss.config import Config  # noqa: E402
from wsss.config.loader import load_config  # noqa: E402
from wsss.data.splits import read_split, resolve_split  # noqa: E402
from wsss.data.voc import VOCDataset, build_dataset_info  # noqa: E402
from wsss.engine.distributed import DistContext  # noqa: E402
from wsss.evaluation.confusion import confusion_counts, segmentation_metrics  # noqa: E402
from wsss.methods.cam import aggregate_cam_maps, aggregate_eps_maps  # noqa: E402
from wsss.methods.eps import eps_pseudo_mask, eps_saliency_loss, saliency_background_score  # noqa: E402
from wsss.stages import train_classifier as tcs  # noqa: E402
from wsss.stages.trainer_utils import batch_to_device, sgd_with_lr_groups  # noqa: E402

THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
#: (thr on salient pixels, thr on non-salient pixels) for labels.thr_by_saliency
SALIENCY_THRESHOLDS = tuple((ts, tn) for ts in (0.02, 0.05, 0.1, 0.2) for tn in (0.5, 0.7, 0.9, 1.01))


def subset_split(cfg: Config, count: int, out: Path) -> Path:
    """A list file of the first ``count`` ids of the training split (written to ``out``)."""
    ids = read_split(resolve_split(cfg.data, cfg.data.train_split))[:count]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(ids) + "\n")
    return out


def train(cfg: Config, split: Path, log, select_after: int = 0) -> tuple[torch.nn.Module, float]:
    """Train ``train_cls.method`` for ``train_cls.iterations`` on ``split``; returns (model, seconds).
    ``select_after``: EPS's map selection starts at that iteration; before it every labelled
    class counts as foreground (tau = -1)."""
    tc = cfg.train_cls
    tau = tc.tau
    dist = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    torch.manual_seed(cfg.run.seed)
    info = build_dataset_info(cfg.data)
    dataset = VOCDataset(cfg.data, split, info, load_image=True, load_saliency=tc.method == "eps",
                         transform=tcs.classifier_transform(cfg), seed=cfg.run.seed)
    model = tcs.build_training_model(cfg, tc.method, info.num_classes, dist)
    optimizer = sgd_with_lr_groups(model, tc.lr, tc.weight_decay, tcs.effective_momentum(cfg), tc.nesterov,
                                   tc.backbone_lr_mult, tc.head_lr_mult)
    iters_per_epoch = max(1, len(dataset) // tc.batch_size)
    set_lr = tcs.make_lr_setter(cfg, optimizer, tc.lr, tc.iterations, iters_per_epoch)
    step = tcs._make_step(cfg, info.num_classes, None, iters_per_epoch)
    generator = torch.Generator().manual_seed(cfg.run.seed)
    model.train()
    started, it, epoch = time.monotonic(), 0, 0
    while it < tc.iterations:
        dataset.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(dataset, batch_size=tc.batch_size, shuffle=True, drop_last=True,
                                             num_workers=0, generator=generator)
        for batch in loader:
            if it >= tc.iterations:
                break
            set_lr(it)
            tc.tau = -1.0 if it < select_after else tau
            optimizer.zero_grad(set_to_none=True)
            losses = step(model, it, batch_to_device(batch, dist.device))
            losses["loss"].backward()
            optimizer.step()
            it += 1
            if it % tc.log_every == 0 or it == tc.iterations:
                log(f"it {it:4d} " + " ".join(f"{k} {float(v.detach()):.4f}" for k, v in losses.items()))
        epoch += 1
    tc.tau = tau
    return model, time.monotonic() - started


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean over classes with a positive of the average precision of ``scores`` (N, C)."""
    aps = []
    for c in range(targets.shape[1]):
        if targets[:, c].sum() == 0:
            continue
        order = np.argsort(-scores[:, c], kind="stable")
        hits = targets[order, c]
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        aps.append(float((precision * hits).sum() / hits.sum()))
    return float(np.mean(aps)) if aps else float("nan")


def resize_long(image: np.ndarray, long_side: int) -> np.ndarray:
    import cv2
    h, w = image.shape[:2]
    scale = long_side / max(h, w)
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_CUBIC)


@torch.inference_mode()
def score(cfg: Config, model: torch.nn.Module, split: Path, eval_long: int) -> dict:
    """Pseudo-mask and map diagnostics on the images of ``split`` (see the module docstring)."""
    tc = cfg.train_cls
    info = build_dataset_info(cfg.data)
    num = info.num_classes + 1
    dataset = VOCDataset(cfg.data, split, info, load_image=True, load_mask=True, load_saliency=True)
    mean = torch.tensor(tc.mean).view(1, 3, 1, 1)
    std = torch.tensor(tc.std).view(1, 3, 1, 1)
    model.eval()
    conf = {thr: np.zeros((num, num + 1), np.int64) for thr in THRESHOLDS}
    conf_sal = np.zeros((num, num + 1), np.int64)
    conf_best = np.zeros((num, num + 1), np.int64)
    conf_sal_low = np.zeros((num, num + 1), np.int64)
    conf_by_sal = {pair: np.zeros((num, num + 1), np.int64) for pair in SALIENCY_THRESHOLDS}
    logits_all, labels_all, sal_err, fg_share = [], [], [], []
    composition: dict[str, list] = {"salient": [], "nonsalient": []}
    for item in dataset:
        image, mask, sal = item["image"], item["mask"], item["saliency"].astype(np.float32) / 255.0
        x = torch.from_numpy(resize_long(image, eval_long)).permute(2, 0, 1)[None].float().div(255.0)
        x = (x - mean) / std
        logits, maps = model(torch.cat([x, x.flip(-1)]))
        labels = item["labels"]
        classes0 = [int(c) for c in np.flatnonzero(labels)]
        logits_all.append(logits[0].numpy())
        labels_all.append(labels)
        size = mask.shape
        outputs, flips = [maps[0:1], maps[1:2]], [False, True]
        if tc.method == "eps":
            sal_small = torch.from_numpy(resize_long(sal, eval_long))[None, None]
            _, det = eps_saliency_loss(maps[0:1], sal_small, torch.from_numpy(labels)[None], tc.tau, tc.lam)
            sal_err.append(float((det["estimated_saliency"] - det["saliency"]).abs().mean()))
            # Where the softmax mass sits on salient / non-salient pixels: labelled classes,
            # the background channel, unlabelled classes.
            probs = torch.softmax(maps[0:1], dim=1)[0]
            salient = (det["saliency"][0, 0] > 0.5)
            lab = probs[classes0].sum(0) if classes0 else torch.zeros_like(probs[0])
            bg = probs[-1]
            for name, region in (("salient", salient), ("nonsalient", ~salient)):
                if region.any():
                    composition[name].append([float(lab[region].mean()), float(bg[region].mean()),
                                              float((1 - lab - bg)[region].mean())])
            if classes0:
                fg_share.append(float(det["foreground_set"][0, classes0].float().mean()))
            agg = aggregate_eps_maps(outputs, flips, size, classes0 or None)[0].numpy()
        else:
            agg = aggregate_cam_maps(outputs, flips, size, classes0 or None)[0].numpy()
        if not classes0:
            continue
        classes = [c + 1 for c in classes0]
        best_iou, best = -1.0, None
        for thr in THRESHOLDS:
            pred = eps_pseudo_mask(agg, classes, thr)
            counts = confusion_counts(pred, mask, num)
            conf[thr] += counts
            iou = segmentation_metrics(counts).miou
            if iou > best_iou:
                best_iou, best = iou, counts
        conf_best += best
        sal_u8 = item["saliency"]
        for pair in SALIENCY_THRESHOLDS:
            pred = eps_pseudo_mask(agg, classes, saliency_background_score(sal_u8, *pair))
            conf_by_sal[pair] += confusion_counts(pred, mask, num)
        lookup = np.asarray(classes, np.uint8)
        pred_sal = np.where(sal >= 0.5, lookup[np.argmax(agg, axis=0)], 0).astype(np.uint8)
        conf_sal += confusion_counts(pred_sal, mask, num)
        # The same rule on a saliency map brought to the maps' resolution and back: what the
        # feature stride alone costs a map that matched the saliency map perfectly.
        h, w = maps.shape[-2:]
        sal_low = F.interpolate(F.interpolate(torch.from_numpy(sal)[None, None], size=(h, w), mode="area"),
                                size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
        pred_low = np.where(sal_low >= 0.5, lookup[np.argmax(agg, axis=0)], 0).astype(np.uint8)
        conf_sal_low += confusion_counts(pred_low, mask, num)
    result = {
        "images": len(dataset),
        "cls_map": average_precision(np.stack(logits_all), np.stack(labels_all)),
        "miou_by_thr": {str(t): round(100 * segmentation_metrics(c).miou, 2) for t, c in conf.items()},
        "miou_thr_by_saliency": {f"{a},{b}": round(100 * segmentation_metrics(c).miou, 2)
                                 for (a, b), c in conf_by_sal.items()},
        "miou_best_thr_per_image": round(100 * segmentation_metrics(conf_best).miou, 2),
        "miou_saliency_rule_with_maps": round(100 * segmentation_metrics(conf_sal).miou, 2),
        "miou_saliency_rule_at_map_resolution": round(100 * segmentation_metrics(conf_sal_low).miou, 2),
    }
    if sal_err:
        result["mean_abs_saliency_error"] = round(float(np.mean(sal_err)), 4)
        result["fg_share"] = round(float(np.mean(fg_share)), 3)
        result["softmax_mass_labelled_bg_unlabelled"] = {
            k: [round(float(v), 3) for v in np.mean(rows, axis=0)] for k, rows in composition.items() if rows}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--images", type=int, default=40, help="train on the first N training ids")
    parser.add_argument("--score-images", type=int, default=None,
                        help="score the first M of them (default: all N)")
    parser.add_argument("--iterations", type=int, default=None, help="overrides train_cls.iterations")
    parser.add_argument("--eval-long", type=int, default=320, help="long side of the scoring pass")
    parser.add_argument("--work", default="/tmp/eps_fast_loop", help="scratch folder for the split list")
    parser.add_argument("--json", default=None, help="also write the result here")
    parser.add_argument("--select-after", type=int, default=0,
                        help="EPS: every labelled class is foreground before this iteration (experiment)")
    parser.add_argument("--save", default=None, help="also save the trained weights (state dict) here")
    parser.add_argument("--load", default=None, help="score these weights instead of training")
    args = parser.parse_args()
    overrides = list(args.set)
    if args.iterations is not None:
        overrides.append(f"train_cls.iterations={args.iterations}")
    cfg = load_config(Config, [args.config], overrides)
    split = subset_split(cfg, args.images, Path(args.work) / f"first{args.images}.txt")
    if args.load:
        cfg.train_cls.iterations = 0
    model, seconds = train(cfg, split, lambda line: print(line, flush=True), args.select_after)
    if args.load:
        model.load_state_dict(torch.load(args.load, weights_only=True))
    if args.save:
        torch.save(model.state_dict(), args.save)
    scored = split
    if args.score_images is not None and args.score_images < args.images:
        scored = subset_split(cfg, args.score_images, Path(args.work) / f"first{args.score_images}.txt")
    result = {"config": args.config, "overrides": overrides, "train_images": args.images,
              "train_seconds": round(seconds, 1), **score(cfg, model, scored, args.eval_long)}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
