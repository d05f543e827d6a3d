"""The server with real clients: the openai SDK (sync, async, streaming) and curl, against the
app running under uvicorn on 127.0.0.1, in front of FakeOpenAIServer.

Covers the replies and their usage, the error shapes, client keys, the body limit, the queue,
cancellation on disconnect and the secrets scrubbed from replies and logs. The SIGTERM drain
runs the command in a subprocess: tests/test_serve_cli.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx2 as httpx
import openai
import pytest
import uvicorn
from openai.types.chat import ChatCompletionMessageParam

from expertprompting import ExpertPrompter, RetryPolicy
from expertprompting._method.conversation import read_conversation
from expertprompting.server import ServerSettings, create_app
from expertprompting.testing import FakeOpenAIServer, Reply

pytestmark = pytest.mark.timeout(60)

MODEL = "gpt-4o-mini"
UPSTREAM_KEY = "sk-upstream-SECRET-0123456789"
CLIENT_KEY = "client-key-abc"
ONE_TRY = RetryPolicy(max_attempts=1)


class Running:
    """A uvicorn server of one app in a thread, on a free loopback port."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = app.state.expertprompting
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)

    def client(self, key: str = "unused") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


Start = Callable[..., Running]


@pytest.fixture
def start(server: FakeOpenAIServer) -> Iterator[Start]:
    """Start the app with settings (upstream: the fake server) and prompter settings."""
    running: list[Running] = []

    def make(prompter: dict[str, Any] | None = None, **settings: Any) -> Running:
        settings.setdefault("models", [MODEL])
        settings.setdefault("base_url", server.base_url)
        settings.setdefault("api_key", UPSTREAM_KEY)
        settings.setdefault("cache", False)
        extra = {"retry": ONE_TRY, **(prompter or {})}
        app = create_app(ServerSettings(prompter=extra, **settings))
        running.append(Running(app))
        return running[-1]

    yield make
    for r in running:
        r.stop()


def _wait(condition: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def _post(url: str, body: Any, **kwargs: Any) -> httpx.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    return httpx.post(f"{url}/v1/chat/completions", content=data, headers=headers, **kwargs)


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


def _user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def _events(text: str) -> list[Any]:
    """The data of each server-sent event ([DONE] as the string)."""
    out: list[Any] = []
    for block in text.split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block
            data = block.removeprefix("data: ")
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


# -- answers ---------------------------------------------------------------------------------
def test_sync_sdk_gets_an_expert_answer_with_identity_and_usage(
    start: Start, server: FakeOpenAIServer
) -> None:
    server.script(Reply(content="You are a tidal physicist."), Reply(content="The Moon pulls."))
    app = start()
    reply = app.client().chat.completions.create(model=MODEL, messages=_user("Explain tides."))
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert reply.model == MODEL
    assert reply.choices[0].message.content == "The Moon pulls."
    assert reply.choices[0].finish_reason == "stop"
    extra = reply.model_extra or {}
    assert extra["expert_identity"] == "You are a tidal physicist."
    # usage adds up both upstream requests, as the fake server counted them
    sent = server.chat_requests
    assert len(sent) == 2
    assert reply.usage is not None
    usage = reply.usage.model_dump()
    assert usage["requests"] == 2
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] > 0


def test_one_turn_sends_upstream_exactly_what_answer_sends(
    start: Start, server: FakeOpenAIServer
) -> None:
    ep = ExpertPrompter(MODEL, base_url=server.base_url, api_key="k", cache=False, retry=ONE_TRY)
    ep.answer("Explain tides.")
    direct = [r.json for r in server.chat_requests]
    server.reset()
    app = start()
    app.client().chat.completions.create(model=MODEL, messages=_user("Explain tides."))
    assert [r.json for r in server.chat_requests] == direct
    server.reset()
    # another instruction: the server remembers the identity of a conversation it answered
    stream = ep.stream("Explain waves.")
    list(stream)
    direct = [r.json for r in server.chat_requests]
    server.reset()
    chunks = app.client().chat.completions.create(
        model=MODEL, messages=_user("Explain waves."), stream=True
    )
    list(chunks)
    assert [r.json for r in server.chat_requests] == direct


