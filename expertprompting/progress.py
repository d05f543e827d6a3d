"""A progress bar for runs over many items (tqdm, notebook-aware), or nothing at all."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runner import RunStats

__all__ = ["Progress"]


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
