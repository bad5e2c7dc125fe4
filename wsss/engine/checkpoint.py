"""Checkpoints: atomic saves, safe loads (``weights_only=True``) and exact random-state capture.

A checkpoint is a dict of tensors, Python numbers, strings, ``None`` and lists/tuples/dicts of
those, so that ``torch.load(weights_only=True)`` can read it without running pickled code. Numpy
values are converted on save (scalars to Python numbers, arrays to tensors); anything else is
refused with the key that holds it.

Layout of a training run's checkpoint folder (see :class:`CheckpointManager`)::

    checkpoints/last.pt             always the newest state
    checkpoints/iter_0005000.pt     every ``keep_every`` iterations, when asked

A save writes a temporary file in the same folder, fsyncs it and renames it over the target, so a
crash during a save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsss.errors import WsssError
from wsss.io import atomic_write

LAST_NAME = "last.pt"
_KEPT_RE = re.compile(r"^iter_(\d+)\.pt$")

_SCALARS = (bool, int, float, str, bytes, type(None), torch.dtype, torch.device)


class CheckpointError(WsssError):
    """A checkpoint file cannot be read or its contents cannot be saved safely."""


def to_safe_state(obj: Any, where: str = "state") -> Any:
    """A copy of ``obj`` that ``torch.load(weights_only=True)`` can read back.

    Tensors are stored as they are (detached); numpy scalars become Python numbers and numpy arrays
    become CPU tensors; mappings become dicts (``OrderedDict`` kept). Raises
    :class:`CheckpointError` naming the key of any other object.
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, torch.Size):
        return tuple(int(v) for v in obj)
    if isinstance(obj, _SCALARS):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, OrderedDict):
        return OrderedDict((k, to_safe_state(v, f"{where}[{k!r}]")) for k, v in obj.items())
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise CheckpointError(f"checkpoint {where}: key {k!r} is a {type(k).__name__}; "
                                      f"use str or int keys")
            out[k] = to_safe_state(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        items = [to_safe_state(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise CheckpointError(f"checkpoint {where}: a {type(obj).__name__} cannot be stored safely; "
                          f"store tensors, numbers, strings, lists or dicts")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    safe = to_safe_state(state)
    with atomic_write(path, "wb") as f:
        torch.save(safe, f)
    return path


# What torch's weights-only unpickler says when a file references code (a global, a class, a
# reduce): in its one-line detail, or anywhere in its message ("unsupported GLOBAL ...").
_CODE_IN_DETAIL = re.compile(r"global|reduce|class|find_class", re.IGNORECASE)
_CODE_IN_MESSAGE = re.compile(r"global|reduce|find_class|unsupported class", re.IGNORECASE)


def unpickling_needs_code(message: str) -> bool:
    """Whether torch's weights-only unpickling error ``message`` says the file references code."""
    return bool(_CODE_IN_DETAIL.search(unpickler_detail(message)) or _CODE_IN_MESSAGE.search(message))


def unpickler_detail(message: str) -> str:
    """The informative line of torch's weights-only error message."""
    marker = "WeightsUnpickler error:"
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if marker in line:
            rest = line.split(marker, 1)[1].strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            if rest:
                return rest.split(". ")[0]
    return lines[0].split(". ")[0] if lines else "unpickling failed"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    A missing, truncated or corrupt file raises :class:`CheckpointError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint missing: expected {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if unpickling_needs_code(str(exc)):
            raise CheckpointError(f"checkpoint {path} holds Python code or objects, which are not loaded for "
                                  f"safety (only tensors and plain containers are); it was not written by "
                                  f"wsss: delete it or restore wsss's own copy") from None
        raise CheckpointError(f"checkpoint unreadable (truncated or corrupt): {path}; delete it to start "
                              f"that stage again, or restore it from a copy") from None
    except (RuntimeError, EOFError, OSError, ValueError,
            zipfile.BadZipFile, KeyError, AttributeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint unreadable (truncated or corrupt): {path} ({first}); "
                              f"delete it to start that stage again, or restore it from a copy") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict; "
                              f"delete it to start that stage again")
    return state


def find_last_checkpoint(directory: str | os.PathLike) -> Path | None:
    """``<directory>/last.pt`` if it exists, else the kept ``iter_N.pt`` with the largest N, else None."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    last = directory / LAST_NAME
    if last.is_file():
        return last
    kept = [(int(m.group(1)), p) for p in directory.iterdir()
            if p.is_file() and (m := _KEPT_RE.match(p.name))]
    return max(kept)[1] if kept else None


class CheckpointManager:
    """A run's checkpoint folder: ``last.pt`` plus a kept copy every ``keep_every`` iterations.

    Only rank 0 should call :meth:`save`; every rank may :meth:`load_last`.
    """

    def __init__(self, directory: str | os.PathLike, keep_every: int = 0) -> None:
        self.directory = Path(directory)
        self.keep_every = int(keep_every)

    @property
    def last_path(self) -> Path:
        return self.directory / LAST_NAME

    def kept_path(self, iteration: int) -> Path:
        return self.directory / f"iter_{int(iteration):07d}.pt"

    def save(self, state: dict[str, Any], iteration: int) -> Path:
        """Write ``last.pt`` (and ``iter_<iteration>.pt`` when ``iteration`` is a multiple of
        ``keep_every``). ``iteration`` is the number of completed iterations."""
        path = save_checkpoint(self.last_path, state)
        if self.keep_every > 0 and iteration > 0 and iteration % self.keep_every == 0:
            save_checkpoint(self.kept_path(iteration), state)
        return path

    def find_last(self) -> Path | None:
        return find_last_checkpoint(self.directory)

    def load_last(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The newest checkpoint's state, or None when the folder has none."""
        path = self.find_last()
        return load_checkpoint(path, map_location) if path is not None else None


# ----------------------------------------------------------------------------- random state

def capture_rng_state() -> dict[str, Any]:
    """This process's random state in a ``weights_only``-loadable form.

    Keys: ``python`` ``[version, [625 ints], gauss_next]``, ``numpy`` (the legacy global
    generator's state dict with its ``key`` as an int64 tensor), ``torch`` (uint8 tensor) and, when
    CUDA is initialised, ``cuda`` (list of uint8 tensors, one per device).
    """
    version, internal, gauss_next = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": [int(version), [int(v) for v in internal], gauss_next],
        "numpy": {
            "bit_generator": str(np_state["bit_generator"]),
            "state": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                      "pos": int(np_state["state"]["pos"])},
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore a state made by :func:`capture_rng_state` (after a save/load round trip too).

    CUDA states are restored when CUDA is available and the device count matches.
    """
    try:
        version, internal, gauss_next = state["python"]
        random.setstate((int(version), tuple(int(v) for v in internal), gauss_next))
        np_state = state["numpy"]
        key = np_state["state"]["key"]
        key = key.numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
        np.random.set_state({
            "bit_generator": np_state["bit_generator"],
            "state": {"key": key.astype(np.uint32), "pos": int(np_state["state"]["pos"])},
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        })
        torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint random state is malformed ({exc}); "
                              f"delete the checkpoint to start again") from None
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([t.cpu().to(torch.uint8) for t in cuda])


def gather_rng_states() -> list[dict[str, Any]]:
    """Every rank's :func:`capture_rng_state`, in rank order (a collective: all ranks call it).

    Store the list in the checkpoint so each rank resumes with its own state.
    """
    from wsss.engine.distributed import all_gather_object

    return all_gather_object(capture_rng_state())


def restore_rank_rng_state(states: list[dict[str, Any]] | dict[str, Any], rank: int,
                           world_size: int) -> bool:
    """Restore this rank's entry of :func:`gather_rng_states`'s list (or a single state).

    Returns False (and restores nothing) when the list was made with another world size, in which
    case the caller should re-seed (the run then continues correctly but not bit-identically).
    """
    if isinstance(states, dict):
        if world_size != 1:
            return False
        restore_rng_state(states)
        return True
    if len(states) != world_size:
        return False
    restore_rng_state(states[rank])
    return True
