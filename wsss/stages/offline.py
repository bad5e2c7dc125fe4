"""What the offline stages (cams, labels, crf) share: this process's shard, input checks, summaries.

Offline stages need no process group: ``torchrun --nproc_per_node N wsss cams ...`` starts N
independent processes, and each takes the ids ``rank, rank + N, ...`` of the split (RANK and
WORLD_SIZE from the environment), skips those whose outputs exist and writes atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from wsss.errors import ConfigError, DataError
from wsss.io import write_text_atomic


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer "
                          f"(torchrun sets it; unset it to run as one process)") from None


def env_shard() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` of this process from RANK / WORLD_SIZE / LOCAL_RANK
    (``(0, 1, 0)`` when they are not set)."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"environment: RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world_size})")
    return rank, world_size, _env_int("LOCAL_RANK", rank)


def require_dir(path: Path, key: str, hint: str) -> Path:
    """``path`` if it is a folder, else a DataError naming the config ``key`` and what to run."""
    if not path.is_dir():
        raise DataError(f"{key}: folder {path} does not exist; {hint}")
    return path


def require_files(paths: Sequence[Path], what: str, hint: str) -> None:
    """Every path exists, else one DataError with the count and the first missing file."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} of {len(paths)} images have no {what} (first: {missing[0]}); {hint}")


def summary_path(out_dir: Path, rank: int = 0, world_size: int = 1) -> Path:
    """``<out>.summary.json`` next to the output folder (never inside it, so a listing of
    ``*.png`` there sees label maps only); ``<out>.summary.rank<r>.json`` for one of several ranks."""
    out_dir = Path(out_dir)
    suffix = ".summary.json" if world_size == 1 else f".summary.rank{rank}.json"
    return out_dir.parent / f"{out_dir.name}{suffix}"


def write_summary(path: Path, summary: dict[str, Any]) -> Path:
    write_text_atomic(path, json.dumps(summary, indent=2, sort_keys=False) + "\n")
    return path
