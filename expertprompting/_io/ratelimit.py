"""Request and token rate limits shared by every worker of a run.

Two continuous-refill buckets, one counting requests (``rpm``) and one counting tokens
(``tpm``): each holds at most a minute's allowance and refills at a sixtieth of it per second.
Before an attempt is sent it *reserves* its worst case (one request; the prompt's tokens plus
``max_tokens``), waiting until both buckets can pay; once the reply's real usage is known the
difference is given back (:meth:`RateLimiter.settle`). Reserving the worst case keeps a burst of
concurrent workers from overshooting a limit they could only discover afterwards.

A 429 seen by one worker pauses every worker (:meth:`RateLimiter.pause`), for as long as the
server's ``Retry-After`` asked, so the whole run backs off, not just the worker that was told.

The bucket arithmetic (:class:`TokenBucket`) is pure: time is passed in, so it is tested
deterministically; :class:`RateLimiter` adds a lock and the waiting.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .._method.errors import ConfigurationError

__all__ = ["Permit", "RateLimiter", "TokenBucket", "check_rates"]


class TokenBucket:
    """``per_minute`` units of capacity, refilled continuously; time is given by the caller."""

    def __init__(self, per_minute: float, now: float) -> None:
        self.capacity = float(per_minute)
        self.rate = self.capacity / 60.0
        self.level = self.capacity
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_time(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` can be taken (0: now).

        An amount above the capacity is served when the bucket is full (it could never be
        otherwise); it then leaves the bucket in debt, which later requests wait out.
        """
        self._refill(now)
        needed = min(amount, self.capacity)
        if self.level >= needed:
            return 0.0
        return (needed - self.level) / self.rate

    def take(self, amount: float, now: float) -> None:
        """Take ``amount`` (call when :meth:`wait_time` said 0; may leave the bucket in debt)."""
        self._refill(now)
        self.level -= amount

    def give_back(self, amount: float, now: float) -> None:
        """Return unused capacity (never above the capacity)."""
        self._refill(now)
        self.level = min(self.capacity, self.level + amount)


@dataclass(frozen=True)
class Permit:
    """What one attempt reserved: settle it with the real usage."""

    tokens: int


def check_rates(rpm: float | None, tpm: float | None) -> None:
    """Refuse a rate that is not a positive number (checked before a run opens any file)."""
    for name, value in (("rpm", rpm), ("tpm", tpm)):
        if value is not None and not value > 0:
            raise ConfigurationError(
                f"{name} must be a positive number per minute (or None for no limit), "
                f"got {value!r}."
            )


class RateLimiter:
    """``rpm``/``tpm`` limits and a global 429 pause, for sync and async callers alike.

    Waiters are served in arrival order (a ticket queue), so a large request is not starved by
    a stream of small ones.
    """

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_rates(rpm, tpm)
        self.clock = clock
        now = clock()
        self.requests = TokenBucket(rpm, now) if rpm is not None else None
        self.tokens = TokenBucket(tpm, now) if tpm is not None else None
        self._lock = threading.Lock()
        self._tickets = itertools.count()
        self._serving = 0
        self._abandoned: set[int] = set()
        self.paused_until = 0.0
        self.waited_seconds = 0.0
        self.pauses = 0

    def _try(self, ticket: int, tokens: int) -> float:
        """Take the reservation if it is this ticket's turn and both buckets allow; else wait."""
        with self._lock:
            now = self.clock()
            wait = max(self.paused_until - now, 0.0)
            if ticket != self._serving:
                return max(wait, 0.005)  # not our turn yet: check again shortly
            for bucket, amount in ((self.requests, 1), (self.tokens, tokens)):
                if bucket is not None:
                    wait = max(wait, bucket.wait_time(amount, now))
            if wait > 0:
                return wait
            for bucket, amount in ((self.requests, 1), (self.tokens, tokens)):
                if bucket is not None:
                    bucket.take(amount, now)
            self._advance()
            return 0.0

    def _advance(self) -> None:
        """Serve the next ticket, skipping those whose waiters gave up (lock held)."""
        self._serving += 1
        while self._serving in self._abandoned:
            self._abandoned.discard(self._serving)
            self._serving += 1

    def _ticket(self) -> int:
        with self._lock:
            return next(self._tickets)

    async def acquire(self, tokens: int) -> Permit:
        """Wait until one request of up to ``tokens`` tokens may go; reserve it."""
        ticket = self._ticket()
        try:
            while (wait := self._try(ticket, tokens)) > 0:
                self.waited_seconds += wait
                await asyncio.sleep(wait)
        except BaseException:
            self._abandon(ticket)
            raise
        return Permit(tokens)

    def acquire_sync(self, tokens: int) -> Permit:
        """Blocking twin of :meth:`acquire`."""
        ticket = self._ticket()
        try:
            while (wait := self._try(ticket, tokens)) > 0:
                self.waited_seconds += wait
                time.sleep(wait)
        except BaseException:
            self._abandon(ticket)
            raise
        return Permit(tokens)

    def _abandon(self, ticket: int) -> None:
        """A waiter gave up (cancelled): let the queue move past its ticket."""
        with self._lock:
            if ticket == self._serving:
                self._advance()
            elif ticket > self._serving:
                self._abandoned.add(ticket)

    def settle(self, permit: Permit, used_tokens: int) -> None:
        """The attempt is over: give back what it reserved but did not use (or take the extra)."""
        if self.tokens is None:
            return
        with self._lock:
            now = self.clock()
            unused = permit.tokens - used_tokens
            if unused > 0:
                self.tokens.give_back(unused, now)
            elif unused < 0:
                self.tokens.take(-unused, now)

    def pause(self, seconds: float) -> None:
        """Hold every worker for ``seconds`` from now (extends a pause, never shortens it)."""
        with self._lock:
            until = self.clock() + max(seconds, 0.0)
            if until > self.paused_until:
                self.paused_until = until
                self.pauses += 1
