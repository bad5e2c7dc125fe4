"""`wsss data`: make and check datasets (synthetic scenes, COCO conversion, a loading check)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from wsss.commands.common import add_config_arguments
from wsss.config import Config, load_config
from wsss.errors import DataError, WsssError

NAME = "data"
HELP = "make datasets (synthetic scenes, COCO -> VOC conversion) and check that one loads"
DESCRIPTION = HELP + """.

  wsss data synth --out DIR          procedural scenes with masks, imperfect saliency and
                                     context masks; writes DIR/dataset.yaml to use as --config
  wsss data coco-to-voc --ann JSON --images DIR --out DIR
                                     COCO instance annotations -> VOC layout (masks, labels, split)
  wsss data check --config FILE      loads every image, mask and saliency map of a split and
                                     prints per-class counts, skipped ids and problems

Run `wsss data <command> --help` for the inputs and outputs of each."""

SATURATION = 128   # saliency >= this counts as salient in the check's coverage figures


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND", title="data commands")
    parser.set_defaults(_data_parser=parser)

    p = sub.add_parser("synth", help="generate the synthetic scenes (the demo's dataset)",
                       description="Generate procedural scenes in the VOC layout.\n\n"
                                   "Input: sizes and a seed (the same seed gives byte-identical files).\n"
                                   "Output: DIR/{JPEGImages,SegmentationClass,SegmentationObject,SegmentationContext,"
                                   "Saliency}/, split lists, cls_labels.json, classes.yaml, context.json, "
                                   "synth_meta.json and dataset.yaml (a config for --config).",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="DIR", help="output dataset folder")
    p.add_argument("--num-train", type=int, default=200, metavar="N", help="training images (default 200)")
    p.add_argument("--num-val", type=int, default=50, metavar="N", help="validation images (default 50)")
    p.add_argument("--size", default="160", metavar="S",
                   help="image side in px, or a range MIN-MAX for each side (default 160)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    p = sub.add_parser("coco-to-voc", help="convert COCO instance annotations to the VOC layout",
                       description="Convert a COCO instance JSON (2014 or 2017) to a VOC-layout dataset.\n\n"
                                   "Input: the annotation JSON and the folder of its images.\n"
                                   "Output: DIR/JPEGImages/, DIR/SegmentationClass/ (palette PNGs; crowds and "
                                   "unmapped categories = 255), cls_labels.json (merged), "
                                   "ImageSets/Segmentation/<split>.txt and classes.yaml.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ann", required=True, metavar="JSON", help="COCO instances_*.json")
    p.add_argument("--images", required=True, metavar="DIR", help="folder holding the JSON's file_name entries")
    p.add_argument("--out", required=True, metavar="DIR", help="output dataset folder")
    p.add_argument("--mapping", default="all", metavar="all|voc|FILE",
                   help="all = 80 COCO classes, voc = COCO -> VOC 20, or a YAML/JSON "
                        "{coco name: target name} file (default all)")
    p.add_argument("--split", default="train", metavar="NAME", help="split list name to write (default train)")
    p.add_argument("--symlink", action="store_true", help="symlink the images instead of copying them")
    p.add_argument("--keep-empty", action="store_true", help="keep images without a pixel of a target class")
    p.add_argument("--skip-missing", action="store_true", help="skip (and count) images whose file is missing")
    p.add_argument("--overwrite", action="store_true", help="re-rasterise masks that already exist")

    p = sub.add_parser("check", help="load a dataset split with masks and saliency and report problems",
                       description="Load every image, mask and saliency map of a split through the dataset "
                                   "class.\n\n"
                                   "Input: a config (--config) or a dataset folder (--root; its dataset.yaml or "
                                   "classes.yaml is used when present).\n"
                                   "Output: per-class image and pixel counts, saliency coverage, skipped ids and "
                                   "problems on the terminal (exit code 1 when there are problems).",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p)
    p.add_argument("--root", metavar="DIR", help="dataset folder (sets data.root)")
    p.add_argument("--dataset", metavar="NAME", help="built-in label set: voc | coco (sets data.dataset)")
    p.add_argument("--classes-file", metavar="FILE", help="class names, background first (sets data.classes_file)")
    p.add_argument("--image-ext", metavar="EXT", help="image suffix, e.g. .jpg (sets data.image_ext)")
    p.add_argument("--mask-dir", metavar="DIR", help="mask folder under the root (sets data.mask_dir)")
    p.add_argument("--saliency-dir", metavar="DIR", help="saliency folder under the root (sets data.saliency_dir)")
    p.add_argument("--split", action="append", default=[], metavar="NAME",
                   help="split name or list file (repeatable; default: data.train_split and data.val_split)")
    p.add_argument("--no-saliency", action="store_true", help="do not load saliency maps")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")


def run(args: argparse.Namespace) -> int:
    command = getattr(args, "data_command", None)
    if command == "synth":
        return _run_synth(args)
    if command == "coco-to-voc":
        return _run_coco(args)
    if command == "check":
        return _run_check(args)
    args._data_parser.print_help()
    return 0


# --------------------------------------------------------------------------------------------- synth

def _run_synth(args: argparse.Namespace) -> int:
    from wsss.data.synth import generate_synthetic_dataset

    summary = generate_synthetic_dataset(args.out, num_train=args.num_train, num_val=args.num_val,
                                         size=args.size, seed=args.seed)
    counts = ", ".join(f"{c} {n}" for c, n in summary["images_per_class"].items())
    print(f"wrote {summary['images']['train']} train + {summary['images']['val']} val images to "
          f"{summary['out_root']} in {summary['seconds']:.1f} s")
    print(f"  images per class: {counts}")
    print(f"  multi-class images: {summary['multi_class_images']}, non-salient objects: "
          f"{summary['nonsalient_objects']}, context strips: "
          + ", ".join(f"{k} {v}" for k, v in summary["context_strips"].items()))
    print(f"use it with: --config {summary['dataset_yaml']}")
    return 0


# --------------------------------------------------------------------------------------------- coco

def _run_coco(args: argparse.Namespace) -> int:
    from wsss.data.coco import coco_to_voc

    s = coco_to_voc(args.ann, args.images, args.out, mapping=args.mapping, split_name=args.split,
                    link="symlink" if args.symlink else "copy", skip_empty=not args.keep_empty,
                    missing="skip" if args.skip_missing else "error", overwrite=args.overwrite, progress=True)
    print(f"{s['written']} of {s['images_in_json']} images written to {s['out_root']} "
          f"(split {s['split']}: {s['split_file']}); {s['reused']} masks kept from an earlier run")
    print(f"  skipped: {s['skipped_empty']} without a target class, {len(s['skipped_missing'])} with a missing file")
    print(f"  annotations drawn as 255: {s['crowd_annotations']} crowd, {s['unmapped_annotations']} unmapped category")
    if s["unused_mapping_names"]:
        print(f"  mapping names not among the JSON's categories: {', '.join(s['unused_mapping_names'])}")
    present = {c: n for c, n in s["images_per_class"].items() if n}
    print(f"  images per class ({len(present)} of {len(s['class_names']) - 1} classes present): "
          + ", ".join(f"{c} {n}" for c, n in present.items()))
    ext = s["image_ext"] if isinstance(s["image_ext"], str) else s["image_ext"][0]
    print("config:\n  data:\n"
          f"    root: {Path(s['out_root']).resolve()}\n"
          f"    classes_file: {Path(s['classes_file']).resolve()}\n"
          f"    image_ext: {ext}\n"
          f"    image_labels: json")
    return 0


# --------------------------------------------------------------------------------------------- check

def _quoted(value: str) -> str:
    return json.dumps(str(value))   # JSON strings are YAML strings: the override keeps the text as is


def config_for_check(args: argparse.Namespace) -> Config:
    """The config of ``wsss data check``: --config files, then --root (its dataset.yaml when no
    --config is given), then the flags and --set overrides."""
    paths = list(args.config)
    overrides: list[str] = []
    if args.root:
        root = Path(args.root)
        if not paths and (root / "dataset.yaml").is_file():
            paths.append(str(root / "dataset.yaml"))
        overrides.append(f"data.root={_quoted(root)}")
        if (not paths and not args.dataset and not args.classes_file and (root / "classes.yaml").is_file()):
            overrides.append(f"data.classes_file={_quoted(root / 'classes.yaml')}")
    flags = {"dataset": args.dataset, "classes_file": args.classes_file, "image_ext": args.image_ext,
             "mask_dir": args.mask_dir, "saliency_dir": args.saliency_dir}
    overrides += [f"data.{key}={_quoted(value)}" for key, value in flags.items() if value]
    return load_config(Config, paths, overrides + list(args.overrides))


def saliency_file_mode(path) -> str:
    """The Pillow mode of a saliency file (``L`` = 8-bit, ``I;16`` = 16-bit, ...), header only."""
    from PIL import Image

    with Image.open(path) as img:
        return img.mode


def check_dataset(data_cfg, splits: list[str], saliency: bool = True, progress: bool = False) -> dict:
    """Load every item of ``splits`` through :class:`VOCDataset` (images, masks, saliency maps).

    Returns ``{"classes": [...], "splits": {name: report}}``; a report holds the ids kept and
    skipped, images and pixels per class, the saliency coverage of object and background pixels,
    and ``problems``: one line per id that failed to load or whose image-level labels disagree
    with its mask. Missing files are counted (``skipped``) rather than raised; they are problems
    unless ``data.missing = "skip"``.
    """
    from wsss.data.image_labels import present_classes
    from wsss.data.splits import dataset_root
    from wsss.data.voc import VOCDataset, build_dataset_info

    root = dataset_root(data_cfg)
    info = build_dataset_info(data_cfg)
    has_masks = (root / data_cfg.mask_dir).is_dir()
    has_saliency = saliency and (root / data_cfg.saliency_dir).is_dir()
    lenient = dataclasses.replace(data_cfg, missing="skip")
    report = {"root": str(root), "classes": list(info.class_names), "masks": has_masks,
              "saliency": has_saliency, "splits": {}}
    for split in splits:
        ds = VOCDataset(lenient, split, info, load_image=True, load_mask=has_masks, load_saliency=has_saliency)
        problems = [reason for _, reason in ds.skipped] if data_cfg.missing == "error" else []
        class_images: Counter = Counter()
        class_pixels = np.zeros(256, dtype=np.int64)
        sal_object, sal_background = [0, 0], [0, 0]   # [salient pixels, pixels]
        sal_range = [255, 0]                             # min, max of the maps as read (0..255)
        sal_formats: Counter = Counter()                 # file modes (bit depths) of the maps
        for index in tqdm(range(len(ds)), desc=f"check {ds.split_name}", unit="img", disable=not progress):
            image_id = ds.ids[index]
            try:
                item = ds[index]
            except WsssError as exc:
                problems.append(f"{image_id}: {exc}")
                continue
            labels = present_classes(item["labels"])
            class_images.update(labels)
            if "saliency" in item:
                sal = item["saliency"]
                sal_range = [min(sal_range[0], int(sal.min())), max(sal_range[1], int(sal.max()))]
                sal_formats[saliency_file_mode(ds.saliency_path(image_id))] += 1
            if "mask" in item:
                mask = item["mask"]
                counts = np.bincount(mask.ravel(), minlength=256)
                class_pixels += counts
                in_mask = [c for c in range(1, info.num_labels) if counts[c]]
                if in_mask != labels:
                    problems.append(f"{image_id}: image-level labels {labels} but the mask has classes {in_mask}")
                if "saliency" in item:
                    salient = item["saliency"] >= SATURATION
                    obj, bg = (mask > 0) & (mask < 255), mask == 0
                    sal_object[0] += int(salient[obj].sum())
                    sal_object[1] += int(obj.sum())
                    sal_background[0] += int(salient[bg].sum())
                    sal_background[1] += int(bg.sum())
        total_pixels = max(1, int(class_pixels.sum()))
        report["splits"][ds.split_name] = {
            "list": str(ds.split_path),
            "listed": ds.num_listed,
            "kept": len(ds.ids),
            "skipped": [{"id": i, "reason": r} for i, r in ds.skipped],
            "images_per_class": {info.class_names[c]: int(class_images[c]) for c in range(1, info.num_labels)},
            "pixel_share": ({info.class_names[c]: float(class_pixels[c] / total_pixels) for c in range(info.num_labels)}
                            | {"ignore": float(class_pixels[255] / total_pixels)}) if has_masks else {},
            "saliency_on_objects": sal_object[0] / sal_object[1] if sal_object[1] else None,
            "saliency_on_background": sal_background[0] / sal_background[1] if sal_background[1] else None,
            "saliency_range": sal_range if sal_formats else None,
            "saliency_formats": dict(sal_formats),
            "problems": problems,
        }
    return report


def _run_check(args: argparse.Namespace) -> int:
    cfg = config_for_check(args)
    data = cfg.data
    if not data.root:
        raise DataError("no dataset given: pass --config FILE or --root DIR")
    splits = list(args.split) or [s for s in (data.train_split, data.val_split) if s]
    report = check_dataset(data, splits, saliency=not args.no_saliency, progress=True)
    print(_format_report(report))
    if args.json:
        from wsss.io import write_text_atomic

        write_text_atomic(args.json, json.dumps(report, indent=1) + "\n")
    n_problems = sum(len(r["problems"]) for r in report["splits"].values())
    return 1 if n_problems else 0


def _format_report(report: dict) -> str:
    names = report["classes"]
    lines = [f"dataset {report['root']}: {len(names) - 1} classes ({', '.join(names[1:])})"]
    if not report["masks"]:
        lines.append("  no mask folder: class pixel counts and label checks skipped")
    if not report["saliency"]:
        lines.append("  saliency maps not loaded (no saliency folder, or --no-saliency)")
    for split, r in report["splits"].items():
        lines.append(f"split {split} ({r['list']}): {r['kept']} of {r['listed']} ids loaded")
        width = max(len(n) for n in names)
        lines.append(f"  {'class':<{width}}  images  pixels%")
        for c, name in enumerate(names):
            share = r["pixel_share"].get(name) if r["pixel_share"] else None
            count = "" if c == 0 else str(r["images_per_class"][name])
            pct = "" if share is None else f"{100 * share:.2f}"
            lines.append(f"  {name:<{width}}  {count:>6}  {pct:>7}")
        if r["pixel_share"]:
            lines.append(f"  {'(255 ignore)':<{width}}  {'':>6}  {100 * r['pixel_share']['ignore']:>7.2f}")
        if r.get("saliency_range") is not None:
            formats = ", ".join(f"{mode}: {n}" for mode, n in sorted(r["saliency_formats"].items()))
            lines.append(f"  saliency values {r['saliency_range'][0]}..{r['saliency_range'][1]} after reading "
                         f"(0..255; files by mode: {formats})")
        if r["saliency_on_objects"] is not None:
            lines.append(f"  saliency >= {SATURATION}: {100 * r['saliency_on_objects']:.1f}% of object pixels, "
                         f"{100 * r['saliency_on_background']:.1f}% of background pixels")
        if r["skipped"]:
            lines.append(f"  skipped {len(r['skipped'])} ids: " + ", ".join(s["id"] for s in r["skipped"][:20])
                         + (" ..." if len(r["skipped"]) > 20 else ""))
        if r["problems"]:
            lines.append(f"  {len(r['problems'])} problems:")
            lines += [f"    {p}" for p in r["problems"][:50]]
            if len(r["problems"]) > 50:
                lines.append(f"    ... and {len(r['problems']) - 50} more (see --json)")
        else:
            lines.append("  problems: none")
    return "\n".join(lines)
