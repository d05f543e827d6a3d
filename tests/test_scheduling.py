"""Items finish in the order they started: the worker pool's priority gate and budget admission."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from expertprompting import ExpertAnswer, ExpertPrompter, RetryPolicy
from expertprompting._datasets.items import DatasetItem, FailedItem, coerce_item
from expertprompting._datasets.pool import ItemResult, PriorityGate, run_items
from expertprompting._io.async_driver import AsyncDriver
from expertprompting._io.local import AsyncLocalTransport
from expertprompting._method.wire import ChatRequest
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

Make = Callable[..., ExpertPrompter]
FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05)


def _is_identity(messages: list[Any]) -> bool:
    return "[Agent Description]:" in str(messages[-1]["content"])


def _question(messages: list[Any]) -> str:
    """The item a request belongs to: its instruction ("q<n>") as the prompt shows it."""
    last = str(messages[-1]["content"])
    if _is_identity(messages):
        return last.rsplit("[Instruction]:", 1)[1].split("[Agent Description]:")[0].strip()
    return last.splitlines()[-1].strip()


# -- the gate ------------------------------------------------------------------------------------
async def test_gate_serves_the_lowest_priority_number_first() -> None:
    gate = PriorityGate(1)
    order: list[int] = []
    await gate.acquire(0)

    async def wait(priority: int) -> None:
        async with gate.slot(priority):
            order.append(priority)

    waiters = [asyncio.create_task(wait(p)) for p in (5, 3, 9, 1)]
    await asyncio.sleep(0)  # all queued
    gate.release()
    await asyncio.gather(*waiters)
    assert order == [1, 3, 5, 9]
    assert gate.held == 0


async def test_a_released_slot_goes_to_the_releasers_next_request_first() -> None:
    """An item's answer, asked for right after its identity, beats later items' identities."""
    gate = PriorityGate(1)
    order: list[str] = []

    async def item(seq: int) -> None:
        for step in ("identity", "answer"):
            async with gate.slot(seq):
                order.append(f"{step}{seq}")
                await asyncio.sleep(0)

    await asyncio.gather(*(item(seq) for seq in range(3)))
    assert order == ["identity0", "answer0", "identity1", "answer1", "identity2", "answer2"]


async def test_a_cancelled_waiter_does_not_keep_a_slot() -> None:
    gate = PriorityGate(1)
    await gate.acquire(0)
    queued = asyncio.create_task(gate.acquire(1))
    later = asyncio.create_task(gate.acquire(2))
    await asyncio.sleep(0)
    queued.cancel()
    gate.release()
    await asyncio.wait_for(later, 5)  # the slot skipped the cancelled waiter
    assert gate.held == 1
    gate.release()
    await asyncio.sleep(0)
    assert gate.held == 0


# -- a backend that runs one request at a time (a local model) -----------------------------------
class SerialModel:
    """Stands in for a LocalModel: one lock, a short generation, every request recorded."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.served: list[str] = []

    def complete(self, request: ChatRequest) -> dict[str, Any]:
        time.sleep(0.002)  # long enough that waiting threads pile up on the lock
        messages = list(request.messages)
        kind = "identity" if _is_identity(messages) else "answer"
        question = _question(messages)
        self.served.append(f"{kind} {question}")
        content = f"You are the expert for {question}." if kind == "identity" else "Fine."
        return {
            "model": request.model,
            "choices": [{"message": {"content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": request.prompt_tokens, "completion_tokens": 5},
        }


def _serial_run(
    model: SerialModel, n: int, concurrency: int, finished: list[str]
) -> tuple[ExpertPrompter, Any]:
    ep = ExpertPrompter(model="gpt-4o-mini", api_key="unused", cache=False)
    transport = AsyncLocalTransport(model)  # type: ignore[arg-type]  # duck-typed stand-in
    driver = AsyncDriver(transport, ep.ledger, FAST_RETRY, ep.counter)
    items = [(i, coerce_item(f"q{i}")) for i in range(n)]

    def keep(index: int, item: DatasetItem, result: ItemResult) -> None:
        assert isinstance(result, ExpertAnswer), result
        finished.append(item.instruction)

    run = run_items(
        driver, ep.planner, items, strategy="expert", concurrency=concurrency, on_result=keep
    )
    return ep, run


async def test_a_serial_backend_answers_each_item_before_starting_the_next() -> None:
    model = SerialModel()
    finished: list[str] = []
    _, run = _serial_run(model, 8, 4, finished)
    await run
    expected: list[str] = []
    for i in range(8):
        expected += [f"identity q{i}", f"answer q{i}"]
    assert model.served == expected
    assert finished == [f"q{i}" for i in range(8)]


async def test_an_interrupted_serial_run_has_finished_rows_from_the_start() -> None:
    """Cancelled after 4 requests, 2 items are done (before: 4 identities, then answers)."""
    model = SerialModel()
    finished: list[str] = []
    _, run = _serial_run(model, 40, 16, finished)
    task = asyncio.ensure_future(run)
    deadline = time.monotonic() + 60
    while len(model.served) < 4 and time.monotonic() < deadline:  # noqa: ASYNC110  # a thread fills it
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    served = len(model.served)
    assert served >= 4
    assert len(finished) >= 2
    assert len(finished) >= served // 2 - 1  # at most the item in flight is unfinished
    assert finished == [f"q{i}" for i in range(len(finished))]


# -- a request budget finishes items --------------------------------------------------------------
def _expert_model(req: RecordedRequest) -> Reply:
    if _is_identity(req.messages):
        return Reply(content=f"You are the expert for {_question(req.messages)}.")
    return Reply(content="Fine.")


def test_max_requests_finishes_items_instead_of_starting_them(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    server.responder = _expert_model
    ep = make_prompter(max_requests=10, cache=False)
    results = ep.answer_many([f"q{i}" for i in range(100)], concurrency=16, progress=False)
    answered = [r for r in results if isinstance(r, ExpertAnswer)]
    assert len(answered) == 5  # ten requests, two per item: none spent on an unfinished item
    assert len(server.chat_requests) == 10
    identities = [_question(r.messages) for r in server.chat_requests if _is_identity(r.messages)]
    assert sorted(identities) == sorted(a.instruction for a in answered)
    failed = [r for r in results if isinstance(r, FailedItem)]
    assert len(failed) == 95
    assert {f.error_type for f in failed} == {"BudgetExceededError"}


def test_max_requests_learns_how_many_requests_an_item_takes(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    """One request per item (vanilla): the whole budget answers items."""
    server.responder = _expert_model
    ep = make_prompter(max_requests=10, cache=False, strategy="vanilla")
    results = ep.answer_many([f"q{i}" for i in range(30)], concurrency=16, progress=False)
    assert sum(isinstance(r, ExpertAnswer) for r in results) == 10
    assert len(server.chat_requests) == 10


def test_every_request_of_an_item_counts_against_concurrency(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    """Multi-expert sends its experts' answers at once; in flight stays <= concurrency."""
    lock = threading.Lock()
    in_flight = 0
    most = 0

    def slow(req: RecordedRequest) -> Reply:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.02)
        with lock:
            in_flight -= 1
        return Reply(content='["You are A.", "You are B.", "You are C."]')  # fits every step

    server.responder = slow
    ep = make_prompter(strategy="multi-expert", cache=False)
    results = ep.answer_many([f"q{i}" for i in range(4)], concurrency=2, progress=False)
    assert all(isinstance(r, ExpertAnswer) for r in results)
    assert len(server.chat_requests) == 4 * 5  # n=3 experts: n + 2 requests an item
    assert 1 <= most <= 2
