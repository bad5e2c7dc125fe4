"""`wsss eval`: evaluate predicted label maps against ground truth (mIoU, P/R, boundary F1, ...)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wsss.commands.common import add_config_arguments, config_from_args
from wsss.config.schema import Config
from wsss.data.classes import DatasetInfo, dataset_info
from wsss.errors import WsssError
from wsss.stages.evaluate import context_class_file, data_relative

NAME = "eval"
HELP = "evaluate predicted label maps against ground truth (mIoU, P/R, boundary F1, ...)"
DESCRIPTION = HELP + """.

Input: --pred DIR of label PNGs (0..C, 255 = ignore) and --gt DIR of ground-truth PNGs.
Images: the ids of --split, else every .png in --gt (a missing prediction is an error).
With --config and no --gt: <data.root>/<data.mask_dir> and the split eval.split (default val);
the eval section's context_dir, context_classes and boundary_gt_dir may be relative to data.root.
Output: a table on the terminal and (--out) a JSON file with every number and the protocol.

Both conventions for a predicted 255 are reported: counted as a miss of the ground-truth class
(IoU, Rec) and dropped as the EPS evaluator does (IoU-EPS, Rec-EPS), plus coverage.
mIoU is the mean over classes with a non-zero union; the mean over classes present in the ground
truth is reported next to it. Boundaries: Laplacian of the label maps, class-agnostic, matched
within --tolerance pixels (default 2). Co-occurrence: m_{k,c} = FP_{k,c} / TP_c with context
masks (--context, --context-classes) for --pairs target:context or the --top-pairs N largest."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, metavar="DIR", help="predicted label maps <id>.png")
    parser.add_argument("--gt", metavar="DIR", help="ground-truth label maps <id>.png")
    parser.add_argument("--split", metavar="FILE",
                        help="id list (one id per line); with --config also a split name under data.split_dir")
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--dataset", choices=("voc", "coco"), help="built-in label set (default: the config's, voc)")
    labels.add_argument("--classes", metavar="FILE", help="class names, background first (json/yaml list or one per line)")
    add_config_arguments(parser)
    parser.add_argument("--pred-ext", default=".png", help="prediction file suffix (default .png)")
    parser.add_argument("--gt-ext", default=".png", help="ground-truth file suffix (default .png)")
    parser.add_argument("--no-boundary", action="store_true", help="skip boundary precision/recall/F1")
    parser.add_argument("--boundary-gt", metavar="DIR",
                        help="ground-truth boundaries: <id>.mat (SBD cls, GTcls.Boundaries) or <id>.png (non-zero)")
    parser.add_argument("--tolerance", type=float, metavar="PX", help="boundary match distance in pixels (default 2)")
    parser.add_argument("--context", metavar="DIR", help="context masks <id>.png for the co-occurrence ratio")
    parser.add_argument("--context-classes", metavar="FILE",
                        help="context class names: context.json {index: name} or a list "
                             "(default: context.json beside or inside --context)")
    parser.add_argument("--pairs", action="append", default=[], metavar="C:K,...",
                        help="co-occurrence pairs target:context by name, e.g. boat:water,train:railroad")
    parser.add_argument("--context-ignore", metavar="K,...",
                        help="context classes left out of --top-pairs (default: those named void/unlabeled), "
                             "e.g. void,face,body")
    parser.add_argument("--top-pairs", type=int, metavar="N",
                        help="also report the N pairs with the most false positives (context classes named "
                             "like a class of the label set, i.e. objects, are skipped)")
    parser.add_argument("--crop", action="store_true", default=None,
                        help="cut a prediction of another size to the ground truth's size at the top-left corner "
                             "(missing pixels = 0) as the EPS evaluator does, instead of an error")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="worker processes (default: eval.workers = 2; 0 = one per CPU)")
    parser.add_argument("--out", metavar="JSON", help="write every number and the protocol to this JSON file")
    parser.add_argument("--protocol", action="append", default=[], metavar="KEY=VALUE",
                        help="free-form protocol field recorded in the JSON, e.g. post_processing=crf, "
                             "scales=1.0,0.5, initialisation=imagenet, saliency_source=isnet (repeatable)")


def _label_set(args: argparse.Namespace, cfg: Config) -> DatasetInfo:
    if args.classes:
        return dataset_info(Path(args.classes).stem, classes_file=args.classes)
    if args.dataset:
        return dataset_info(args.dataset)
    return dataset_info(cfg.data.dataset, cfg.data.class_names or None, cfg.data.classes_file or None)


def _split_path(name: str, cfg: Config) -> Path:
    from wsss.data.splits import resolve_split

    path = Path(name)
    if path.is_file() or not cfg.data.root:
        return path
    return resolve_split(cfg.data, name)


def _protocol(items: list[str], base: dict) -> dict:
    out = dict(base)
    for item in items:
        if "=" not in item:
            raise WsssError(f"--protocol {item!r} must look like key=value, e.g. post_processing=crf")
        key, value = item.split("=", 1)
        if not key.strip():
            raise WsssError(f"--protocol {item!r} has an empty key")
        out[key.strip()] = value
    return out


def run(args: argparse.Namespace) -> int:
    from wsss.evaluation import evaluate

    cfg = config_from_args(args)
    ev = cfg.eval
    info = _label_set(args, cfg)
    split = _split_path(args.split, cfg) if args.split else None
    gt = args.gt
    if gt is None:
        if not cfg.data.root:
            raise WsssError("give --gt DIR (or --config with data.root set)")
        gt = str(Path(cfg.data.root) / cfg.data.mask_dir)
        if split is None:
            split = _split_path(ev.split, cfg)
    context = args.context or data_relative(cfg, ev.context_dir)
    context_classes = (context_class_file(args.context_classes or data_relative(cfg, ev.context_classes), context)
                       if context else None)
    result = evaluate(
        args.pred, gt, info=info, split=split, pred_ext=args.pred_ext, gt_ext=args.gt_ext,
        boundary=ev.boundary and not args.no_boundary,
        tolerance=ev.boundary_tolerance if args.tolerance is None else args.tolerance,
        boundary_gt_dir=args.boundary_gt or data_relative(cfg, ev.boundary_gt_dir),
        context_dir=context, context_names=context_classes,
        pairs=list(args.pairs) or list(ev.pairs),
        top_pairs=ev.top_pairs if args.top_pairs is None else args.top_pairs,
        ignored_context=[n.strip() for n in args.context_ignore.split(",") if n.strip()] if args.context_ignore else None,
        crop=ev.crop if args.crop is None else args.crop,
        workers=ev.workers if args.workers is None else args.workers,
        protocol=_protocol(args.protocol, ev.protocol),
        progress=sys.stderr.isatty(),
    )
    print(result.table())
    if args.out:
        result.write_json(args.out)
        print(f"wrote {args.out}")
    return 0
