"""The providers' rate-limit headers, read by a pure parser: every duration format, missing and
malformed headers (ignored, never raised)."""

from __future__ import annotations

import httpx2 as httpx
import pytest

from expertprompting._io.ratelimit import RateLimitHeaders, parse_duration, parse_rate_headers


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("1.5s", 1.5),
        ("20ms", 0.02),
        ("1m30.5s", 90.5),
        ("2h", 7200.0),
        ("1h2m3s", 3723.0),
        ("0s", 0.0),
        ("7", 7.0),  # a bare number is seconds
        ("0.25", 0.25),
        (" 3s ", 3.0),
        ("1s500ms", 1.5),
        ("250us", 250e-6),
    ],
)
def test_durations_in_the_providers_format(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "  ", "soon", "6m0", "m", "-1s", "-2", "1x", "s1", "1s 2s", "nan", "inf", "1e400"]
)
def test_malformed_durations_are_none(text: str) -> None:
    assert parse_duration(text) is None


def test_all_six_headers_are_read() -> None:
    info = parse_rate_headers(
        {
            "x-ratelimit-limit-requests": "3000",
            "x-ratelimit-limit-tokens": "2000000",
            "x-ratelimit-remaining-requests": "2999",
            "x-ratelimit-remaining-tokens": "1999000",
            "x-ratelimit-reset-requests": "20ms",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    assert info == RateLimitHeaders(
        limit_requests=3000,
        limit_tokens=2_000_000,
        remaining_requests=2999,
        remaining_tokens=1_999_000,
        reset_requests=0.02,
        reset_tokens=360.0,
    )


def test_names_are_read_in_any_case_and_from_httpx_headers() -> None:
    headers = httpx.Headers({"X-RateLimit-Limit-Requests": "60", "X-RATELIMIT-RESET-TOKENS": "1s"})
    info = parse_rate_headers(headers)
    assert info == RateLimitHeaders(limit_requests=60, reset_tokens=1.0)


def test_missing_headers_are_none_fields() -> None:
    info = parse_rate_headers({"x-ratelimit-remaining-tokens": "10", "content-type": "json"})
    assert info == RateLimitHeaders(remaining_tokens=10)


def test_no_rate_headers_at_all_is_none() -> None:
    assert parse_rate_headers({}) is None
    assert parse_rate_headers({"retry-after": "1", "content-type": "application/json"}) is None


def test_malformed_values_are_ignored_never_raised() -> None:
    info = parse_rate_headers(
        {
            "x-ratelimit-limit-requests": "lots",
            "x-ratelimit-limit-tokens": "0",  # a limit of nothing is no limit to pace to
            "x-ratelimit-remaining-requests": "-3",
            "x-ratelimit-remaining-tokens": "nan",
            "x-ratelimit-reset-requests": "later",
            "x-ratelimit-reset-tokens": "5s",
            "x-ratelimit-unknown": "whatever",
        }
    )
    assert info == RateLimitHeaders(reset_tokens=5.0)
    only_bad = {"x-ratelimit-limit-requests": "", "x-ratelimit-reset-tokens": "1 minute"}
    assert parse_rate_headers(only_bad) is None


def test_remaining_may_be_zero_and_limits_fractional() -> None:
    info = parse_rate_headers(
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-limit-requests": "0.5"}
    )
    assert info == RateLimitHeaders(limit_requests=0.5, remaining_requests=0)
