"""Many instructions at once: answer_many, generate, resume, cache, rate limits, over HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel

from expertprompting import ExpertAnswer, ExpertPrompter, count_tokens
from expertprompting._datasets.items import FailedItem, content_id
from expertprompting._datasets.pool import TooManyErrorsError
from expertprompting._io.ratelimit import Permit, RateLimiter
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

Make = Callable[..., ExpertPrompter]


def is_identity(req: RecordedRequest) -> bool:
    return "[Agent Description]:" in req.messages[-1]["content"]


def expert_model(req: RecordedRequest) -> Reply:
    """Identity prompts get a description naming the instruction; answers echo it."""
    last = req.messages[-1]["content"]
    if is_identity(req):
        asked = last.rsplit("[Instruction]:", 1)[1].split("[Agent Description]:")[0].strip()
        return Reply(content=f"You are the expert for: {asked}")
    return Reply(content="Answer to: " + last.splitlines()[-1])


class Row(BaseModel):
    instruction: str
    input: str | None = None
    id: str | None = None


def test_results_come_back_in_input_order_with_ids(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    server.responder = expert_model
    ep = make_prompter()
    items = [
        "Question zero?",
        {"instruction": "Question one?", "input": "with input", "id": 1},
        Row(instruction="Question two?", id="two"),
    ]
    results = ep.answer_many(items, concurrency=3, progress=False)
    assert [type(r) for r in results] == [ExpertAnswer] * 3
    answers = [r for r in results if isinstance(r, ExpertAnswer)]
    assert [r.instruction for r in answers] == ["Question zero?", "Question one?", "Question two?"]
    assert [r.id for r in answers] == [content_id("Question zero?", None), "1", "two"]
    assert answers[1].input == "with input"
    assert answers[1].expert_identity == "You are the expert for: Question one?\nwith input"
    assert len(server.chat_requests) == 6


def test_a_failed_item_is_a_result_not_an_exception(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    def model(req: RecordedRequest) -> Reply:
        if "poison" in req.messages[-1]["content"]:
            return Reply(status=400, error_body={"error": {"message": "bad request"}})
        return expert_model(req)

    server.responder = model
    ep = make_prompter()
    results = ep.answer_many(["fine one", "poison pill", "", "fine two"], progress=False)
    ok, poisoned, empty, ok2 = results
    assert isinstance(ok, ExpertAnswer)
    assert isinstance(ok2, ExpertAnswer)
    assert isinstance(poisoned, FailedItem)
    assert poisoned.error_type == "RequestError"
    assert "HTTP 400" in poisoned.error
    assert poisoned.index == 1
    assert isinstance(empty, FailedItem)
    assert empty.error_type == "InvalidItem"
    assert "empty" in empty.error


def test_max_errors_stops_early_and_keeps_what_finished(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    server.responder = lambda req: Reply(status=401)
    ep = make_prompter()
    with pytest.raises(TooManyErrorsError) as info:
        ep.answer_many([f"q{i}" for i in range(50)], concurrency=2, max_errors=3, progress=False)
    assert 4 <= info.value.failed <= 3 + 2  # in-flight items (concurrency 2) may finish too
    assert len(server.chat_requests) < 10  # stopped well before 50 items
    assert all(r is None or isinstance(r, FailedItem) for r in info.value.results)


def test_concurrency_bounds_requests_in_flight(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    lock = threading.Lock()
    in_flight = 0
    most = 0

    def slow(req: RecordedRequest) -> Reply:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.05)
        with lock:
            in_flight -= 1
        return expert_model(req)

    server.responder = slow
    ep = make_prompter()
    results = ep.answer_many([f"q{i}" for i in range(20)], concurrency=4, progress=False)
    assert all(isinstance(r, ExpertAnswer) for r in results)
    assert 2 <= most <= 4  # run side by side, never more than asked (how many overlap is timing)


def test_identity_cache_spends_zero_tokens_on_a_repeat(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    server.responder = expert_model
    ep = make_prompter()
    first = ep.answer("Explain tides.")
    again = ep.answer("Explain tides.")
    assert not first.identity_cached
    assert again.identity_cached
    assert again.expert_identity == first.expert_identity
    assert again.requests[0].cached
    assert again.requests[0].usage.total_tokens == 0
    assert again.usage.requests == 1
    assert len(server.chat_requests) == 3  # identity once, answer twice
    fresh = make_prompter(cache=False)
    fresh.answer("Explain tides.")
    fresh.answer("Explain tides.")
    assert len(server.chat_requests) == 7


def test_disk_cache_is_shared_across_prompters(
    server: FakeOpenAIServer, make_prompter: Make, tmp_path: Path
) -> None:
    server.responder = expert_model
    make_prompter(cache=tmp_path / "ids.sqlite").identify("Explain tides.")
    second = make_prompter(cache=tmp_path / "ids.sqlite").identify("Explain tides.")
    assert second.cached
    assert len(server.chat_requests) == 1


def test_a_429_pauses_every_worker(server: FakeOpenAIServer, make_prompter: Make) -> None:
    server.script(Reply(status=429, headers={"retry-after": "0.5"}))
    server.responder = expert_model
    ep = make_prompter()
    started = time.monotonic()
    results = ep.answer_many([f"q{i}" for i in range(6)], concurrency=3, progress=False)
    assert all(isinstance(r, ExpertAnswer) for r in results)
    times = sorted(req.time for req in server.chat_requests)
    # the 429 came first; the other workers' next requests waited for the pause too. Inside it
    # come only requests under way before the 429 reached the client: one per other worker, and
    # at most one more each that crossed the 429 on its way back. Without the pause, the other
    # workers would send the remaining ten there.
    first_429 = times[0]
    during_pause = [t for t in times[1:] if t < first_429 + 0.4]
    assert len(during_pause) <= 4
    assert time.monotonic() - started >= 0.45


def test_rate_limiter_reserves_the_worst_case_and_settles_real_usage(
    server: FakeOpenAIServer, make_prompter: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.responder = expert_model
    reserved: list[int] = []
    settled: list[tuple[int, int]] = []
    real_acquire, real_settle = RateLimiter.acquire, RateLimiter.settle

    async def acquire(self: RateLimiter, tokens: int) -> Permit:
        reserved.append(tokens)
        return await real_acquire(self, tokens)

    def settle(self: RateLimiter, permit: Permit, used: int) -> None:
        settled.append((permit.tokens, used))
        real_settle(self, permit, used)

    monkeypatch.setattr(RateLimiter, "acquire", acquire)
    monkeypatch.setattr(RateLimiter, "settle", settle)
    ep = make_prompter(cache=False, max_tokens=300)
    (result,) = ep.answer_many(["Explain tides."], rpm=600, tpm=100_000, progress=False)
    assert isinstance(result, ExpertAnswer)
    identity, answer = (req.json for req in server.chat_requests)
    prompts = [count_tokens(b["messages"], model="gpt-4o-mini") for b in (identity, answer)]
    assert reserved == [prompts[0] + identity["max_tokens"], prompts[1] + 300]
    assert [used for _, used in settled] == [r.usage.total_tokens for r in result.requests]


async def test_async_twin(server: FakeOpenAIServer, make_prompter: Make) -> None:
    server.responder = expert_model
    ep = make_prompter()
    results = await ep.aanswer_many(["a?", "b?"], progress=False)
    assert [r.instruction for r in results] == ["a?", "b?"]


def test_answer_many_inside_a_running_loop(server: FakeOpenAIServer, make_prompter: Make) -> None:
    server.responder = expert_model
    ep = make_prompter()

    async def notebook_cell() -> list[object]:
        return list(ep.answer_many(["a?"], progress=False))  # sync call, loop running

    (result,) = asyncio.run(notebook_cell())
    assert isinstance(result, ExpertAnswer)


# -- generate -------------------------------------------------------------------------------------
def _write_jsonl(path: Path, rows: list[object]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_generate_writes_expertllama_rows_and_resumes(
    server: FakeOpenAIServer, make_prompter: Make, tmp_path: Path
) -> None:
    server.responder = expert_model
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_jsonl(
        source,
        [{"instruction": f"Task {i}", "input": "", "output": "ignored"} for i in range(6)],
    )
    ep = make_prompter()
    summary = ep.generate(source, out, limit=4, progress=False)
    assert (summary.done, summary.failed, summary.already_done) == (4, 0, 0)
    rows = _rows(out)
    assert len(rows) == 4
    assert set(rows[0]) >= {"id", "instruction", "input", "expert_identity", "answer", "model"}
    assert rows[0]["strategy"] == "expert"
    assert isinstance(rows[0]["usage"], dict)
    sent = len(server.chat_requests)
    # a killed run leaves a partial last line; the next run repairs it and redoes that item
    with out.open("a", encoding="utf-8") as handle:
        handle.write('{"id": "half-written", "answ')
    summary = make_prompter(cache=False).generate(source, out, progress=False)
    assert (summary.done, summary.already_done) == (2, 4)
    assert len(server.chat_requests) == sent + 4  # only the two missing items
    ids = [row["id"] for row in _rows(out)]
    assert len(ids) == len(set(ids)) == 6
    again = make_prompter().generate(source, out, progress=False)
    assert (again.done, again.already_done) == (0, 6)


def test_generate_reports_bad_rows_and_failures_then_retries_them(
    server: FakeOpenAIServer, make_prompter: Make, tmp_path: Path
) -> None:
    failing = {"on": True}

    def model(req: RecordedRequest) -> Reply:
        if failing["on"] and "flaky" in req.messages[-1]["content"]:
            return Reply(status=400)
        return expert_model(req)

    server.responder = model
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(
        '{"instruction": "good", "id": "g"}\n'
        "{broken\n"
        '{"instruction": "flaky one", "id": "f"}\n'
        '{"instruction": "good", "id": "g"}\n',
        encoding="utf-8",
    )
    problems: list[str] = []
    summary = make_prompter().generate(source, out, progress=False, on_problem=problems.append)
    assert (summary.done, summary.failed, summary.input_problems, summary.duplicates) == (
        1,
        1,
        1,
        1,
    )
    assert len(problems) == 1
    assert problems[0].startswith(f"{source}:2: not valid JSON")
    errors = _rows(tmp_path / "out.errors.jsonl")
    assert {e["kind"] for e in errors} == {"input", "item"}
    (item_error,) = [e for e in errors if e["kind"] == "item"]
    assert item_error["id"] == "f"
    assert "400" in str(item_error["error"])
    failing["on"] = False
    summary = make_prompter().generate(source, out, progress=False)
    assert (summary.done, summary.already_done) == (1, 2)  # "g" is in the input twice
    assert sorted(str(r["id"]) for r in _rows(out)) == ["f", "g"]
    assert [e["kind"] for e in _rows(tmp_path / "out.errors.jsonl")] == ["input"]
