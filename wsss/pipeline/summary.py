"""The summary of a run: one row per evaluation step, printed as a table and written as JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from wsss.io import write_text_atomic


def summary_row(step: str, result: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of one evaluation JSON (fractions in [0, 1], None when undefined)."""
    conv = result["conventions"]
    proto = result.get("protocol", {})
    row: dict[str, Any] = {
        "step": step,
        "pred": proto.get("pred_dir"),
        "split": proto.get("split_name", proto.get("split")),
        "images": result.get("num_images"),
        "miou": conv["ignore_as_miss"]["miou"],
        "miou_255_dropped": conv["ignore_dropped"]["miou"],
        "coverage": result.get("coverage"),
        "precision": conv["ignore_as_miss"]["mean_precision"],
        "recall": conv["ignore_as_miss"]["mean_recall"],
        "boundary_f1": (result.get("boundary") or {}).get("f1"),
        "cooccurrence": {f"{p['target']}:{p['context']}": p["ratio"]
                         for p in (result.get("cooccurrence") or {}).get("pairs", [])},
        "protocol": {k: proto.get(k) for k in ("post_processing", "scales", "initialisation", "saliency_source")
                     if proto.get(k) is not None},
    }
    return row


def _fmt(x: Any, pct: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:.1f}" if pct else f"{x:.3f}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """An aligned table: mIoU with 255 as a miss and with 255 dropped (EPS convention), coverage,
    precision, recall, boundary F1 (all in %), co-occurrence ratios (lower is better)."""
    pairs = sorted({k for r in rows for k in r["cooccurrence"]})
    head = ["step", "split", "mIoU", "mIoU(255 dropped)", "coverage", "prec", "recall", "bF1"] + [f"m[{p}]" for p in pairs]
    body = [[r["step"], str(r["split"]), _fmt(r["miou"]), _fmt(r["miou_255_dropped"]), _fmt(r["coverage"]),
             _fmt(r["precision"]), _fmt(r["recall"]), _fmt(r["boundary_f1"])]
            + [_fmt(r["cooccurrence"].get(p), pct=False) for p in pairs] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)] if body else [len(h) for h in head]
    lines = ["  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(line, widths)))
             for line in [head] + body]
    return "\n".join(lines)


def write_summary(run_dir: Path, eval_steps: list[str]) -> tuple[list[dict[str, Any]], Path]:
    """Collect ``<run>/eval/<step>.json`` of the given steps into ``<run>/summary.json``."""
    rows = []
    for step in eval_steps:
        path = Path(run_dir) / "eval" / f"{step}.json"
        if path.is_file():
            rows.append(summary_row(step, json.loads(path.read_text())))
    out = Path(run_dir) / "summary.json"
    write_text_atomic(out, json.dumps({"rows": rows}, indent=2) + "\n")
    return rows, out