def test_a_conversation_sends_what_chat_sends_and_later_turns_cost_one_request(
    start: Start, server: FakeOpenAIServer
) -> None:
    server.script(Reply(content="You are a tidal physicist."), Reply(content="The Moon pulls."))
    app = start()
    first: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "Answer for sailors."},
        {"role": "user", "content": "Explain tides."},
    ]
    one = app.client().chat.completions.create(model=MODEL, messages=first)
    assert (one.model_extra or {})["expert_identity"] == "You are a tidal physicist."
    assert len(server.chat_requests) == 2
    later: list[ChatCompletionMessageParam] = [
        *first,
        {"role": "assistant", "content": "The Moon pulls."},
        {"role": "user", "content": "And spring tides?"},
    ]
    server.script(Reply(content="Sun and Moon align."))
    two = app.client().chat.completions.create(model=MODEL, messages=later)
    assert len(server.chat_requests) == 3  # one more: the answer, under the same identity
    assert two.choices[0].message.content == "Sun and Moon align."
    assert (two.model_extra or {})["expert_identity"] == "You are a tidal physicist."
    assert two.usage is not None
    assert two.usage.model_dump()["requests"] == 1
    ep = app.state.prompters[MODEL]
    expected = ep.planner.conversation_messages(
        read_conversation([dict(m) for m in later]), "You are a tidal physicist.", "expert"
    )
    assert server.chat_requests[2].json["messages"] == expected


def test_sampling_parameters_reach_the_answer_request(
    start: Start, server: FakeOpenAIServer
) -> None:
    app = start()
    app.client().chat.completions.create(
        model=f"vanilla/{MODEL}",
        messages=_user("Name a colour."),
        temperature=0.3,
        top_p=0.5,
        max_completion_tokens=50,
        stop=["\n\n"],
        seed=7,
        response_format={"type": "json_object"},
        user="someone",
    )
    (sent,) = server.chat_requests
    assert sent.json["temperature"] == 0.3
    assert sent.json["top_p"] == 0.5
    assert sent.json["seed"] == 7
    assert sent.json["stop"] == ["\n\n"]
    assert sent.json["response_format"] == {"type": "json_object"}
    assert 50 in (sent.json.get("max_tokens"), sent.json.get("max_completion_tokens"))
    assert "user" not in sent.json


