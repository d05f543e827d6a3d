"""One ExpertPrompter shared by the threads of a web app, or the tasks of an event loop.

Each result must belong to its own instruction, and the prompter's ``usage`` must be exactly
the sum of the results' usages and of what the server received: nothing lost, nothing counted
twice. The server answers with the tail of the last user message, which holds the instruction
(``question NNN``), so every identity and answer can be traced back to its call.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from expertprompting import BudgetExceededError, ExpertAnswer, ExpertIdentity, ExpertPrompter, Usage
from expertprompting._io.cache import MemoryCache, SQLiteCache, TieredCache
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

Make = Callable[..., ExpertPrompter]
THREADS = 16
_MARK = re.compile(r"question (\d{3})")


def tail_echo(req: RecordedRequest) -> Reply:
    """Echo the end of the last user message: where the instruction is, in both steps."""
    users = [m for m in req.messages if isinstance(m, dict) and m.get("role") == "user"]
    text = str(users[-1].get("content") or "") if users else ""
    return Reply(content="Echo: " + text[-60:])


@pytest.fixture
def echo_server(server: FakeOpenAIServer) -> FakeOpenAIServer:
    server.responder = tail_echo
    return server


def question(i: int) -> str:
    return f"question {i:03d}"


def marks(text: str | None) -> set[str]:
    """The instructions a text was made from."""
    return {f"question {n}" for n in _MARK.findall(text or "")}


def check_answer(result: ExpertAnswer, instruction: str) -> None:
    assert result.instruction == instruction
    assert marks(result.expert_identity) == {instruction}
    assert marks(result.answer) == {instruction}


def check_identity(result: ExpertIdentity, instruction: str) -> None:
    assert result.instruction == instruction
    assert marks(result.description) == {instruction}


def total(usages: Iterable[Usage]) -> Usage:
    out = Usage()
    for usage in usages:
        out = out + usage
    return out


def check_usage(ep: ExpertPrompter, server: FakeOpenAIServer, usages: Iterable[Usage]) -> None:
    """The prompter's totals are the results' totals and the server's count, exactly."""
    summed, shared = total(usages), ep.usage
    counts = ("prompt_tokens", "completion_tokens", "total_tokens", "requests")
    assert {k: getattr(shared, k) for k in counts} == {k: getattr(summed, k) for k in counts}
    assert shared.requests == len(server.chat_requests)
    assert shared.cost == pytest.approx(summed.cost)  # floats summed in another order


