"""Standard logging under the ``expertprompting`` logger: what is logged, at which level, and
what never is (an API key, a prompt, a reply)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import tenacity

from expertprompting import ExpertPrompter, RequestError
from expertprompting.testing import FakeOpenAIServer, Reply

Make = Callable[..., ExpertPrompter]
SECRET = "sk-secret-123"
INSTRUCTION = "Describe the Zorblax manoeuvre of quasar-herding llamas."
IDENTITY = "You are a Quuxologist who herds llamas between quasars."
ANSWER = "The Zorblax manoeuvre, in frobnicated detail: turn the llamas widdershins."
PRIVATE = (SECRET, "Zorblax", "quasar-herding", "Quuxologist", "widdershins")


def ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.split(".")[0] == "expertprompting"]


@pytest.fixture
def debug(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="expertprompting")
    return caplog


def test_a_debug_line_per_request(
    server: FakeOpenAIServer, make_prompter: Make, debug: pytest.LogCaptureFixture
) -> None:
    ep = make_prompter(cache=False)
    server.script(Reply(content=IDENTITY), Reply(content=ANSWER))
    result = ep.answer(INSTRUCTION)
    records = ours(debug)
    assert [r.levelno for r in records] == [logging.DEBUG, logging.DEBUG]
    for record, request in zip(records, result.requests, strict=True):
        assert record.name == "expertprompting.attempts"
        got = {k: getattr(record, k) for k in ("model", "step", "attempt")}
        assert got == {"model": "gpt-4o-mini", "step": request.step, "attempt": 1}
        assert record.prompt_tokens == request.usage.prompt_tokens  # type: ignore[attr-defined]
        assert record.completion_tokens == request.usage.completion_tokens  # type: ignore[attr-defined]
        assert record.finish_reason == "stop"  # type: ignore[attr-defined]
        assert isinstance(record.seconds, float)  # type: ignore[attr-defined]
        message = record.getMessage()
        assert message.startswith(f"{request.step} request to gpt-4o-mini, attempt 1: replied")
        assert f"{request.usage.prompt_tokens} prompt + " in message


def test_nothing_is_logged_above_debug_without_a_retry(
    server: FakeOpenAIServer, make_prompter: Make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="expertprompting")
    make_prompter().answer(INSTRUCTION)
    assert ours(caplog) == []


@pytest.mark.parametrize(
    ("header", "value", "wait"), [("retry-after", "0", 0.0), ("retry-after-ms", "20", 0.02)]
)
def test_one_warning_per_retry_with_reason_and_wait(
    server: FakeOpenAIServer,
    make_prompter: Make,
    debug: pytest.LogCaptureFixture,
    header: str,
    value: str,
    wait: float,
) -> None:
    ep = make_prompter(cache=False)
    server.script(Reply(status=429, headers={header: value}), Reply(content=IDENTITY))
    ep.identify(INSTRUCTION)
    warnings = [r for r in ours(debug) if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    (w,) = warnings
    assert w.levelno == logging.WARNING
    fields = {k: getattr(w, k) for k in ("model", "step", "attempt", "error", "wait")}
    assert fields == {
        "model": "gpt-4o-mini",
        "step": "identity",
        "attempt": 1,
        "error": "RateLimitError: HTTP 429",
        "wait": wait,
    }
    assert w.getMessage() == (
        "identity request to gpt-4o-mini, attempt 1 failed (RateLimitError: HTTP 429); "
        f"retrying in {wait:.2f}s"
    )
    lines = [(r.levelname, r.attempt) for r in ours(debug)]  # type: ignore[attr-defined]
    assert lines == [("DEBUG", 1), ("WARNING", 1), ("DEBUG", 2)]
    assert "failed in" in ours(debug)[0].getMessage()


def test_an_unusable_reply_retried_is_a_warning_with_its_reason(
    server: FakeOpenAIServer, make_prompter: Make, debug: pytest.LogCaptureFixture
) -> None:
    ep = make_prompter(cache=False)
    server.script(Reply(content="   "), Reply(content=IDENTITY))
    ep.identify(INSTRUCTION)
    (w,) = [r for r in ours(debug) if r.levelno >= logging.WARNING]
    assert w.error == "ResponseError: empty"  # type: ignore[attr-defined]


async def test_async_calls_log_the_same_lines(
    server: FakeOpenAIServer, make_prompter: Make, debug: pytest.LogCaptureFixture
) -> None:
    def lines() -> list[tuple[str, str, int, Any]]:
        return [
            (r.levelname, r.step, r.attempt, getattr(r, "error", None))  # type: ignore[attr-defined]
            for r in ours(debug)
        ]

    replies = (Reply(status=503), Reply(content=IDENTITY), Reply(content=ANSWER))
    server.script(*replies)
    make_prompter(cache=False).answer(INSTRUCTION)
    sync = lines()
    debug.clear()
    server.script(*replies)
    await make_prompter(cache=False).aanswer(INSTRUCTION)
    assert lines() == sync
    assert [line[0] for line in sync] == ["DEBUG", "WARNING", "DEBUG", "DEBUG"]


def test_a_users_tenacity_controller_keeps_its_hook(
    server: FakeOpenAIServer, make_prompter: Make, debug: pytest.LogCaptureFixture
) -> None:
    seen: list[int] = []
    retry = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(2),
        wait=tenacity.wait_none(),
        before_sleep=lambda state: seen.append(state.attempt_number),
        reraise=True,
    )
    ep = make_prompter(cache=False, retry=retry)
    server.script(Reply(status=500), Reply(content=IDENTITY))
    ep.identify(INSTRUCTION)
    assert seen == [1]
    assert [r.error for r in ours(debug) if r.levelno == logging.WARNING] == [  # type: ignore[attr-defined]
        "InternalServerError: HTTP 500"
    ]


async def test_an_async_users_hook_may_be_a_coroutine(
    server: FakeOpenAIServer, make_prompter: Make, debug: pytest.LogCaptureFixture
) -> None:
    seen: list[int] = []

    async def hook(state: tenacity.RetryCallState) -> None:
        seen.append(state.attempt_number)

    retry = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(2), wait=tenacity.wait_none(), before_sleep=hook
    )
    ep = make_prompter(cache=False, retry=retry)
    server.script(Reply(status=500), Reply(content=IDENTITY))
    await ep.aidentify(INSTRUCTION)
    assert seen == [1]
    assert len([r for r in ours(debug) if r.levelno == logging.WARNING]) == 1


async def test_no_key_prompt_or_reply_in_any_record(
    server: FakeOpenAIServer, make_prompter: Make, debug: pytest.LogCaptureFixture
) -> None:
    ep = make_prompter(api_key=SECRET, cache=False)
    server.script(
        Reply(status=429, headers={"retry-after": "0"}),
        Reply(content=IDENTITY),
        Reply(content=""),  # an empty answer, retried
        Reply(content=ANSWER),
    )
    ep.answer(INSTRUCTION)
    server.script(Reply(content=IDENTITY), Reply(content=ANSWER))
    assert "".join(ep.stream(INSTRUCTION)) == ANSWER
    server.script(Reply(status=503), Reply(content=IDENTITY), Reply(content=ANSWER))
    await ep.aanswer(INSTRUCTION)
    # an error whose message quotes the prompt: only its type and status are logged
    server.script(
        Reply(status=400, error_body={"error": {"message": f"bad: {INSTRUCTION} {SECRET}"}})
    )
    with pytest.raises(RequestError):
        ep.identify(INSTRUCTION)
    records = ours(debug)
    assert {r.levelname for r in records} == {"DEBUG", "WARNING"}
    assert len(records) >= 10
    for record in records:
        text = " ".join([record.getMessage(), *map(str, vars(record).values())])
        for private in PRIVATE:
            assert private not in text, (private, record.getMessage())


def test_the_package_logger_has_a_null_handler(make_prompter: Make) -> None:
    make_prompter().answer(INSTRUCTION)
    handlers = logging.getLogger("expertprompting").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)
