"""A progress bar for runs over many items (tqdm, notebook-aware), or nothing at all."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .._method.results import ExpertAnswer, Usage
from .items import FailedItem

__all__ = ["Progress", "RunStats"]


@dataclass
class RunStats:
    """Running totals of one run, for progress bars and summaries."""

    done: int = 0
    failed: int = 0
    cached: int = 0
    truncated: int = 0  # answers cut at their max_tokens (finish_reason "length")
    usage: Usage = field(default_factory=Usage)
    started: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def add(self, result: ExpertAnswer | FailedItem) -> None:
        if isinstance(result, FailedItem):
            self.failed += 1
            return
        self.done += 1
        self.cached += int(result.identity_cached)
        self.truncated += int(result.truncated)
        self.usage = self.usage + result.usage


class Progress:
    """Shows done, failed, tokens and requests per second; silent when ``enabled`` is false."""

    def __init__(self, total: int | None, *, enabled: bool = True, initial: int = 0) -> None:
        self._bar: Any = None
        self._shown = 0
        if enabled:
            from tqdm.auto import tqdm  # notebook widget in Jupyter, text bar elsewhere

            self._bar = tqdm(total=total, initial=initial, unit="item", dynamic_ncols=True)

    def update(self, stats: RunStats) -> None:
        if self._bar is None:
            return
        finished = stats.done + stats.failed
        self._bar.update(finished - self._shown)
        self._shown = finished
        seconds = max(stats.seconds, 1e-9)
        self._bar.set_postfix(
            failed=stats.failed,
            tokens=stats.usage.total_tokens,
            req_s=f"{stats.usage.requests / seconds:.1f}",
            refresh=False,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
