"""The fake OpenAI server, exercised with the real openai SDK (sync and async) over real sockets."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest

from expertprompting._method.tokens import count_tokens
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

MODEL = "gpt-4o-mini"
USER: list[Any] = [{"role": "user", "content": "What is the boiling point of water at sea level?"}]


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture
def client(server: FakeOpenAIServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0) as c:
        yield c


@pytest.fixture
async def aclient(server: FakeOpenAIServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0) as c:
        yield c


def ask(client: openai.OpenAI, **kwargs: Any) -> Any:
    kwargs.setdefault("model", MODEL)
    kwargs.setdefault("messages", USER)
    return client.chat.completions.create(**kwargs)


# ---- plain completions


def test_default_responder_echoes_with_exact_usage(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "Explain photosynthesis briefly."},
    ]
    r = ask(client, messages=messages)
    expected = "Echo: Explain photosynthesis briefly."
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-fake-")
    assert r.model == MODEL
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == expected
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert r.usage.prompt_tokens == count_tokens(messages, model=MODEL)
    assert r.usage.completion_tokens == count_tokens(expected, model=MODEL)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_default_responder_echoes_first_200_chars_of_text_parts(client: openai.OpenAI) -> None:
    long = "x" * 150 + " " + "y" * 150
    parts = [{"type": "text", "text": long[:100]}, {"type": "text", "text": long[100:]}]
    r = ask(client, messages=[{"role": "user", "content": parts}])
    assert r.choices[0].message.content == "Echo: " + long[:200]


def test_script_is_fifo_then_falls_back_to_responder(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    server.script(Reply(content="first"))
    server.script(Reply(content="second"), Reply(content="third"))
    contents = [ask(client).choices[0].message.content for _ in range(3)]
    assert contents == ["first", "second", "third"]
    assert ask(client).choices[0].message.content == "Echo: " + USER[0]["content"]

    seen: list[RecordedRequest] = []

    def responder(req: RecordedRequest) -> Reply:
        seen.append(req)
        return Reply(content=f"fixed #{len(seen)}")

    server.responder = responder
    assert ask(client).choices[0].message.content == "fixed #1"
    server.script(Reply(content="scripted wins"))
    assert ask(client).choices[0].message.content == "scripted wins"
    assert ask(client).choices[0].message.content == "fixed #2"
    assert seen[0].messages == USER


def test_recorded_request_matches_what_the_client_sent(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    before = time.monotonic()
    ask(client, max_tokens=77, temperature=0.25)
    ask(client, model="gpt-4o")
    (first, second) = server.chat_requests
    assert first.method == "POST"
    assert first.path == "/v1/chat/completions"
    assert first.json == json.loads(first.body)
    assert first.json["model"] == MODEL
    assert first.json["messages"] == USER
    assert first.messages == USER
    assert first.json["max_tokens"] == 77
    assert first.json["temperature"] == 0.25
    assert first.headers["authorization"] == "Bearer test-key"
    assert first.headers["content-type"].startswith("application/json")
    assert all(key == key.lower() for key in first.headers)
    assert second.json["model"] == "gpt-4o"
    assert before <= first.time <= second.time <= time.monotonic()
    assert server.requests == server.chat_requests


def test_content_none_and_empty_are_sent_as_scripted(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    server.script(Reply(content=None), Reply(content=""), Reply(content="  "))
    r = ask(client)
    assert r.choices[0].message.content is None
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert r.usage.completion_tokens == 0
    assert ask(client).choices[0].message.content == ""
    assert ask(client).choices[0].message.content == "  "


def test_finish_reason_usage_and_model_overrides_pass_through(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    usage = {"prompt_tokens": 700, "completion_tokens": 40, "total_tokens": 740}
    server.script(
        Reply(content="You are a half", finish_reason="length", usage=usage, model="gpt-4o-2024")
    )
    r = ask(client)
    assert r.choices[0].message.content == "You are a half"
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (
        700,
        40,
        740,
    )
    assert r.model == "gpt-4o-2024"


def test_scripted_headers_reach_successful_responses(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    server.script(Reply(content="ok", headers={"x-ratelimit-remaining-requests": "41"}))
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=USER)
    assert raw.headers["x-ratelimit-remaining-requests"] == "41"
    assert raw.parse().choices[0].message.content == "ok"


@pytest.mark.parametrize("limit_key", ["max_tokens", "max_completion_tokens"])
def test_default_responder_truncates_to_max_tokens(client: openai.OpenAI, limit_key: str) -> None:
    text = "Explain in detail how vaccines train the adaptive immune system to remember"
    r = ask(client, messages=[{"role": "user", "content": text}], **{limit_key: 5})
    content = r.choices[0].message.content
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None
    assert r.usage.completion_tokens == 5
    assert count_tokens(content, model=MODEL) == 5
    assert ("Echo: " + text).startswith(content)
    # a limit the echo fits in leaves it whole
    r = ask(client, messages=[{"role": "user", "content": "hi"}], **{limit_key: 50})
    assert (r.choices[0].message.content, r.choices[0].finish_reason) == ("Echo: hi", "stop")


def test_scripted_replies_are_not_truncated(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    long = "one two three four five six seven eight nine ten"
    server.script(Reply(content=long))
    r = ask(client, max_tokens=2)
    assert (r.choices[0].message.content, r.choices[0].finish_reason) == (long, "stop")


# ---- errors and faults


def test_429_with_retry_after_raises_rate_limit_error(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    server.script(Reply(status=429, headers={"retry-after": "0.1", "retry-after-ms": "150"}))
    with pytest.raises(openai.RateLimitError) as info:
        ask(client)
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "0.1"
    assert info.value.response.headers["retry-after-ms"] == "150"
    assert info.value.body == {"message": "scripted 429", "type": "scripted", "code": None}
    assert len(server.chat_requests) == 1


def test_sdk_retries_honour_scripted_retry_after(server: FakeOpenAIServer) -> None:
    server.script(Reply(status=429, headers={"retry-after-ms": "300"}), Reply(content="finally"))
    with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=1) as retrying:
        r = ask(retrying)
    assert r.choices[0].message.content == "finally"
    first, second = server.chat_requests
    assert second.time - first.time >= 0.29


def test_500_raises_internal_server_error_with_custom_body(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    server.script(Reply(status=500), Reply(status=503, error_body={"error": {"message": "busy"}}))
    with pytest.raises(openai.InternalServerError) as info:
        ask(client)
    assert info.value.status_code == 500
    assert "scripted 500" in info.value.message
    with pytest.raises(openai.InternalServerError) as info:
        ask(client)
    assert info.value.status_code == 503
    assert info.value.body == {"message": "busy"}


def test_a_failing_responder_becomes_a_visible_500(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    def broken(req: RecordedRequest) -> Reply:
        raise KeyError("no such fixture")

    server.responder = broken
    with pytest.raises(openai.InternalServerError) as info:
        ask(client)
    assert "no such fixture" in info.value.message
    server.reset()
    assert ask(client).choices[0].message.content == "Echo: " + USER[0]["content"]


def test_error_status_wins_over_stream(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.script(Reply(status=429, headers={"retry-after": "2"}))
    with pytest.raises(openai.RateLimitError) as info:
        ask(client, stream=True)
    assert info.value.response.headers["retry-after"] == "2"
    assert info.value.response.headers["content-type"] == "application/json"


def test_drop_raises_connection_error_and_server_keeps_serving(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    ask(client)  # a pooled keep-alive connection exists before the drop
    server.script(Reply(fault="drop"))
    with pytest.raises(openai.APIConnectionError) as info:
        ask(client)
    assert not isinstance(info.value, openai.APITimeoutError)
    assert ask(client).choices[0].finish_reason == "stop"
    assert len(server.chat_requests) == 3


def test_delay_beyond_client_timeout_raises_timeout_error(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    # The client closes the connection when it gives up, which ends the delay at once.
    server.script(Reply(content="too late", delay=60.0))
    start = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.2).chat.completions.create(model=MODEL, messages=USER)
    assert time.monotonic() - start < 30  # gave up long before the reply (a wide margin)
    assert ask(client).choices[0].message.content.startswith("Echo: ")


def test_delay_within_timeout_just_slows_the_reply(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    server.script(Reply(content="slow", delay=0.3))
    start = time.monotonic()
    assert ask(client).choices[0].message.content == "slow"
    assert time.monotonic() - start >= 0.3


def test_malformed_body_raises_json_decode_error(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    # openai 3.x does not wrap a broken JSON body in an OpenAIError: the decoder's error escapes.
    server.script(Reply(body="{not json"), Reply(body=b"[1, 2"))
    with pytest.raises(json.JSONDecodeError) as info:
        ask(client)
    assert not isinstance(info.value, openai.OpenAIError)
    with pytest.raises(json.JSONDecodeError):
        ask(client)
    assert len(server.chat_requests) == 2


async def test_malformed_body_raises_json_decode_error_async(
    server: FakeOpenAIServer, aclient: openai.AsyncOpenAI
) -> None:
    server.script(Reply(body="{not json"))
    with pytest.raises(json.JSONDecodeError):
        await aclient.chat.completions.create(model=MODEL, messages=USER)


def test_raw_body_is_sent_verbatim(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    payload = {"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": []}
    server.script(Reply(body=json.dumps(payload)))
    r = ask(client)
    assert (r.id, r.model, r.choices, r.usage) == ("x", "m", [], None)


# ---- streaming


def test_stream_sync_with_usage(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    content = "You are a  renowned\nchemist, with decades at the bench."
    server.script(Reply(content=content))
    stream = ask(client, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len([d for d in deltas if d]) >= 5  # really split into pieces
    assert "".join(deltas) == content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finals[-1] == "stop"
    assert set(finals[:-1]) == {None}
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert [c.usage is not None for c in chunks] == [False] * (len(chunks) - 1) + [True]
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage is not None
    assert usage.prompt_tokens == count_tokens(USER, model=MODEL)
    assert usage.completion_tokens == count_tokens(content, model=MODEL)
    assert server.chat_requests[0].json["stream"] is True


def test_stream_without_include_usage_has_no_usage_chunk(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    server.script(Reply(content="cut short", finish_reason="length"))
    chunks = list(ask(client, stream=True))
    assert all(c.choices and c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "cut short"
    assert chunks[-1].choices[0].finish_reason == "length"


def test_stream_and_plain_requests_share_a_client(client: openai.OpenAI) -> None:
    for i in range(10):
        if i % 2:
            text = "".join(c.choices[0].delta.content or "" for c in ask(client, stream=True))
        else:
            text = ask(client).choices[0].message.content
        assert text == "Echo: " + USER[0]["content"]


async def test_stream_async_with_usage(
    server: FakeOpenAIServer, aclient: openai.AsyncOpenAI
) -> None:
    content = "Water boils at 100 C at sea level, and lower on mountains."
    server.script(Reply(content=content))
    stream = await aclient.chat.completions.create(
        model=MODEL, messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == content
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == count_tokens(content, model=MODEL)
    # the connection stays usable afterwards
    r = await aclient.chat.completions.create(model=MODEL, messages=USER, max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None
    assert r.usage.completion_tokens == 3


async def test_async_client_sees_scripted_errors(
    server: FakeOpenAIServer, aclient: openai.AsyncOpenAI
) -> None:
    server.script(Reply(status=429, headers={"retry-after": "0.1"}), Reply(fault="drop"))
    with pytest.raises(openai.RateLimitError) as info:
        await aclient.chat.completions.create(model=MODEL, messages=USER)
    assert info.value.response.headers["retry-after"] == "0.1"
    with pytest.raises(openai.APIConnectionError):
        await aclient.chat.completions.create(model=MODEL, messages=USER)


# ---- other routes, state, connections


def test_models_route(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    models = client.models.list().data
    assert [(m.id, m.object) for m in models] == [("fake-model", "model")]
    assert [(r.method, r.path) for r in server.requests] == [("GET", "/v1/models")]
    assert server.chat_requests == []


def test_unknown_route_is_404_and_recorded(server: FakeOpenAIServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(server.base_url + "/embeddings?x=1", data=b'{"input": "a"}')
    assert info.value.code == 404
    assert json.loads(info.value.read())["error"]["code"] == "not_found"
    (req,) = server.requests
    assert (req.method, req.path, req.json) == ("POST", "/v1/embeddings", {"input": "a"})


def test_reset_clears_queue_requests_and_responder(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    server.script(Reply(content="a"), Reply(content="b"))
    server.responder = lambda req: Reply(content="custom")
    assert ask(client).choices[0].message.content == "a"
    server.reset()
    assert server.requests == []
    assert server.chat_requests == []
    assert ask(client).choices[0].message.content == "Echo: " + USER[0]["content"]
    assert len(server.requests) == 1


def test_many_sequential_requests_on_one_client(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    for i in range(50):
        r = ask(client, messages=[{"role": "user", "content": f"question {i}"}])
        assert r.choices[0].message.content == f"Echo: question {i}"
    assert [r.messages[0]["content"] for r in server.chat_requests] == [
        f"question {i}" for i in range(50)
    ]


def test_keep_alive_serves_several_requests_on_one_socket(server: FakeOpenAIServer) -> None:
    port = int(server.base_url.removesuffix("/v1").rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port)
    try:
        for i in range(3):
            body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": str(i)}]})
            conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.getheader("connection") is None  # not closing
            data = json.loads(resp.read())
            assert data["choices"][0]["message"]["content"] == f"Echo: {i}"
            if i == 0:
                sock = conn.sock
            assert conn.sock is sock is not None  # http.client reused the same socket
    finally:
        conn.close()
    assert len(server.chat_requests) == 3


def test_concurrent_requests_are_all_recorded(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    errors: list[BaseException] = []
    answers: dict[int, str | None] = {}

    def worker(i: int) -> None:
        try:
            r = ask(client, messages=[{"role": "user", "content": f"thread {i}"}])
            answers[i] = r.choices[0].message.content
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert answers == {i: f"Echo: thread {i}" for i in range(20)}
    sent = sorted(r.messages[0]["content"] for r in server.chat_requests)
    assert sent == sorted(f"thread {i}" for i in range(20))


def test_concurrent_scripted_replies_are_each_used_once(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    server.script(*[Reply(content=f"r{i}") for i in range(16)])
    results: list[Any] = []
    lock = threading.Lock()

    def worker() -> None:
        content = ask(client).choices[0].message.content
        with lock:
            results.append(content)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == sorted(f"r{i}" for i in range(16))


def test_latency_is_added_to_every_response() -> None:
    with FakeOpenAIServer(latency=0.2) as slow:
        with openai.OpenAI(base_url=slow.base_url, api_key="k", max_retries=0) as c:
            start = time.monotonic()
            c.models.list()
            ask(c)
            assert time.monotonic() - start >= 0.4
        assert len(slow.requests) == 2


def test_start_stop_lifecycle() -> None:
    srv = FakeOpenAIServer()
    with pytest.raises(RuntimeError):
        _ = srv.base_url
    srv.start()
    url = srv.base_url
    assert url.startswith("http://127.0.0.1:")
    assert url.endswith("/v1")
    with openai.OpenAI(base_url=url, api_key="k", max_retries=0) as c:
        assert ask(c).choices[0].message.content is not None
        srv.stop()
        srv.stop()  # idempotent
        with pytest.raises(openai.APIConnectionError):  # pooled keep-alive is closed too
            ask(c)
    assert len(srv.requests) == 1


def test_reply_fields_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Reply("positional")  # type: ignore[call-arg]
    assert Reply().status == 200
    assert Reply().headers == {}
    assert Reply().headers is not Reply().headers
