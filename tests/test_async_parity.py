"""The sync and async faces must stay identical: same signatures, same requests, same results."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from expertprompting import ExpertPrompter, ResponseError
from expertprompting.testing import FakeOpenAIServer, Reply

Make = Callable[..., ExpertPrompter]

TWINS = [
    ("identify", "aidentify"),
    ("answer", "aanswer"),
    ("stream", "astream"),
    ("chat", "achat"),
    ("stream_chat", "astream_chat"),
]


@pytest.mark.parametrize(("sync_name", "async_name"), TWINS)
def test_signatures_match(sync_name: str, async_name: str) -> None:
    s = inspect.signature(getattr(ExpertPrompter, sync_name))
    a = inspect.signature(getattr(ExpertPrompter, async_name))
    assert list(s.parameters.values()) == list(a.parameters.values())


def _scenario() -> list[Reply]:
    return [
        Reply(status=429, headers={"retry-after": "0.01"}),
        Reply(content="You are a careful chemist.", finish_reason="length"),
        Reply(content="You are a careful chemist who explains clearly."),
        Reply(fault="drop"),
        Reply(content="Water boils at 100 C at sea level."),
    ]


def _comparable(result: Any) -> Any:
    data = result.model_dump()
    data.pop("seconds", None)
    for rec in data.get("requests", []):
        rec.pop("seconds")
    return data


async def test_same_requests_and_results(server: FakeOpenAIServer, make_prompter: Make) -> None:
    instruction = "At what temperature does water boil?"
    server.script(*_scenario())
    sync_result = make_prompter(seed=1).answer(instruction, input="At sea level.")
    sync_bodies = [r.json for r in server.chat_requests]
    server.reset()
    server.script(*_scenario())
    async_result = await make_prompter(seed=1).aanswer(instruction, input="At sea level.")
    async_bodies = [r.json for r in server.chat_requests]
    assert len(sync_bodies) == 5
    assert sync_bodies == async_bodies
    assert _comparable(sync_result) == _comparable(async_result)
    assert [r.attempts for r in sync_result.requests] == [3, 2]


async def test_same_identity(server: FakeOpenAIServer, make_prompter: Make) -> None:
    s = make_prompter().identify("Write a haiku about rain.")
    a = await make_prompter().aidentify("Write a haiku about rain.")
    assert _comparable(s) == _comparable(a)


async def test_same_errors(server: FakeOpenAIServer, make_prompter: Make) -> None:
    server.script(*[Reply(content="")] * 3)
    with pytest.raises(ResponseError) as sync_err:
        make_prompter().identify("Name a prime.")
    server.script(*[Reply(content="")] * 3)
    with pytest.raises(ResponseError) as async_err:
        await make_prompter().aidentify("Name a prime.")
    assert str(sync_err.value) == str(async_err.value)
    assert sync_err.value.attempts == async_err.value.attempts == 3


async def test_same_stream(server: FakeOpenAIServer, make_prompter: Make) -> None:
    server.script(Reply(status=500), Reply(content="one two three four"))
    s = make_prompter().stream("Count.", identity="You are a counter.")
    s_chunks = list(s)
    server.script(Reply(status=500), Reply(content="one two three four"))
    a = make_prompter().astream("Count.", identity="You are a counter.")
    a_chunks = [c async for c in a]
    assert s_chunks == a_chunks
    assert _comparable(s.result) == _comparable(a.result)
