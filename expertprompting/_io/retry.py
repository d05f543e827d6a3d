"""Retry policy: what is retried, how long to wait, and what is raised when retries run out.

The classification follows the openai SDK's own (timeouts, connection errors, 408, 409, 429,
5xx), and the SDK's retries are turned off on every client we drive, so attempts are never
multiplied. Waits honour ``retry-after-ms`` and ``retry-after`` (seconds or an HTTP date).
"""

from __future__ import annotations

import email.utils
import inspect
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import openai
import tenacity
from tenacity import AsyncRetrying, RetryCallState, Retrying

from .._method.config import RetryPolicy
from .._method.errors import (
    ExpertPromptingError,
    RateLimitError,
    RequestError,
    ResponseError,
    RetryError,
)

__all__ = [
    "OnRetry",
    "RetrySpec",
    "async_retrying",
    "describe_failure",
    "final_error",
    "is_retryable",
    "rate_limit_pause",
    "retry_after_seconds",
    "sync_retrying",
]

RetrySpec = RetryPolicy | Retrying | AsyncRetrying
"""What ``retry=`` accepts: our policy model, or a tenacity ``Retrying`` / ``AsyncRetrying``."""

OnRetry = Callable[[RetryCallState], None]
"""Called before each wait for a retry (tenacity's ``before_sleep``): the drivers log there."""


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait a server asked for, in seconds, or None when it asked for none (or nonsense)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = lowered.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            if name == "retry-after-ms":
                continue
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                continue
            seconds = when.timestamp() - (time.time() if now is None else now)
        if seconds >= 0 and seconds == seconds:  # rejects NaN
            return seconds
    return None


def _status(exc: BaseException) -> int | None:
    return exc.status_code if isinstance(exc, openai.APIStatusError) else None


def is_retryable(exc: BaseException, policy: RetryPolicy) -> bool:
    """Whether ``exc`` is worth another attempt."""
    if isinstance(exc, ResponseError):
        return exc.retryable
    if isinstance(exc, openai.APIConnectionError):  # timeouts are connection errors too
        return True
    status = _status(exc)
    return status is not None and (status >= 500 or status in policy.retry_statuses)


