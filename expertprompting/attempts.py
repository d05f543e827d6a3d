"""Bookkeeping of one logical request's attempts, shared by the sync and async drivers.

Per attempt: reserve the worst case in the run budget, then settle it with what the attempt
really spent (failed attempts included), and check the reply. After the last attempt: the
request's record, or the typed error to raise.
"""

from __future__ import annotations

import time
from typing import NoReturn

from .budget import BudgetLedger, Reservation
from .core import ChatRequest, Completion, Exchange, check_completion
from .errors import RetryError
from .results import RequestRecord, Usage
from .retry import final_error

__all__ = ["AttemptTracker"]


class AttemptTracker:
    """Counts attempts and usage of one request; no I/O of its own."""

    def __init__(self, ledger: BudgetLedger, request: ChatRequest) -> None:
        self.ledger = ledger
        self.request = request
        self.attempts = 0
        self.usage = Usage()
        self.completion: Completion | None = None
        self._reservation: Reservation | None = None
        self._started = time.monotonic()

    def begin(self) -> ChatRequest:
        """Before sending: count the attempt and reserve it (BudgetExceededError refuses it).

        Returns the request to send on this attempt (see :meth:`ChatRequest.for_attempt`).
        """
        r = self.request
        self._reservation = self.ledger.reserve(r.model, r.prompt_tokens, r.max_tokens)
        self.attempts += 1
        return r.for_attempt(self.attempts)

    def _settle(self, prompt_tokens: int, completion_tokens: int) -> None:
        assert self._reservation is not None, "begin() was not called"
        spent = self.ledger.settle(self._reservation, prompt_tokens, completion_tokens)
        self._reservation = None
        self.usage = self.usage + spent

    def failed(self) -> None:
        """The attempt got no reply: it still counts as a request, with no tokens."""
        if self._reservation is not None:
            self._settle(0, 0)

    def replied(self, completion: Completion) -> None:
        """The attempt got a reply: settle its real usage, then check it (may raise to retry)."""
        self._settle(completion.prompt_tokens, completion.completion_tokens)
        check_completion(self.request, completion)
        self.completion = completion

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
                f"{self.attempts} attempts (the retry controller gave up silently).",
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
