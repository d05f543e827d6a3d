"""Paced, learned and adapted rate limits (issue 12): burst capacity, even pacing, a 429 that
drains the buckets and pauses every worker once, limits learned from the replies' headers and
kept by the session, and adaptation to 429s where no header comes. Fake clocks: exact, instant."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from expertprompting import ConfigurationError, ExpertAnswer, ExpertPrompter
from expertprompting._io.ratelimit import (
    DECREASE,
    DEFAULT_BURST_SECONDS,
    INCREASE,
    PACE,
    RateLimiter,
    RateLimitHeaders,
    TokenBucket,
)
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

Make = Callable[..., ExpertPrompter]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _fake_async_sleep(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        clock.now += seconds
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)


def _fake_time_sleep(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.sleep", lambda s: setattr(clock, "now", clock.now + s))


# -- paced buckets ---------------------------------------------------------------------------


def test_a_bucket_holds_a_fraction_of_a_second_of_its_rate_by_default() -> None:
    clock = Clock()
    limiter = RateLimiter(rpm=3000, tpm=600_000, clock=clock)
    assert limiter.requests is not None
    assert limiter.tokens is not None
    # not 3000: no minute-sized burst (a quarter second's worth, under a provider's window)
    assert limiter.requests.capacity == pytest.approx(50 * DEFAULT_BURST_SECONDS)
    assert limiter.tokens.capacity == pytest.approx(10_000 * DEFAULT_BURST_SECONDS)
    wider = RateLimiter(rpm=3000, burst_seconds=2.5, clock=clock)
    assert wider.requests is not None
    assert wider.requests.capacity == pytest.approx(125)


def test_a_run_opens_with_at_most_a_seconds_worth(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    _fake_time_sleep(clock, monkeypatch)
    limiter = RateLimiter(rpm=3000, burst_seconds=1.0, clock=clock)
    start = clock.now
    for _ in range(50):
        limiter.acquire_sync(0)
    assert clock.now == start  # the burst: one second's worth, at once
    limiter.acquire_sync(0)
    assert clock.now - start == pytest.approx(1 / (50 * PACE))  # then one every 20 ms or so


async def test_requests_are_released_evenly(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    _fake_async_sleep(clock, monkeypatch)
    limiter = RateLimiter(rpm=600, clock=clock)  # 10 a second
    granted: list[float] = []

    async def worker() -> None:
        for _ in range(20):
            await limiter.acquire(0)
            granted.append(clock.now)

    start = clock.now
    await asyncio.gather(*(worker() for _ in range(8)))  # 160 requests from 8 workers
    assert len(granted) == 160
    # any span of w seconds holds at most the one-second burst plus w seconds' worth (a
    # minute-sized bucket would have let all 160 go at once)
    for w in (0.5, 1.0, 5.0):
        for t in granted:
            assert sum(1 for u in granted if t <= u < t + w) <= 10 + 10 * w + 1
    assert clock.now - start >= 15.0 - 0.01  # 10 at once, then 150 at 10 a second


def test_a_new_rate_keeps_the_level_within_the_new_capacity() -> None:
    bucket = TokenBucket(6000, now=0.0, burst_seconds=1.0)  # capacity 100
    bucket.set_rate(600, now=0.0)
    assert bucket.capacity == pytest.approx(10)
    assert bucket.level == pytest.approx(10)
    assert bucket.wait_time(11, now=0.0) == 0  # oversize: served when full, as before


# -- 429: drain, and pause once ----------------------------------------------------------------


async def test_a_429_drains_and_pauses_every_worker_once(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    _fake_async_sleep(clock, monkeypatch)
    limiter = RateLimiter(rpm=600, tpm=60_000, clock=clock)
    permits = [await limiter.acquire(10) for _ in range(8)]  # eight workers' requests in flight
    clock.now += 0.1
    assert limiter.rate_limited(2.0, sent_at=permits[0].sent_at)  # the first 429: a pause
    paused_until = limiter.paused_until
    assert paused_until == pytest.approx(clock.now + 2.0)
    assert limiter.requests is not None
    assert limiter.tokens is not None
    assert limiter.requests.level == pytest.approx(0, abs=1e-9)
    assert limiter.tokens.level == pytest.approx(0, abs=1e-9)
    for permit in permits[1:]:  # the other seven come back refused, during and after the pause
        clock.now += 0.4
        assert not limiter.rate_limited(5.0, sent_at=permit.sent_at)
    assert limiter.pauses == 1
    assert limiter.refusals == 8
    assert limiter.paused_until == paused_until  # never extended by the covered ones
    # eight refusals among a run's first replies are too little evidence to cut the rate
    rpm = limiter.rpm
    assert rpm == 600
    # after the pause the buckets open empty and refill evenly at that rate: no burst
    clock.now = paused_until
    start = clock.now
    await limiter.acquire(0)
    assert clock.now - start == pytest.approx(60 / (rpm * PACE))
    # a request sent after the pause that is refused begins a new one
    late = await limiter.acquire(0)
    assert limiter.rate_limited(1.0, sent_at=late.sent_at)
    assert limiter.pauses == 2


async def test_workers_wait_out_the_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    _fake_async_sleep(clock, monkeypatch)
    limiter = RateLimiter(clock=clock)  # no limit: only the pause applies
    limiter.rate_limited(3.0)
    start = clock.now
    await asyncio.gather(*(limiter.acquire(1) for _ in range(5)))
    assert clock.now - start >= 3.0


def test_many_workers_refused_at_once_make_one_pause(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    # the first request goes alone (nothing is known yet), the seven others together after it;
    # all eight are refused: one pause for the first, ONE for the seven, then all succeed
    refused = Reply(status=429, headers={"retry-after": "0.2"}, delay=0.3)
    server.script(*[refused] * 8)
    ep = make_prompter(strategy="vanilla", cache=False)
    results = ep.answer_many([f"Question {n}?" for n in range(8)], concurrency=8, progress=False)
    assert all(isinstance(r, ExpertAnswer) for r in results)
    limiter = ep.session.limiter
    assert limiter is not None
    assert limiter.refusals == 8
    assert limiter.pauses == 2
    assert len(server.chat_requests) == 16


# -- learned limits ----------------------------------------------------------------------------


def test_an_untold_limiter_learns_its_rates_from_headers() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock, burst_seconds=1.0)
    assert limiter.requests is None  # nothing known yet: no pacing
    assert limiter.tokens is None
    limiter.observe(
        RateLimitHeaders(
            limit_requests=3000, limit_tokens=600_000, remaining_requests=750, remaining_tokens=None
        )
    )
    assert (limiter.rpm, limiter.tpm) == (3000, 600_000)
    assert limiter.requests is not None
    assert limiter.tokens is not None
    assert limiter.requests.capacity == pytest.approx(50)
    # a quarter of the minute's allowance is left: the bucket holds a quarter of its second
    assert limiter.requests.level == pytest.approx(12.5)
    assert limiter.tokens.level == pytest.approx(10_000)


def test_a_told_limiter_keeps_the_smaller_of_told_and_learned() -> None:
    limiter = RateLimiter(rpm=1000, tpm=50_000, clock=Clock())
    limiter.observe(RateLimitHeaders(limit_requests=3000, limit_tokens=20_000))
    assert (limiter.rpm, limiter.tpm) == (1000, 20_000)
    with limiter.told(rpm=500):
        assert limiter.rpm == 500
    assert limiter.rpm == 1000


def test_a_429_with_headers_teaches_the_limit_and_is_not_guessed_at() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    info = RateLimitHeaders(limit_requests=120, remaining_requests=0)
    limiter.rate_limited(1.0, info)
    assert limiter.rpm == 120
    assert limiter.adapted_rpm is None  # the server said how fast: no adapting
    assert limiter.requests is not None
    assert limiter.requests.level == 0


def _limited(limit: int) -> Callable[[RecordedRequest], Reply]:
    headers = {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(limit - 1),
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "900000",
        "x-ratelimit-remaining-tokens": "899000",
        "x-ratelimit-reset-tokens": "6m0s",
    }

    def respond(req: RecordedRequest) -> Reply:
        return Reply(
            content="You are an expert. " + str(req.messages[-1]["content"])[:20], headers=headers
        )

    return respond


def test_learned_limits_survive_across_calls_of_one_prompter(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    server.responder = _limited(6000)
    ep = make_prompter(cache=False)
    limiter = ep.session.limiter
    assert limiter is not None
    assert limiter.requests is None  # nothing known yet
    ep.answer("What is a tide?")  # a sync call: learns
    assert (limiter.rpm, limiter.tpm) == (6000, 900_000)
    server.responder = _limited(3000)
    asyncio.run(ep.aanswer("What is a wave?"))  # an async call: same limiter
    assert limiter.rpm == 3000
    results = ep.answer_many(["a?", "b?"], progress=False, rpm=1200)  # a run: told on top
    assert all(isinstance(r, ExpertAnswer) for r in results)
    assert limiter.rpm == 3000  # the run's told limit ended with it, the learned one stays
    assert ep.session.limiter is limiter


async def test_a_run_is_paced_by_what_earlier_calls_learned(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    server.responder = _limited(600)
    ep = make_prompter(cache=False)
    await ep.aanswer("What is a tide?")
    async with ep.session.open_run(rpm=300) as driver:
        assert driver.limiter is ep.session.limiter
        assert driver.limiter is not None
        assert driver.limiter.rpm == 300  # told, smaller than learned
    assert ep.session.limiter is not None
    assert ep.session.limiter.rpm == 600


def test_streams_and_refusals_bring_their_headers_too(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter(cache=False, strategy="vanilla")
    limiter = ep.session.limiter
    assert limiter is not None
    server.script(Reply(content="Streamed.", headers={"x-ratelimit-limit-requests": "900"}))
    assert "".join(ep.stream("Say something.")) == "Streamed."
    assert limiter.rpm == 900
    server.script(
        Reply(status=429, headers={"retry-after": "0", "x-ratelimit-limit-requests": "450"}),
        Reply(content="Fine."),
    )
    assert ep.answer("Again?").answer == "Fine."
    assert limiter.rpm == 450
    assert limiter.refusals == 1


# -- adapting without headers ------------------------------------------------------------------


def test_a_429_without_headers_cuts_the_rate_then_successes_raise_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    _fake_time_sleep(clock, monkeypatch)
    limiter = RateLimiter(clock=clock)
    for _ in range(40):  # 40 requests over 2 s, each a success: 1200 a minute going through
        limiter.acquire_sync(0)
        limiter.observe(None)
        clock.now += 0.05
    assert limiter.rpm is None
    permit = limiter.acquire_sync(0)
    # a lone 429 among 40 successes pauses the workers but is no storm: no cut yet
    assert limiter.rate_limited(0.5, sent_at=permit.sent_at)
    assert limiter.rpm is None
    limiter.rate_limited(0.5, sent_at=permit.sent_at)  # two more of the same burst, covered
    limiter.rate_limited(0.5, sent_at=permit.sent_at)
    assert limiter.rpm is None
    late = limiter.acquire_sync(0)  # after the pause, refused again: now a storm (4 of 44)
    assert limiter.rate_limited(0.5, sent_at=late.sent_at)
    cut = limiter.rpm
    assert cut is not None
    going = 60 * 42 / (clock.now - 1000.0)  # the 42 requests sent since the clock started
    assert cut == pytest.approx(DECREASE * going, rel=0.1)
    limiter.rate_limited(1.0, sent_at=late.sent_at)  # covered: not cut twice
    assert limiter.rpm == cut
    for _ in range(10):
        limiter.observe(None)
    assert limiter.rpm == pytest.approx(cut * (1 + 10 * INCREASE))  # additive increase


def test_without_headers_a_run_settles_under_the_servers_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A provider that allows 600 a minute over one-second windows and says nothing about it;
    # requests are sent back to back. Adapting keeps refusals rare and the rate near the limit.
    clock = Clock()
    _fake_time_sleep(clock, monkeypatch)
    provider = TokenBucket(600, now=clock.now, burst_seconds=1.0, pace=1.0)
    limiter = RateLimiter(clock=clock)
    start, refused, served = clock.now, 0, 0
    while served < 2000:
        permit = limiter.acquire_sync(0)
        if provider.wait_time(1, clock.now) > 0:
            refused += 1
            limiter.rate_limited(1.0, sent_at=permit.sent_at)
        else:
            provider.take(1, clock.now)
            served += 1
            limiter.observe(None)
        clock.now += 0.001  # each reply takes a millisecond
    rate = served / (clock.now - start) * 60
    assert refused / (served + refused) <= 0.02  # no storm
    assert rate >= 0.75 * 600  # and most of the limit used


def test_the_burst_is_a_prompter_setting(make_prompter: Make) -> None:
    ep = make_prompter(burst_seconds=1.0)
    assert ep.session.limiter is not None
    assert ep.session.limiter.burst_seconds == 1.0
    assert make_prompter().session.limiter.burst_seconds == DEFAULT_BURST_SECONDS  # type: ignore[union-attr]
    with pytest.raises(ConfigurationError, match="burst_seconds"):
        make_prompter(burst_seconds=0)
