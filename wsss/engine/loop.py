"""An iteration-based training loop over a DataLoader that resumes with the same data order.

Everything is derived from the iteration number ``it`` (0-based) and the per-epoch length
``L = len(loader)`` (batches per epoch on this rank):

* epoch ``e = it // L`` and position ``p = it % L`` in that epoch;
* before each epoch the sampler gets ``set_epoch(e)`` (its order is a function of the seed and
  ``e`` only, see :class:`wsss.engine.distributed.ResumableSampler`) and the loader's generator
  (which seeds the worker processes) is re-seeded from ``(seed, rank, e)``;
* a run resumed at ``start_iter`` enters epoch ``e`` at position ``p`` by dropping the first
  ``p * batch_size`` sample indices from the sampler's next pass, so the skipped images are never
  loaded, and then continues exactly like an uninterrupted run.

Save ``it + 1`` (the number of completed iterations) and the random state at the end of the loop
body of iteration ``it`` (before the next batch is loaded) and pass it back as ``start_iter``.

Exactness: the data order is always identical. Random augmentation is identical too when the
loader has no workers and the checkpoint restores the random state
(:func:`wsss.engine.checkpoint.capture_rng_state`). With worker processes each worker's generator
advances with the batches it loads; ``skip="load"`` loads and drops the skipped batches instead of
skipping their indices, which keeps augmentation identical at the cost of loading them.
"""

from __future__ import annotations

from typing import Any, Iterator

from torch.utils.data import DataLoader

from wsss.engine.seed import derive_seed, make_generator
from wsss.errors import WsssError


class IterationLoop:
    """Yield ``(it, batch)`` for ``it`` in ``start_iter .. max_iters - 1``, re-iterating the loader.

    ``sampler`` defaults to ``loader.sampler``; it should have ``set_epoch`` and, for skipping
    without loading, ``skip_next`` (as :func:`wsss.engine.distributed.make_sampler`'s does).
    ``rank`` (default: ``sampler.rank`` or 0) only enters the worker seeds.
    """

    def __init__(self, max_iters: int, loader: DataLoader, sampler: Any = None, start_iter: int = 0,
                 seed: int = 0, rank: int | None = None, skip: str = "indices",
                 reseed_loader: bool = True) -> None:
        if skip not in ("indices", "load"):
            raise ValueError(f"skip must be 'indices' or 'load', got {skip!r}")
        self.max_iters = int(max_iters)
        self.loader = loader
        self.sampler = sampler if sampler is not None else getattr(loader, "sampler", None)
        self.start_iter = int(start_iter)
        self.seed = int(seed)
        self.rank = int(rank if rank is not None else getattr(self.sampler, "rank", 0))
        self.skip = skip
        self.reseed_loader = reseed_loader
        self.iters_per_epoch = len(loader)
        if self.iters_per_epoch <= 0:
            raise WsssError("the training data gives no batch per epoch (fewer images than the batch "
                            "size with drop_last?); lower the batch size or add images")
        if not 0 <= self.start_iter:
            raise ValueError(f"start_iter must be >= 0, got {start_iter}")
        self.epoch = self.start_iter // self.iters_per_epoch
        self.iteration = self.start_iter

    def __len__(self) -> int:
        """The number of iterations this loop will run (from ``start_iter``)."""
        return max(0, self.max_iters - self.start_iter)

    def epoch_of(self, it: int) -> int:
        return it // self.iters_per_epoch

    def position_of(self, it: int) -> tuple[int, int]:
        """``(epoch, batch index within the epoch)`` of iteration ``it``."""
        return divmod(it, self.iters_per_epoch)

    def is_epoch_start(self, it: int) -> bool:
        return it % self.iters_per_epoch == 0

    def is_epoch_end(self, it: int) -> bool:
        return (it + 1) % self.iters_per_epoch == 0

    @property
    def num_epochs(self) -> int:
        """Epochs touched by ``max_iters`` iterations (the last may be partial)."""
        return -(-self.max_iters // self.iters_per_epoch)

    def _begin_epoch(self, epoch: int, position: int) -> Iterator[Any]:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        if self.reseed_loader:
            worker_seed = derive_seed(self.seed, "loader", self.rank, epoch)
            if self.loader.generator is None:
                self.loader.generator = make_generator(worker_seed)
            else:
                self.loader.generator.manual_seed(worker_seed)
        can_skip_indices = (self.skip == "indices" and hasattr(self.sampler, "skip_next")
                            and self.loader.sampler is self.sampler
                            and self.loader.batch_size is not None)
        if position and can_skip_indices:
            self.sampler.skip_next(position * self.loader.batch_size)
            return iter(self.loader)
        batches = iter(self.loader)
        for _ in range(position):  # load and drop
            next(batches)
        return batches

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        it = self.start_iter
        per_epoch = self.iters_per_epoch
        while it < self.max_iters:
            epoch, position = divmod(it, per_epoch)
            self.epoch = epoch
            batches = self._begin_epoch(epoch, position)
            for batch in batches:
                self.iteration = it
                yield it, batch
                it += 1
                if it >= self.max_iters or it % per_epoch == 0:
                    break
            del batches  # shuts down this epoch's workers
            if it < self.max_iters and it % per_epoch != 0:
                raise WsssError(f"the data loader gave {it % per_epoch} batches in epoch {epoch}, "
                                f"but len(loader) = {per_epoch}; the dataset or sampler changed size")