def test_streaming_with_usage_over_the_sdk(start: Start, server: FakeOpenAIServer) -> None:
    server.script(Reply(content="You are a poet."), Reply(content="Roses are red, violets blue."))
    app = start()
    chunks = list(
        app.client().chat.completions.create(
            model=MODEL,
            messages=_user("Write a couplet."),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    first = chunks[0]
    assert first.object == "chat.completion.chunk"
    assert first.choices[0].delta.role == "assistant"
    assert (first.model_extra or {})["expert_identity"] == "You are a poet."
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Roses are red, violets blue."
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finishing] == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.model_dump()["requests"] == 2
    assert {c.id for c in chunks} == {first.id}
    assert {c.model for c in chunks} == {MODEL}


def test_async_sdk_plain_and_streamed(start: Start, server: FakeOpenAIServer) -> None:
    app = start()

    async def ask() -> tuple[str | None, str]:
        client = openai.AsyncOpenAI(base_url=f"{app.url}/v1", api_key="x", max_retries=0)
        async with client:
            whole = await client.chat.completions.create(
                model=f"vanilla/{MODEL}", messages=_user("Say hi.")
            )
            stream = await client.chat.completions.create(
                model=f"vanilla/{MODEL}", messages=_user("Say hi."), stream=True
            )
            pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return whole.choices[0].message.content, "".join(pieces)

    whole, streamed = asyncio.run(ask())
    assert whole == "Echo: Say hi."
    assert streamed == whole


def test_a_cut_off_answer_finishes_with_length(start: Start, server: FakeOpenAIServer) -> None:
    server.script(Reply(content="Half an answ", finish_reason="length"))
    app = start()
    reply = app.client().chat.completions.create(model=f"vanilla/{MODEL}", messages=_user("Go."))
    assert reply.choices[0].finish_reason == "length"


def test_curl_plain_and_streamed(start: Start, server: FakeOpenAIServer) -> None:
    app = start()
    body = {"model": f"vanilla/{MODEL}", "messages": _user("Hello there.")}
    plain = subprocess.run(
        ["curl", "-sS", f"{app.url}/v1/chat/completions", "-H", "Content-Type: application/json",
         "-d", json.dumps(body)],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    reply = json.loads(plain.stdout)
    assert reply["choices"][0]["message"]["content"] == "Echo: Hello there."
    assert reply["expert_identity"] is None  # vanilla writes none
    streamed = subprocess.run(
        ["curl", "-sS", "-N", "-i", f"{app.url}/v1/chat/completions", "-H",
         "Content-Type: application/json", "-d",
         json.dumps({**body, "stream": True, "stream_options": {"include_usage": True}})],
        capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    head, _, payload = streamed.stdout.decode().partition("\r\n\r\n")
    assert "content-type: text/event-stream" in head.lower()
    events = _events(payload)
    assert events[-1] == "[DONE]"
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[0]["expert_identity"] is None
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[1:-3])
    assert text == "Echo: Hello there."
    assert events[-3]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert events[-2]["choices"] == []
    assert events[-2]["usage"]["requests"] == 1


def test_models_health_and_playground(start: Start) -> None:
    app = start(
        models=[MODEL, "gpt-4o"], prompter={"strategies": {"socratic": "Ask: {{ instruction }}"}}
    )
    ids = [m.id for m in app.client().models.list()]
    strategies = ["expert", "vanilla", "static", "multi-expert", "socratic"]
    assert ids == [
        MODEL,
        *(f"{s}/{MODEL}" for s in strategies),
        "gpt-4o",
        *(f"{s}/gpt-4o" for s in strategies),
    ]
    listing = httpx.get(f"{app.url}/v1/models").json()
    assert listing["object"] == "list"
    assert all(
        m["object"] == "model" and m["owned_by"] == "expertprompting" for m in listing["data"]
    )
    assert httpx.get(f"{app.url}/health").json() == {"status": "ok"}
    page = httpx.get(f"{app.url}/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert b"<html" in page.content.lower()


def test_a_user_strategy_and_a_model_with_a_slash(start: Start, server: FakeOpenAIServer) -> None:
    app = start(
        models=["org/model-x"],
        prompter={"strategies": {"socratic": "Ask: {{ instruction }}"}, "context_window": 8192},
    )
    client = app.client()
    reply = client.chat.completions.create(model="socratic/org/model-x", messages=_user("Why?"))
    assert reply.choices[0].message.content == "Echo: Ask: Why?"
    assert reply.model == "socratic/org/model-x"
    reply = client.chat.completions.create(model="org/model-x", messages=_user("Why?"))
    assert server.chat_requests[-1].json["model"] == "org/model-x"
    assert (reply.model_extra or {})["expert_identity"]


# -- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        (b"{not json", 400, None, "invalid_json"),
        (b"[1, 2]", 400, None, "invalid_json"),
        ({"model": MODEL}, 400, "messages", "missing_required_parameter"),
        ({"messages": _user("x")}, 400, "model", "missing_required_parameter"),
        ({"model": MODEL, "messages": "hello"}, 400, "messages", "invalid_type"),
        (
            {"model": MODEL, "messages": _user("x"), "temperature": "hot"},
            400,
            "temperature",
            "invalid_value",
        ),
        (
            {"model": MODEL, "messages": _user("x"), "temperature": 3},
            400,
            "temperature",
            "invalid_value",
        ),
        (
            {"model": MODEL, "messages": _user("x"), "max_tokens": 0},
            400,
            "max_tokens",
            "invalid_value",
        ),
        ({"model": MODEL, "messages": _user("x"), "stream": "yes"}, 400, "stream", "invalid_value"),
        (
            {"model": MODEL, "messages": _user("x"), "tools": []},
            400,
            "tools",
            "unsupported_parameter",
        ),
        (
            {"model": MODEL, "messages": _user("x"), "stream_options": {"x": 1}},
            400,
            "stream_options.x",
            "unsupported_parameter",
        ),
        ({"model": MODEL, "messages": _user("x"), "n": 2}, 400, "n", "unsupported_value"),
        ({"model": "gpt-9", "messages": _user("x")}, 404, "model", "model_not_found"),
        ({"model": f"nosuch/{MODEL}", "messages": _user("x")}, 404, "model", "model_not_found"),
        (
            {"model": MODEL, "messages": [*_user("x"), {"role": "assistant", "content": "y"}]},
            400,
            "messages[1]",
            None,
        ),
        (
            {"model": MODEL, "messages": [{"role": "robot", "content": "x"}]},
            400,
            "messages[0].role",
            None,
        ),
    ],
)
def test_bad_requests_get_openai_errors_naming_the_param(
    start: Start,
    server: FakeOpenAIServer,
    body: Any,
    status: int,
    param: str | None,
    code: str | None,
) -> None:
    app = start()
    response = _post(app.url, body)
    assert response.status_code == status
    error = _error(response)
    assert error["param"] == param
    assert error["code"] == code
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    assert server.chat_requests == []  # refused before anything went upstream


def test_the_sdk_raises_on_an_unknown_parameter(start: Start) -> None:
    app = start()
    with pytest.raises(openai.BadRequestError) as caught:
        app.client().chat.completions.create(
            model=MODEL, messages=_user("x"), extra_body={"logit_bias": {"1": 2}}
        )
    assert caught.value.code == "unsupported_parameter"
    assert caught.value.param == "logit_bias"


def test_a_too_long_conversation_is_refused_before_any_request(
    start: Start, server: FakeOpenAIServer
) -> None:
    app = start(prompter={"context_window": 1024})
    response = _post(app.url, {"model": MODEL, "messages": _user("word " * 3000)})
    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == "context_length_exceeded"
    assert error["param"] == "messages"
    assert server.chat_requests == []


def test_upstream_429_is_a_429_with_retry_after(start: Start, server: FakeOpenAIServer) -> None:
    server.script(Reply(status=429, headers={"retry-after": "7"}))
    app = start()
    response = _post(app.url, {"model": f"vanilla/{MODEL}", "messages": _user("x")})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert _error(response)["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize("reply", [Reply(status=500), Reply(fault="drop"), Reply(status=401)])
def test_upstream_failure_is_a_502(start: Start, server: FakeOpenAIServer, reply: Reply) -> None:
    server.script(reply)
    app = start()
    response = _post(app.url, {"model": f"vanilla/{MODEL}", "messages": _user("x")})
    assert response.status_code == 502
    assert _error(response)["type"] == "upstream_error"
    assert "Traceback" not in response.text
    # what happened, not the library's advice to the operator, which names the upstream
    assert server.base_url.removesuffix("/v1") not in response.text
    assert "RetryPolicy" not in response.text


def test_a_stalling_upstream_is_told_as_timed_out(start: Start, server: FakeOpenAIServer) -> None:
    server.script(Reply(content="late", delay=5), Reply(content="late", delay=5))
    two_tries = RetryPolicy(max_attempts=2, initial_delay=0.01)
    app = start(prompter={"timeout": 0.3, "retry": two_tries})
    response = _post(app.url, {"model": f"vanilla/{MODEL}", "messages": _user("x")})
    assert response.status_code == 502
    assert _error(response)["message"] == (
        "The upstream model timed out after 2 attempts; retry later."
    )


def test_a_refusal_upstream_is_told_in_the_upstream_words(
    start: Start, server: FakeOpenAIServer
) -> None:
    refusal = {"error": {"message": "response_format is not supported by this model"}}
    server.script(Reply(status=400, error_body=refusal))
    app = start()
    response = _post(app.url, {"model": f"vanilla/{MODEL}", "messages": _user("x")})
    assert response.status_code == 502
    message = _error(response)["message"]
    assert message.startswith("The upstream model refused the request (HTTP 400)")
    assert "response_format is not supported by this model" in message


def test_the_upstream_key_never_reaches_a_client_or_the_log(
    start: Start, server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    echoing = {"error": {"message": f"Incorrect API key provided: {UPSTREAM_KEY}", "code": "x"}}
    server.script(Reply(status=400, error_body=echoing), Reply(status=500, error_body=echoing))
    app = start()
    with caplog.at_level(logging.DEBUG):
        for told in (True, False):  # a 400 is told in the upstream's words; a 500 is not
            response = _post(app.url, {"model": f"vanilla/{MODEL}", "messages": _user("x")})
            assert response.status_code == 502
            assert UPSTREAM_KEY not in response.text
            message = _error(response)["message"]
            assert ("Incorrect API key provided: ***" in message) is told
    assert len(server.chat_requests) == 2
    assert server.chat_requests[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "upstream failure" in caplog.text
    assert UPSTREAM_KEY not in caplog.text


def test_an_unexpected_error_is_a_500_with_no_details(
    start: Start, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = start()
    ep = app.state.prompters[MODEL]

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"internal detail {UPSTREAM_KEY}")

    monkeypatch.setattr(ep, "achat", broken)
    with caplog.at_level(logging.ERROR, logger="expertprompting.server"):
        response = _post(app.url, {"model": MODEL, "messages": _user("x")})
    assert response.status_code == 500
    error = _error(response)
    assert error["type"] == "server_error"
    assert "internal detail" not in response.text
    assert "Traceback" not in response.text
    assert "RuntimeError: internal detail ***" in caplog.text  # the log has it, scrubbed
    assert UPSTREAM_KEY not in caplog.text


def test_an_error_after_the_stream_began_is_an_event(
    start: Start, server: FakeOpenAIServer
) -> None:
    # the upstream falls silent after its first text: the idle deadline fails the answer
    server.script(Reply(content="one two three four", stall=5))
    app = start(prompter={"idle_timeout": 0.3})
    response = _post(app.url, {"model": f"vanilla/{MODEL}", "messages": _user("x"), "stream": True})
    assert response.status_code == 200
    events = _events(response.text)
    assert events[1]["choices"][0]["delta"] == {"content": "one "}
    assert set(events[-2]) == {"error"}
    assert events[-2]["error"]["type"] == "upstream_error"
    assert events[-1] == "[DONE]"


def test_unknown_routes_get_openai_errors(start: Start) -> None:
    app = start()
    missing = httpx.get(f"{app.url}/v1/nothing")
    assert missing.status_code == 404
    assert _error(missing)["code"] == "not_found"
    wrong = httpx.get(f"{app.url}/v1/chat/completions")
    assert wrong.status_code == 405
    _error(wrong)


# -- client keys -------------------------------------------------------------------------------
def test_client_keys_guard_every_route_but_health(start: Start) -> None:
    app = start(api_keys=[CLIENT_KEY, "another-key"])
    body = {"model": f"vanilla/{MODEL}", "messages": _user("x")}
    assert httpx.get(f"{app.url}/health").status_code == 200
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Token {CLIENT_KEY}"},
    ):
        response = _post(app.url, body, headers=headers)
        assert response.status_code == 401
        assert _error(response)["code"] == "invalid_api_key"
        assert httpx.get(f"{app.url}/v1/models", headers=headers).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        app.client("wrong").models.list()
    assert app.client(CLIENT_KEY).models.list().data
    reply = app.client("another-key").chat.completions.create(
        model=f"vanilla/{MODEL}", messages=_user("x")
    )
    assert reply.choices
    # a browser: the page asks for Basic credentials, then sends the key as the password
    page = httpx.get(f"{app.url}/")
    assert page.status_code == 401
    assert page.headers["www-authenticate"] == 'Basic realm="expertprompting"'
    basic = "Basic " + base64.b64encode(f"me:{CLIENT_KEY}".encode()).decode()
    assert httpx.get(f"{app.url}/", headers={"Authorization": basic}).status_code == 200
    assert _post(app.url, body, headers={"Authorization": basic}).status_code == 200
    wrong = "Basic " + base64.b64encode(b"me:nope").decode()
    assert httpx.get(f"{app.url}/", headers={"Authorization": wrong}).status_code == 401


def test_cors_only_when_origins_are_given(start: Start) -> None:
    preflight = {
        "Origin": "http://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    off = start()
    response = httpx.options(f"{off.url}/v1/chat/completions", headers=preflight)
    assert "access-control-allow-origin" not in response.headers
    on = start(cors_origins=["http://app.example"], api_keys=[CLIENT_KEY])
    response = httpx.options(f"{on.url}/v1/chat/completions", headers=preflight)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://app.example"
    got = httpx.get(f"{on.url}/v1/models", headers={"Origin": "http://app.example"})
    assert got.status_code == 401  # CORS does not stand in for a key
    assert got.headers["access-control-allow-origin"] == "http://app.example"


# -- limits ----------------------------------------------------------------------------------
def test_a_body_over_the_limit_is_a_413(start: Start, server: FakeOpenAIServer) -> None:
    app = start(max_body_bytes=2048)
    big = {"model": MODEL, "messages": _user("x" * 4000)}
    response = _post(app.url, big)  # Content-Length says so: refused before reading
    assert response.status_code == 413
    assert _error(response)["code"] == "request_too_large"

    def pieces() -> Iterator[bytes]:  # chunked, no Content-Length: counted as it arrives
        data = json.dumps(big).encode()
        for i in range(0, len(data), 512):
            yield data[i : i + 512]

    response = httpx.post(
        f"{app.url}/v1/chat/completions",
        content=pieces(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert server.chat_requests == []
    small = _post(app.url, {"model": f"vanilla/{MODEL}", "messages": _user("x")})
    assert small.status_code == 200


def test_past_the_queue_requests_get_429_with_retry_after(
    start: Start, server: FakeOpenAIServer
) -> None:
    release = threading.Event()

    def slow(request: Any) -> Reply:
        release.wait(20)
        return server.default_responder(request)

    server.responder = slow
    app = start(concurrency=1, max_queue=1)
    body = {"model": f"vanilla/{MODEL}", "messages": _user("x")}
    results: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(_post(app.url, body, timeout=30).status_code)
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    admission = app.state.admission
    _wait(lambda: admission.running == 1 and admission.waiting == 1)
    refused = _post(app.url, body)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert _error(refused)["code"] == "server_busy"
    release.set()
    for thread in threads:
        thread.join(30)
    assert results == [200, 200]
    assert admission.running == 0
    assert len(server.chat_requests) == 2


# -- cancellation ------------------------------------------------------------------------------
def _send_and_hang_up(url: str, body: dict[str, Any], until: Callable[[], bool]) -> None:
    """Send a request on a raw socket, wait for ``until``, then close the connection."""
    host, port = url.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        _wait(until)


def test_a_client_that_leaves_cancels_its_upstream_request(
    start: Start, server: FakeOpenAIServer
) -> None:
    server.script(Reply(content="too late", delay=30))
    app = start()
    body = {"model": f"vanilla/{MODEL}", "messages": _user("x")}
    _send_and_hang_up(app.url, body, lambda: len(server.chat_requests) == 1)
    # the upstream connection closes long before the reply's 30 s delay is over
    _wait(lambda: server.open_connections == 0)
    _wait(lambda: app.state.admission.running == 0)
    time.sleep(0.3)
    assert len(server.chat_requests) == 1  # and nothing more was sent


def test_a_client_that_leaves_during_step_one_sends_no_step_two(
    start: Start, server: FakeOpenAIServer
) -> None:
    server.script(Reply(content="You are late.", delay=30))
    app = start()
    _send_and_hang_up(
        app.url, {"model": MODEL, "messages": _user("x")}, lambda: len(server.chat_requests) == 1
    )
    _wait(lambda: server.open_connections == 0)
    time.sleep(0.3)
    assert [r.json["messages"][-1]["content"][:20] for r in server.chat_requests] == [
        server.chat_requests[0].json["messages"][-1]["content"][:20]
    ]


def test_a_stream_reader_that_leaves_cancels_the_upstream_stream(
    start: Start, server: FakeOpenAIServer
) -> None:
    words = " ".join(f"w{i}" for i in range(200))
    server.script(Reply(content=words, drip=0.1))  # 20 s of chunks
    app = start()
    body = {"model": f"vanilla/{MODEL}", "messages": _user("x"), "stream": True}
    with httpx.stream("POST", f"{app.url}/v1/chat/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        seen = [line for line, _ in zip(lines, range(6), strict=False) if line]
        assert any('"w0 "' in line for line in seen)
    _wait(lambda: server.open_connections == 0)  # well before the 20 s of chunks
    _wait(lambda: app.state.admission.running == 0)
    assert app.state.in_flight == 0
    assert len(server.chat_requests) == 1


# -- told rate limits ------------------------------------------------------------------------
def test_told_limits_hold_while_the_server_runs(start: Start) -> None:
    """--rpm / --tpm reach each model's rate limiter for as long as the server runs."""
    running = start(rpm=90, tpm=40_000)
    limiter = running.state.prompters[MODEL].session.limiter
    assert limiter is not None
    assert (limiter.rpm, limiter.tpm) == (90, 40_000)
    reply = running.client().chat.completions.create(model=f"vanilla/{MODEL}", messages=_user("Hi"))
    assert reply.choices[0].message.content
    running.stop()  # the lifespan ends: the told limits are withdrawn
    assert (limiter.rpm, limiter.tpm) == (None, None)


def test_no_limits_are_told_by_default(start: Start) -> None:
    limiter = start().state.prompters[MODEL].session.limiter
    assert limiter is not None
    assert (limiter.rpm, limiter.tpm) == (None, None)
