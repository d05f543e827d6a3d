"""The one worker pool (``runner.run_pool``) and the judge built on it."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from expertprompting._datasets.pool import run_pool
from expertprompting._evaluation.judge import Judge
from expertprompting._evaluation.verdicts import PairVerdict
from expertprompting._method.errors import ConfigurationError
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply


class Meter:
    """Counts items in flight, and pulls from the input ahead of finished items."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self.pulled = 0
        self.finished = 0
        self.most_ahead = 0

    def source(self, items: Iterator[int]) -> Iterator[int]:
        for item in items:
            self.pulled += 1
            self.most_ahead = max(self.most_ahead, self.pulled - self.finished)
            yield item

    async def work(self, number: int, item: int) -> int:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            for _ in range(item % 4 + 1):  # items take different numbers of loop turns
                await asyncio.sleep(0)
            return item * 10
        finally:
            self.in_flight -= 1
            self.finished += 1


def test_never_more_than_concurrency_in_flight_and_every_item_reported() -> None:
    meter = Meter()
    got: dict[int, tuple[int, int]] = {}

    def on_result(number: int, item: int, result: int) -> None:
        got[number] = (item, result)

    started = asyncio.run(
        run_pool(meter.source(iter(range(40))), meter.work, concurrency=3, on_result=on_result)
    )
    assert started == 40
    assert meter.most == 3
    assert got == {i: (i, i * 10) for i in range(40)}


def test_items_are_pulled_only_when_a_worker_is_free() -> None:
    # an endless input: the pool must not try to read it all, and stops when told to
    meter = Meter()
    done: list[int] = []
    started = asyncio.run(
        run_pool(
            meter.source(itertools.count()),
            meter.work,
            concurrency=4,
            on_result=lambda _, item, __: done.append(item),
            stopped=lambda: len(done) >= 25,
        )
    )
    assert len(done) >= 25
    assert meter.most_ahead <= 4  # never more pulled than running
    assert started == meter.pulled <= 25 + 3  # what was in flight at the stop still finished


def test_start_numbers_follow_the_input_and_results_carry_them() -> None:
    # all start at once, then finish in reverse: each result still names its own item
    items = ["a", "b", "c", "d", "e"]
    release = {item: asyncio.Event() for item in items}
    seen: list[tuple[int, str]] = []
    finished: list[tuple[int, str, str]] = []
    all_started = asyncio.Event()

    async def work(number: int, item: str) -> str:
        seen.append((number, item))
        if len(seen) == len(items):
            all_started.set()
        await release[item].wait()
        return item.upper()

    async def main() -> None:
        pool = asyncio.create_task(
            run_pool(
                items,
                work,
                concurrency=len(items),
                on_result=lambda n, item, result: finished.append((n, item, result)),
            )
        )
        await all_started.wait()
        for item in reversed(items):
            release[item].set()
            await asyncio.sleep(0)
        await pool

    asyncio.run(main())
    assert seen == list(enumerate(items))  # started in input order, numbered from 0
    assert [item for _, item, _ in finished] == list(reversed(items))  # completion order
    assert sorted(finished) == [(i, item, item.upper()) for i, item in enumerate(items)]


def test_a_failing_item_does_not_stop_the_others() -> None:
    errors: list[tuple[int, int, str]] = []
    done: list[int] = []

    async def work(number: int, item: int) -> int:
        await asyncio.sleep(0)
        if item in (2, 5):
            raise ValueError(f"bad {item}")
        return item

    asyncio.run(
        run_pool(
            range(10),
            work,
            concurrency=2,
            on_result=lambda _, __, result: done.append(result),
            on_error=lambda n, item, exc: errors.append((n, item, str(exc))),
        )
    )
    assert sorted(done) == [0, 1, 3, 4, 6, 7, 8, 9]
    assert sorted(errors) == [(2, 2, "bad 2"), (5, 5, "bad 5")]


