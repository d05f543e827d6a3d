"""The server's pure parts: reading requests, naming models, error bodies, reply builders, and
the admission queue (on an event loop, no server)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from expertprompting import (
    ConfigurationError,
    ExpertAnswer,
    RateLimitError,
    RequestError,
    RetryError,
    TokenBudgetError,
    Usage,
)
from expertprompting._serve.admission import Admission, QueueFull
from expertprompting._serve.protocol import (
    APIError,
    chunk,
    completion_body,
    library_error,
    model_ids,
    parse_chat_request,
    resolve_model,
    sse,
)
from expertprompting._serve.settings import ServerSettings, is_loopback

USER = [{"role": "user", "content": "hi"}]


def _parse_error(body: object) -> APIError:
    with pytest.raises(APIError) as caught:
        parse_chat_request(json.dumps(body).encode())
    return caught.value


def test_a_full_request_is_read_and_its_settings_passed_on() -> None:
    req = parse_chat_request(
        json.dumps(
            {
                "model": "m",
                "messages": USER,
                "stream": True,
                "stream_options": {"include_usage": True},
                "temperature": 1,
                "top_p": 0.9,
                "max_tokens": 10,
                "max_completion_tokens": 20,
                "stop": "END",
                "seed": 3,
                "response_format": {"type": "json_object"},
                "n": 1,
                "user": "u",
            }
        ).encode()
    )
    assert req.include_usage
    assert req.call_settings() == {
        "max_tokens": 20,  # max_completion_tokens wins, as OpenAI's newer name
        "temperature": 1,
        "top_p": 0.9,
        "seed": 3,
        "stop": "END",
        "response_format": {"type": "json_object"},
    }
    nulls = parse_chat_request(json.dumps({"model": "m", "messages": USER, "stop": None}).encode())
    assert nulls.call_settings() == {}
    assert not nulls.include_usage


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (
            {"model": "m", "messages": USER, "frequency_penalty": 0},
            "frequency_penalty",
            "unsupported_parameter",
        ),
        ({"model": "m", "messages": USER, "stop": ["a", 1]}, "stop", "invalid_value"),
        ({"model": "m", "messages": USER, "seed": True}, "seed", "invalid_value"),
        ({"model": "m", "messages": USER, "seed": 1.5}, "seed", "invalid_value"),
        ({"model": "m", "messages": USER, "top_p": 0}, "top_p", "invalid_value"),
        ({"model": "", "messages": USER}, "model", "invalid_value"),
        ({"model": "m", "messages": []}, "messages", "invalid_value"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]", "invalid_type"),
        (
            {"model": "m", "messages": USER, "stream_options": {"include_usage": "y"}},
            "stream_options.include_usage",
            "invalid_value",
        ),
    ],
)
def test_every_problem_names_its_param(body: object, param: str, code: str) -> None:
    error = _parse_error(body)
    assert (error.status, error.param, error.code) == (400, param, code)
    assert error.body() == {
        "error": {
            "message": error.message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    }


def test_an_unknown_parameter_is_named_before_other_problems() -> None:
    error = _parse_error({"messages": 5, "logprobs": True})
    assert error.param == "logprobs"


def test_bad_json_says_where() -> None:
    with pytest.raises(APIError) as caught:
        parse_chat_request(b'{"model": "m",\n "messages": ]}')
    assert caught.value.code == "invalid_json"
    assert "line 2" in caught.value.message
    with pytest.raises(APIError):
        parse_chat_request(b"\xff\xfe")


def test_model_names_pick_the_strategy() -> None:
    strategies = {"gpt-4o-mini": ["expert", "vanilla"], "org/m": ["expert", "socratic"]}
    assert model_ids(strategies, strategies) == [
        "gpt-4o-mini",
        "expert/gpt-4o-mini",
        "vanilla/gpt-4o-mini",
        "org/m",
        "expert/org/m",
        "socratic/org/m",
    ]
    assert resolve_model("gpt-4o-mini", strategies) == ("gpt-4o-mini", None)
    assert resolve_model("vanilla/gpt-4o-mini", strategies) == ("gpt-4o-mini", "vanilla")
    assert resolve_model("org/m", strategies) == ("org/m", None)
    assert resolve_model("socratic/org/m", strategies) == ("org/m", "socratic")
    for unknown in ("socratic/gpt-4o-mini", "gpt-4o", "expert/", "/gpt-4o-mini"):
        with pytest.raises(APIError) as caught:
            resolve_model(unknown, strategies)
        assert (caught.value.status, caught.value.code, caught.value.param) == (
            404,
            "model_not_found",
            "model",
        )


def _cause(exc: Exception, headers: dict[str, str]) -> Exception:
    class Response:
        def __init__(self) -> None:
            self.headers = headers

    class Upstream(Exception):
        response = Response()

    exc.__cause__ = Upstream()
    return exc


def test_library_errors_map_to_statuses() -> None:
    def scrub(text: str) -> str:
        return text.replace("sk-1", "***")

    budget = library_error(TokenBudgetError("too long", needed=9, available=1), scrub)
    assert (budget.status, budget.code, budget.param) == (
        400,
        "context_length_exceeded",
        "messages",
    )
    bad = library_error(ConfigurationError("messages[2].role is 'x'; use ..."), scrub)
    assert (bad.status, bad.param) == (400, "messages[2].role")
    limited = library_error(RateLimitError("429 after 3", attempts=3), scrub, 4.2)
    assert (limited.status, limited.headers) == (429, {"Retry-After": "4"})
    assert library_error(RateLimitError("x", attempts=1), scrub).headers == {"Retry-After": "1"}
    for exc in (RetryError("down", attempts=3), RequestError("key sk-1 refused", status_code=401)):
        failed = library_error(exc, scrub)
        assert failed.status == 502
        assert "sk-1" not in failed.message
    other = library_error(KeyError("secret detail"), scrub)
    assert other.status == 500
    assert "secret" not in other.message


def test_reply_builders() -> None:
    usage = Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15, requests=2)
    result = ExpertAnswer(
        instruction="q", answer="a", model="m", strategy="expert", expert_identity="You are x.",
        usage=usage, truncated=True,
    )  # fmt: skip
    body = completion_body("chatcmpl-1", 5, "expert/m", result)
    assert body == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 5,
        "model": "expert/m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "a"},
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "requests": 2},
        "expert_identity": "You are x.",
    }
    first = chunk("c", 1, "m", {"role": "assistant", "content": ""}, expert_identity=None)
    assert first["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
    ]
    assert first["expert_identity"] is None
    assert chunk("c", 1, "m", None, usage={"requests": 1})["choices"] == []
    assert sse({"a": "é"}) == 'data: {"a": "é"}\n\n'.encode()


def test_settings_check_their_values() -> None:
    settings = ServerSettings(models=["m"], concurrency=8)
    assert settings.queue == 32
    assert ServerSettings(models=["m"], max_queue=0).queue == 0
    assert "secret" not in repr(ServerSettings(models=["m"], api_keys=["secret"], api_key="secret"))
    bad: dict[str, Any]
    for bad in (
        {"models": []},
        {"models": ["m", "m"]},
        {"models": ["m"], "concurrency": 0},
        {"models": ["m"], "prompter": {"base_url": "x"}},
        {"models": ["m"], "colour": "red"},
    ):
        with pytest.raises(ConfigurationError, match="Invalid server settings"):
            ServerSettings(**bad)


def test_a_non_loopback_host_needs_client_keys() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "example.com"]))
    ServerSettings(models=["m"], host="127.0.0.2").check_exposure()
    ServerSettings(models=["m"], host="0.0.0.0", api_keys=["k"]).check_exposure()
    with pytest.raises(ConfigurationError, match="no client keys"):
        ServerSettings(models=["m"], host="0.0.0.0").check_exposure()


async def test_admission_runs_some_queues_some_refuses_the_rest() -> None:
    admission = Admission(concurrency=2, max_queue=1)
    await admission.acquire()
    await admission.acquire()
    queued = asyncio.ensure_future(admission.acquire())
    await asyncio.sleep(0)
    assert (admission.running, admission.waiting, admission.full) == (2, 1, True)
    with pytest.raises(QueueFull):
        await admission.acquire()
    admission.release()  # the slot goes to the waiter
    await queued
    assert (admission.running, admission.waiting) == (2, 0)
    admission.release()
    admission.release()
    assert admission.running == 0


async def test_admission_serves_waiters_in_order_and_a_cancelled_one_leaves() -> None:
    admission = Admission(concurrency=1, max_queue=3)
    await admission.acquire()
    order: list[int] = []

    async def wait(n: int) -> None:
        await admission.acquire()
        order.append(n)

    tasks = [asyncio.ensure_future(wait(n)) for n in range(3)]
    await asyncio.sleep(0)
    tasks[1].cancel()  # a client that went away while queued
    await asyncio.sleep(0)
    assert admission.waiting == 2
    admission.release()
    await asyncio.sleep(0)
    admission.release()
    await asyncio.gather(tasks[0], tasks[2])
    assert order == [0, 2]
    admission.release()
    assert admission.running == 0


async def test_a_slot_handed_to_a_cancelled_waiter_is_passed_on() -> None:
    admission = Admission(concurrency=1, max_queue=2)
    await admission.acquire()
    first = asyncio.ensure_future(admission.acquire())
    second = asyncio.ensure_future(admission.acquire())
    await asyncio.sleep(0)
    admission.release()  # hands the slot to `first`...
    first.cancel()  # ...which is cancelled before it runs: the slot must reach `second`
    await asyncio.sleep(0)
    await second
    assert (admission.running, admission.waiting) == (1, 0)


def test_an_empty_message_list_is_named_plainly() -> None:
    with pytest.raises(APIError) as caught:
        parse_chat_request(b'{"model": "m", "messages": []}')
    assert caught.value.status == 400
    assert caught.value.param == "messages"
    assert caught.value.message == "'messages' is empty; send at least one message."
