"""Many instructions at once: a bounded pool of workers over one shared driver.

:func:`run_pool` is the library's one worker pool (the judge and ``batch run`` use it too);
:func:`run_items` runs the method on it. Each of ``concurrency`` workers takes the next item,
runs the whole method for it (identity, then answer) and takes another. Items are pulled from
the input lazily, so memory does not grow with the dataset. A failed item becomes a
:class:`~expertprompting.FailedItem`; it never stops the others, unless more than
``max_errors`` fail.

Items finish in the order they started. Every request of an item's flow passes a
:class:`PriorityGate` keyed by the item's start number, so once an item has its identity, its
answer request goes before any later item's request:

- against an HTTP endpoint the gate has ``concurrency`` slots, one per worker, so
  ``concurrency`` requests are in flight whenever there is work;
- a backend that runs one request at a time (a local model: ``max_parallel = 1`` on its
  transport) gets that many slots, so the order of its work is the gate's, earliest item first,
  instead of whichever thread wins the model's lock. Rows then finish one by one from the start,
  and an interrupted run keeps them.

With a ``max_requests`` budget, a new item starts only while the requests left cover what the
items already started still need, so the budget finishes items instead of being spent on the
first steps of many.

A question of several turns (MT-Bench's ``turns``) is answered as a conversation, here, for
``generate`` and ``answer_many`` alike: its first turn as any item (so one-turn items are
untouched), then each later turn with the prompter's ``achat`` on the conversation so far,
under the expert identity of the first turn (one request a turn). Multi-expert answers single
messages: it answers the first turn only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from .._io.async_driver import AsyncDriver
from .._method.errors import ConfigurationError, ExpertPromptingError
from .._method.planner import Planner
from .._method.results import ExpertAnswer, Strategy, Usage
from .._method.strategies import strategy_flow
from .._method.wire import ChatRequest, Exchange
from .answerer import Answerer
from .items import DatasetItem, FailedItem
from .progress import Progress, RunStats

__all__ = [
    "ItemResult",
    "PriorityGate",
    "TooManyErrorsError",
    "run_items",
    "run_pool",
    "run_sync",
]

T = TypeVar("T")
R = TypeVar("R")


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


_END = object()  # the input ran out (an item may itself be None)


async def run_pool(
    items: Iterable[T],
    work: Callable[[int, T], Awaitable[R]],
    *,
    concurrency: int,
    on_result: Callable[[int, T, R], None] | None = None,
    on_error: Callable[[int, T, Exception], None] | None = None,
    admit: Callable[[], Awaitable[None]] | None = None,
    stopped: Callable[[], bool] | None = None,
) -> int:
    """Run ``work(number, item)`` over ``items`` with at most ``concurrency`` running at once.

    The library's one worker pool (``answer_many``, ``generate``, ``judge``, ``batch run``).
    ``concurrency`` workers each pull the next item from one shared iterator, so items start in
    input order and are pulled only when a worker is free: memory does not grow with the input.
    ``number`` is the item's start number (0, 1, ... in input order).

    ``on_result`` is called as each item finishes (completion order), in the event loop's
    thread. An exception from ``work`` goes to ``on_error`` and the other items go on; without
    ``on_error`` it stops the pool (items in flight are cancelled) and is raised. Before each
    pull a worker awaits ``admit()`` (e.g. until a budget allows another item) and then quits
    if ``stopped()`` says so; items in flight still finish. Returns how many items started.
    """
    check_concurrency(concurrency)
    source = iter(items)
    numbers = itertools.count()
    started = 0

    def halted() -> bool:
        return stopped is not None and stopped()

    async def worker() -> None:
        nonlocal started
        while not halted():
            if admit is not None:
                await admit()
                if halted():
                    return
            pulled = next(source, _END)  # shared iterator: each item goes to one worker
            if pulled is _END:
                return
            item = cast(T, pulled)
            number = next(numbers)
            started += 1
            try:
                result = await work(number, item)
            except Exception as exc:  # asyncio.CancelledError is not one: it stops the pool
                if on_error is None:
                    raise
                on_error(number, item, exc)
                continue
            if on_result is not None:
                on_result(number, item, result)

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return started


def check_concurrency(concurrency: int) -> int:
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise ConfigurationError(f"concurrency must be a positive integer, got {concurrency!r}.")
    return concurrency


class PriorityGate:
    """``slots`` permits, each free one handed to the waiter with the lowest priority number.

    Equal priorities are served in arrival order. A released slot is handed on at the event
    loop's next turn, not at once: the task that released it usually asks again straight away
    (an item's answer right after its identity), and it must compete for the slot it freed
    rather than lose it to a later item that happened to be waiting.
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.held = 0
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrival = itertools.count()
        self._handing_on = False

    async def acquire(self, priority: int) -> None:
        """Wait for a slot; lower ``priority`` numbers are served first."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._arrival), future))
        self._hand_out()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # granted, but the waiter is gone: give the slot back
            else:
                future.cancel()  # still queued: _hand_out skips it
            raise

    def release(self) -> None:
        """Give a slot back; the best waiter gets it at the loop's next turn."""
        self.held -= 1
        if not self._handing_on:
            self._handing_on = True
            asyncio.get_running_loop().call_soon(self._hand_on)

    def _hand_on(self) -> None:
        self._handing_on = False
        self._hand_out()

    def _hand_out(self) -> None:
        while self.held < self.slots and self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():  # a cancelled waiter left its entry behind
                future.set_result(None)
                self.held += 1

    @contextlib.asynccontextmanager
    async def slot(self, priority: int) -> AsyncIterator[None]:
        """Hold a slot for the body of an ``async with``."""
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()


@dataclass
class _Started:
    """An item being run: requests it has sent so far, and how many are in flight now."""

    sent: int = 0
    in_flight: int = 0


class _Admission:
    """Whether a new item may start under the run budget's ``max_requests``.

    An item is expected to take ``per_item`` requests (as many as the first item of this run
    that succeeded took; 2 until then: identity and answer), and at least one more while it is
    not finished. A new item starts when the requests left (the limit, less what the ledger has
    spent and what is in flight) cover what the started items still need plus its own; or when
    no item is running, so that an exhausted budget fails the remaining items with its own
    error, as it does for single calls. Token and cost limits are not predicted: they refuse
    requests as they come.
    """

    def __init__(self, driver: AsyncDriver, gate: PriorityGate) -> None:
        self.limit = driver.ledger.budget.max_requests
        self.ledger = driver.ledger
        self.gate = gate
        self.per_item = 2
        self.learned = False
        self.running: dict[int, _Started] = {}
        self._changed = asyncio.Event()

    def _need(self, item: _Started) -> int:
        return max(self.per_item - item.sent, 0 if item.in_flight else 1)

    def may_start(self) -> bool:
        if self.limit is None or not self.running:
            return True
        left = self.limit - self.ledger.usage.requests - self.gate.held
        return left - sum(self._need(s) for s in self.running.values()) >= self.per_item

    async def wait(self, stopped: Callable[[], bool]) -> None:
        """Return once a new item may start, or ``stopped()`` is true."""
        while not (stopped() or self.may_start()):
            await self._changed.wait()

    def start(self, seq: int) -> _Started:
        self.running[seq] = started = _Started()
        return started

    def finish(self, seq: int, succeeded: bool) -> None:
        started = self.running.pop(seq)
        if succeeded and not self.learned:
            self.per_item, self.learned = max(started.sent, 1), True
        self.wake()

    def wake(self) -> None:
        """Let waiters look again (only finishing items and stopping change the answer)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


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


async def _fetch(
    driver: AsyncDriver, gate: PriorityGate, seq: int, request: ChatRequest, started: _Started
) -> Exchange:
    async with gate.slot(seq):
        started.sent += 1
        started.in_flight += 1
        try:
            return await driver.fetch(request)
        finally:
            started.in_flight -= 1


async def _later_turns(
    answerer: Answerer,
    gate: PriorityGate,
    seq: int,
    started: _Started,
    item: DatasetItem,
    turns: list[str],
    first: ExpertAnswer,
    strategy: Strategy,
) -> ExpertAnswer:
    """``first`` (turn 1's answer) with the later turns answered as a conversation.

    Each later turn is one ``achat`` call on ``[user t1, assistant a1, user t2, ...]``, under
    the identity turn 1 was answered as (so the expert is not asked for again), holding one
    gate slot like any request of the item. The result keeps turn 1's answer as ``answer``;
    ``turns_answers``, usage, requests and seconds cover every turn.
    """
    opening = turns[0] if item.input is None else f"{turns[0]}\n\n{item.input}"
    messages: list[dict[str, str]] = [{"role": "user", "content": opening}]
    identity = first.expert_identity if strategy == "expert" else None
    parts = [first]
    for turn in turns[1:]:
        messages += [
            {"role": "assistant", "content": parts[-1].answer},
            {"role": "user", "content": turn},
        ]
        async with gate.slot(seq):
            started.sent += 1
            started.in_flight += 1
            try:
                reply = await answerer.achat(messages, identity=identity, strategy=strategy)
            finally:
                started.in_flight -= 1
        parts.append(reply)
    return first.model_copy(
        update={
            "turns_answers": [part.answer for part in parts],
            "usage": Usage.total(parts),
            "requests": [record for part in parts for record in part.requests],
            "seconds": sum(part.seconds for part in parts),
            "truncated": any(part.truncated for part in parts),
        }
    )


async def _answer_one(
    driver: AsyncDriver,
    planner: Planner,
    gate: PriorityGate,
    seq: int,
    started: _Started,
    index: int,
    item: DatasetItem,
    strategy: Strategy,
    answerer: Answerer | None,
) -> ItemResult:
    try:
        flow = strategy_flow(planner, item.instruction, item.input, None, strategy)
        result = await driver.run(flow, lambda request: _fetch(driver, gate, seq, request, started))
        turns = item.turns
        if turns is not None and answerer is not None and strategy != "multi-expert":
            result = await _later_turns(answerer, gate, seq, started, item, turns, result, strategy)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # one item's failure, whatever it is, must not lose the others
        return _failure(index, item, exc)
    return result.model_copy(update={"id": item.key})


def _slots(driver: AsyncDriver, concurrency: int) -> int:
    """Requests in flight: ``concurrency``, or fewer when the backend runs fewer at once."""
    most = getattr(driver.transport, "max_parallel", None)
    if isinstance(most, int) and not isinstance(most, bool) and most >= 1:
        return min(concurrency, most)
    return concurrency


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
    answerer: Answerer | None = None,
) -> RunStats:
    """Answer ``(index, item)`` pairs with ``concurrency`` workers; report each as it finishes.

    ``answerer`` (the prompter) answers the later turns of items with several ``turns`` as a
    conversation (its ``achat``); without it such items are answered on their first turn only.
    ``on_result`` is called in the event loop's thread, once per item, in completion order.
    Raises :class:`TooManyErrorsError` (after in-flight items finish) when more than
    ``max_errors`` items failed. ``stats`` (updated as items finish) may be passed in, so a
    caller keeps the totals of a run that was interrupted.
    """
    stats = stats if stats is not None else RunStats()
    gate = PriorityGate(_slots(driver, check_concurrency(concurrency)))
    admission = _Admission(driver, gate)
    stop = False

    def stopped() -> bool:
        return stop

    async def answer(seq: int, pulled: tuple[int, DatasetItem]) -> ItemResult:
        # seq, the start number, is the item's priority at the gate
        index, item = pulled
        started = admission.start(seq)
        succeeded = False
        try:
            result = await _answer_one(
                driver, planner, gate, seq, started, index, item, strategy, answerer
            )
            succeeded = isinstance(result, ExpertAnswer)
        finally:
            admission.finish(seq, succeeded)
        return result

    def finished(_: int, pulled: tuple[int, DatasetItem], result: ItemResult) -> None:
        nonlocal stop
        stats.add(result)
        on_result(*pulled, result)
        if progress is not None:
            progress.update(stats)
        if max_errors is not None and stats.failed > max_errors:
            stop = True
            admission.wake()

    await run_pool(
        items,
        answer,
        concurrency=concurrency,
        on_result=finished,
        admit=lambda: admission.wait(stopped),
        stopped=stopped,
    )
    if stop:
        raise TooManyErrorsError(
            f"{stats.failed} items failed, more than max_errors={max_errors}; the run stopped "
            "early. Check the errors (each failed result says why), fix the cause, and rerun.",
            failed=stats.failed,
            results=[],
        )
    return stats
