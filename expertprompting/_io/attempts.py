"""Bookkeeping of one logical request's attempts, shared by the sync and async drivers.

Per attempt: reserve the worst case in the run budget, then settle it with what the attempt
really spent (failed attempts included), and check the reply. After the last attempt: the
request's record, or the typed error to raise.

It is also where every attempt is logged, once for both drivers (logger
``expertprompting.attempts``): a DEBUG line when an attempt ends, a WARNING before each retry.
The lines hold the model, step, attempt, token counts, seconds and error types, and never an API
key, a prompt or a reply (nor an error's message, which may quote them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import NoReturn

import openai
from tenacity import RetryCallState

from .._method.errors import ResponseError, RetryError
from .._method.results import RequestRecord, Usage
from .._method.wire import ChatRequest, Completion, Exchange, check_completion
from .budget import BudgetLedger, Reservation
from .ratelimit import Permit, RateLimiter, parse_rate_headers
from .retry import describe_failure, final_error, rate_limit_pause
from .transport import reply_headers

__all__ = ["AttemptTracker"]

log = logging.getLogger("expertprompting.attempts")  # a stable name, wherever the module lives
# The package's logger stays silent until the application configures logging (the library
# practice), instead of Python's last-resort handler printing our warnings to stderr. It is
# added here, where the only log lines are written, so `import expertprompting` stays free of
# the logging import.
logging.getLogger("expertprompting").addHandler(logging.NullHandler())


class AttemptTracker:
    """Counts attempts and usage of one request; no I/O of its own."""

    def __init__(
        self, ledger: BudgetLedger, request: ChatRequest, limiter: RateLimiter | None = None
    ) -> None:
        self.ledger = ledger
        self.request = request
        self.limiter = limiter
        self._permit: Permit | None = None
        self.attempts = 0
        self.usage = Usage()
        self.completion: Completion | None = None
        self._reservation: Reservation | None = None
        self._started = time.monotonic()
        self._attempt_started = self._started

    @property
    def worst_case_tokens(self) -> int:
        """What the rate limiter reserves for an attempt: the prompt plus ``max_tokens``."""
        return self.request.prompt_tokens + self.request.max_tokens

    def begin(self, permit: Permit | None = None) -> ChatRequest:
        """Before sending: count the attempt and reserve it (BudgetExceededError refuses it).

        ``permit`` is the rate limiter's, already acquired by the driver. Returns the request
        to send on this attempt (see :meth:`ChatRequest.for_attempt`).
        """
        r = self.request
        self._permit = permit
        try:
            self._reservation = self.ledger.reserve(r.model, r.prompt_tokens, r.max_tokens)
        except BaseException:
            self._settle_permit(0)
            raise
        self.attempts += 1
        self._attempt_started = time.monotonic()
        return r.for_attempt(self.attempts)

    def _fields(self, **more: object) -> dict[str, object]:
        """The structured fields of a log line (``extra=``: attributes of the record)."""
        return {
            "model": self.request.model,
            "step": self.request.step,
            "attempt": self.attempts,
            "seconds": round(time.monotonic() - self._attempt_started, 3),
            **more,
        }

    def _log_reply(self, completion: Completion, how: str) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            return
        f = self._fields(
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            finish_reason=completion.finish_reason,
        )
        log.debug(
            "%s request to %s, attempt %d: %s in %.3fs, %d prompt + %d completion tokens "
            "(finish_reason=%s)",
            f["step"],
            f["model"],
            f["attempt"],
            how,
            f["seconds"],
            f["prompt_tokens"],
            f["completion_tokens"],
            f["finish_reason"],
            extra=f,
        )

    def _settle(self, prompt_tokens: int, completion_tokens: int) -> None:
        assert self._reservation is not None, "begin() was not called"
        spent = self.ledger.settle(self._reservation, prompt_tokens, completion_tokens)
        self._reservation = None
        self.usage = self.usage + spent

    def _settle_permit(self, used_tokens: int) -> None:
        if self.limiter is not None and self._permit is not None:
            self.limiter.settle(self._permit, used_tokens)
        self._permit = None

    def failed(self, exc: BaseException | None = None) -> None:
        """The attempt got no reply: it still counts as a request, with no tokens.

        A 429 slows every worker sharing the rate limiter, not just this one; the rate
        headers of an error's reply teach the limiter as a success's do.
        """
        sent_at = self._permit.sent_at if self._permit is not None else None
        if self._reservation is not None:
            self._settle(0, 0)
        self._settle_permit(0)
        if exc is not None and log.isEnabledFor(logging.DEBUG):
            f = self._fields(error=describe_failure(exc))
            log.debug(
                "%s request to %s, attempt %d: failed in %.3fs (%s)",
                f["step"],
                f["model"],
                f["attempt"],
                f["seconds"],
                f["error"],
                extra=f,
            )
        if self.limiter is not None and exc is not None:
            headers = reply_headers(exc)
            info = parse_rate_headers(headers) if headers is not None else None
            wait = rate_limit_pause(exc)
            if wait is not None:
                self.limiter.rate_limited(wait, info, sent_at=sent_at)
            elif info is not None:
                self.limiter.observe(info, succeeded=False)

    def replied(self, completion: Completion, headers: Mapping[str, str] | None = None) -> None:
        """The attempt got a reply: settle its real usage, then check it (may raise to retry).

        ``headers`` are the reply's HTTP headers: their rate limits teach the limiter.
        """
        self._settle(completion.prompt_tokens, completion.completion_tokens)
        self._settle_permit(completion.prompt_tokens + completion.completion_tokens)
        if self.limiter is not None:
            self.limiter.observe(parse_rate_headers(headers) if headers is not None else None)
        self._log_reply(completion, "replied")
        check_completion(self.request, completion)
        self.completion = completion

    def retrying(self, state: RetryCallState) -> None:
        """Before the wait for a retry (tenacity's ``before_sleep``): one WARNING line."""
        outcome, action = state.outcome, state.next_action  # next_action: tenacity 8.2 too
        exc = outcome.exception() if outcome is not None else None
        f = self._fields(
            error=describe_failure(exc) if exc is not None else "no reply",
            wait=round(action.sleep if action is not None else 0.0, 3),
        )
        log.warning(
            "%s request to %s, attempt %d failed (%s); retrying in %.2fs",
            f["step"],
            f["model"],
            f["attempt"],
            f["error"],
            f["wait"],
            extra=f,
        )

    def broke_off(self, exc: BaseException, partial: Completion) -> ResponseError:
        """A stream failed after its first text was shown; the error to raise.

        It is not retried: text already shown cannot be taken back. The attempt is settled
        with the text that did arrive (``partial``), which the endpoint has billed.
        """
        self._settle(partial.prompt_tokens, partial.completion_tokens)
        self._settle_permit(partial.prompt_tokens + partial.completion_tokens)
        self._log_reply(partial, f"stream broke off ({describe_failure(exc)})")
        what, reason = (
            ("stalled", "stalled")
            if isinstance(exc, openai.APITimeoutError)
            else ("broke off", "interrupted")
        )
        return ResponseError(
            f"The {self.request.step} stream {what} after {len(partial.content or '')} "
            f"characters: {exc}. Call again (text already shown cannot be retried).",
            reason=reason,
            attempts=self.attempts,
        )

    def give_up(self, exc: BaseException) -> NoReturn:
        """No attempt is left: raise the typed error for ``exc`` (the SDK's error as its cause)."""
        error = final_error(exc, self.attempts)
        if error is exc:
            raise exc
        raise error from error.__cause__

    def exchange(self) -> Exchange:
        """The request's final reply and its record."""
        if self.completion is None:
            raise RetryError(
                f"The {self.request.step} request ended without a reply after "
                f"{self.attempts} attempt{'s' if self.attempts != 1 else ''} (the retry "
                "controller gave up silently).",
                attempts=self.attempts,
            )
        record = RequestRecord(
            step=self.request.step,
            model=self.completion.model,
            attempts=self.attempts,
            usage=self.usage,
            finish_reason=self.completion.finish_reason,
            seconds=time.monotonic() - self._started,
        )
        return Exchange(self.completion, record)
