"""A visual report of a run: one HTML page with thumbnails of images, ground truth, saliency, label
maps and class maps, the mIoU of each label folder and the class colours.

Layout of the report folder ``<out>``::

    index.html                       the page (relative links only; no script, no external file)
    img/data/{image,gt,saliency}/<id>.png
    img/run/<folder>/<id>.png        label overlay, or heat map of the max over the classes
    img/run/<folder>/<id>_<k>.png    heat map of map k (a labelled class, or ``bg``)

Folders of the run: every sub-folder (or the ones named) holding ``<id>.png`` label maps (pseudo
labels, predictions, CRF outputs; 0..C, 255 = ignore) or ``<id>.npz`` class maps (``classes`` +
``cams`` of ``wsss cams``, ``classes`` + ``maps`` uint8 of the OAA export, ``labels`` + ``probs``
of ``wsss predict``). mIoU: the evaluator JSONs ``<run>/eval/*.json`` and ``<run>/eval*.json``
whose ``protocol.pred_dir`` is the folder.

Images: the ids of the split that at least one shown folder holds, N of them evenly spaced over
the split list (first and last included, file order), or the ids given.

Colours are pure functions of their inputs (exact values, tested): labels use the dataset palette
(255 = white diagonal hatching), maps a jet colour map, both blended over the image.
"""

from __future__ import annotations

import html
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image

from wsss.data.splits import dataset_root, read_split, resolve_split
from wsss.errors import ConfigError, DataError
from wsss.io import IGNORE, load_npz, read_image, read_label, read_saliency, write_image, write_text_atomic

IGNORE_RGB = (255, 255, 255)
CANVAS_GRAY = 128             # stands in for an image that cannot be read
HATCH_PERIOD = 6              # 255 pixels: white on diagonal stripes (x + y) % 6 < 3
DEFAULT_IDS = 12
DEFAULT_SIZE = 256
DEFAULT_ALPHA = 0.5

# Jet colour map: anchor positions in [0, 1] and their RGB colours.
JET_POS = np.array([0.0, 0.125, 0.375, 0.625, 0.875, 1.0])
JET_RGB = np.array([(0, 0, 128), (0, 0, 255), (0, 255, 255), (255, 255, 0), (255, 0, 0), (128, 0, 0)], dtype=float)


# ------------------------------------------------------------------------------ colours (pure)

def _to_u8(x: np.ndarray) -> np.ndarray:
    """Round half up and clip a float array to ``uint8``."""
    return np.clip(np.floor(np.asarray(x, dtype=np.float64) + 0.5), 0, 255).astype(np.uint8)


