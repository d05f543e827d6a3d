"""What a server reports is checked: malformed replies are ResponseErrors, and usage that is
negative, not a whole number, or missing is replaced by our own exact count, so it can never
walk past the run budget."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from expertprompting import (
    BudgetExceededError,
    ExpertPrompter,
    ModelPrice,
    ResponseError,
    RetryPolicy,
    RunBudget,
)
from expertprompting._io.budget import BudgetLedger
from expertprompting._method.tokens import TiktokenCounter
from expertprompting._method.wire import ChatRequest, StreamAssembler, parse_completion
from expertprompting.testing import FakeOpenAIServer, Reply

Make = Callable[..., ExpertPrompter]

ONE_ATTEMPT = RetryPolicy(max_attempts=1)
COUNTER = TiktokenCounter("gpt-4o-mini")
REQUEST = ChatRequest(
    step="answer",
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "Tides?"}],
    prompt_tokens=11,
    max_tokens=100,
)
TEXT = "The Moon pulls the oceans."
OURS = COUNTER.count_text(TEXT)


def _reply(usage: Any = None, **fields: Any) -> dict[str, Any]:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": TEXT},
        "finish_reason": "stop",
    }
    body: dict[str, Any] = {"model": "gpt-4o-mini", "choices": [choice], **fields}
    if usage is not None:
        body["usage"] = usage
    return body


# -- malformed replies ------------------------------------------------------------------------
MALFORMED: dict[str, Any] = {
    "choices as a dict": {"choices": {"0": {"message": {"content": TEXT}}}},
    "choices as a number": {"choices": 3},
    "choices as text": {"choices": "abc"},
    "a choice as a number": {"choices": [7]},
    "a choice as a list": {"choices": [["content", TEXT]]},
    "message as text": {"choices": [{"message": TEXT}]},
    "content as a number": {"choices": [{"message": {"content": 42}}]},
    "content as a dict": {"choices": [{"message": {"content": {"text": TEXT}}}]},
    "content as a list": {"choices": [{"message": {"content": [TEXT]}}]},
    "finish_reason as a number": {"choices": [{"message": {"content": TEXT}, "finish_reason": 1}]},
    "usage as a list": _reply(usage=[1, 2]),
    "the body as a list": [_reply()],
    "the body as text": "hello",
    "the body as a number": 12,
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_replies_are_response_errors(body: Any) -> None:
    with pytest.raises(ResponseError) as info:
        parse_completion(body, REQUEST, COUNTER)
    assert type(info.value) is ResponseError  # not KeyError, TypeError or ValueError
    assert (info.value.reason, info.value.retryable) == ("unparseable", True)
    assert "OpenAI API" in str(info.value)


def _chunk(content: Any = "", **fields: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": {"content": content}, "finish_reason": None}
    return {"model": "gpt-4o-mini", "choices": [choice], "usage": None, **fields}


MALFORMED_CHUNKS: dict[str, Any] = {
    "choices as a dict": _chunk(choices={"0": {"delta": {"content": "x"}}}),
    "choices as a number": _chunk(choices=5),
    "a choice as text": _chunk(choices=["x"]),
    "delta as text": _chunk(choices=[{"delta": "x"}]),
    "content as a number": _chunk(content=5),
    "content as a list": _chunk(content=["x"]),
    "finish_reason as a dict": _chunk(
        choices=[{"delta": {"content": "x"}, "finish_reason": {"a": 1}}]
    ),
    "usage as text": _chunk(usage="many"),
    "the chunk as a list": [_chunk("x")],
    "the chunk as a number": 3,
}


@pytest.mark.parametrize("chunk", MALFORMED_CHUNKS.values(), ids=MALFORMED_CHUNKS.keys())
def test_malformed_stream_chunks_are_response_errors(chunk: Any) -> None:
    assembler = StreamAssembler(REQUEST)
    assert assembler.feed(_chunk("The ")) == "The "
    with pytest.raises(ResponseError) as info:
        assembler.feed(chunk)
    assert type(info.value) is ResponseError
    assert (info.value.reason, info.value.retryable) == ("unparseable", True)


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"choices": {"0": {"message": {"content": "x"}}}}),
        json.dumps({"choices": [{"message": {"content": 42}}]}),
        json.dumps([1, 2, 3]),
    ],
    ids=["choices-dict", "content-number", "list"],
)
def test_a_malformed_reply_over_http_is_one_clear_error(
    server: FakeOpenAIServer, make_prompter: Make, body: str
) -> None:
    server.script(Reply(body=body))
    ep = make_prompter(strategy="vanilla", retry=ONE_ATTEMPT)
    with pytest.raises(ResponseError, match=r"malformed|no choices") as info:
        ep.answer("Why are there tides?")
    assert info.value.reason == "unparseable"


async def test_a_malformed_reply_over_http_is_one_clear_error_async(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    server.script(Reply(body=json.dumps({"choices": {"0": {}}})), Reply(content=TEXT))
    ep = make_prompter(strategy="vanilla")  # retried, like any unparseable reply
    result = await ep.aanswer("Why are there tides?")
    assert result.answer == TEXT
    assert result.requests[0].attempts == 2


# -- usage ------------------------------------------------------------------------------------
BAD_COUNTS = [-1, -1_000_000, "12", 12.5, True, None, [3], {"n": 3}]


@pytest.mark.parametrize("bad", BAD_COUNTS, ids=repr)
def test_bad_usage_counts_are_replaced_by_our_own(bad: Any) -> None:
    for usage in (
        {"prompt_tokens": bad, "completion_tokens": bad, "total_tokens": bad},
        {"total_tokens": 5},  # counts missing
    ):
        completion = parse_completion(_reply(usage), REQUEST, COUNTER)
        assert (completion.prompt_tokens, completion.completion_tokens) == (11, OURS)
    assembler = StreamAssembler(REQUEST)
    assembler.feed(_chunk(TEXT))
    assembler.feed(_chunk(choices=[], usage={"prompt_tokens": bad, "completion_tokens": bad}))
    completion = assembler.completion(COUNTER)
    assert (completion.prompt_tokens, completion.completion_tokens) == (11, OURS)


def test_good_usage_counts_are_kept() -> None:
    completion = parse_completion(
        _reply({"prompt_tokens": 0, "completion_tokens": 99}), REQUEST, COUNTER
    )
    assert (completion.prompt_tokens, completion.completion_tokens) == (0, 99)
    # one bad count does not discard the other
    completion = parse_completion(
        _reply({"prompt_tokens": 30, "completion_tokens": -4}), REQUEST, COUNTER
    )
    assert (completion.prompt_tokens, completion.completion_tokens) == (30, OURS)


def test_the_ledger_is_never_lowered() -> None:
    ledger = BudgetLedger(RunBudget(max_total_tokens=100), lambda m: ModelPrice(input=1, output=1))
    ledger.settle(ledger.reserve("m", 10, 10), 10, 5)
    spent = ledger.settle(ledger.reserve("m", 10, 10), -500, -500)
    assert (spent.total_tokens, spent.cost) == (0, 0)
    assert ledger.usage.total_tokens == 15


NEGATIVE = {"prompt_tokens": -100_000, "completion_tokens": -100_000, "total_tokens": -200_000}


def _spend_until_refused(ep: ExpertPrompter, server: FakeOpenAIServer, stream: bool) -> int:
    """Answer with negative usage until the budget refuses; how many answers it allowed."""
    for done in range(30):
        server.script(Reply(content=TEXT, usage=NEGATIVE))
        try:
            if stream:
                assert "".join(ep.stream("Why are there tides?")) == TEXT
            else:
                assert ep.answer("Why are there tides?").answer == TEXT
        except BudgetExceededError:
            return done
        assert ep.usage.total_tokens > 0
    raise AssertionError("negative usage walked past the run budget")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_negative_usage_cannot_pass_max_total_tokens(
    server: FakeOpenAIServer, make_prompter: Make, stream: bool
) -> None:
    ep = make_prompter(strategy="vanilla", max_tokens=50, max_total_tokens=400)
    prompt = ep.counter.count_messages(ep.answer_messages("Why are there tides?"))
    per_answer = prompt + OURS
    allowed = _spend_until_refused(ep, server, stream)
    assert ep.usage.total_tokens == allowed * per_answer  # our own counts, every one
    assert ep.usage.total_tokens + prompt + 50 > 400  # refused only when the next could pass
    assert ep.usage.total_tokens <= 400


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_negative_usage_cannot_pass_max_cost(
    server: FakeOpenAIServer, make_prompter: Make, stream: bool
) -> None:
    price = ModelPrice(input=1000.0, output=1000.0)  # $0.001 a token
    ep = make_prompter(
        strategy="vanilla",
        max_tokens=50,
        max_cost=0.4,
        prices={"gpt-4o-mini": price},
    )
    allowed = _spend_until_refused(ep, server, stream)
    assert allowed >= 1
    cost = ep.usage.cost
    assert cost is not None
    assert 0 < cost <= 0.4
    assert ep.usage.total_tokens * 0.001 == pytest.approx(cost)
