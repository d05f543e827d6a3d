"""The run budget, decided before a request is sent.

* :class:`BudgetLedger`: a run budget shared by every call of one prompter. Each attempt
  *reserves* its worst case (prompt + max_tokens, and its cost) before it is sent, and is
  *settled* with the real usage when it returns; an attempt that would pass a limit is refused
  with :class:`~expertprompting.BudgetExceededError` and never sent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from .._method.config import ModelPrice, RunBudget
from .._method.errors import BudgetExceededError
from .._method.results import Usage

__all__ = ["BudgetLedger", "Reservation"]


@dataclass(frozen=True)
class Reservation:
    model: str
    tokens: int
    cost: float


class BudgetLedger:
    """Running totals of one prompter, and the guard of its :class:`RunBudget`.

    Thread-safe; its methods never block for long, so the async driver calls them directly.
    """

    def __init__(self, budget: RunBudget, price_for: Callable[[str], ModelPrice | None]) -> None:
        self.budget = budget
        self._price_for = price_for
        self._lock = threading.Lock()
        self._usage = Usage()
        self._reserved_tokens = 0
        self._reserved_cost = 0.0
        self._reserved_requests = 0

    @property
    def usage(self) -> Usage:
        """Everything spent so far (settled attempts only)."""
        with self._lock:
            return self._usage

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        price = self._price_for(model)
        return None if price is None else price.cost(prompt_tokens, completion_tokens)

    def reserve(self, model: str, prompt_tokens: int, max_tokens: int) -> Reservation:
        """Hold the worst case of one attempt, or refuse it before anything is sent."""
        tokens = prompt_tokens + max_tokens
        cost = self.cost(model, prompt_tokens, max_tokens) or 0.0
        b = self.budget
        with self._lock:
            used = self._usage
            if b.max_requests is not None:
                taken = used.requests + self._reserved_requests
                if taken + 1 > b.max_requests:
                    raise BudgetExceededError(
                        f"Run budget: {taken} of max_requests={b.max_requests} requests are used "
                        "or in flight; the next one is refused. Raise the limit or start a new "
                        "prompter.",
                        limit="max_requests",
                        used=taken,
                        requested=1,
                    )
            if b.max_total_tokens is not None:
                taken = used.total_tokens + self._reserved_tokens
                if taken + tokens > b.max_total_tokens:
                    raise BudgetExceededError(
                        f"Run budget: {taken} of max_total_tokens={b.max_total_tokens} tokens are "
                        f"used or reserved, and the next request may take {tokens} "
                        f"({prompt_tokens} prompt + {max_tokens} max_tokens). Raise the limit, "
                        "or lower max_tokens.",
                        limit="max_total_tokens",
                        used=taken,
                        requested=tokens,
                    )
            if b.max_cost is not None:
                spent = (used.cost or 0.0) + self._reserved_cost
                if spent + cost > b.max_cost:
                    raise BudgetExceededError(
                        f"Run budget: ${spent:.4f} of max_cost=${b.max_cost:.4f} is spent or "
                        f"reserved, and the next request may cost ${cost:.4f}. Raise the limit.",
                        limit="max_cost",
                        used=spent,
                        requested=cost,
                    )
            self._reserved_tokens += tokens
            self._reserved_cost += cost
            self._reserved_requests += 1
        return Reservation(model, tokens, cost)

    def settle(self, reservation: Reservation, prompt_tokens: int, completion_tokens: int) -> Usage:
        """Replace the reservation with what the attempt really spent; return that usage.

        Counts below zero are taken as zero: whatever a server reports, settling never lowers
        what was spent before (the drivers replace such counts with their own first).
        """
        prompt_tokens, completion_tokens = max(prompt_tokens, 0), max(completion_tokens, 0)
        spent = Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
            requests=1,
            cost=self.cost(reservation.model, prompt_tokens, completion_tokens),
        )
        with self._lock:
            self._reserved_tokens -= reservation.tokens
            self._reserved_cost -= reservation.cost
            self._reserved_requests -= 1
            self._usage = self._usage + spent
        return spent