def test_without_on_error_a_failure_stops_the_pool_and_is_raised() -> None:
    pulled: list[int] = []
    cancelled: list[int] = []

    def source() -> Iterator[int]:
        for item in range(100):
            pulled.append(item)
            yield item

    async def work(number: int, item: int) -> int:
        if item == 3:
            raise ValueError("disk full")
        try:
            await asyncio.sleep(0 if item < 3 else 60)
        except asyncio.CancelledError:
            cancelled.append(item)
            raise
        return item

    with pytest.raises(ValueError, match="disk full"):
        asyncio.run(run_pool(source(), work, concurrency=3))
    assert len(pulled) < 10  # the rest of the input was never read
    assert cancelled  # the items still in flight were cancelled, not left running


def test_admit_is_awaited_before_each_item() -> None:
    gate = asyncio.Semaphore(0)
    order: list[str] = []

    async def admit() -> None:
        await gate.acquire()

    async def work(number: int, item: int) -> int:
        order.append(f"start {item}")
        return item

    async def main() -> None:
        pool = asyncio.create_task(run_pool(range(3), work, concurrency=2, admit=admit))
        for item in range(3):
            for _ in range(5):
                await asyncio.sleep(0)
            order.append(f"admit {item}")
            gate.release()
        for _ in range(5):
            await asyncio.sleep(0)
        gate.release()  # lets each worker find the input empty
        gate.release()
        await pool

    asyncio.run(main())
    assert order == ["admit 0", "start 0", "admit 1", "start 1", "admit 2", "start 2"]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_concurrency_must_be_a_positive_integer(bad: Any) -> None:
    async def work(number: int, item: int) -> int:
        return item

    with pytest.raises(ConfigurationError, match="concurrency"):
        asyncio.run(run_pool(range(3), work, concurrency=bad))


# -- the judge on the pool -----------------------------------------------------------------------
def _answers(path: Path, answers: dict[str, str]) -> None:
    rows = [{"id": k, "instruction": f"Question {k}?", "answer": v} for k, v in answers.items()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_judge_files_runs_at_most_concurrency_pairs_at_once(
    server: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the server holds each verdict a moment, so pairs overlap; it counts requests in flight
    lock = threading.Lock()
    load = {"now": 0, "most": 0}

    def slow(req: RecordedRequest) -> Reply:
        with lock:
            load["now"] += 1
            load["most"] = max(load["most"], load["now"])
        threading.Event().wait(0.05)
        with lock:
            load["now"] -= 1
        return Reply(content="7 6")

    server.responder = slow
    pairs = {"now": 0, "most": 0}
    tasks: list[int] = []
    judge_pair = Judge._judge_pair

    async def counted(self: Judge, *args: Any) -> PairVerdict:
        # tasks other than verdicts: the run's own and the workers (3), or one per pair (6)
        # more, had every pair been started up front
        others = [t for t in asyncio.all_tasks() if "_verdict" not in repr(t.get_coro())]
        tasks.append(len(others))
        pairs["now"] += 1
        pairs["most"] = max(pairs["most"], pairs["now"])
        try:
            return await judge_pair(self, *args)
        finally:
            pairs["now"] -= 1

    monkeypatch.setattr(Judge, "_judge_pair", counted)
    _answers(tmp_path / "a.jsonl", {str(i): f"a{i}" for i in range(6)})
    _answers(tmp_path / "b.jsonl", {str(i): f"b{i}" for i in range(6)})
    judge = Judge(model="gpt-4o", base_url=server.base_url, api_key="k")
    report = judge.judge_files(
        tmp_path / "a.jsonl",
        tmp_path / "b.jsonl",
        tmp_path / "v.jsonl",
        concurrency=2,
        progress=False,
    )
    assert report.pairs == 6
    assert len(server.chat_requests) == 12  # each pair in both orders
    assert pairs["most"] == 2
    assert load["most"] <= 4  # two pairs, each with its two orders
    # the six pairs were not all made tasks up front (a margin for any helper task of the
    # driver: the run's own task and two workers are 3)
    assert max(tasks) < 1 + 6