def run_threads(n: int, work: Callable[[int], list[Any]]) -> list[list[Any]]:
    """``work(i)`` in ``n`` threads started together; their results, in thread order."""
    start = threading.Barrier(n)

    def one(i: int) -> list[Any]:
        start.wait()
        return work(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def wait_until(condition: Callable[[], bool], seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- threads -------------------------------------------------------------------------------


def test_threads_share_one_prompter(echo_server: FakeOpenAIServer, make_prompter: Make) -> None:
    ep = make_prompter()

    def work(i: int) -> list[Any]:
        q = question(i)
        out: list[Any] = []
        for _ in range(3):
            r = ep.answer(q)
            check_answer(r, q)
            out.append(r.usage)
        stream = ep.stream(q)
        text = "".join(stream)
        check_answer(stream.result, q)
        assert marks(text) == {q}
        out.append(stream.result.usage)
        identity = ep.identify(question(100 + i))
        check_identity(identity, question(100 + i))
        out.append(identity.usage)
        return out

    usages = [u for one in run_threads(THREADS, work) for u in one]
    check_usage(ep, echo_server, usages)
    # the identity cache served the repeats: one identity per instruction, then hits
    identity_requests = [r for r in echo_server.chat_requests if r.json["max_tokens"] == 400]
    assert len(identity_requests) >= 2 * THREADS


def test_threads_without_cache_send_every_request(
    echo_server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter(cache=False)

    def work(i: int) -> list[Any]:
        results = [ep.answer(question(i)) for _ in range(2)]
        for r in results:
            check_answer(r, question(i))
        return [r.usage for r in results]

    usages = [u for one in run_threads(THREADS, work) for u in one]
    check_usage(ep, echo_server, usages)
    assert ep.usage.requests == THREADS * 2 * 2


def test_threads_share_one_http_client(
    echo_server: FakeOpenAIServer, make_prompter: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first calls of many threads at once build one client (one connection pool)."""
    built: list[openai.OpenAI] = []

    class SlowClient(openai.OpenAI):
        def __init__(self, **kwargs: Any) -> None:
            time.sleep(0.05)  # a slow start widens the window in which threads could race
            super().__init__(**kwargs)
            if kwargs.get("http_client") is None:  # with_options() copies share the pool
                built.append(self)

    monkeypatch.setattr(openai, "OpenAI", SlowClient)
    ep = make_prompter(cache=False)
    results = run_threads(THREADS, lambda i: [ep.identify(question(i))])
    for i, (identity,) in enumerate(results):
        check_identity(identity, question(i))
    assert len(built) == 1


# -- one event loop --------------------------------------------------------------------------


async def test_tasks_of_one_loop_share_one_prompter(
    echo_server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter()
    questions = [question(i % 25) for i in range(50)]  # each asked twice: the cache is hit too
    results = await asyncio.gather(*(ep.aanswer(q) for q in questions))
    for r, q in zip(results, questions, strict=True):
        check_answer(r, q)

    async def streamed(q: str) -> ExpertAnswer:
        stream = ep.astream(q)
        text = "".join([chunk async for chunk in stream])
        assert marks(text) == {q}
        return stream.result

    more = await asyncio.gather(*(streamed(question(50 + i)) for i in range(10)))
    for i, r in enumerate(more):
        check_answer(r, question(50 + i))
    identities = await asyncio.gather(*(ep.aidentify(question(70 + i)) for i in range(10)))
    for i, identity in enumerate(identities):
        check_identity(identity, question(70 + i))
    usages = [r.usage for r in [*results, *more]] + [i.usage for i in identities]
    check_usage(ep, echo_server, usages)


# -- several event loops at once ---------------------------------------------------------------


def test_threads_each_with_its_own_event_loop(
    echo_server: FakeOpenAIServer, make_prompter: Make
) -> None:
    """asyncio.run() per call, from many threads: one prompter, many loops at once."""
    ep = make_prompter()

    def work(i: int) -> list[Any]:
        out: list[Any] = []
        for _ in range(3):
            r = asyncio.run(ep.aanswer(question(i)))
            check_answer(r, question(i))
            out.append(r.usage)
        return out

    usages = [u for one in run_threads(8, work) for u in one]
    check_usage(ep, echo_server, usages)
    # every loop has ended, and with it the client that belonged to it: no socket is left open
    assert wait_until(lambda: echo_server.open_connections == 0), echo_server.open_connections


def test_sync_calls_and_event_loops_at_once(
    echo_server: FakeOpenAIServer, make_prompter: Make
) -> None:
    """Half the threads call the sync face, half run their own loops, all on one prompter."""
    ep = make_prompter()

    def work(i: int) -> list[Any]:
        q = question(i % 4)  # shared instructions: the identity cache is hit from both faces
        if i % 2:
            return [asyncio.run(ep.aanswer(q)) for _ in range(2)]
        return [ep.answer(q) for _ in range(2)]

    results = run_threads(THREADS, work)
    for i, pair in enumerate(results):
        for r in pair:
            check_answer(r, question(i % 4))
    check_usage(ep, echo_server, [r.usage for pair in results for r in pair])


# the sockets of a loop closed under them can only be freed, and say so when they are
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_closed_loop_is_let_go(
    echo_server: FakeOpenAIServer, make_prompter: Make, caplog: pytest.LogCaptureFixture
) -> None:
    """A loop closed without asyncio.run's shutdown is let go at the prompter's next call,
    quietly (no failed attempt to close its client on another loop)."""
    ep = make_prompter(cache=False)
    loop = asyncio.new_event_loop()
    check_answer(loop.run_until_complete(ep.aanswer(question(1))), question(1))
    loop.close()  # no shutdown_asyncgens(): the prompter never hears that the loop ended
    ref = weakref.ref(loop)
    del loop
    check_answer(asyncio.run(ep.aanswer(question(2))), question(2))
    gc.collect()
    assert ref() is None
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# -- the identity cache ----------------------------------------------------------------------


@pytest.mark.parametrize("on_disk", [False, True], ids=["memory", "sqlite"])
def test_identical_instructions_from_threads_with_cache(
    echo_server: FakeOpenAIServer, make_prompter: Make, tmp_path: Path, on_disk: bool
) -> None:
    cache: Any = tmp_path / "identities.sqlite" if on_disk else True
    ep = make_prompter(cache=cache)
    q = question(7)

    def work(i: int) -> list[Any]:
        results = [ep.answer(q) for _ in range(3)]
        for r in results:
            check_answer(r, q)
            identity_record = r.requests[0]
            assert identity_record.step == "identity"
            assert r.identity_cached == identity_record.cached
            if r.identity_cached:  # a hit spends nothing
                assert identity_record.usage == Usage()
                assert identity_record.attempts == 0
        return [r.usage for r in results]

    usages = [u for one in run_threads(THREADS, work) for u in one]
    check_usage(ep, echo_server, usages)
    answers = THREADS * 3
    identities = ep.usage.requests - answers
    assert 1 <= identities <= THREADS  # threads that missed at once each asked; later ones hit
    # every lookup counted once, though many threads counted at once
    memory = ep.cache.memory if isinstance(ep.cache, TieredCache) else ep.cache
    assert isinstance(memory, MemoryCache)
    assert memory.hits + memory.misses == answers
    if isinstance(ep.cache, TieredCache):
        disk = ep.cache.disk
        assert isinstance(disk, SQLiteCache)
        assert disk.hits + disk.misses == memory.misses
    if on_disk:  # a second prompter on the same file asks for no identity at all
        again = make_prompter(cache=tmp_path / "identities.sqlite")
        echo_server.reset()
        echo_server.responder = tail_echo
        results = run_threads(4, lambda i: [again.answer(q)])
        assert all(r.identity_cached for (r,) in results)
        assert len(echo_server.chat_requests) == again.usage.requests == 4


# -- the run budget --------------------------------------------------------------------------


def test_budget_shared_by_threads_is_never_overshot(
    echo_server: FakeOpenAIServer, make_prompter: Make
) -> None:
    limit = 10
    ep = make_prompter(cache=False, max_requests=limit)

    def work(i: int) -> list[Any]:
        try:
            identity = ep.identify(question(i))
        except BudgetExceededError as exc:
            return [exc]
        check_identity(identity, question(i))
        return [identity]

    outcomes = [o for one in run_threads(THREADS, work) for o in one]
    done = [o for o in outcomes if isinstance(o, ExpertIdentity)]
    refused = [o for o in outcomes if isinstance(o, BudgetExceededError)]
    assert (len(done), len(refused)) == (limit, THREADS - limit)
    assert len(echo_server.chat_requests) == limit
    check_usage(ep, echo_server, [i.usage for i in done])


def test_budget_shared_by_threads_answering(
    echo_server: FakeOpenAIServer, make_prompter: Make
) -> None:
    """Two requests per answer: some answers stop half-way; the server still gets exactly N."""
    limit = 11
    ep = make_prompter(cache=False, max_requests=limit)

    def work(i: int) -> list[Any]:
        try:
            return [ep.answer(question(i))]
        except BudgetExceededError as exc:
            return [exc]

    outcomes = [o for one in run_threads(THREADS, work) for o in one]
    for i, o in enumerate(outcomes):
        if isinstance(o, ExpertAnswer):
            check_answer(o, question(i))
        else:
            assert isinstance(o, BudgetExceededError)
    assert len(echo_server.chat_requests) == ep.usage.requests == limit
