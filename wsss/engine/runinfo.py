"""Run directories: the resolved config and the provenance (version, commit, device, world size)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import wsss
from wsss.config.loader import dump_yaml
from wsss.io import write_text_atomic


def git_commit(path: str | Path | None = None) -> str:
    """The commit of the checkout holding ``path`` (default: the wsss package), '+dirty' if modified,
    or 'unknown' outside a git checkout."""
    where = Path(path) if path else Path(wsss.__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(device: str = "cpu", world_size: int = 1) -> dict[str, Any]:
    """Versions, commit, host, device and world size of this process."""
    info: dict[str, Any] = {
        "wsss_version": wsss.__version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device,
        "world_size": world_size,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "argv": sys.argv,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    info["numpy"] = __import__("numpy").__version__
    return info


def write_run_info(run_dir: str | Path, cfg: Any, device: str = "cpu", world_size: int = 1,
                   stage: str | None = None) -> Path:
    """Write ``config.yaml`` and ``meta.json`` (or ``meta_<stage>.json``) into ``run_dir``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", dump_yaml(cfg))
    meta = provenance(device, world_size)
    if stage:
        meta["stage"] = stage
    name = f"meta_{stage}.json" if stage else "meta.json"
    write_text_atomic(run_dir / name, json.dumps(meta, indent=2))
    return run_dir


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))