def label_rgb(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """``(H, W)`` labels 0..255 -> ``(H, W, 3) uint8`` palette colours; 255 -> white."""
    label = np.asarray(label, dtype=np.uint8)
    rgb = np.asarray(palette, dtype=np.uint8)[label]
    rgb[label == IGNORE] = IGNORE_RGB
    return rgb


def blend(base: np.ndarray, top: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """``(1 - alpha) * base + alpha * top`` of two ``(H, W, 3) uint8`` images, rounded half up."""
    return _to_u8((1.0 - alpha) * np.asarray(base, np.float64) + alpha * np.asarray(top, np.float64))


def hatch_mask(height: int, width: int, period: int = HATCH_PERIOD) -> np.ndarray:
    """``(H, W) bool``: True on diagonal stripes, ``(x + y) % period < period // 2``."""
    y, x = np.mgrid[:height, :width]
    return (x + y) % period < period // 2


def overlay_label(image: np.ndarray, label: np.ndarray, palette: np.ndarray,
                  alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """Label colours blended over ``image`` (both ``H x W``); 255 pixels: white on the hatch
    stripes, the image blended with white between them. Returns ``(H, W, 3) uint8``."""
    out = blend(image, label_rgb(label, palette), alpha)
    stripes = (np.asarray(label) == IGNORE) & hatch_mask(*out.shape[:2])
    out[stripes] = IGNORE_RGB
    return out


def heat_rgb(values: np.ndarray) -> np.ndarray:
    """``(H, W)`` floats in [0, 1] (clipped; NaN = 0) -> ``(H, W, 3) uint8`` jet colours:
    0 dark blue (0, 0, 128), 0.5 (128, 255, 128), 1 dark red (128, 0, 0)."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
    v = np.clip(v, 0.0, 1.0)
    return np.stack([_to_u8(np.interp(v, JET_POS, JET_RGB[:, c])) for c in range(3)], axis=-1)


def overlay_heat(image: np.ndarray, values: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """Jet colours of ``values`` ``(H, W)`` in [0, 1] blended over ``image`` ``(H, W, 3) uint8``."""
    return blend(image, heat_rgb(values), alpha)


def gray_rgb(gray: np.ndarray) -> np.ndarray:
    """``(H, W) uint8`` -> ``(H, W, 3) uint8`` with three equal channels."""
    return np.repeat(np.asarray(gray, dtype=np.uint8)[..., None], 3, axis=-1)


# ------------------------------------------------------------------------------ resizing

def thumb_size(height: int, width: int, size: int = DEFAULT_SIZE) -> tuple[int, int]:
    """``(h, w)`` with the long side at most ``size`` (never enlarged; aspect kept, each side >= 1)."""
    scale = min(1.0, size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_rgb(rgb: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(H, W, 3) uint8`` to ``hw``."""
    if rgb.shape[:2] == tuple(hw):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((hw[1], hw[0]), Image.BILINEAR))


def resize_label(label: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of ``(H, W) uint8`` labels to ``hw``."""
    if label.shape == tuple(hw):
        return label
    return np.asarray(Image.fromarray(label).resize((hw[1], hw[0]), Image.NEAREST))


def resize_map(values: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a ``(H, W)`` float map to ``hw``; returns float32."""
    values = np.asarray(values, dtype=np.float32)
    if values.shape == tuple(hw):
        return values
    return np.asarray(Image.fromarray(values, mode="F").resize((hw[1], hw[0]), Image.BILINEAR))


# ------------------------------------------------------------------------------ class maps

@dataclass
class ClassMaps:
    """Maps of one image: ``classes`` ``(K,)`` 1-based, ``maps`` ``(K, H, W)`` float32 in [0, 1],
    ``bg`` ``(H, W)`` or None."""

    classes: np.ndarray
    maps: np.ndarray
    bg: np.ndarray | None = None

    def max_map(self) -> np.ndarray:
        """``(H, W)``: the max over the class maps (zeros when K = 0)."""
        return self.maps.max(axis=0) if len(self.maps) else np.zeros(self.maps.shape[1:], np.float32)


MAP_KEYS = (("classes", "cams"), ("classes", "maps"), ("labels", "probs"))


def is_map_file(keys) -> bool:
    """Whether an npz with these keys is a class-map file this report can show."""
    return any(a in keys and b in keys for a, b in MAP_KEYS)


def class_maps(arrays: dict[str, np.ndarray]) -> ClassMaps:
    """Normalise an npz of ``wsss cams`` (classes, cams[, bg]), the OAA export (classes, maps
    uint8) or ``wsss predict`` (labels 0-based, probs) to :class:`ClassMaps`."""
    if "classes" in arrays and "cams" in arrays:
        bg = arrays.get("bg")
        return ClassMaps(arrays["classes"].astype(np.int64), arrays["cams"].astype(np.float32),
                         None if bg is None else bg.astype(np.float32))
    if "classes" in arrays and "maps" in arrays:
        maps = arrays["maps"].astype(np.float32)
        if arrays["maps"].dtype == np.uint8:
            maps /= 255.0
        return ClassMaps(arrays["classes"].astype(np.int64), maps)
    if "labels" in arrays and "probs" in arrays:
        labels, probs = arrays["labels"].astype(np.int64), arrays["probs"].astype(np.float32)
        bg = probs[labels == 0]
        return ClassMaps(labels[labels > 0], probs[labels > 0], bg[0] if len(bg) else None)
    raise DataError(f"not a class-map file: keys {sorted(arrays)} (expected one of "
                    f"{', '.join('+'.join(k) for k in MAP_KEYS)})")


# ------------------------------------------------------------------------------ the run

@dataclass
class Folder:
    """A run folder shown in the report: ``kind`` is ``labels`` (PNG) or ``maps`` (npz)."""

    name: str
    path: Path
    kind: str
    ids: set[str] = field(default_factory=set)

    @property
    def ext(self) -> str:
        return ".png" if self.kind == "labels" else ".npz"


def inspect_folder(path: Path, name: str) -> Folder | None:
    """A :class:`Folder` for ``path`` when it holds ``*.png`` (labels) or class-map ``*.npz``."""
    pngs = sorted(p.stem for p in path.glob("*.png") if p.is_file())
    if pngs:
        return Folder(name, path, "labels", set(pngs))
    npzs = sorted(p for p in path.glob("*.npz") if p.is_file())
    if not npzs:
        return None
    try:
        with np.load(npzs[0], allow_pickle=False) as z:
            keys = set(z.files)
    except (OSError, ValueError):
        return None
    return Folder(name, path, "maps", {p.stem for p in npzs}) if is_map_file(keys) else None


def scan_folders(run_dir: Path, exclude: list[Path] = ()) -> list[Folder]:
    """Every direct sub-folder of ``run_dir`` with label maps or class maps, sorted by name;
    hidden folders and those in ``exclude`` (and below them) are skipped."""
    skip = [Path(p).resolve() for p in exclude]
    found = []
    for path in sorted(run_dir.iterdir(), key=lambda p: p.name):
        if not path.is_dir() or path.name.startswith("."):
            continue
        resolved = path.resolve()
        if any(resolved == s or s in resolved.parents for s in skip):
            continue
        folder = inspect_folder(path, path.name)
        if folder is not None:
            found.append(folder)
    return found


def named_folders(run_dir: Path, names: list[str]) -> list[Folder]:
    """The folders named (relative to ``run_dir``, or absolute), in the order given."""
    out = []
    for name in names:
        path = Path(name).expanduser()
        path = path if path.is_absolute() else run_dir / path
        if not path.is_dir():
            raise ConfigError(f"--folders: no folder {name!r} in {run_dir}")
        folder = inspect_folder(path, name)
        if folder is None:
            raise ConfigError(f"--folders: {path} holds no <id>.png label maps and no class-map <id>.npz files")
        out.append(folder)
    return out


@dataclass
class EvalScore:
    """One evaluator JSON of a folder: mIoU with 255 counted as a miss and with 255 dropped (EPS)."""

    file: str
    miou: float | None
    miou_dropped: float | None
    split: str
    num_images: int | None


def eval_files(run_dir: Path) -> list[Path]:
    """``<run>/eval/*.json`` and ``<run>/eval*.json``, sorted."""
    files = set(run_dir.glob("eval*.json")) | set((run_dir / "eval").glob("*.json"))
    return sorted(p for p in files if p.is_file())


def _same_folder(pred_dir: str, folder: Path, run_dir: Path) -> bool:
    """Whether the evaluated ``pred_dir`` is ``folder``: the same path, or (a moved run) the same
    folder name inside a run folder of the same name."""
    pred = Path(pred_dir).expanduser()
    if not pred.is_absolute():
        pred = run_dir / pred
    if pred.resolve() == folder.resolve():
        return True
    try:
        rel = folder.resolve().relative_to(run_dir.resolve())
    except ValueError:
        return False
    tail = Path(run_dir.resolve().name) / rel
    return pred.parts[-len(tail.parts):] == tail.parts


def eval_scores(run_dir: Path, folders: list[Folder], problems: list[str] | None = None
                ) -> dict[str, list[EvalScore]]:
    """``{folder name: [EvalScore, ...]}`` from the evaluator JSONs of the run. Other JSONs are
    skipped; one that cannot be read or parsed is left out and named in ``problems``."""
    scores: dict[str, list[EvalScore]] = {f.name: [] for f in folders}
    for path in eval_files(run_dir):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            if problems is not None:
                problems.append(f"{path.relative_to(run_dir)}: unreadable or corrupt ({type(exc).__name__}: {exc})")
            continue
        try:
            protocol, conventions = data["protocol"], data["conventions"]
            pred_dir = protocol["pred_dir"]
        except (KeyError, TypeError):
            continue   # another kind of JSON (e.g. a summary)
        split = protocol.get("split_name") or (Path(protocol["split"]).stem if protocol.get("split") else "-")
        score = EvalScore(str(path.relative_to(run_dir)), conventions.get("ignore_as_miss", {}).get("miou"),
                          conventions.get("ignore_dropped", {}).get("miou"), split, data.get("num_images"))
        for f in folders:
            if _same_folder(str(pred_dir), f.path, run_dir):
                scores[f.name].append(score)
    return scores


def spaced(items: list[str], n: int) -> list[str]:
    """``n`` items evenly spaced over ``items`` (first and last included, order kept); all when
    there are at most ``n``."""
    if len(items) <= n:
        return list(items)
    if n == 1:
        return [items[0]]
    return [items[round(k * (len(items) - 1) / (n - 1))] for k in range(n)]


def choose_ids(split_ids: list[str], folders: list[Folder], num: int = DEFAULT_IDS,
               given: list[str] | None = None, split_name: str = "split") -> list[str]:
    """The ids to show: ``given`` (each must be in the split), else ``num`` ids evenly spaced over
    the split ids that at least one folder holds. Raises DataError when no folder holds any."""
    held = set().union(*(f.ids for f in folders)) if folders else set()
    if given:
        listed = set(split_ids)
        missing = [i for i in given if i not in listed]
        if missing:
            raise DataError(f"--id {missing[0]!r} is not in the {split_name} split ({len(split_ids)} ids)")
        ids = list(dict.fromkeys(given))
        if not held & set(ids):
            raise DataError(f"none of the folders ({', '.join(f.name for f in folders) or 'none found'}) "
                            f"holds any of the ids {', '.join(ids)}")
        return ids
    if num < 1:
        raise ConfigError(f"--ids must be at least 1, got {num}")
    candidates = [i for i in split_ids if i in held]
    if not candidates:
        raise DataError(f"none of the folders ({', '.join(f.name for f in folders) or 'none found'}) "
                        f"holds any id of the {split_name} split ({len(split_ids)} ids)")
    return spaced(candidates, num)


# ------------------------------------------------------------------------------ the report

@dataclass
class Cell:
    """One table cell: images ``[(relative src, caption)]``, or a note."""

    images: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""


@dataclass
class Report:
    """What the page shows."""

    run_dir: Path
    split: str
    num_listed: int
    ids: list[str]
    class_names: tuple[str, ...]
    palette: np.ndarray
    columns: list[tuple[str, str]]                  # (title, subtitle)
    rows: list[tuple[str, str, list[Cell]]]         # (id, image-level labels, cells)
    folders: list[Folder]
    scores: dict[str, list[EvalScore]]
    skipped: list[str] = field(default_factory=list)
    eval_problems: list[str] = field(default_factory=list)   # eval JSONs left out, with why


class _Writer:
    """Writes thumbnails under ``<out>/img`` and returns their page-relative links."""

    def __init__(self, out: Path):
        self.out = out

    def __call__(self, rel: str, rgb: np.ndarray) -> str:
        write_image(self.out / rel, rgb)
        return quote(rel)


def _map_cells(folder: Folder, image_id: str, base: np.ndarray, names: tuple[str, ...], write: _Writer,
               per_class: bool) -> Cell:
    """Heat maps of one npz: the max over the classes, then (``per_class``) each class and bg."""
    cm = class_maps(load_npz(folder.path / f"{image_id}.npz"))
    hw = base.shape[:2]
    prefix = f"img/run/{folder.name}/{image_id}"
    tag = ", ".join(_class_name(names, c) for c in cm.classes) or "no class"
    images = [(write(f"{prefix}.png", overlay_heat(base, resize_map(cm.max_map(), hw))), f"max: {tag}")]
    if per_class:
        for c, m in zip(cm.classes, cm.maps):
            images.append((write(f"{prefix}_{int(c)}.png", overlay_heat(base, resize_map(m, hw))),
                           _class_name(names, c)))
        if cm.bg is not None:
            images.append((write(f"{prefix}_bg.png", overlay_heat(base, resize_map(cm.bg, hw))), "bg"))
    return Cell(images)


def _class_name(names: tuple[str, ...], c) -> str:
    c = int(c)
    return names[c] if 0 <= c < len(names) else str(c)


def build_report(cfg, run_dir: str | os.PathLike, out: str | os.PathLike | None = None, split: str | None = None,
                 num_ids: int = DEFAULT_IDS, ids: list[str] | None = None, folders: list[str] | None = None,
                 size: int = DEFAULT_SIZE, per_class: bool = True) -> Report:
    """Write the thumbnails of the report of ``run_dir`` (config ``cfg``) under ``out`` (default
    ``<run>/report``) and return what the page shows (see :func:`write_report`)."""
    from wsss.data.image_labels import present_classes
    from wsss.data.voc import build_dataset_info, image_path, load_image_labels, mask_path, saliency_path

    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "report"
    if size < 8:
        raise ConfigError(f"--size must be at least 8 pixels, got {size}")
    data = cfg.data
    root = dataset_root(data)
    info = build_dataset_info(data)
    if folders:
        shown = named_folders(run_dir, folders)
    else:
        shown = scan_folders(run_dir, exclude=[out, root])
    if not shown:
        raise DataError(f"{run_dir} has no folder of <id>.png label maps or <id>.npz class maps")
    split_name, split_ids = _pick_split(data, split, shown)
    chosen = choose_ids(split_ids, shown, num_ids, ids, split_name)
    skipped = [f.name for f in shown if not f.ids & set(chosen)]
    shown = [f for f in shown if f.ids & set(chosen)]
    try:
        image_labels = load_image_labels(data, info, chosen)
    except DataError:
        image_labels = {}

    masks = {i: mask_path(data, root, i) for i in chosen}
    sals = {i: saliency_path(data, root, i) for i in chosen}
    has_gt = any(p.is_file() for p in masks.values())
    has_sal = any(p.is_file() for p in sals.values())
    columns = [("image", "")] + [("ground truth", data.mask_dir)] * has_gt + [("saliency", data.saliency_dir)] * has_sal
    columns += [(f.name, f.kind) for f in shown]
    write = _Writer(out)
    rows = []
    for image_id in chosen:
        cells: list[Cell] = []
        try:
            image = read_image(image_path(data, root, image_id))
            base = resize_rgb(image, thumb_size(*image.shape[:2], size))
            cells.append(Cell([(write(f"img/data/image/{image_id}.png", base), f"{image.shape[1]}x{image.shape[0]}")]))
        except DataError as exc:
            base = None
            cells.append(Cell(note=str(exc)))
        if base is None:
            base = _canvas(shown, image_id, size)
        hw = base.shape[:2]
        if has_gt:
            cells.append(_file_cell(masks[image_id], lambda p: overlay_label(
                base, resize_label(read_label(p, "ground-truth mask"), hw), info.palette),
                write, f"img/data/gt/{image_id}.png"))
        if has_sal:
            cells.append(_file_cell(sals[image_id], lambda p: gray_rgb(
                resize_label(read_saliency(p), hw)), write, f"img/data/saliency/{image_id}.png"))
        for f in shown:
            if image_id not in f.ids:
                cells.append(Cell(note="-"))
            elif f.kind == "labels":
                cells.append(_file_cell(f.path / f"{image_id}.png", lambda p: overlay_label(
                    base, resize_label(read_label(p), hw), info.palette), write, f"img/run/{f.name}/{image_id}.png"))
            else:
                try:
                    cells.append(_map_cells(f, image_id, base, info.class_names, write, per_class))
                except DataError as exc:
                    cells.append(Cell(note=str(exc)))
        labels = image_labels.get(image_id)
        tag = "" if labels is None else ", ".join(info.class_names[c] for c in present_classes(labels))
        rows.append((image_id, tag, cells))
    problems: list[str] = []
    scores = eval_scores(run_dir, shown, problems)
    return Report(run_dir, split_name, len(split_ids), chosen, info.class_names, info.palette, columns, rows,
                  shown, scores, skipped, problems)


def _pick_split(data, split, folders) -> tuple[str, list[str]]:
    """``(name, ids)`` of the split: ``train``/``val`` = data.train_split/val_split, another name or
    a list file as given; default: of those two, the one whose ids the folders hold most (ties: train)."""
    if split:
        name = {"train": data.train_split, "val": data.val_split}.get(split, split)
        return Path(str(name)).stem, read_split(resolve_split(data, name))
    held = set().union(*(f.ids for f in folders))
    best = None
    for name in dict.fromkeys((data.train_split, data.val_split)):
        path = resolve_split(data, name)
        if not path.is_file():
            continue
        ids = read_split(path)
        count = sum(i in held for i in ids)
        if best is None or count > best[0]:
            best = (count, Path(str(name)).stem, ids)
    if best is None:
        read_split(resolve_split(data, data.train_split))  # raises the "split list missing" error
    return best[1], best[2]


def _canvas(folders: list[Folder], image_id: str, size: int) -> np.ndarray:
    """A gray ``(h, w, 3)`` stand-in for an unreadable image, sized like the first label map."""
    for f in folders:
        if f.kind == "labels" and image_id in f.ids:
            try:
                h, w = read_label(f.path / f"{image_id}.png").shape
                break
            except DataError:
                continue
    else:
        h = w = size
    return np.full(thumb_size(h, w, size) + (3,), CANVAS_GRAY, np.uint8)


def _file_cell(path: Path, render, write: _Writer, rel: str) -> Cell:
    """A one-image cell rendered from ``path``, "-" when it is missing, the error when unreadable."""
    if not path.is_file():
        return Cell(note="-")
    try:
        return Cell([(write(rel, render(path)), "")])
    except DataError as exc:
        return Cell(note=str(exc))


# ------------------------------------------------------------------------------ HTML

CSS = """
body { font-family: sans-serif; font-size: 13px; margin: 1em; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: 3px; vertical-align: top; }
th { background: #f3f3f3; position: sticky; top: 0; }
figure { display: inline-block; margin: 2px; }
figcaption { font-size: 11px; color: #444; max-width: 256px; }
.sw { display: inline-block; width: 14px; height: 14px; border: 1px solid #888; vertical-align: middle; }
.ign { background: repeating-linear-gradient(45deg, #fff 0 3px, #bbb 3px 6px); }
.legend span.item { margin-right: 12px; white-space: nowrap; }
.note { color: #999; font-size: 11px; }
"""


def _pct(x: float | None) -> str:
    """A fraction as a percentage with two decimals, "-" for None."""
    return "-" if x is None else f"{100 * x:.2f}"


def _score_table(report: Report) -> list[str]:
    e = html.escape
    lines = ["<h2>Folders</h2>", "<table class='scores'>",
             "<tr><th>folder</th><th>kind</th><th>ids shown</th><th>mIoU (255 = miss)</th>"
             "<th>mIoU (255 dropped, EPS)</th><th>eval split</th><th>images</th><th>eval file</th></tr>"]
    for f in report.folders:
        shown = sum(i in f.ids for i in report.ids)
        scores = report.scores.get(f.name) or [None]
        for s in scores:
            cells = ["-"] * 5 if s is None else [
                _pct(s.miou), _pct(s.miou_dropped), e(s.split), "-" if s.num_images is None else str(s.num_images),
                e(s.file)]
            lines.append(f"<tr><td>{e(f.name)}</td><td>{f.kind}</td><td>{shown}/{len(report.ids)}</td>"
                         + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    lines.append("</table>")
    if report.skipped:
        lines.append(f"<p class='note'>not shown (none of these ids): {e(', '.join(report.skipped))}</p>")
    for problem in report.eval_problems:
        lines.append(f"<p class='note'>left out of the scores: {e(problem)}</p>")
    return lines


def _legend(report: Report) -> list[str]:
    items = []
    for i, name in enumerate(report.class_names):
        r, g, b = (int(v) for v in report.palette[i])
        items.append(f"<span class='item'><span class='sw' style='background: rgb({r},{g},{b})'></span> "
                     f"{i} {html.escape(name)}</span>")
    items.append("<span class='item'><span class='sw ign'></span> 255 ignore</span>")
    stops = ", ".join(f"rgb({int(r)},{int(g)},{int(b)}) {p:g}%" for p, (r, g, b) in zip(JET_POS * 100, JET_RGB))
    items.append(f"<span class='item'>maps 0 <span class='sw' style='width: 120px; "
                 f"background: linear-gradient(to right, {stops})'></span> 1</span>")
    return ["<h2>Legend</h2>", "<p class='legend'>" + " ".join(items) + "</p>"]


def render_html(report: Report) -> str:
    """The page of ``report``: header, folder scores, legend, one row per image."""
    e = html.escape
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
           f"<title>wsss report: {e(report.run_dir.name)}</title>", f"<style>{CSS}</style></head><body>",
           f"<h1>wsss report: {e(str(report.run_dir))}</h1>",
           f"<p>split <b>{e(report.split)}</b> ({report.num_listed} ids listed), {len(report.ids)} shown. "
           "Labels: palette colours over the image (255 = white hatching); maps: jet colours over the image.</p>"]
    out += _score_table(report) + _legend(report)
    out += ["<h2>Images</h2>", "<table class='images'>", "<tr><th>id</th>" + "".join(
        f"<th>{e(t)}<br><span class='note'>{e(s)}</span></th>" for t, s in report.columns) + "</tr>"]
    for image_id, tag, cells in report.rows:
        row = [f"<td><b>{e(image_id)}</b><br><span class='note'>{e(tag)}</span></td>"]
        for cell in cells:
            if cell.images:
                figs = "".join(f"<figure><img src='{src}' alt='{e(cap or image_id)}' loading='lazy'>"
                               f"<figcaption>{e(cap)}</figcaption></figure>" for src, cap in cell.images)
                row.append(f"<td>{figs}</td>")
            else:
                row.append(f"<td class='note'>{e(cell.note)}</td>")
        out.append("<tr>" + "".join(row) + "</tr>")
    out += ["</table>", "</body></html>", ""]
    return "\n".join(out)


def write_report(cfg, run_dir: str | os.PathLike, out: str | os.PathLike | None = None, **options) -> Path:
    """Write ``<out>/index.html`` (default ``<run>/report``) and its thumbnails; returns the page's
    path. ``options``: ``split``, ``num_ids``, ``ids``, ``folders``, ``size``, ``per_class`` (see
    :func:`build_report`)."""
    out = Path(out) if out else Path(run_dir) / "report"
    report = build_report(cfg, run_dir, out, **options)
    for problem in report.eval_problems:
        print(f"warning: {problem}", file=sys.stderr)
    page = out / "index.html"
    write_text_atomic(page, render_html(report))
    return page


def load_run_config(run_dir: str | os.PathLike, configs: list[str] = (), overrides: list[str] = ()):
    """The resolved config of a run (``<run>/config.yaml``, then ``configs`` and ``overrides``)."""
    from wsss.config import Config, load_config

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory not found: {run_dir}")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no config.yaml: give a run directory of `wsss run` or a stage command")
    return load_config(Config, [path, *configs], list(overrides))
