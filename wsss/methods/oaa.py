"""Online accumulated attention (OAA, used by NSROM; METHODS.md B.2), kept in memory.

The official code rewrites one PNG per (image, class) at every iteration and, under
DataParallel, writes maps under the wrong image ids. Here the maps live in memory keyed by
``(image_id, class_index)`` (class_index 0-based, as the network's CAM channels), the ids
travel with the samples, and ranks are merged with :meth:`AttentionAccumulator.all_gather_merge`.

Stored values are uint8 0..255 at feature resolution. Scaling: a = ReLU(CAM_c) /
(max + 1e-8) · 255 in float32, rounded to nearest (half to even) and clipped to 0..255 — the
conversion OpenCV applies when the official code writes its float map to a uint8 PNG.
Because rounding is monotonic, max(stored, round(a)) equals the official round(max(stored, a)).
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist

from wsss.errors import DataError

STATE_VERSION = 1


def scale_to_u8(cams: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(..., h, w) raw CAMs -> uint8 maps: ReLU, divide by (own max + eps), ×255, round, clip."""
    positive = torch.relu(cams.detach().float())
    peak = positive.amax(dim=(-2, -1), keepdim=True)
    scaled = positive / (peak + eps) * 255.0
    return torch.round(scaled).clamp_(0, 255).to(torch.uint8)


