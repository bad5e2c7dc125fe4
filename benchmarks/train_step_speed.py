"""Time one EfficientNet-Lite0 EPS training step (forward + backward, batch 8, 256 px, output
stride 16) in four layouts: fp32, bf16 autocast, channels-last, channels-last + bf16.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_step_speed.py [--threads 1] [--repeat 4]

Prints the best time of the repeats after the first (warm-up) for each layout, in seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsss.models import build_classifier  # noqa: E402


def step_seconds(model: torch.nn.Module, x: torch.Tensor, channels_last: bool, bf16: bool, repeat: int) -> float:
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    x = x.contiguous(memory_format=layout)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            _, maps = model(x)
            loss = maps.float().square().mean()
        loss.backward()
        times.append(time.perf_counter() - start)
    return min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build_classifier("efficientnet_lite0", "eps", 20, output_stride=16, pretrained="imagenet",
                             freeze_bn=True, frozen_stages=2)
    x = torch.randn(8, 3, 256, 256)
    for channels_last in (False, True):
        for bf16 in (False, True):
            print(f"channels_last={channels_last} bf16={bf16}: "
                  f"{step_seconds(model, x, channels_last, bf16, args.repeat):.3f} s", flush=True)


if __name__ == "__main__":
    main()
