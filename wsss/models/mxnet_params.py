"""Read MXNet ``.params`` files (NDArray lists) without MXNet, and convert ResNet-38 names.

File layout (little-endian, as written by MXNet's ``NDArray::Save(stream, data, names)``):

- ``uint64`` list magic ``0x112``, ``uint64`` reserved;
- ``uint64`` count, then that many NDArrays, each:

  - ``uint32`` magic: ``0xF993FAC9`` (V2), ``0xF993FACA`` (V3, numpy shape semantics) or
    ``0xF993FAC8`` (V1); any other value is a *legacy* array whose magic is its ``ndim``;
  - V2/V3: ``int32`` storage type (0 dense; 1 row-sparse and 2 CSR are refused here);
  - shape: V1/V2/V3 ``uint32 ndim`` + ``ndim`` x ``int64``; legacy: the ``ndim`` above + ``ndim`` x
    ``uint32``. An empty shape (``ndim`` 0; V3: ``-1``) is a "none" array and nothing follows;
  - context: ``int32`` dev_type, ``int32`` dev_id;
  - ``int32`` type flag (0 float32, 1 float64, 2 float16, 3 uint8, 4 int32, 5 int8, 6 int64);
  - raw data, C order;

- ``uint64`` count, then that many names, each ``uint64`` length + bytes (``arg:conv1a_weight``,
  ``aux:bn7_moving_mean``, ...).
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from wsss.errors import DataError

LIST_MAGIC = 0x112
NDARRAY_V1_MAGIC = 0xF993FAC8
NDARRAY_V2_MAGIC = 0xF993FAC9
NDARRAY_V3_MAGIC = 0xF993FACA

DTYPES = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.uint8, 4: np.int32, 5: np.int8, 6: np.int64}


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise DataError(f"{self.path}: truncated or not an MXNet .params file "
                            f"(wanted {n} bytes at offset {self.pos}, file has {len(self.data)})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size))

    def u32(self) -> int:
        return self.unpack("<I")[0]

    def i32(self) -> int:
        return self.unpack("<i")[0]

    def u64(self) -> int:
        return self.unpack("<Q")[0]


def _read_ndarray(r: _Reader, index: int) -> np.ndarray | None:
    magic = r.u32()
    if magic in (NDARRAY_V2_MAGIC, NDARRAY_V3_MAGIC):
        stype = r.i32()
        if stype != 0:
            raise DataError(f"{r.path}: array #{index} has sparse storage type {stype}; "
                            f"only dense arrays are supported")
        ndim = r.i32()
        if ndim > 32:
            raise DataError(f"{r.path}: array #{index} claims {ndim} dimensions; not a valid .params file")
        if ndim <= 0 and not (magic == NDARRAY_V3_MAGIC and ndim == 0):
            return None  # "none" array: nothing else stored
        shape = r.unpack(f"<{ndim}q") if ndim else ()
    elif magic == NDARRAY_V1_MAGIC:
        ndim = r.u32()
        if ndim == 0:
            return None
        if ndim > 32:
            raise DataError(f"{r.path}: array #{index} claims {ndim} dimensions; not a valid .params file")
        shape = r.unpack(f"<{ndim}q")
    else:  # legacy: the magic is ndim, dims are uint32
        ndim = magic
        if ndim > 32:
            raise DataError(f"{r.path}: array #{index} starts with an unknown magic 0x{magic:08X}; "
                            f"not an MXNet .params file")
        if ndim == 0:
            return None
        shape = r.unpack(f"<{ndim}I")
    r.i32(), r.i32()  # context: dev_type, dev_id (always loaded to CPU here)
    type_flag = r.i32()
    if type_flag not in DTYPES:
        raise DataError(f"{r.path}: array #{index} has unsupported type flag {type_flag}")
    dtype = np.dtype(DTYPES[type_flag]).newbyteorder("<")
    if any(d < 0 for d in shape):
        raise DataError(f"{r.path}: array #{index} has an invalid shape {tuple(shape)}; not a valid .params file")
    count = 1
    for d in shape:   # Python integers: a product too large for the file cannot overflow unnoticed
        count *= int(d)
    if count * dtype.itemsize > len(r.data) - r.pos:
        raise DataError(f"{r.path}: array #{index} of shape {tuple(shape)} needs {count * dtype.itemsize} bytes "
                        f"but only {len(r.data) - r.pos} remain: truncated or not a .params file")
    raw = r.take(count * dtype.itemsize)
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def read_mxnet_params(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Parse an MXNet ``.params`` file. Returns ``{name: array}`` with names as stored
    (e.g. ``arg:conv1a_weight``); arrays keep their stored dtype."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"MXNet weight file not found: {path}")
    r = _Reader(path.read_bytes(), path)
    if len(r.data) < 16 or r.u64() != LIST_MAGIC:
        raise DataError(f"{path}: not an MXNet NDArray list file (bad magic; expected 0x112)")
    r.u64()  # reserved
    count = r.u64()
    if count > len(r.data):
        raise DataError(f"{path}: corrupt NDArray count {count}")
    arrays = [_read_ndarray(r, i) for i in range(count)]
    n_names = r.u64()
    if n_names not in (0, count):
        raise DataError(f"{path}: {count} arrays but {n_names} names")
    try:
        names = [r.take(r.u64()).decode("utf-8") for _ in range(n_names)] or [str(i) for i in range(count)]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: a parameter name is not UTF-8 text ({exc.reason}); not a valid .params file") from None
    return {name: arr for name, arr in zip(names, arrays) if arr is not None}


# --- ResNet-38 (PSA "resnet38d") names -----------------------------------------------------------

_BN_SUFFIX = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
              "moving_var": "running_var"}
_BLOCK_RE = re.compile(r"^(res|bn)(\d)([a-z])(\d*)_(branch\w+?)_(weight|gamma|beta|moving_mean|moving_var)$")
_BN7_RE = re.compile(r"^bn7_(gamma|beta|moving_mean|moving_var)$")


def resnet38_torch_name(mx_name: str) -> str:
    """Torch name of one MXNet ResNet-38 parameter.

    ``arg:res2a_branch1_weight`` -> ``b2.conv_branch1.weight``;
    ``aux:bn4b3_branch2b1_moving_var`` -> ``b4_3.bn_branch2b1.running_var``;
    ``arg:bn7_gamma`` -> ``bn7.weight``; ``arg:conv1a_weight`` -> ``conv1a.weight``;
    ``arg:linear1000_weight`` -> ``linear1000.weight`` (the ImageNet classifier, which the backbone
    ignores). Unknown names raise :class:`DataError`.
    """
    name = re.sub(r"^(arg|aux):", "", mx_name)
    if name == "conv1a_weight":
        return "conv1a.weight"
    if name in ("linear1000_weight", "linear1000_bias"):
        return "linear1000." + name.rsplit("_", 1)[1]
    m = _BN7_RE.match(name)
    if m:
        return f"bn7.{_BN_SUFFIX[m.group(1)]}"
    m = _BLOCK_RE.match(name)
    if not m:
        raise DataError(f"unknown ResNet-38 MXNet parameter name '{mx_name}'")
    kind, stage, letter, index, branch, suffix = m.groups()
    if (letter == "a") == bool(index) or letter not in "ab":
        raise DataError(f"unexpected ResNet-38 block name in '{mx_name}' (expected res<N>a or res<N>b<k>)")
    block = f"b{stage}" if letter == "a" else f"b{stage}_{index}"
    if kind == "res":
        if suffix != "weight":
            raise DataError(f"unexpected ResNet-38 conv parameter '{mx_name}'")
        return f"{block}.conv_{branch}.weight"
    return f"{block}.bn_{branch}.{_BN_SUFFIX[suffix]}"


def convert_resnet38_mxnet(arrays: Mapping[str, np.ndarray | torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a parsed ResNet-38 MXNet file (arrays or tensors) to the torch names of
    :class:`wsss.models.backbones.resnet38.ResNet38`; float arrays become float32 tensors."""
    out: dict[str, torch.Tensor] = {}
    for mx_name, arr in arrays.items():
        torch_name = resnet38_torch_name(mx_name)
        tensor = torch.from_numpy(np.ascontiguousarray(arr)) if isinstance(arr, np.ndarray) else arr
        out[torch_name] = tensor.float() if tensor.is_floating_point() else tensor
    return out
