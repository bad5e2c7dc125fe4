"""Rank-0 logging: a text log in the run directory and the console, TensorBoard scalars, progress.

Only the main rank writes anything; on other ranks every method is a no-op, so trainers call them
unconditionally. Progress is shown as a tqdm bar with ETA on a terminal; when the output is not a
terminal (a log file, a CI job) it becomes one line every ``every`` iterations with the rate and
the ETA. ``WSSS_PROGRESS=bar|lines|off`` overrides the choice.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")

_PROGRESS_MODES = ("auto", "bar", "lines", "off")
_logger_ids = itertools.count()


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (``D days H:MM:SS`` past a day); ``?`` for an unknown duration."""
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days} days {text}" if days else text


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def resolve_progress_mode(mode: str = "auto", enabled: bool = True,
                          stream: TextIO | None = None) -> str:
    """``bar``, ``lines`` or ``off`` for ``mode`` (``auto`` = bar on a TTY, lines otherwise).

    The environment variable ``WSSS_PROGRESS`` takes precedence over ``mode``; ``enabled=False``
    (non-main ranks) always gives ``off``.
    """
    if not enabled:
        return "off"
    mode = os.environ.get("WSSS_PROGRESS", "") or mode
    if mode not in _PROGRESS_MODES:
        raise ValueError(f"progress mode {mode!r} unknown; use one of {', '.join(_PROGRESS_MODES)}")
    if mode != "auto":
        return mode
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    return "bar" if isatty is not None and isatty() else "lines"


class Progress:
    """Progress over ``total`` steps starting at ``initial`` (e.g. a resumed iteration).

    ``update(n, **values)`` advances and shows values (loss, lr). In ``lines`` mode a line
    ``desc 1200/20000 (6.0%) | 3.10 it/s | ETA 1:30:20 | loss=0.412`` is written through ``write``
    (default: the stream) every ``every`` steps and at the end; the rate counts only the steps done
    by this process, so a resumed run does not claim the earlier ones.
    """

    def __init__(self, total: int, initial: int = 0, desc: str = "", mode: str = "auto",
                 enabled: bool = True, every: int = 50, stream: TextIO | None = None,
                 write: Any = None, unit: str = "it") -> None:
        self.total = int(total or 0)
        self.n = int(initial)
        self.initial = int(initial)
        self.desc = desc
        self.every = max(1, int(every))
        self.unit = unit
        self.stream = stream or sys.stderr
        self.mode = resolve_progress_mode(mode, enabled, self.stream)
        self._write = write or (lambda line: print(line, file=self.stream, flush=True))
        self._values: dict[str, Any] = {}
        self._start = time.monotonic()
        self._last_line_at = self.n
        self._bar: tqdm | None = None
        if self.mode == "bar":
            self._bar = tqdm(total=self.total or None, initial=self.initial, desc=desc, file=self.stream,
                             dynamic_ncols=True, unit=unit, smoothing=0.05)

    def rate(self) -> float:
        """Steps per second done by this process so far (0 before the first step)."""
        elapsed = time.monotonic() - self._start
        done = self.n - self.initial
        return done / elapsed if elapsed > 0 and done > 0 else 0.0

    def eta_seconds(self) -> float:
        """Seconds left at the current rate (NaN when unknown)."""
        rate = self.rate()
        return (self.total - self.n) / rate if rate > 0 and self.total else float("nan")

    def line(self) -> str:
        """The ``lines``-mode text for the current state."""
        if self.total:
            count = f"{self.n}/{self.total} ({100.0 * self.n / self.total:.1f}%)"
        else:
            count = str(self.n)
        parts = [f"{self.desc} {count}".strip(),
                 f"{self.rate():.2f} {self.unit}/s", f"ETA {format_duration(self.eta_seconds())}"]
        if self._values:
            parts.append(" ".join(f"{k}={_format_value(v)}" for k, v in self._values.items()))
        return " | ".join(parts)

    def update(self, n: int = 1, **values: Any) -> None:
        self.n += n
        if values:
            self._values.update(values)
        if self.mode == "bar" and self._bar is not None:
            if values:
                self._bar.set_postfix({k: _format_value(v) for k, v in self._values.items()},
                                      refresh=False)
            self._bar.update(n)
        elif self.mode == "lines":
            finished = bool(self.total) and self.n >= self.total
            if finished or self.n - self._last_line_at >= self.every:
                self._last_line_at = self.n
                self._write(self.line())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def track(iterable: Iterable[T], total: int | None = None, desc: str = "", enabled: bool = True,
          mode: str = "auto", every: int = 100, unit: str = "it") -> Iterator[T]:
    """Iterate ``iterable`` with a :class:`Progress` (for offline stages over images)."""
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = 0  # unknown: the bar shows a count without ETA
    with Progress(total, desc=desc, enabled=enabled, mode=mode, every=every, unit=unit) as bar:
        for item in iterable:
            yield item
            bar.update(1)


class _TqdmSafeHandler(logging.StreamHandler):
    """Console handler that prints through ``tqdm.write`` so an active bar is not broken."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # pragma: no cover - mirrors logging's own policy
            self.handleError(record)


class RunLogger:
    """Text log + console + TensorBoard for one stage of a run, active on the main rank only.

    ``run_dir/<name>.log`` receives every message; the console receives them too (``console``).
    TensorBoard event files go to ``run_dir/tensorboard/<name>`` and the writer is created at the
    first scalar. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, run_dir: str | os.PathLike, name: str = "train", is_main: bool = True,
                 console: bool = True, tensorboard: bool = True, progress_mode: str = "auto",
                 console_stream: TextIO | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.name = name
        self.is_main = is_main
        self.tensorboard = tensorboard
        self.progress_mode = progress_mode
        self._writer: Any = None
        self._stream = console_stream or sys.stderr
        self._logger = logging.getLogger(f"wsss.run.{name}.{next(_logger_ids)}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        if not is_main:
            self._logger.addHandler(logging.NullHandler())
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(self.log_path, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                                    "%Y-%m-%d %H:%M:%S"))
        self._logger.addHandler(file_handler)
        if console:
            console_handler = _TqdmSafeHandler(self._stream)
            console_handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S"))
            self._logger.addHandler(console_handler)

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    @property
    def tensorboard_dir(self) -> Path:
        return self.run_dir / "tensorboard" / self.name

    def info(self, msg: str, *args: Any) -> None:
        self._logger.info(msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        self._logger.warning(msg, *args)

    def _tb(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.tensorboard_dir))
        return self._writer

    def scalar(self, tag: str, value: float, step: int) -> None:
        """One TensorBoard scalar (``loss/cls``, ``lr``...) at ``step``."""
        if self.is_main and self.tensorboard:
            self._tb().add_scalar(tag, float(value), int(step))

    def scalars(self, values: Mapping[str, float], step: int, prefix: str = "") -> None:
        """Several scalars at ``step``; tags are ``prefix + key``."""
        for key, value in values.items():
            self.scalar(prefix + key, value, step)

    def progress(self, total: int, initial: int = 0, desc: str = "", every: int = 50,
                 unit: str = "it") -> Progress:
        """A :class:`Progress` that is off on non-main ranks; in ``lines`` mode its lines go to the
        log (file and console)."""
        return Progress(total, initial=initial, desc=desc, mode=self.progress_mode,
                        enabled=self.is_main, every=every, stream=self._stream,
                        write=self.info, unit=unit)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()
        for handler in self._logger.handlers:
            handler.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for handler in list(self._logger.handlers):
            handler.close()
            self._logger.removeHandler(handler)

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
