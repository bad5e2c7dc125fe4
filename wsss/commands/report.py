"""`wsss report`: write a visual report (HTML) of a run's maps, labels and predictions."""

from __future__ import annotations

import argparse

from wsss.commands.common import add_config_arguments

NAME = "report"
HELP = "write a visual report (HTML) of a run's maps, labels and predictions"
DESCRIPTION = HELP + """.

Input: a run directory (of `wsss run` or the stage commands) with its config.yaml (the dataset's
images, masks, saliency maps, splits and class names; --config/--set are applied on top), its
folders of <id>.png label maps (pseudo labels, predictions, CRF outputs) and <id>.npz class maps
(CAMs, OAA maps, probabilities), and the evaluator JSONs <run>/eval/*.json and <run>/eval*.json.
Output: <out>/index.html (default <run>/report) and its thumbnails in <out>/img/ (long side at most
--size px): one row per image, one column per image, ground truth, saliency and folder (labels:
palette colours over the image, 255 = white hatching; maps: jet heat map of the max over the
labelled classes, then of each class); a table of each folder's mIoU from the eval JSONs whose
pred_dir is that folder ("-" when none); the class colours.

Images: --ids N (default 12) ids evenly spaced over the split list (first and last included, file
order) among the ids that at least one shown folder holds, or the ids given with --id.
Split: --split train|val (data.train_split / data.val_split) or another split name or list file;
default: of train and val, the split whose ids the folders hold most.
Folders: --folders a,b,c (relative to the run directory), default every sub-folder with label or
class maps, sorted by name; folders with none of the chosen ids are left out."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory (with config.yaml)")
    add_config_arguments(parser)
    parser.add_argument("--split", metavar="NAME",
                        help="train, val, or a split name / list file (default: the one the folders cover most)")
    pick = parser.add_mutually_exclusive_group()
    pick.add_argument("--ids", type=int, default=12, metavar="N",
                      help="number of images, evenly spaced over the split (default 12)")
    pick.add_argument("--id", action="append", default=[], dest="image_ids", metavar="ID",
                      help="show this image id (repeatable)")
    parser.add_argument("--folders", metavar="A,B,...",
                        help="run folders to show, comma-separated (default: every label/map folder)")
    parser.add_argument("--out", metavar="DIR", help="report folder (default <run>/report)")
    parser.add_argument("--size", type=int, default=256, metavar="PX",
                        help="long side of the thumbnails at most PX (default 256)")
    parser.add_argument("--max-only", action="store_true",
                        help="class maps: only the max over the classes, not each class")


def run(args: argparse.Namespace) -> int:
    from wsss.report import load_run_config, write_report

    cfg = load_run_config(args.run_dir, args.config, args.overrides)
    folders = [f.strip() for f in args.folders.split(",") if f.strip()] if args.folders else None
    page = write_report(cfg, args.run_dir, args.out, split=args.split, num_ids=args.ids,
                        ids=args.image_ids or None, folders=folders, size=args.size,
                        per_class=not args.max_only)
    print(f"wrote {page}")
    return 0