class AttentionAccumulator:
    """Max-accumulated attention maps per (image id, 0-based class), uint8 CPU tensors.

    DDP use: every rank calls :meth:`update` on its own samples, then :meth:`all_gather_merge`
    at the end of **every** epoch (collective call), so that all ranks start the next epoch
    with the same store; the "does a map exist yet" test of the last epoch then sees the maps
    stored by every rank, and the result equals a one-process run on the same data.
    (With a DistributedSampler that pads by repeating samples, a repeated image may be
    updated twice in one epoch; its merged map is the max of both updates.)
    """

    def __init__(self, skip_below: float = 0.1):
        self.skip_below = skip_below
        self._maps: dict[tuple[str, int], torch.Tensor] = {}
        self._changed: set[tuple[str, int]] = set()

    # ----------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self._maps)

    def __contains__(self, key: tuple[str, int]) -> bool:
        return (str(key[0]), int(key[1])) in self._maps

    def get(self, image_id: str, cls: int) -> np.ndarray | None:
        """The (h, w) uint8 map of ``image_id`` and 0-based class ``cls``, or None."""
        found = self._maps.get((str(image_id), int(cls)))
        return None if found is None else found.numpy().copy()

    def items(self) -> Iterator[tuple[str, int, np.ndarray]]:
        """(image_id, 0-based class, (h, w) uint8 map) sorted by id then class, for export."""
        for image_id, cls in sorted(self._maps):
            yield image_id, cls, self._maps[(image_id, cls)].numpy().copy()

    def image_ids(self) -> list[str]:
        return sorted({image_id for image_id, _ in self._maps})

    # ----------------------------------------------------------------- update
    def _store(self, key: tuple[str, int], new_map: torch.Tensor) -> None:
        old = self._maps.get(key)
        if old is None:
            self._maps[key] = new_map.clone()
        else:
            if old.shape != new_map.shape:
                raise DataError(f"attention map of image {key[0]!r} class {key[1]} changed size from "
                                f"{tuple(old.shape)} to {tuple(new_map.shape)}: OAA needs a fixed input size")
            self._maps[key] = torch.maximum(old, new_map)
        self._changed.add(key)

    def update(self, ids: Sequence[str], cams: torch.Tensor, logits: torch.Tensor,
               labels: torch.Tensor, epoch: int, num_epochs: int) -> int:
        """Accumulate one batch (METHODS B.2). Returns the number of maps written.

        ids:    B image ids (str). cams: (B, C, h, w) raw CAMs. logits: (B, C) image logits.
        labels: (B, C) multi-hot. epoch: 0-based current epoch; num_epochs: total epochs.
        Epoch 0 is a no-op. Later, for each labelled class: in the last epoch, a map is stored
        if none exists yet (whatever its score); otherwise classes with σ(logit) < skip_below
        are skipped, and the rest store max(stored, a) (first time: a).
        """
        if epoch < 1:
            return 0
        if cams.dim() != 4 or logits.shape != cams.shape[:2] or labels.shape != cams.shape[:2]:
            raise DataError(f"OAA update needs cams (B, C, h, w), logits and labels (B, C); got "
                            f"{tuple(cams.shape)}, {tuple(logits.shape)}, {tuple(labels.shape)}")
        if len(ids) != cams.shape[0]:
            raise DataError(f"OAA update got {len(ids)} ids for a batch of {cams.shape[0]}")
        pairs = torch.nonzero(labels.detach() > 0, as_tuple=False)
        if pairs.numel() == 0:
            return 0
        batch_index, class_index = pairs[:, 0], pairs[:, 1]
        scaled = scale_to_u8(cams[batch_index, class_index]).cpu()
        probs = torch.sigmoid(logits.detach().float())[batch_index, class_index].cpu()
        is_last = epoch == num_epochs - 1
        written = 0
        for row, (b, c) in enumerate(pairs.cpu().tolist()):
            key = (str(ids[b]), int(c))
            if is_last and key not in self._maps:
                self._store(key, scaled[row])
                written += 1
                continue
            if float(probs[row]) < self.skip_below:
                continue
            self._store(key, scaled[row])
            written += 1
        return written

    # ------------------------------------------------------------------ merge
    def merge_entries(self, entries: Iterable[tuple[str, int, np.ndarray | torch.Tensor]]) -> None:
        """Merge (id, class, uint8 map) entries by element-wise max."""
        for image_id, cls, new_map in entries:
            tensor = torch.as_tensor(np.asarray(new_map, dtype=np.uint8))
            self._store((str(image_id), int(cls)), tensor)

    def merge_from(self, other: "AttentionAccumulator") -> None:
        """Element-wise max merge of another accumulator into this one."""
        self.merge_entries((i, c, m) for (i, c), m in other._maps.items())

    def all_gather_merge(self, group=None, changed_only: bool = True) -> None:
        """Collective: gather maps from all ranks and merge them by max, so every rank holds the
        same store. ``changed_only`` sends only maps written since the last merge (valid when all
        ranks held the same store then: same checkpoint, previous merge). No-op without an
        initialised process group or with one process. Uses ``all_gather_object`` (for NCCL the
        current CUDA device must be set)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
            self._changed.clear()
            return
        keys = sorted(self._changed) if changed_only else sorted(self._maps)
        payload = [(i, c, self._maps[(i, c)].numpy()) for i, c in keys]
        gathered: list = [None] * dist.get_world_size(group)
        dist.all_gather_object(gathered, payload, group=group)
        for entries in gathered:
            self.merge_entries(entries)
        self._changed.clear()

    # ------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict:
        """Plain tensors, ints and strings (loadable with ``torch.load(weights_only=True)``):
        ids (list of str), classes (N,) int64, shapes (N, 2) int64, data: all maps flattened
        and concatenated, uint8."""
        keys = sorted(self._maps)
        maps = [self._maps[key] for key in keys]
        return {
            "version": STATE_VERSION,
            "skip_below": float(self.skip_below),
            "ids": [image_id for image_id, _ in keys],
            "classes": torch.tensor([cls for _, cls in keys], dtype=torch.int64),
            "shapes": torch.tensor([list(m.shape) for m in maps], dtype=torch.int64).reshape(-1, 2),
            "data": torch.cat([m.reshape(-1) for m in maps]) if maps else torch.zeros(0, dtype=torch.uint8),
        }

    def load_state_dict(self, state: dict) -> None:
        """Replace the store with one saved by :meth:`state_dict`."""
        if state.get("version") != STATE_VERSION:
            raise DataError(f"attention store version {state.get('version')!r} is not supported "
                            f"(expected {STATE_VERSION}); re-run the classifier training")
        shapes = state["shapes"].tolist()
        sizes = [h * w for h, w in shapes]
        data = state["data"]
        if len(state["ids"]) != len(shapes) or sum(sizes) != data.numel():
            raise DataError("attention store in the checkpoint is inconsistent (ids, shapes and data "
                            "sizes differ); the checkpoint file is damaged")
        self.skip_below = float(state.get("skip_below", self.skip_below))
        self._maps = {}
        self._changed = set()
        if not shapes:
            return
        for image_id, cls, (h, w), chunk in zip(state["ids"], state["classes"].tolist(), shapes,
                                                torch.split(data, sizes)):
            self._maps[(str(image_id), int(cls))] = chunk.reshape(h, w).clone()
