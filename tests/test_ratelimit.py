"""Rate-limit buckets and the shared limiter, on a fake clock: exact and instant."""

from __future__ import annotations

import asyncio
import threading

import pytest

from expertprompting._io.ratelimit import Permit, RateLimiter, TokenBucket
from expertprompting._method.errors import ConfigurationError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_refills_continuously() -> None:
    bucket = TokenBucket(60, now=0.0, burst_seconds=60)  # one a second; a minute's burst
    for _ in range(60):
        assert bucket.wait_time(1, 0.0) == 0
        bucket.take(1, 0.0)
    assert bucket.wait_time(1, 0.0) == pytest.approx(1.0)
    assert bucket.wait_time(1, 0.5) == pytest.approx(0.5)
    assert bucket.wait_time(1, 1.0) == 0
    assert bucket.wait_time(61, 1000.0) == 0  # capped at the capacity: served when full


def test_give_back_is_capped_at_capacity() -> None:
    bucket = TokenBucket(100, now=0.0, burst_seconds=60)
    bucket.take(30, 0.0)
    bucket.give_back(50, 0.0)
    assert bucket.level == 100
    bucket.take(250, 0.0)  # an oversize request leaves a debt
    assert bucket.wait_time(1, 0.0) == pytest.approx(151 / (100 / 60))


def test_limits_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="rpm must be a positive number"):
        RateLimiter(rpm=0)
    with pytest.raises(ConfigurationError, match="tpm"):
        RateLimiter(tpm=-5)


def _fake_async_sleep(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        clock.now += seconds
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)


async def test_async_waiters_are_served_in_order_at_the_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    _fake_async_sleep(clock, monkeypatch)
    limiter = RateLimiter(rpm=60, burst_seconds=60, pace=1, clock=clock)  # 60, then 1/s
    served: list[int] = []

    async def worker(n: int) -> None:
        await limiter.acquire(0)
        served.append(n)

    start = clock.now
    await asyncio.gather(*(worker(n) for n in range(70)))
    assert served == list(range(70))
    assert clock.now - start == pytest.approx(10.0, abs=0.1)


async def test_settle_gives_back_unused_tokens() -> None:
    clock = Clock()
    limiter = RateLimiter(tpm=1000, burst_seconds=60, clock=clock)
    permit = await limiter.acquire(800)
    assert limiter.tokens is not None
    assert limiter.tokens.level == pytest.approx(200)
    limiter.settle(permit, 300)
    assert limiter.tokens.level == pytest.approx(700)
    limiter.settle(Permit(100), 400)  # used more than reserved: the extra is taken
    assert limiter.tokens.level == pytest.approx(400)


async def test_a_pause_holds_every_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    _fake_async_sleep(clock, monkeypatch)
    limiter = RateLimiter(clock=clock)  # no limits: only the pause applies
    limiter.pause(2.0)
    limiter.pause(0.5)  # never shortens
    assert limiter.paused_until == clock.now + 2.0
    start = clock.now
    await asyncio.gather(*(limiter.acquire(10) for _ in range(3)))
    assert clock.now - start >= 2.0
    assert limiter.pauses == 1


def test_sync_acquire_waits_with_time_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr("time.sleep", lambda s: setattr(clock, "now", clock.now + s))
    limiter = RateLimiter(rpm=2, burst_seconds=60, pace=1, clock=clock)
    for _ in range(3):
        limiter.acquire_sync(1)
    assert clock.now - 1000.0 == pytest.approx(30.0)  # the third waited half a minute


async def test_a_cancelled_waiter_does_not_block_the_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    limiter = RateLimiter(rpm=1, pace=1, clock=clock)
    await limiter.acquire(0)  # the bucket is now empty for a minute
    waiter = asyncio.create_task(limiter.acquire(0))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    clock.now += 60
    await asyncio.wait_for(limiter.acquire(0), timeout=2)  # next ticket is served


def test_threads_never_take_more_than_the_buckets_allow() -> None:
    clock = Clock()
    limiter = RateLimiter(rpm=50, tpm=5000, burst_seconds=60, clock=clock)
    taken: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):  # 40 requests of 100 tokens in all: within both buckets
            permit = limiter.acquire_sync(100)
            with lock:
                taken.append(permit.tokens)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(taken) == 40
    assert limiter.requests is not None
    assert limiter.tokens is not None
    assert limiter.requests.level == pytest.approx(10)  # nothing lost or double-counted
    assert limiter.tokens.level == pytest.approx(1000)
