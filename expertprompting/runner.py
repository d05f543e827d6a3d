"""Many instructions at once: a bounded pool of workers over one shared driver.

Each of ``concurrency`` workers takes the next item, runs the whole method for it (identity,
then answer) and takes another, so ``concurrency`` requests are in flight at all times: an
item's answer request starts the moment its identity returns while other workers' identity
requests proceed. Items are pulled from the input lazily, so memory does not grow with the
dataset. A failed item becomes a :class:`~expertprompting.dataset.FailedItem`; it never stops
the others, unless more than ``max_errors`` fail.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .async_driver import AsyncDriver
from .core import Planner
from .dataset import DatasetItem, FailedItem
from .errors import ConfigurationError, ExpertPromptingError
from .progress import Progress
from .results import ExpertAnswer, Strategy, Usage
from .strategies import strategy_flow

__all__ = ["ItemResult", "RunStats", "TooManyErrorsError", "run_items", "run_sync"]

T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end from sync code, also where an event loop already runs.

    In a notebook (a loop is running in this thread) it runs in a fresh loop on a helper
    thread; elsewhere ``asyncio.run`` is used directly, so Ctrl-C stops it cleanly.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="expertprompting") as pool:
        return pool.submit(asyncio.run, coroutine).result()


ItemResult = ExpertAnswer | FailedItem
"""What ``answer_many`` returns per item: the answer, or why there is none."""


class TooManyErrorsError(ExpertPromptingError):
    """More items failed than ``max_errors`` allows; the run stopped early.

    ``results`` holds what finished (``None`` where an item was never run).
    """

    def __init__(self, message: str, *, failed: int, results: list[ItemResult | None]) -> None:
        super().__init__(message)
        self.failed = failed
        self.results = results


@dataclass
class RunStats:
    """Running totals of one run, for progress bars and summaries."""

    done: int = 0
    failed: int = 0
    cached: int = 0
    usage: Usage = field(default_factory=Usage)
    started: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def add(self, result: ItemResult) -> None:
        if isinstance(result, FailedItem):
            self.failed += 1
            return
        self.done += 1
        self.cached += int(result.identity_cached)
        self.usage = self.usage + result.usage


def check_concurrency(concurrency: int) -> int:
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise ConfigurationError(f"concurrency must be a positive integer, got {concurrency!r}.")
    return concurrency


def _failure(index: int, item: DatasetItem, exc: BaseException) -> FailedItem:
    message = " ".join(str(exc).split()) or type(exc).__name__
    return FailedItem(
        index=index,
        id=item.key,
        instruction=item.instruction,
        input=item.input,
        error_type=type(exc).__name__,
        error=message,
    )


async def _answer_one(
    driver: AsyncDriver, planner: Planner, index: int, item: DatasetItem, strategy: Strategy
) -> ItemResult:
    try:
        flow = strategy_flow(planner, item.instruction, item.input, None, strategy)
        result = await driver.run(flow)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # one item's failure, whatever it is, must not lose the others
        return _failure(index, item, exc)
    return result.model_copy(update={"id": item.key})


async def run_items(
    driver: AsyncDriver,
    planner: Planner,
    items: Iterable[tuple[int, DatasetItem]],
    *,
    strategy: Strategy,
    concurrency: int,
    on_result: Callable[[int, DatasetItem, ItemResult], None],
    max_errors: int | None = None,
    progress: Progress | None = None,
    stats: RunStats | None = None,
) -> RunStats:
    """Answer ``(index, item)`` pairs with ``concurrency`` workers; report each as it finishes.

    ``on_result`` is called in the event loop's thread, once per item, in completion order.
    Raises :class:`TooManyErrorsError` (after in-flight items finish) when more than
    ``max_errors`` items failed. ``stats`` (updated as items finish) may be passed in, so a
    caller keeps the totals of a run that was interrupted.
    """
    check_concurrency(concurrency)
    stats = stats if stats is not None else RunStats()
    source: Iterator[tuple[int, DatasetItem]] = iter(items)
    stop = False

    async def worker() -> None:
        nonlocal stop
        for index, item in source:  # shared iterator: each item goes to one worker
            result = await _answer_one(driver, planner, index, item, strategy)
            stats.add(result)
            on_result(index, item, result)
            if progress is not None:
                progress.update(stats)
            if max_errors is not None and stats.failed > max_errors:
                stop = True
            if stop:
                return

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    if stop:
        raise TooManyErrorsError(
            f"{stats.failed} items failed, more than max_errors={max_errors}; the run stopped "
            "early. Check the errors (each failed result says why), fix the cause, and rerun.",
            failed=stats.failed,
            results=[],
        )
    return stats


def describe(stats: RunStats, **more: Any) -> str:
    """A one-line summary of a run."""
    parts = [
        f"{stats.done} done",
        f"{stats.failed} failed",
        f"{stats.cached} identities from cache",
        f"{stats.usage.requests} requests",
        f"{stats.usage.total_tokens} tokens",
    ]
    if stats.usage.cost is not None:
        parts.append(f"${stats.usage.cost:.4f}")
    parts += [f"{v} {k.replace('_', ' ')}" for k, v in more.items()]
    parts.append(f"{stats.seconds:.1f} s")
    return ", ".join(parts)
