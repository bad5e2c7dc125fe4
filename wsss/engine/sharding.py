"""Splitting offline stages (CAMs, labels, CRF, prediction) over ranks and worker processes.

A stage does::

    todo = pending_ids(shard_ids(ids, ctx.rank, ctx.world_size), out_dir, ".npz", overwrite)
    for _ in process_imap(work_on_one_image, todo, workers=cfg.workers): ...

Shard first, then drop finished images: each rank's share depends only on the id list, never on
files that other ranks are writing at the same moment.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from wsss.engine.logger import Progress

T = TypeVar("T")
R = TypeVar("R")


def shard_ids(ids: Sequence[T], rank: int, world_size: int) -> list[T]:
    """The ids of ``rank``: positions ``rank, rank + world_size, ...`` of ``ids``.

    The shards of ranks ``0..world_size-1`` are disjoint, cover ``ids``, and differ in size by at
    most one.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    return list(ids)[rank::world_size]


def output_paths(image_id: str, out_dir: str | os.PathLike, suffix: str | Sequence[str]) -> list[Path]:
    """The output files of one image: ``out_dir/<id><suffix>`` for each suffix."""
    suffixes = [suffix] if isinstance(suffix, str) else list(suffix)
    return [Path(out_dir) / f"{image_id}{s}" for s in suffixes]


def pending_ids(ids: Iterable[str], out_dir: str | os.PathLike, suffix: str | Sequence[str],
                overwrite: bool = False) -> list[str]:
    """The ids (in their order) whose outputs ``out_dir/<id><suffix>`` do not all exist yet.

    ``suffix`` may be several suffixes (``(".png", ".npz")``): an image is done only when every one
    exists. Outputs are written atomically, so an existing file is a complete one. With
    ``overwrite`` every id is pending.
    """
    ids = list(ids)
    if overwrite:
        return ids
    return [i for i in ids if not all(p.is_file() for p in output_paths(i, out_dir, suffix))]


def _default_start_method() -> str | None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return "spawn"  # a forked child cannot use the parent's CUDA context
    return None  # the platform's default


def _init_worker(threads: int, initializer: Callable[..., Any] | None, initargs: tuple) -> None:
    torch = sys.modules.get("torch")
    if torch is not None and threads > 0:
        torch.set_num_threads(threads)
    if initializer is not None:
        initializer(*initargs)


def process_imap(fn: Callable[[T], R], items: Iterable[T], workers: int = 0, chunksize: int = 1,
                 ordered: bool = True, desc: str = "", progress: bool = True,
                 total: int | None = None, start_method: str | None = None,
                 threads_per_worker: int = 1, initializer: Callable[..., Any] | None = None,
                 initargs: tuple = ()) -> Iterator[R]:
    """Yield ``fn(item)`` for every item, computed by a pool of ``workers`` processes.

    ``workers`` 0 or 1 runs in this process (no pickling; easiest to debug). With a pool, ``fn``
    and the items must be picklable (``fn`` a module-level function), which also makes the call
    safe under the ``spawn`` start method. Results come in the items' order, or as they finish with
    ``ordered=False``. ``threads_per_worker`` limits torch's threads in each worker (0 = leave).
    ``initializer(*initargs)`` runs once per worker (also in-process). A worker's exception is
    raised here and stops the pool.
    """
    items = list(items) if total is None and not hasattr(items, "__len__") else items
    if total is None:
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc=desc, enabled=progress, every=max(1, total // 20), unit="img") as bar:
        if workers <= 1:
            if initializer is not None:
                initializer(*initargs)
            for item in items:
                result = fn(item)
                bar.update(1)
                yield result
            return
        method = start_method or _default_start_method()
        context = mp.get_context(method)
        pool = context.Pool(workers, initializer=_init_worker,
                            initargs=(threads_per_worker, initializer, initargs))
        try:
            mapper = pool.imap if ordered else pool.imap_unordered
            for result in mapper(fn, items, chunksize=max(1, chunksize)):
                bar.update(1)
                yield result
        except BaseException:  # an error, Ctrl-C, or the consumer stopped early
            pool.terminate()
            raise
        else:
            pool.close()
        finally:
            pool.join()


def process_map(fn: Callable[[T], R], items: Iterable[T], workers: int = 0, chunksize: int = 1,
                desc: str = "", progress: bool = True, start_method: str | None = None,
                threads_per_worker: int = 1, initializer: Callable[..., Any] | None = None,
                initargs: tuple = ()) -> list[R]:
    """``[fn(item) for item in items]`` over a process pool (see :func:`process_imap`), in order."""
    return list(process_imap(fn, items, workers=workers, chunksize=chunksize, ordered=True,
                             desc=desc, progress=progress, start_method=start_method,
                             threads_per_worker=threads_per_worker, initializer=initializer,
                             initargs=initargs))
