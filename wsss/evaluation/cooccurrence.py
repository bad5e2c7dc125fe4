"""Co-occurrence confusion ratio, as EPS reports it (METHODS.md A.5).

For a target class c and a context class k: ``m_{k,c} = FP_{k,c} / TP_c``, where ``FP_{k,c}``
counts pixels whose *context* label is k, whose ground truth is neither c nor 255, and which are
predicted as c; ``TP_c`` is the true-positive count of c over the same images (the diagonal of
the confusion matrix). Lower is better. Context labels come from separate context masks (one
``(H, W)`` map per image, 255 = no context label) with their own class names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from wsss.errors import DataError

IGNORE = 255
# Context classes with these names are not context (e.g. MSRC "void", PASCAL-Context "unlabeled").
VOID_NAMES = frozenset({"void", "unlabeled", "unlabelled", "ignore", "none"})


def read_context_names(path: str | Path) -> tuple[str, ...]:
    """Context class names by index from ``path``.

    Accepted: a JSON object ``{"0": "void", "1": "building", ...}`` (as ``context.json`` of the
    msrcvoc set), a JSON/YAML list, or a text file with one name per line (``name`` or
    ``index: name``). Indices must be 0..254; a gap gets the name ``"<index>"``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"context class names missing: expected {path}")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = _parse_text_names(text)
    except (ValueError, TypeError) as exc:
        raise DataError(f"context class names {path} unreadable: {exc}") from None
    if isinstance(data, list):
        data = dict(enumerate(data))
    if not isinstance(data, dict) or not data:
        raise DataError(f"context class names {path} must be a non-empty list or an {{index: name}} mapping")
    try:
        by_index = {int(k): str(v) for k, v in data.items()}
    except ValueError:
        raise DataError(f"context class names {path}: keys must be integer indices") from None
    if min(by_index) < 0 or max(by_index) >= IGNORE:
        raise DataError(f"context class names {path}: indices must be in 0..254 (255 = no context label)")
    names = tuple(by_index.get(i, str(i)) for i in range(max(by_index) + 1))
    if len(set(names)) != len(names):
        raise DataError(f"context class names {path} has duplicate names")
    return names


def _parse_text_names(text: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for n, line in enumerate(ln.strip() for ln in text.splitlines() if ln.strip()):
        if ":" in line and line.split(":", 1)[0].strip().isdigit():
            idx, name = line.split(":", 1)
            out[int(idx)] = name.strip()
        else:
            out[n] = line
    return out


def default_ignored_context(context_names: Sequence[str]) -> tuple[int, ...]:
    """Context indices that are not context: those named void/unlabeled/ignore/none."""
    return tuple(i for i, n in enumerate(context_names) if n.strip().lower() in VOID_NAMES)


def context_fp_counts(pred: np.ndarray, gt: np.ndarray, context: np.ndarray, num_labels: int,
                      num_context: int) -> np.ndarray:
    """False positives by (context class, predicted class) for one image.

    ``pred``, ``gt``: ``(H, W)`` uint8 in 0..num_labels-1 or 255; ``context``: ``(H, W)`` uint8 in
    0..num_context-1 or 255 (values are checked by the caller). Returns ``(K, L) int64``:
    entry [k, c] = pixels with context k, prediction c, ground truth not c and not 255.
    """
    K, L = num_context, num_labels
    keep = (context != IGNORE) & (gt != IGNORE) & (pred != IGNORE) & (pred != gt)
    k = context[keep].astype(np.int64)
    c = pred[keep].astype(np.int64)
    return np.bincount(k * L + c, minlength=K * L).reshape(K, L)


@dataclass(frozen=True)
class Pair:
    """One (target class, context class) pair with its counts; ratio is NaN when TP_c = 0."""

    target: str
    context: str
    target_index: int
    context_index: int
    fp: int
    tp: int

    @property
    def ratio(self) -> float:
        return self.fp / self.tp if self.tp else float("nan")


def parse_pairs(specs: Sequence[str], class_names: Sequence[str], context_names: Sequence[str]) -> list[tuple[int, int]]:
    """``["train:railroad", "boat:water"]`` (target:context, by name; items may also be joined by
    commas) -> ``[(target_index, context_index), ...]``. Unknown names are a :class:`DataError`."""
    out = []
    for spec in specs:
        for item in (s.strip() for s in str(spec).split(",")):
            if not item:
                continue
            if ":" not in item:
                raise DataError(f"co-occurrence pair {item!r} must look like target:context, e.g. boat:water")
            target, ctx = (s.strip() for s in item.split(":", 1))
            if target not in class_names:
                raise DataError(f"co-occurrence pair {item!r}: {target!r} is not a class "
                                f"({', '.join(class_names)})")
            if ctx not in context_names:
                raise DataError(f"co-occurrence pair {item!r}: {ctx!r} is not a context class "
                                f"({', '.join(context_names)})")
            out.append((list(class_names).index(target), list(context_names).index(ctx)))
    return out


def make_pairs(fp: np.ndarray, tp: np.ndarray, class_names: Sequence[str], context_names: Sequence[str],
               pairs: Sequence[tuple[int, int]] = (), top: int = 0,
               ignored_context: Sequence[int] = ()) -> list[Pair]:
    """The requested pairs, then (``top > 0``) the ``top`` pairs with the most false positives
    among foreground targets (index >= 1) and context classes that are neither in
    ``ignored_context`` nor named like a class of the label set (MSRC-style context masks also
    label the objects; object-on-object confusions are in the confusion matrix already), ties
    broken by (target, context) index. ``fp`` is ``(K, L)``, ``tp`` is ``(L,)``."""
    out = [Pair(class_names[c], context_names[k], c, k, int(fp[k, c]), int(tp[c])) for c, k in pairs]
    if top > 0:
        chosen = {(p.target_index, p.context_index) for p in out}
        object_names = set(class_names)
        candidates = []
        for k in range(fp.shape[0]):
            if k in ignored_context or context_names[k] in object_names:
                continue
            for c in range(1, fp.shape[1]):
                if fp[k, c] > 0 and (c, k) not in chosen:
                    candidates.append((-int(fp[k, c]), c, k))
        for _, c, k in sorted(candidates)[:top]:
            out.append(Pair(class_names[c], context_names[k], c, k, int(fp[k, c]), int(tp[c])))
    return out
