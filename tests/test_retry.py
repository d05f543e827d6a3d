"""Retry classification, Retry-After parsing and the final typed errors (no network)."""

from __future__ import annotations

import email.utils

import openai
import pytest
import tenacity

try:  # openai 3.x ships its own fork of httpx
    import httpx2 as httpx
except ImportError:  # pragma: no cover - openai 1.x/2.x
    import httpx  # type: ignore[no-redef,import-not-found,unused-ignore]

from expertprompting import RateLimitError, RequestError, ResponseError, RetryError, RetryPolicy
from expertprompting._io.retry import (
    _Wait,
    async_retrying,
    final_error,
    is_retryable,
    retry_after_seconds,
    sync_retrying,
)

POLICY = RetryPolicy()
REQUEST = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")


def status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    response = httpx.Response(status, headers=headers or {}, request=REQUEST)
    cls = {429: openai.RateLimitError, 500: openai.InternalServerError}.get(
        status, openai.APIStatusError
    )
    return cls(f"HTTP {status}", response=response, body=None)


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_retryable_statuses(status: int) -> None:
    assert is_retryable(status_error(status), POLICY)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_never_retried_statuses(status: int) -> None:
    assert not is_retryable(status_error(status), POLICY)


def test_connection_errors_and_timeouts_are_retried() -> None:
    assert is_retryable(openai.APIConnectionError(request=REQUEST), POLICY)
    assert is_retryable(openai.APITimeoutError(request=REQUEST), POLICY)
    assert not is_retryable(ValueError("bug"), POLICY)


def test_response_errors_follow_their_flag() -> None:
    assert is_retryable(ResponseError("e", reason="empty", retryable=True), POLICY)
    assert not is_retryable(ResponseError("e", reason="interrupted"), POLICY)


def test_retry_after_forms() -> None:
    assert retry_after_seconds({"retry-after-ms": "150"}) == pytest.approx(0.15)
    assert retry_after_seconds({"Retry-After": "2"}) == 2.0
    assert retry_after_seconds({"retry-after": "1.5"}) == 1.5
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after_seconds({"retry-after": date}, now=now) == pytest.approx(30, abs=1)
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({"retry-after": "-3"}) is None
    assert retry_after_seconds({}) is None
    # retry-after-ms wins over retry-after, as in the SDK
    assert retry_after_seconds({"retry-after-ms": "100", "retry-after": "9"}) == pytest.approx(0.1)


def _state(exc: BaseException, attempt: int) -> tenacity.RetryCallState:
    state = tenacity.RetryCallState(tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.set_exception((type(exc), exc, None))
    return state


def test_wait_honours_retry_after_with_cap() -> None:
    wait = _Wait(RetryPolicy(max_retry_after=5))
    assert wait(_state(status_error(429, {"retry-after": "2"}), 1)) == 2.0
    assert wait(_state(status_error(429, {"retry-after": "600"}), 1)) == 5.0


def test_wait_backoff_is_exponential_with_bounded_jitter() -> None:
    wait = _Wait(RetryPolicy(initial_delay=0.5, max_delay=8, jitter=0.25))
    err = status_error(500)
    for attempt, full in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 8.0), (10, 8.0)]:
        for _ in range(20):
            assert 0.75 * full <= wait(_state(err, attempt)) <= full


def test_final_errors_are_typed_and_actionable() -> None:
    e = final_error(status_error(429), 3)
    assert isinstance(e, RateLimitError)
    assert e.attempts == 3
    assert "after 3 attempts" in str(e)
    e = final_error(status_error(503), 2)
    assert type(e) is RetryError
    assert "HTTP 503" in str(e)
    e = final_error(openai.APITimeoutError(request=REQUEST), 3)
    assert type(e) is RetryError
    assert "timed out" in str(e)
    e = final_error(status_error(401), 1)
    assert isinstance(e, RequestError)
    assert e.status_code == 401
    assert "OPENAI_API_KEY" in str(e)
    assert isinstance(e.__cause__, openai.APIStatusError)
    r = ResponseError("empty", reason="empty", retryable=True)
    assert final_error(r, 3) is r
    assert r.attempts == 3
    bug = KeyError("x")
    assert final_error(bug, 1) is bug


def test_user_tenacity_controller_is_adapted_to_both_faces() -> None:
    user = tenacity.Retrying(stop=tenacity.stop_after_attempt(7), reraise=False)
    assert isinstance(sync_retrying(user), tenacity.Retrying)
    a = async_retrying(user)
    assert isinstance(a, tenacity.AsyncRetrying)
    assert a.stop is user.stop
    inner = status_error(429)
    wrapped = tenacity.RetryError(tenacity.Future.construct(1, inner, True))
    assert isinstance(final_error(wrapped, 7), RateLimitError)
