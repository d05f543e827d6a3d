"""Deadlines per attempt: a slow server cannot hold a request past its time limits.

The server drips its reply (headers or body) a byte at a time, or stalls a stream; every test
asserts the typed error, that the call ended near its deadline (far before the drip would have
ended), and that the connection was closed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from expertprompting import (
    ConfigurationError,
    ExpertPrompter,
    ResponseError,
    RetryError,
    RetryPolicy,
)
from expertprompting._io.transport import DeadlineExceeded, OpenAITransport
from expertprompting._method.config import Deadlines, PrompterConfig
from expertprompting.testing import FakeOpenAIServer, Reply

Make = Callable[..., ExpertPrompter]

ONE_ATTEMPT = RetryPolicy(max_attempts=1)
TWO_ATTEMPTS = RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.01)
ANSWER = "Tides come from the Moon's pull on the oceans, twice a day."
DRIP = 0.3  # seconds per byte: a ~300-byte reply takes about 90 s
# What "cut at about the deadline" means on a loaded two-core machine: far below the drip.
SOON = 5.0


def _closed(server: FakeOpenAIServer, within: float = 5.0, left_open: int = 0) -> bool:
    """Whether the server sees at most ``left_open`` open connections within ``within``
    seconds (the client closed the others)."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        if server.open_connections <= left_open:
            return True
        time.sleep(0.05)
    return False


def _timed_out(error: BaseException) -> DeadlineExceeded:
    cause = error.__cause__
    assert isinstance(cause, DeadlineExceeded), repr(cause)
    assert isinstance(cause, openai.APITimeoutError)  # what users' tenacity filters name
    return cause


# -- whole replies ----------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [False, True], ids=["body", "headers"])
def test_a_dripping_server_is_cut_at_the_timeout(
    server: FakeOpenAIServer, make_prompter: Make, headers: bool
) -> None:
    server.script(Reply(content=ANSWER, drip=DRIP, drip_headers=headers))
    ep = make_prompter(strategy="vanilla", timeout=1.0, retry=ONE_ATTEMPT)
    started = time.monotonic()
    with pytest.raises(RetryError, match="timed out") as info:
        ep.answer("Why are there tides?")
    assert time.monotonic() - started < SOON
    assert "within timeout=1 s" in str(_timed_out(info.value))
    assert info.value.attempts == 1
    assert ep.usage.requests == 1
    assert _closed(server)


@pytest.mark.parametrize("headers", [False, True], ids=["body", "headers"])
async def test_a_dripping_server_is_cut_at_the_timeout_async(
    server: FakeOpenAIServer, make_prompter: Make, headers: bool
) -> None:
    server.script(Reply(content=ANSWER, drip=DRIP, drip_headers=headers))
    ep = make_prompter(strategy="vanilla", timeout=1.0, retry=ONE_ATTEMPT)
    started = time.monotonic()
    with pytest.raises(RetryError, match="timed out") as info:
        await ep.aanswer("Why are there tides?")
    assert time.monotonic() - started < SOON
    assert "within timeout=1 s" in str(_timed_out(info.value))
    assert _closed(server)


def test_a_server_that_sends_fast_but_too_long_is_cut(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    # a byte every tenth of a millisecond or so: no read waits long, the whole takes 6+ s
    server.script(Reply(content="x" * 60_000, drip=0.0001))
    ep = make_prompter(strategy="vanilla", timeout=0.5, retry=ONE_ATTEMPT)
    started = time.monotonic()
    with pytest.raises(RetryError, match="timed out"):
        ep.answer("Why are there tides?")
    assert time.monotonic() - started < SOON
    assert _closed(server)


def test_a_users_own_client_gets_the_deadline_too(server: FakeOpenAIServer) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="test")
    server.script(Reply(content=ANSWER, drip=DRIP, drip_headers=True))
    ep = ExpertPrompter(client=client, strategy="vanilla", timeout=1.0, retry=ONE_ATTEMPT)
    started = time.monotonic()
    with pytest.raises(RetryError, match="timed out"):
        ep.answer("Why are there tides?")
    assert time.monotonic() - started < SOON
    # the client still serves requests outside the prompter, without any deadline of ours
    server.script(Reply(content=ANSWER, drip=0.001))
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content == ANSWER


def test_a_timed_out_attempt_is_retried(server: FakeOpenAIServer, make_prompter: Make) -> None:
    server.script(Reply(content=ANSWER, drip=DRIP), Reply(content=ANSWER))
    ep = make_prompter(strategy="vanilla", timeout=1.0, retry=TWO_ATTEMPTS)
    result = ep.answer("Why are there tides?")
    assert result.answer == ANSWER
    assert result.requests[0].attempts == 2