class _Wait(tenacity.wait.wait_base):
    """Exponential backoff with jitter, unless the server said how long to wait."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, retry_state: RetryCallState) -> float:
        p = self.policy
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, openai.APIStatusError):
            asked = retry_after_seconds(exc.response.headers)
            if asked is not None:
                return float(min(asked, p.max_retry_after))
        retries: int = retry_state.attempt_number  # 1 before the first retry
        backoff: float = min(p.initial_delay * 2.0 ** (retries - 1), p.max_delay)
        return backoff * (1 - p.jitter * random.random())


def _retrying_kwargs(spec: RetrySpec) -> dict[str, Any]:
    if isinstance(spec, RetryPolicy):
        kwargs: dict[str, Any] = {
            "stop": tenacity.stop_after_attempt(spec.max_attempts),
            "wait": _Wait(spec),
            "retry": tenacity.retry_if_exception(lambda e: is_retryable(e, spec)),
            "reraise": True,
        }
    else:  # a user's tenacity controller: keep its decisions, match our face (sync/async)
        kwargs = {
            "stop": spec.stop,
            "wait": spec.wait,
            "retry": spec.retry,
            "before": spec.before,
            "after": spec.after,
            "before_sleep": spec.before_sleep,
            "reraise": spec.reraise,
            "retry_error_callback": spec.retry_error_callback,
        }
    return kwargs


def sync_retrying(spec: RetrySpec, on_retry: OnRetry | None = None) -> Retrying:
    """A fresh tenacity controller for one logical request of the sync driver.

    ``on_retry`` runs before each wait, after a ``before_sleep`` of the user's controller.
    """
    kwargs = _retrying_kwargs(spec)
    theirs = kwargs.pop("before_sleep", None)
    if on_retry is None or theirs is None:
        kwargs["before_sleep"] = on_retry or theirs
    else:

        def both(state: RetryCallState) -> None:
            theirs(state)
            on_retry(state)

        kwargs["before_sleep"] = both
    return Retrying(**kwargs)


def async_retrying(spec: RetrySpec, on_retry: OnRetry | None = None) -> AsyncRetrying:
    """A fresh tenacity controller for one logical request of the async driver.

    ``on_retry`` runs before each wait, after a ``before_sleep`` of the user's controller
    (which may be a coroutine function here).
    """
    kwargs = _retrying_kwargs(spec)
    theirs = kwargs.pop("before_sleep", None)
    if on_retry is None or theirs is None:
        kwargs["before_sleep"] = on_retry or theirs
    else:

        async def both(state: RetryCallState) -> None:
            done = theirs(state)
            if inspect.isawaitable(done):
                await done
            on_retry(state)

        kwargs["before_sleep"] = both
    return AsyncRetrying(**kwargs)


def describe_failure(exc: BaseException) -> str:
    """A short reason for a failed attempt, for logs: the error's type and its HTTP status or
    reason code, never its message (which may quote the prompt or the reply)."""
    name = type(exc).__name__
    if isinstance(exc, ResponseError):
        return f"{name}: {exc.reason}"
    status = _status(exc)
    if status is not None:
        return f"{name}: HTTP {status}"
    if isinstance(exc, openai.APIConnectionError) and exc.__cause__ is not None:
        return f"{name}: {type(exc.__cause__).__name__}"  # e.g. ReadTimeout, ConnectError
    return name


DEFAULT_429_PAUSE = 1.0
"""Seconds every worker waits after a 429 that did not say how long (capped server waits)."""


def rate_limit_pause(exc: BaseException, cap: float = 60.0) -> float | None:
    """How long a whole run should pause after ``exc``: None unless it is a 429."""
    if _status(exc) != 429:
        return None
    assert isinstance(exc, openai.APIStatusError)
    asked = retry_after_seconds(exc.response.headers)
    return min(asked, cap) if asked is not None else DEFAULT_429_PAUSE


_ALWAYS_RETRIED = frozenset({408, 409})

_WHAT_TO_DO: dict[int, str] = {
    400: "The endpoint rejected the request; check the model name and parameters.",
    401: "Check the API key (OPENAI_API_KEY or api_key=).",
    403: "The key has no access to this model or endpoint; check its permissions.",
    404: "Check the model name and the endpoint ({endpoint}).",
    422: "The endpoint could not process the request; check the parameters.",
}


def _endpoint(exc: BaseException) -> str:
    """Where the failed request went (scheme, host and port), or a neutral word."""
    try:
        url = exc.request.url  # type: ignore[attr-defined]
        return f"{url.scheme}://{url.netloc.decode('ascii')}"
    except Exception:  # errors built by hand may carry no request
        return "the endpoint"


def _detail(exc: BaseException) -> str:
    """What went wrong, as a clause: no trailing period, and nothing that repeats our words."""
    # "Connection error." says nothing: the transport's own error (the cause) says why
    text = str(exc) if isinstance(exc, openai.APIStatusError) else str(exc.__cause__ or "")
    return " ".join(text.split()).rstrip(". ")


def final_error(exc: BaseException, attempts: int) -> BaseException:
    """What to raise after the last attempt failed with ``exc``: one of our typed errors."""
    if isinstance(exc, tenacity.RetryError):  # a user's controller without reraise=True
        inner = exc.last_attempt.exception()
        if inner is not None:
            return final_error(inner, attempts)
    if isinstance(exc, ResponseError):
        exc.attempts = attempts
        return exc
    if isinstance(exc, ExpertPromptingError) or not isinstance(exc, openai.OpenAIError):
        return exc
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    status = _status(exc)
    endpoint = _endpoint(exc)
    detail = _detail(exc)
    if status == 429:
        error: BaseException = RateLimitError(
            f"Rate limited (HTTP 429) after {tries}. Lower the request rate or concurrency, "
            "raise RetryPolicy.max_attempts, or ask the provider for a higher limit.",
            attempts=attempts,
            what="was rate limited (HTTP 429)",
        )
    elif isinstance(exc, openai.APIConnectionError) or (
        status is not None and (status >= 500 or status in _ALWAYS_RETRIED)
    ):
        what = (
            "timed out"
            if isinstance(exc, openai.APITimeoutError)
            else (f"failed with HTTP {status}" if status else "could not connect")
        )
        error = RetryError(
            f"The request {what} after {tries}" + (f" ({detail})" if detail else "") + ". "
            f"Check that {endpoint} is up, raise timeout= or RetryPolicy.max_attempts, "
            "and try again.",
            attempts=attempts,
            what=what,
        )
    else:
        advice = _WHAT_TO_DO.get(status or 0, "Check the request; retrying will not help.")
        error = RequestError(
            f"The endpoint refused the request (HTTP {status})"
            + (f": {detail}" if detail else "")
            + f". {advice.format(endpoint=endpoint)}",
            status_code=status,
        )
    error.__cause__ = exc
    return error
