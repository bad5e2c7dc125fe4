"""What every stage shares: the run directory, run-relative paths, split ids and provenance.

A run directory is ``<run.out_dir>/<run.name>``; ``run.name`` defaults to the stem of the last
config file given. Stage inputs and outputs in the config (``cams.out: cams``) are relative to it
unless absolute.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from wsss.config import Config
from wsss.data.splits import read_split, resolve_split
from wsss.engine.runinfo import write_run_info
from wsss.errors import ConfigError
from wsss.io import paths_overlap, remove_stale_temp_files


def run_dir_for(cfg: Config, config_paths: Sequence[str | Path] = ()) -> Path:
    """``<run.out_dir>/<run.name or stem of the last config file>``."""
    name = cfg.run.name or (Path(config_paths[-1]).stem if config_paths else "")
    if not name:
        raise ConfigError("config key 'run.name' is empty and no config file names the run; "
                          "give --set run.name=NAME")
    return Path(cfg.run.out_dir) / name


@dataclass
class StageContext:
    """A stage's view of a run: its config and run directory."""

    cfg: Config
    run_dir: Path

    def path(self, rel: str | Path) -> Path:
        """A config path: absolute as given, otherwise inside the run directory."""
        p = Path(rel).expanduser()
        return p if p.is_absolute() else self.run_dir / p

    def output_path(self, rel: str | Path, key: str) -> Path:
        """:meth:`path` of an output named by config ``key``; an output in (or holding) the
        dataset is refused, so no stage ever writes into the data or over the ground truth.
        Temp files that a killed run of the stage left there are removed."""
        out = self.path(rel)
        if self.cfg.data.root:
            data = Path(self.cfg.data.root).expanduser().resolve()
            target = out.resolve()
            if paths_overlap(target, data):
                raise ConfigError(f"{key} = {str(rel)!r} resolves to {target}, which lies in (or holds) the "
                                  f"dataset {data}: outputs go to the run directory, never into the data")
        remove_stale_temp_files(out)
        return out

    def split_ids(self, split: str) -> list[str]:
        """The ids of ``split`` (a split name of the dataset, or a list file); under
        ``data.missing = skip`` those without an image file are left out, as the datasets do."""
        if not self.cfg.data.root:
            raise ConfigError("config key 'data.root' is empty: give the dataset folder, "
                              "e.g. --set data.root=/data/VOC2012")
        ids = read_split(resolve_split(self.cfg.data, split))
        if self.cfg.data.missing == "skip":
            from wsss.data.voc import ids_with_files   # torch-free stages import it only here

            ids = ids_with_files(self.cfg.data, ids)
        return ids

    def record(self, stage: str, device: str = "cpu", world_size: int = 1) -> None:
        """Write the resolved config and provenance (version, commit, device, world size)."""
        write_run_info(self.run_dir, self.cfg, device=device, world_size=world_size, stage=stage)


def stage_context(cfg: Config, config_paths: Sequence[str | Path] = ()) -> StageContext:
    run_dir = run_dir_for(cfg, config_paths)
    run_dir.mkdir(parents=True, exist_ok=True)
    return StageContext(cfg, run_dir)
