"""Request and token rate limits shared by every worker of a run (and a session's later calls).

Two continuous-refill buckets, one counting requests and one counting tokens. Each refills at
its per-minute rate evenly, a sixtieth of it per second, and holds at most ``burst_seconds`` of
it (a quarter second's worth by default): providers enforce a per-minute limit over windows
of a second or so, so a minute-sized burst would be refused, and even a whole window's share
at once meets the requests that network jitter bunches up behind it. Before an attempt is sent
it *reserves* its worst case (one request; the prompt's tokens plus ``max_tokens``), waiting
until both buckets can pay; once the reply's real usage is known the difference is given back
(:meth:`RateLimiter.settle`).

Where the rates come from (the smallest applies):

- *told*: ``rpm``/``tpm`` given to the limiter, or for a while by :meth:`RateLimiter.told`
  (a run's ``--rpm``/``--tpm``);
- *learned*: the ``x-ratelimit-*`` headers of every reply (:func:`parse_rate_headers`, given to
  :meth:`RateLimiter.observe`): their limits set the rates and their ``remaining`` counts cap the
  buckets' levels;
- *adapted*: while no header has told the request limit, a 429 cuts the request rate to
  :data:`DECREASE` of the rate that was going through, and every later success raises it by a
  constant step (additive increase, multiplicative decrease), so a server that says nothing is
  neither stormed nor left idle.

A 429 drains the buckets and pauses every worker for the ``Retry-After`` asked
(:meth:`RateLimiter.rate_limited`), once: the 429s of requests sent before that pause began are
covered by it and neither extend it nor count again.

The bucket arithmetic (:class:`TokenBucket`) and the header parser are pure: time is passed
in, so they are tested deterministically; :class:`RateLimiter` adds a lock and the waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from .._method.errors import ConfigurationError

__all__ = [
    "Headers",
    "Permit",
    "RateLimitHeaders",
    "RateLimiter",
    "TokenBucket",
    "check_rates",
    "parse_duration",
    "parse_rate_headers",
]

DEFAULT_BURST_SECONDS = 0.25
"""A bucket holds this many seconds of its rate: the most a run sends at once. Measured against
a provider-style server (1 s windows, benchmarks/rate_limits.py): with 1.0, 3.8% of a told run's
requests were refused in its first second; with 0.25, none."""

PACE = 0.97
"""A limiter releases this share of the rate in force: a provider enforcing its limit over short
windows refuses requests that network and event-loop jitter bunch up at an exact pace."""

DECREASE = 0.7
"""On a 429 without rate headers, the request rate is cut to this share of the rate that was
going through (TCP CUBIC's factor: it keeps the average nearer the limit than halving does)."""

INCREASE = 0.002
"""Each success then adds this share of the rate set at the cut (about 150 successes to climb
back by 0.3 of it): slow enough that 429s stay rare, a constant step (additive increase)."""

MIN_ADAPTED_RPM = 6.0
"""The adapted request rate never falls below this (one request every ten seconds)."""

STORM_SHARE = 0.05
"""Without rate headers, a 429 cuts the rate only when at least this share of the replies of the
last :data:`_RECENT_SECONDS` were 429s: a rate limit refuses requests in
clusters, while a server that refuses a stray request now and then (overload, a fault) is not
a limit to adapt to, and cutting on each would sink the rate run-long."""

PROBE_SECONDS = 0.5
"""Told no request limit and with nothing learned yet, a limiter lets one request go first and
holds the others until a reply (whose headers may say how fast to go) or this long: a run's
opening burst at full concurrency is what a provider's short windows refuse."""

STORM_EVIDENCE = 20
"""...and only once that many replies came in that window: a 429 among a run's first few
replies pauses the workers but says nothing yet about the rate (measured from so few requests,
"the rate going through" would be a fraction of the real one, and the cut would stick)."""

_RECENT_SECONDS = 5.0  # the window over which the rate "going through" is measured


# -- the x-ratelimit-* headers -----------------------------------------------------------------

Headers = Mapping[str, str]
"""A reply's HTTP headers (``httpx.Headers`` or a dict)."""

_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")


def parse_duration(text: str) -> float | None:
    """Seconds in a provider's duration (``6m0s``, ``1.5s``, ``20ms``, ``1m30.5s``, ``2h``, or a
    bare number of seconds); None for anything else (never an exception)."""
    text = text.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pos, seconds = 0, 0.0
        for part in _DURATION_PART.finditer(text):
            if part.start() != pos:  # something between the parts: not a duration
                return None
            seconds += float(part.group(1)) * _UNIT_SECONDS[part.group(2)]
            pos = part.end()
        if pos != len(text) or pos == 0:
            return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _count(text: str | None, *, positive: bool = False) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        return None
    return value


@dataclass(frozen=True)
class RateLimitHeaders:
    """What a reply's ``x-ratelimit-*`` headers said; None where a header was missing or
    malformed. Limits are per minute; ``reset_*`` are seconds until the limit is whole again."""

    limit_requests: float | None = None
    limit_tokens: float | None = None
    remaining_requests: float | None = None
    remaining_tokens: float | None = None
    reset_requests: float | None = None
    reset_tokens: float | None = None


def parse_rate_headers(headers: Mapping[str, str]) -> RateLimitHeaders | None:
    """The ``x-ratelimit-*`` headers of a reply (any case), or None when it carries none that
    can be read. Malformed values are ignored, never raised."""
    found: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered.startswith("x-ratelimit-") and isinstance(value, str):
            found[lowered[12:]] = value
    if not found:
        return None
    info = RateLimitHeaders(
        limit_requests=_count(found.get("limit-requests"), positive=True),
        limit_tokens=_count(found.get("limit-tokens"), positive=True),
        remaining_requests=_count(found.get("remaining-requests")),
        remaining_tokens=_count(found.get("remaining-tokens")),
        reset_requests=_duration(found.get("reset-requests")),
        reset_tokens=_duration(found.get("reset-tokens")),
    )
    return None if info == RateLimitHeaders() else info


def _duration(text: str | None) -> float | None:
    return None if text is None else parse_duration(text)


# -- buckets -----------------------------------------------------------------------------------


class TokenBucket:
    """``per_minute`` units a minute (times ``pace``), refilled evenly; holds ``burst_seconds``
    of ``per_minute`` at most. Time is given by the caller.
    """

    def __init__(
        self,
        per_minute: float,
        now: float,
        burst_seconds: float = DEFAULT_BURST_SECONDS,
        pace: float = 1.0,
    ) -> None:
        self.burst_seconds = burst_seconds
        self.pace = pace
        self.per_minute = float(per_minute)
        self.rate = self.per_minute / 60.0 * pace
        self.capacity = self.per_minute / 60.0 * burst_seconds
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
        if self.level >= needed - 1e-9 * max(needed, 1.0):  # rounding must not leave a crumb
            return 0.0
        return max(self.stamp - now, 0.0) + (needed - self.level) / self.rate

    def take(self, amount: float, now: float) -> None:
        """Take ``amount`` (call when :meth:`wait_time` said 0; may leave the bucket in debt)."""
        self._refill(now)
        self.level -= amount

    def give_back(self, amount: float, now: float) -> None:
        """Return unused capacity (never above the capacity)."""
        self._refill(now)
        self.level = min(self.capacity, self.level + amount)

    def set_rate(self, per_minute: float, now: float) -> None:
        """Refill at ``per_minute`` from now on (the level is kept, within the new capacity)."""
        if per_minute == self.per_minute:
            return
        self._refill(now)
        self.per_minute = float(per_minute)
        self.rate = self.per_minute / 60.0 * self.pace
        self.capacity = self.per_minute / 60.0 * self.burst_seconds
        self.level = min(self.level, self.capacity)

    def cap_level(self, level: float, now: float) -> None:
        """Hold no more than ``level`` (what the server says is left)."""
        self._refill(now)
        self.level = min(self.level, level)

    def drain(self, until: float) -> None:
        """Empty the bucket, refilling only from ``until`` on (the end of a pause)."""
        self.level = min(self.level, 0.0)
        self.stamp = max(self.stamp, until)


@dataclass(frozen=True)
class Permit:
    """What one attempt reserved: settle it with the real usage. ``sent_at`` is the limiter's
    clock when it was granted (a 429 for it is covered by any pause begun since)."""

    tokens: int
    sent_at: float | None = None


def check_rates(rpm: float | None, tpm: float | None) -> None:
    """Refuse a rate that is not a positive number (checked before a run opens any file)."""
    for name, value in (("rpm", rpm), ("tpm", tpm)):
        if value is not None and not value > 0:
            raise ConfigurationError(
                f"{name} must be a positive number per minute (or None for no limit), "
                f"got {value!r}."
            )


def _smallest(*values: float | None) -> float | None:
    given = [v for v in values if v is not None]
    return min(given) if given else None


class RateLimiter:
    """Told, learned and adapted rate limits and a global 429 pause, for sync and async callers.

    Waiters are served in arrival order (a ticket queue), so a large request is not starved by
    a stream of small ones. Without any limit it costs a lock per request and still spreads a
    429's pause to every worker; it begins pacing as soon as a reply's headers or a 429 say how.

    ``burst_seconds``: how many seconds of the rate a bucket holds (the largest burst);
    ``pace``: the share of the rate in force that is released (see :data:`PACE`).
    """

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        burst_seconds: float = DEFAULT_BURST_SECONDS,
        pace: float = PACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_rates(rpm, tpm)
        if not burst_seconds > 0:
            raise ConfigurationError(f"burst_seconds must be positive, got {burst_seconds!r}.")
        if not 0 < pace <= 1:
            raise ConfigurationError(f"pace must be in (0, 1], got {pace!r}.")
        self.clock = clock
        self.burst_seconds = burst_seconds
        self.pace = pace
        self.requests: TokenBucket | None = None
        self.tokens: TokenBucket | None = None
        self._lock = threading.Lock()
        self._tickets = itertools.count()
        self._serving = 0
        self._abandoned: set[int] = set()
        self._told: list[tuple[float | None, float | None]] = [(rpm, tpm)]
        self.learned_rpm: float | None = None
        """The request limit the headers gave (per minute), once one came."""
        self.learned_tpm: float | None = None
        """The token limit the headers gave (per minute), once one came."""
        self.adapted_rpm: float | None = None
        """The request rate set by 429s while no header gave the request limit."""
        self._step = 0.0  # the additive increase, fixed at each cut
        self._sent: deque[float] = deque()  # grant times of the last _RECENT_SECONDS
        self._replies: deque[tuple[float, bool]] = deque()  # (time, refused) of recent replies
        self._answered = False  # an attempt has ended (see PROBE_SECONDS)
        self._probe_at: float | None = None
        self.paused_until = 0.0
        self.pause_started = -math.inf
        self.waited_seconds = 0.0
        self.pauses = 0
        """Pauses begun (one per burst of 429s, however many workers were refused in it)."""
        self.refusals = 0
        """429s seen, covered ones included."""
        with self._lock:
            self._apply_rates(clock())

    # -- the rates -------------------------------------------------------------------------------
    @property
    def rpm(self) -> float | None:
        """The request rate in force (per minute), None for no limit."""
        told = _smallest(*(r for r, _ in self._told))
        return _smallest(told, self.learned_rpm, self.adapted_rpm)

    @property
    def tpm(self) -> float | None:
        """The token rate in force (per minute), None for no limit."""
        return _smallest(*(t for _, t in self._told), self.learned_tpm)

    def _apply_rates(self, now: float) -> None:
        """Make the buckets follow :attr:`rpm` and :attr:`tpm` (lock held)."""
        self.requests = self._bucket(self.requests, self.rpm, now)
        self.tokens = self._bucket(self.tokens, self.tpm, now)

    def _bucket(
        self, bucket: TokenBucket | None, rate: float | None, now: float
    ) -> TokenBucket | None:
        if rate is None:
            return None
        if bucket is None:
            return TokenBucket(rate, now, self.burst_seconds, self.pace)
        bucket.set_rate(rate, now)
        return bucket

    @contextlib.contextmanager
    def told(self, rpm: float | None = None, tpm: float | None = None) -> Iterator[None]:
        """Hold to ``rpm``/``tpm`` (as well as what was learned) until the block ends.

        A run's limits: runs at once on one limiter are each held to the smallest told.
        """
        check_rates(rpm, tpm)
        entry = (rpm, tpm)
        with self._lock:
            self._told.append(entry)
            self._apply_rates(self.clock())
        try:
            yield
        finally:
            with self._lock:
                self._told.remove(entry)
                self._apply_rates(self.clock())

    # -- learning ----------------------------------------------------------------------------
    def observe(self, info: RateLimitHeaders | None, *, succeeded: bool = True) -> None:
        """A reply came (``succeeded``: a usable one): learn from its rate headers, if any.

        Without headers a success raises an adapted request rate by one step.
        """
        with self._lock:
            now = self.clock()
            self._answered = True
            self._note_reply(now, refused=False)
            if info is not None:
                self._learn(info, now)
            elif succeeded and self.adapted_rpm is not None:
                self.adapted_rpm += self._step
            self._apply_rates(now)
            if info is not None:
                self._cap(info, now)

    def _learn(self, info: RateLimitHeaders, now: float) -> None:
        if info.limit_requests is not None:
            self.learned_rpm = info.limit_requests
            self.adapted_rpm = None  # the server says how fast: no need to guess
        if info.limit_tokens is not None:
            self.learned_tpm = info.limit_tokens

    def _cap(self, info: RateLimitHeaders, now: float) -> None:
        """Hold no more than the share of the limit the server says is left (``remaining``
        counts against the per-minute limit; a bucket holds a fraction of a second of it)."""
        for bucket, left, limit in (
            (self.requests, info.remaining_requests, info.limit_requests),
            (self.tokens, info.remaining_tokens, info.limit_tokens),
        ):
            if bucket is not None and left is not None:
                share = left / (limit or bucket.per_minute)
                bucket.cap_level(min(share, 1.0) * bucket.capacity, now)

    def _recent_rpm(self, now: float) -> float:
        """The request rate going through lately (per minute, lock held)."""
        while self._sent and self._sent[0] < now - _RECENT_SECONDS:
            self._sent.popleft()
        if not self._sent:
            return MIN_ADAPTED_RPM
        return 60.0 * len(self._sent) / max(now - self._sent[0], 1.0)

    def _note_reply(self, now: float, *, refused: bool) -> bool:
        """Record a reply; True when recent 429s are a storm (see :data:`STORM_SHARE`)."""
        self._replies.append((now, refused))
        while self._replies and self._replies[0][0] < now - _RECENT_SECONDS:
            self._replies.popleft()
        refusals = sum(1 for _, was in self._replies if was)
        enough = len(self._replies) >= STORM_EVIDENCE
        return enough and refusals >= STORM_SHARE * len(self._replies)

    # -- 429s --------------------------------------------------------------------------------
    def rate_limited(
        self,
        seconds: float,
        info: RateLimitHeaders | None = None,
        *,
        sent_at: float | None = None,
    ) -> bool:
        """A 429: drain the buckets and hold every worker for ``seconds``, unless a pause begun
        since the refused request was sent (``sent_at``; unknown: a pause still in force)
        already covers it. True when this 429 began a pause.

        Without rate headers it also cuts the adapted request rate (see :data:`DECREASE`).
        """
        with self._lock:
            now = self.clock()
            self.refusals += 1
            self._answered = True
            storm = self._note_reply(now, refused=True)
            if info is not None:
                self._learn(info, now)
            covered = now < self.paused_until if sent_at is None else sent_at <= self.pause_started
            if not covered:
                if self.learned_rpm is None and self.learned_tpm is None and storm:
                    going = _smallest(self._recent_rpm(now), self.rpm) or MIN_ADAPTED_RPM
                    self.adapted_rpm = max(MIN_ADAPTED_RPM, DECREASE * going)
                    self._step = INCREASE * self.adapted_rpm
                self.pause_started = now
                self.paused_until = max(self.paused_until, now + max(seconds, 0.0))
                self.pauses += 1
            self._apply_rates(now)
            if not covered:
                for bucket in (self.requests, self.tokens):
                    if bucket is not None:
                        bucket.drain(self.paused_until)
            if info is not None:
                self._cap(info, now)
            return not covered

    def pause(self, seconds: float) -> None:
        """Hold every worker for ``seconds`` from now, unless a pause is in force already."""
        with self._lock:
            now = self.clock()
            if now >= self.paused_until:
                self.pause_started = now
                self.paused_until = now + max(seconds, 0.0)
                self.pauses += 1

    # -- reserving ---------------------------------------------------------------------------
    def _try(self, ticket: int, tokens: int) -> float:
        """Take the reservation if it is this ticket's turn and both buckets allow; else wait."""
        with self._lock:
            now = self.clock()
            wait = max(self.paused_until - now, 0.0)
            if ticket != self._serving:
                return max(wait, 0.005)  # not our turn yet: check again shortly
            probing = self.rpm is None and not self._answered
            if probing and self._probe_at is not None and now < self._probe_at + PROBE_SECONDS:
                return max(wait, 0.005)  # the first request's reply is awaited
            for bucket, amount in ((self.requests, 1), (self.tokens, tokens)):
                if bucket is not None:
                    wait = max(wait, bucket.wait_time(amount, now))
            if wait > 0:
                return wait
            for bucket, amount in ((self.requests, 1), (self.tokens, tokens)):
                if bucket is not None:
                    bucket.take(amount, now)
            self._sent.append(now)
            self._recent_rpm(now)  # drops the old grant times
            if probing:
                self._probe_at = now
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
        return Permit(tokens, self.clock())

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
        return Permit(tokens, self.clock())

    def _abandon(self, ticket: int) -> None:
        """A waiter gave up (cancelled): let the queue move past its ticket."""
        with self._lock:
            if ticket == self._serving:
                self._advance()
            elif ticket > self._serving:
                self._abandoned.add(ticket)

    def settle(self, permit: Permit, used_tokens: int) -> None:
        """The attempt is over: give back what it reserved but did not use (or take the extra)."""
        with self._lock:
            self._answered = True
            if self.tokens is None:
                return
            now = self.clock()
            unused = permit.tokens - used_tokens
            if unused > 0:
                self.tokens.give_back(unused, now)
            elif unused < 0:
                self.tokens.take(-unused, now)
