"""File I/O shared by every stage: atomic writes, palette label PNGs, images, saliency, npz maps.

Every writer goes through :func:`atomic_write`: data is written to a temporary file in the target
folder and renamed over the target, so an interrupted run never leaves a truncated file that looks
complete.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from wsss.errors import DataError

IGNORE = 255


def paths_overlap(a: Path, b: Path) -> bool:
    """Whether two (resolved) paths are the same or one lies inside the other."""
    return a == b or a in b.parents or b in a.parents


TEMP_SUFFIX = ".tmp"
#: Temp files are named ``.<target>.<pid>~<random>.tmp``: the writer's PID tells whether it is alive.
TEMP_PID_END = "~"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(folder: str | os.PathLike) -> int:
    """Remove the temp files that :func:`atomic_write` left in ``folder`` when its process was
    killed (its PID no longer runs). Temp files of live writers, e.g. other ranks, are kept.
    Returns how many were removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for tmp in folder.glob(f".*{TEMP_PID_END}*{TEMP_SUFFIX}"):
        pid_text = tmp.name[:tmp.name.rindex(TEMP_PID_END)].rsplit(".", 1)[-1]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _alive(int(pid_text)):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed += 1
    return removed


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[io.IOBase]:
    """Open a temporary file next to ``path``; on success rename it to ``path`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}{TEMP_PID_END}", suffix=TEMP_SUFFIX,
                               dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def _open_image(path: Path, what: str) -> Image.Image:
    if not path.is_file():
        raise DataError(f"{what} missing: expected {path}")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{what} unreadable or truncated: {path} ({exc})") from None
    return img


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(H, W)`` of an image file from its header (no decoding)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image missing: expected {path}")
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"image unreadable: {path} ({exc})") from None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an RGB image. Returns ``(H, W, 3) uint8``."""
    img = _open_image(Path(path), "image")
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


#: Full scale of a saliency file by its Pillow mode (values are rescaled to 0..255).
_SALIENCY_FULL_SCALE = {"1": 1, "L": 255, "I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535}


def saliency_scale(img: Image.Image, arr: np.ndarray) -> float:
    """The value that means "fully salient" in a saliency file: 1 for 1-bit, 255 for 8-bit and
    65535 for 16-bit maps; 32-bit integer maps are 16-bit when a value exceeds 255, float maps are
    on [0, 1] when no value exceeds 1."""
    if img.mode in _SALIENCY_FULL_SCALE:
        return float(_SALIENCY_FULL_SCALE[img.mode])
    if img.mode == "I":
        return 65535.0 if arr.size and arr.max() > 255 else 255.0
    if img.mode == "F":
        return 1.0 if arr.size and arr.max() <= 1.0 else 255.0
    return 255.0


def read_saliency(path: str | os.PathLike) -> np.ndarray:
    """Read a grayscale saliency map of any bit depth. Returns ``(H, W) uint8`` in 0..255.

    8-bit maps are returned as stored; 1-bit, 16-bit, 32-bit and float maps are rescaled from
    their full scale (:func:`saliency_scale`) to 0..255 (rounded), never clipped. Colour and
    palette images are converted to luminance.
    """
    img = _open_image(Path(path), "saliency map")
    if img.mode not in ("L", "I", "F", "1") and not img.mode.startswith("I;16"):
        img = img.convert("L")
    arr = np.asarray(img)
    if img.mode == "L":
        return arr.astype(np.uint8, copy=True)
    scale = saliency_scale(img, arr)
    values = np.clip(arr.astype(np.float64) * (255.0 / scale), 0, 255)
    return np.rint(values).astype(np.uint8)


def read_label(path: str | os.PathLike, what: str = "label map") -> np.ndarray:
    """Read a label map stored as palette/grayscale PNG. Returns ``(H, W) uint8`` of class indices.

    Palette PNGs are read as their indices (not colours); RGB label images are refused because
    their colours are ambiguous.
    """
    img = _open_image(Path(path), what)
    if img.mode in ("RGB", "RGBA"):
        raise DataError(f"{what} {path} is an RGB image; expected a palette or grayscale PNG of class indices")
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise DataError(f"{what} {path} has shape {arr.shape}; expected a single-channel map")
    if arr.dtype != np.uint8:
        if arr.min() < 0 or arr.max() > 255:
            raise DataError(f"{what} {path} has values outside 0..255")
        arr = arr.astype(np.uint8)
    return arr.copy()


def write_label(path: str | os.PathLike, label: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Write ``(H, W)`` integer labels (0..C, 255 = ignore) as a palette PNG, atomically.

    ``palette`` is ``(256, 3) uint8``; without one a grayscale PNG is written.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be 2-D, got shape {label.shape}")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError("label values must be in 0..255")
    img = Image.fromarray(label.astype(np.uint8), mode="L")
    if palette is not None:
        img = img.convert("P")
        img.putpalette(np.asarray(palette, dtype=np.uint8).reshape(-1).tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())


def write_gray(path: str | os.PathLike, arr: np.ndarray) -> None:
    """Write a ``(H, W) uint8`` map (e.g. a saliency map) as grayscale PNG, atomically."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(arr, dtype=np.uint8), mode="L").save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())


def write_image(path: str | os.PathLike, rgb: np.ndarray, quality: int = 95) -> None:
    """Write an ``(H, W, 3) uint8`` RGB image (JPEG or PNG by suffix), atomically."""
    path = Path(path)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    buf = io.BytesIO()
    kw = {"quality": quality} if fmt == "JPEG" else {}
    Image.fromarray(np.asarray(rgb, dtype=np.uint8), mode="RGB").save(buf, format=fmt, **kw)
    write_bytes_atomic(path, buf.getvalue())


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Save arrays as a compressed ``.npz``, atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes_atomic(path, buf.getvalue())


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` file into a dict (no pickles)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"map file missing: expected {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"map file unreadable or truncated: {path} ({type(exc).__name__}: {exc}); "
                        f"remove it and run the stage that makes it again") from None