async def test_a_timed_out_attempt_is_retried_async(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    server.script(Reply(content=ANSWER, drip=DRIP, drip_headers=True), Reply(content=ANSWER))
    ep = make_prompter(strategy="vanilla", timeout=1.0, retry=TWO_ATTEMPTS)
    result = await ep.aanswer("Why are there tides?")
    assert result.answer == ANSWER
    assert result.requests[0].attempts == 2


def test_a_slow_but_timely_reply_is_kept(server: FakeOpenAIServer, make_prompter: Make) -> None:
    # each byte well apart, but the whole reply inside the timeout
    server.script(Reply(content="Tides.", drip=0.002, drip_headers=True))
    ep = make_prompter(strategy="vanilla", timeout=30.0, retry=ONE_ATTEMPT)
    assert ep.answer("Why are there tides?").answer == "Tides."


# -- streams ----------------------------------------------------------------------------------
def _stream(ep: ExpertPrompter, got: list[str]) -> None:
    for chunk in ep.stream("Why are there tides?", strategy="vanilla"):
        got.append(chunk)


async def _astream(ep: ExpertPrompter, got: list[str]) -> None:
    async for chunk in ep.astream("Why are there tides?", strategy="vanilla"):
        got.append(chunk)


# no headers at all, or headers and a role chunk but no text
NO_FIRST_TOKEN = [Reply(content=ANSWER, delay=30), Reply(content=ANSWER, drip=30)]


@pytest.mark.parametrize("reply", NO_FIRST_TOKEN, ids=["silent", "no-text"])
def test_a_stream_without_a_first_token_times_out(
    server: FakeOpenAIServer, make_prompter: Make, reply: Reply
) -> None:
    server.script(reply)
    ep = make_prompter(first_token_timeout=1.0, retry=ONE_ATTEMPT)
    got: list[str] = []
    started = time.monotonic()
    with pytest.raises(RetryError, match="timed out") as info:
        _stream(ep, got)
    assert time.monotonic() - started < SOON
    assert got == []
    assert "within first_token_timeout=1 s" in str(_timed_out(info.value))
    assert _closed(server)


@pytest.mark.parametrize("reply", NO_FIRST_TOKEN, ids=["silent", "no-text"])
async def test_a_stream_without_a_first_token_times_out_async(
    server: FakeOpenAIServer, make_prompter: Make, reply: Reply
) -> None:
    server.script(reply)
    ep = make_prompter(first_token_timeout=1.0, retry=ONE_ATTEMPT)
    got: list[str] = []
    started = time.monotonic()
    with pytest.raises(RetryError, match="timed out") as info:
        await _astream(ep, got)
    assert time.monotonic() - started < SOON
    assert got == []
    assert "within first_token_timeout=1 s" in str(_timed_out(info.value))
    assert _closed(server)


def test_a_stream_is_retried_until_its_first_token(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    server.script(Reply(content=ANSWER, drip=30), Reply(content=ANSWER))
    ep = make_prompter(first_token_timeout=1.0, retry=TWO_ATTEMPTS)
    stream = ep.stream("Why are there tides?", strategy="vanilla")
    assert "".join(stream) == ANSWER
    assert stream.result.requests[0].attempts == 2
    assert _closed(server, left_open=1)  # the stalled attempt's connection is let go


def test_a_stream_that_stalls_after_text_says_so(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    server.script(Reply(content=ANSWER, stall=60))
    ep = make_prompter(idle_timeout=1.0, retry=TWO_ATTEMPTS)
    got: list[str] = []
    started = time.monotonic()
    with pytest.raises(ResponseError, match="stalled") as info:
        _stream(ep, got)
    assert time.monotonic() - started < SOON
    assert got == ["Tides "]  # shown, so not retried
    assert info.value.reason == "stalled"
    assert "no chunk within idle_timeout=1 s" in str(info.value)
    assert len(server.chat_requests) == 1
    assert ep.usage.completion_tokens > 0  # the text that came is counted
    assert _closed(server)


async def test_a_stream_that_stalls_after_text_says_so_async(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    server.script(Reply(content=ANSWER, stall=60))
    ep = make_prompter(idle_timeout=1.0, retry=TWO_ATTEMPTS)
    got: list[str] = []
    started = time.monotonic()
    with pytest.raises(ResponseError, match="stalled") as info:
        await _astream(ep, got)
    assert time.monotonic() - started < SOON
    assert got == ["Tides "]
    assert info.value.reason == "stalled"
    assert len(server.chat_requests) == 1
    assert _closed(server)


def test_a_long_stream_is_not_cut_by_the_whole_reply_timeout(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    # 14 chunks 0.2 s apart: about 2.6 s in all, past timeout=1, each gap far within idle=5
    server.script(Reply(content=ANSWER, drip=0.2))
    ep = make_prompter(timeout=1.0, first_token_timeout=5.0, idle_timeout=5.0, retry=ONE_ATTEMPT)
    started = time.monotonic()
    got: list[str] = []
    _stream(ep, got)
    assert "".join(got) == ANSWER
    assert time.monotonic() - started > 1.0


async def test_a_long_stream_is_not_cut_by_the_whole_reply_timeout_async(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    server.script(Reply(content=ANSWER, drip=0.2))
    ep = make_prompter(timeout=1.0, first_token_timeout=5.0, idle_timeout=5.0, retry=ONE_ATTEMPT)
    got: list[str] = []
    await _astream(ep, got)
    assert "".join(got) == ANSWER


# -- settings and the command line ------------------------------------------------------------
def test_deadline_settings() -> None:
    assert PrompterConfig().deadlines == Deadlines(timeout=60.0, first_token=60.0, idle=30.0)
    assert PrompterConfig(timeout=5).deadlines.first_token == 5  # follows --timeout
    config = PrompterConfig(timeout=5, first_token_timeout=120, idle_timeout=2)
    assert config.deadlines == Deadlines(timeout=5, first_token=120, idle=2)
    bads: list[dict[str, Any]] = [{"timeout": 0}, {"first_token_timeout": -1}, {"idle_timeout": 0}]
    for bad in bads:
        with pytest.raises(ConfigurationError):
            ExpertPrompter(base_url="http://127.0.0.1:9/v1", api_key="x", **bad)


def test_standard_clients_get_sockets_that_keep_deadlines() -> None:
    client = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="x")
    assert OpenAITransport(client, 5.0).capped
    assert OpenAITransport(client, 5.0).capped  # installing twice wraps once


EXE = str(Path(sys.executable).with_name("expertprompting"))


def test_cli_timeout_flag_cuts_a_dripping_server(server: FakeOpenAIServer) -> None:
    server.script(Reply(content=ANSWER, drip=DRIP, drip_headers=True))
    started = time.monotonic()
    result = subprocess.run(
        [
            EXE,
            "answer",
            "Tides?",
            "--strategy",
            "vanilla",
            "--base-url",
            server.base_url,
            "--timeout",
            "1",
            "--max-attempts",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.monotonic() - started < 30  # a fresh interpreter starts slowly; the drip is 60+ s
    assert result.returncode == 1
    assert "timed out" in result.stderr
    assert "within --timeout 1 s" in result.stderr  # the flag, not the Python setting
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    ("flag", "setting"),
    [
        ("--timeout", "timeout"),
        ("--first-token-timeout", "first_token_timeout"),
        ("--idle-timeout", "idle_timeout"),
    ],
)
def test_cli_timeout_flags_reach_the_prompter(flag: str, setting: str) -> None:
    from expertprompting.cli import build_parser
    from expertprompting.cli._common import prompter_from_args as _prompter

    url = "http://127.0.0.1:9/v1"
    args = build_parser().parse_args(["answer", "x", "--base-url", url, flag, "7.5"])
    assert getattr(_prompter(args).config, setting) == 7.5
    with pytest.raises(SystemExit):
        build_parser().parse_args(["answer", "x", flag, "0"])


def test_cli_timeout_flag_reaches_the_judge() -> None:
    from expertprompting.cli import build_parser
    from expertprompting.cli._evaluation import judge_from_args as _judge

    url = "http://127.0.0.1:9/v1"
    args = build_parser().parse_args(["judge", "a.jsonl", "b.jsonl", "--base-url", url])
    assert _judge(args).config.timeout == 60.0
    args = build_parser().parse_args(
        ["judge", "a.jsonl", "b.jsonl", "--base-url", url, "--timeout", "7.5"]
    )
    assert _judge(args).config.timeout == 7.5


def test_the_test_server_command_line_can_drip(make_prompter: Make) -> None:
    command = [sys.executable, "-m", "expertprompting.testing", "--drip", "0.5"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            base_url = process.stdout.readline().strip()
            ep = make_prompter(base_url=base_url, strategy="vanilla", timeout=1.0)
            with pytest.raises(RetryError, match="timed out"):
                ep.answer("Why are there tides?")
            assert ep.usage.requests == 3  # every attempt dripped, and each was cut
        finally:
            process.terminate()
