"""Loading weight files safely and reporting exactly what was loaded.

Every torch file is opened with ``torch.load(..., weights_only=True)``: a file whose unpickling would
run arbitrary code is refused. MXNet ``.params`` files are parsed directly
(:mod:`wsss.models.mxnet_params`). Loading into a module compares shapes first (a mismatch names the
key and both shapes) and returns a :class:`LoadReport` with the missing and unexpected keys.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

from wsss.engine.checkpoint import unpickler_detail, unpickling_needs_code
from wsss.errors import DataError, WsssError

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

# Keys under which training scripts commonly nest the actual state dict.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "net", "params")


class UnsafeWeightsError(WsssError):
    """A weight file needs arbitrary code to unpickle; it is refused."""


@dataclass
class LoadReport:
    """What happened when a state dict was loaded into a module.

    ``missing``: module keys the file did not provide (they keep their initialisation).
    ``unexpected``: file keys the module has no place for (not loaded).
    ``ignored``: file keys dropped on purpose (e.g. an ImageNet classifier the backbone does not have).
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def complete(self) -> bool:
        return not self.missing and not self.unexpected

    def summary(self, max_keys: int = 8) -> str:
        def some(keys: list[str]) -> str:
            more = f", ... (+{len(keys) - max_keys})" if len(keys) > max_keys else ""
            return ", ".join(keys[:max_keys]) + more

        parts = [f"{len(self.loaded)} tensors loaded" + (f" from {self.source}" if self.source else "")]
        if self.missing:
            parts.append(f"{len(self.missing)} missing: {some(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected: {some(self.unexpected)}")
        if self.ignored:
            parts.append(f"{len(self.ignored)} ignored: {some(self.ignored)}")
        return "; ".join(parts)

    def __str__(self) -> str:
        return self.summary()


def _unwrap(obj: object, path: Path) -> StateDict:
    """Find the ``{name: tensor}`` mapping inside a loaded object (plain or nested checkpoint)."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {str(k): v for k, v in obj.items()}
        for key in _NESTED_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return {str(k): v for k, v in inner.items()}
        tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise DataError(f"{path}: no state dict (a mapping of names to tensors) found in this file; "
                    f"found {type(obj).__name__}")


def read_weight_file(path: str | os.PathLike) -> StateDict:
    """Read a weight file into ``{name: tensor}`` without running any code from it.

    ``.params`` files are read as MXNet NDArray lists (names keep their ``arg:``/``aux:`` prefixes);
    anything else goes through ``torch.load(weights_only=True)``. A checkpoint that nests its state
    dict under ``state_dict`` / ``model`` / ... is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"weight file not found: {path}")
    if path.suffix == ".params":
        from wsss.models.mxnet_params import read_mxnet_params

        return {k: torch.from_numpy(v) for k, v in read_mxnet_params(path).items()}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = unpickler_detail(str(exc))
        if unpickling_needs_code(str(exc)):
            raise UnsafeWeightsError(
                f"refused to load {path}: unpickling it would need arbitrary code (only plain tensors "
                f"and state dicts are loaded, with torch.load(weights_only=True)); if you trust the "
                f"file, re-save its state dict as a plain .pth in a separate session ({detail})") from None
        raise DataError(f"{path}: not a readable torch weight file ({detail})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable torch weight file ({exc})") from None
    return _unwrap(obj, path)


def strip_prefixes(state_dict: Mapping[str, torch.Tensor],
                   prefixes: Iterable[str] = ("module.",)) -> StateDict:
    """Remove leading wrapper prefixes (``module.`` from DataParallel/DDP, ...) from every key,
    repeatedly, so ``module.base.x`` with prefixes ``("module.", "base.")`` becomes ``x``."""
    prefixes = tuple(prefixes)
    out: StateDict = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if key.startswith(p):
                    key = key[len(p):]
                    changed = True
        out[key] = value
    return out


def load_state_dict_checked(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *,
                            strict: bool = False, ignore: Iterable[str] = (),
                            source: str = "") -> LoadReport:
    """Load ``state_dict`` into ``module`` after checking every shape.

    ``ignore``: regular expressions; matching file keys are dropped on purpose (reported as
    ignored, not unexpected). A shape mismatch raises :class:`DataError` naming the key and both
    shapes. ``strict=True`` turns missing or unexpected keys into a :class:`DataError`; otherwise
    they are logged as a warning and returned in the report.
    """
    patterns = [re.compile(p) for p in ignore]
    own = module.state_dict()
    report = LoadReport(source=source)
    to_load: StateDict = {}
    for key, value in state_dict.items():
        if any(p.search(key) for p in patterns):
            report.ignored.append(key)
            continue
        if key not in own:
            report.unexpected.append(key)
            continue
        if tuple(own[key].shape) != tuple(value.shape):
            where = f" in {source}" if source else ""
            raise DataError(f"shape mismatch for '{key}'{where}: the file has {tuple(value.shape)}, "
                            f"the model expects {tuple(own[key].shape)} (wrong architecture or "
                            f"class count?)")
        to_load[key] = value
        report.loaded.append(key)
    report.missing = [k for k in own if k not in to_load and not k.endswith("num_batches_tracked")]
    if strict and (report.missing or report.unexpected):
        raise DataError(f"weights do not match the model: {report.summary()}")
    module.load_state_dict(to_load, strict=False)
    if report.missing or report.unexpected:
        log.warning("loading weights: %s", report.summary())
    else:
        log.info("loading weights: %s", report.summary())
    return report


def save_state_dict(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write a plain ``{name: tensor}`` state dict atomically (loadable with ``weights_only=True``)."""
    from wsss.io import atomic_write

    plain = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_write(path, "wb") as f:
        torch.save(plain, f)
