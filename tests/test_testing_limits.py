"""Provider-style rate limits in the test server, on a fake clock: exact and instant."""

from __future__ import annotations

import http.client
import json
import re
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from expertprompting._method.errors import ConfigurationError
from expertprompting._method.tokens import count_tokens
from expertprompting.testing import (
    FakeOpenAIServer,
    LimitStats,
    ProviderLimits,
    Reply,
    build_parser,
    format_duration,
    limits_from_args,
    main,
)

MODEL = "gpt-4o-mini"
USER: list[Any] = [{"role": "user", "content": "What is the boiling point of water at sea level?"}]
PROMPT = count_tokens(USER, model=MODEL)
RATE_HEADERS = [
    f"x-ratelimit-{what}-{kind}"
    for what in ("limit", "remaining", "reset")
    for kind in ("requests", "tokens")
]
DURATION = re.compile(r"^(\d+h)?(\d+m)?\d+(\.\d+)?s$|^\d+ms$")


class Clock:
    """Time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limited(clock: Clock, request: pytest.FixtureRequest) -> Iterator[FakeOpenAIServer]:
    """A server with the limits the test names (``@pytest.mark.parametrize`` on ``limits``)."""
    with FakeOpenAIServer(limits=request.param, clock=clock) as srv:
        yield srv


def post(
    server: FakeOpenAIServer, messages: list[Any] | None = None, **body: Any
) -> tuple[int, dict[str, str], Any]:
    """One chat request over a fresh connection: (status, lower-cased headers, JSON body)."""
    payload = {"model": MODEL, "messages": USER if messages is None else messages, **body}
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request(
            "POST",
            "/v1/chat/completions",
            json.dumps(payload),
            {"content-type": "application/json"},
        )
        response = conn.getresponse()
        data = json.loads(response.read())
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


def limits(**kwargs: Any) -> pytest.MarkDecorator:
    """Parametrize the ``limited`` fixture with ``ProviderLimits(**kwargs)``."""
    return pytest.mark.parametrize("limited", [ProviderLimits(**kwargs)], indirect=True)


# ---- the duration format of x-ratelimit-reset-*


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.02, "20ms"),
        (0.012, "12ms"),
        (0.0004, "1ms"),  # rounded up: a client waiting that long is never early
        (0.9996, "1s"),
        (1, "1s"),
        (1.5, "1.5s"),
        (17.28, "17.28s"),
        (60, "1m0s"),
        (90.5, "1m30.5s"),
        (360, "6m0s"),
        (3600, "1h0m0s"),
        (3725.25, "1h2m5.25s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# ---- off by default


def test_no_limits_no_headers_and_no_counts() -> None:
    with FakeOpenAIServer() as server:
        assert server.limits is None
        for _ in range(20):
            status, headers, _ = post(server)
            assert status == 200
            assert not [h for h in headers if h.startswith("x-ratelimit")]
        assert server.limit_stats == LimitStats()


# ---- the request limit


@limits(rpm=300)  # 5 requests per 1 s window, refilled at 5 a second
def test_requests_over_the_windows_share_get_429_with_retry_after(
    limited: FakeOpenAIServer,
) -> None:
    assert [post(limited)[0] for _ in range(5)] == [200] * 5
    status, headers, body = post(limited)
    assert status == 429
    assert body == {
        "error": {
            "message": body["error"]["message"],
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert "on requests per min (RPM): Limit 300" in body["error"]["message"]
    # the refused request counted too: 2 requests short, at 5 a second
    assert headers["retry-after"] == "0.4"
    tokens = 5 * (PROMPT + 16_384)  # with no token limit, tokens are still counted
    assert limited.limit_stats == LimitStats(
        accepted=5, refused=1, refused_requests=1, tokens=tokens
    )


@limits(rpm=300)
def test_refused_requests_count_against_the_limit(limited: FakeOpenAIServer, clock: Clock) -> None:
    for _ in range(6):  # 5 accepted, the sixth refused and owed
        post(limited)
    clock.now += 0.2  # one request's refill: enough only had the refusal not counted
    status, headers, _ = post(limited)
    assert status == 429
    assert headers["retry-after"] == "0.4"
    clock.now += 0.4
    assert post(limited)[0] == 200
    stats = limited.limit_stats
    assert (stats.accepted, stats.refused, stats.refused_requests) == (6, 2, 2)


@limits(rpm=120, tpm=60_000)  # 2 requests and 1000 tokens per window
def test_a_request_refused_for_tokens_still_counts_as_a_request(
    limited: FakeOpenAIServer,
) -> None:
    status, _, body = post(limited, max_tokens=70_000)  # over the minute's tokens
    assert (status, body["error"]["type"]) == (429, "tokens")
    assert post(limited, max_tokens=10)[0] == 200
    status, _, body = post(limited, max_tokens=10)  # the token refusal took a request
    assert (status, body["error"]["type"]) == (429, "requests")
    stats = limited.limit_stats
    assert (stats.refused_requests, stats.refused_tokens) == (1, 1)


@limits(rpm=600)  # 10 per window
def test_concurrent_requests_are_counted_exactly(limited: FakeOpenAIServer) -> None:
    statuses: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        status = post(limited)[0]
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=one) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * 10 + [429] * 20
    stats = limited.limit_stats
    assert (stats.accepted, stats.refused, stats.refused_requests) == (10, 20, 20)


@limits(rpm=30)  # under one request per window: one every 2 s
def test_a_limit_under_one_request_per_window_still_lets_one_through(
    limited: FakeOpenAIServer, clock: Clock
) -> None:
    assert post(limited)[0] == 200
    status, headers, _ = post(limited)
    # the refusal counts, but digs at most one window's share below empty
    assert (status, headers["retry-after"]) == (429, "2")
    clock.now += 2
    assert post(limited)[0] == 200


# ---- the token limit: max_tokens is reserved


@limits(tpm=6_000)  # 100 tokens per window, 6000 a minute
def test_max_tokens_is_reserved_before_the_request_runs(limited: FakeOpenAIServer) -> None:
    status, headers, body = post(limited)  # no max_tokens: gpt-4o-mini's 16384 is reserved
    assert (status, body["error"]["type"]) == (429, "tokens")
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert f"Requested {PROMPT + 16_384}" in body["error"]["message"]
    assert "retry-after" not in headers  # bigger than the minute's limit: waiting cannot help
    status, _, reply = post(limited, max_tokens=20)
    assert status == 200
    assert reply["usage"]["prompt_tokens"] == PROMPT
    assert limited.limit_stats.tokens == PROMPT + 20  # counted before it ran, not its usage


@limits(tpm=6_000)
def test_a_request_over_the_windows_share_waits_for_a_full_bucket_then_owes(
    limited: FakeOpenAIServer, clock: Clock
) -> None:
    assert post(limited, max_tokens=20)[0] == 200
    status, headers, _ = post(limited, max_tokens=1_000)  # more than a window's 100 tokens
    assert status == 429
    waited = float(headers["retry-after"])
    assert waited == pytest.approx((PROMPT + 20) / 100, abs=0.001)  # until the bucket is full
    clock.now += 1
    assert post(limited, max_tokens=1_000)[0] == 200  # a full bucket lets it through...
    status, headers, _ = post(limited, max_tokens=1)  # ...and the debt is repaid first
    assert status == 429
    owed = (PROMPT + 1_000) - 100  # what the big one took beyond the full bucket
    assert float(headers["retry-after"]) == pytest.approx((owed + PROMPT + 1) / 100, abs=0.001)


@limits(tpm=10_000_000)
@pytest.mark.parametrize(
    ("model", "body", "output"),
    [
        ("gpt-4o-mini", {}, 16_384),
        ("gpt-4.1", {}, 32_768),  # the model's own maximum output
        ("some-unknown-model", {}, 16_384),
        ("gpt-4o-mini", {"max_completion_tokens": 7}, 7),
        ("gpt-4o-mini", {"max_tokens": 7, "n": 3}, 21),  # each choice may be that long
    ],
)
def test_the_tokens_counted(
    limited: FakeOpenAIServer, model: str, body: dict[str, Any], output: int
) -> None:
    assert post(limited, model=model, **body)[0] == 200
    with warnings.catch_warnings():  # the unknown model's warning is not what is tested
        warnings.simplefilter("ignore")
        prompt = count_tokens(USER, model=model)
    assert limited.limit_stats.tokens == prompt + output


# ---- headers


def _numbers(headers: dict[str, str]) -> dict[str, str]:
    return {h: headers[h] for h in RATE_HEADERS}


@limits(rpm=300, tpm=60_000)  # 5 requests and 1000 tokens per window
def test_headers_on_200_and_429(limited: FakeOpenAIServer) -> None:
    cost = PROMPT + 10
    _, headers, _ = post(limited, max_tokens=10)
    assert _numbers(headers) == {
        "x-ratelimit-limit-requests": "300",
        "x-ratelimit-limit-tokens": "60000",
        "x-ratelimit-remaining-requests": "240",  # 4 of 5 left, scaled to a minute
        "x-ratelimit-remaining-tokens": str(60_000 - 60 * cost),
        "x-ratelimit-reset-requests": "200ms",  # until the bucket is full again
        "x-ratelimit-reset-tokens": format_duration(cost / 1000),
    }
    for _ in range(4):
        post(limited, max_tokens=10)
    status, headers, _ = post(limited, max_tokens=10)
    assert status == 429
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "1.2s"  # 5 used and 1 refused, at 5/s
    assert headers["x-ratelimit-limit-tokens"] == "60000"
    assert headers["x-ratelimit-remaining-tokens"] == str(60_000 - 60 * 5 * cost)
    for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        assert DURATION.match(headers[name]), headers[name]


@limits(rpm=300)
def test_only_the_limited_family_is_sent(limited: FakeOpenAIServer) -> None:
    _, headers, _ = post(limited)
    assert [h for h in RATE_HEADERS if h in headers] == [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    ]


@limits(rpm=60, tpm=60_000, headers=False)
def test_headers_false_sends_none_but_429s_keep_retry_after(limited: FakeOpenAIServer) -> None:
    status, headers, _ = post(limited, max_tokens=10)
    assert status == 200
    assert not [h for h in headers if h.startswith("x-ratelimit")]
    status, headers, _ = post(limited, max_tokens=10)
    assert status == 429
    assert not [h for h in headers if h.startswith("x-ratelimit")]
    assert headers["retry-after"] == "2"


@limits(rpm=60)
def test_scripted_replies_wait_for_an_accepted_request_and_their_headers_win(
    limited: FakeOpenAIServer, clock: Clock
) -> None:
    assert post(limited)[0] == 200
    limited.script(Reply(content="kept", headers={"x-ratelimit-limit-requests": "7"}))
    assert post(limited)[0] == 429  # refused before a reply is taken
    clock.now += 2
    status, headers, body = post(limited)
    assert (status, body["choices"][0]["message"]["content"]) == (200, "kept")
    assert headers["x-ratelimit-limit-requests"] == "7"
    assert headers["x-ratelimit-remaining-requests"] == "0"


@limits(rpm=60)
def test_the_sdk_sees_a_rate_limit_error(limited: FakeOpenAIServer) -> None:
    with openai.OpenAI(base_url=limited.base_url, api_key="test", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=USER)
        assert raw.headers["x-ratelimit-limit-requests"] == "60"
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model=MODEL, messages=USER)
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.type == "requests"
    assert caught.value.response.headers["retry-after"] == "2"


# ---- counts


@limits(rpm=60)
def test_stats_are_served_and_reset(limited: FakeOpenAIServer, clock: Clock) -> None:
    post(limited)
    post(limited)
    conn = http.client.HTTPConnection(limited.host, limited.port, timeout=10)
    conn.request("GET", "/fake/limit-stats")
    served = json.loads(conn.getresponse().read())
    conn.close()
    assert served == {
        "accepted": 1,
        "refused": 1,
        "refused_requests": 1,
        "refused_tokens": 0,
        "tokens": PROMPT + 16_384,
    }
    limited.reset()
    assert limited.limit_stats == LimitStats()
    assert post(limited)[0] == 200  # the bucket is full again


# ---- settings and the command line


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"rpm": 0}, {"tpm": -5}, {"rpm": 60, "window": 0}, {"rpm": 60, "window": float("inf")}],
)
def test_bad_limits_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        ProviderLimits(**kwargs)


def test_cli_flags_parse_into_limits() -> None:
    args = build_parser().parse_args(
        ["--rpm", "3000", "--tpm", "2000000", "--window", "0.5", "--no-rate-headers"]
    )
    assert limits_from_args(args) == ProviderLimits(
        rpm=3000, tpm=2_000_000, window=0.5, headers=False
    )
    assert limits_from_args(build_parser().parse_args(["--tpm", "1000"])) == ProviderLimits(
        tpm=1000
    )
    assert limits_from_args(build_parser().parse_args(["--latency", "0.1"])) is None


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--window", "2"], "--window"),
        (["--no-rate-headers"], "--no-rate-headers"),
        (["--rpm", "0"], "--rpm"),
        (["--rpm", "60", "--window", "-1"], "--window"),
    ],
)
def test_cli_flag_errors_name_the_flag(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)  # refused before any server starts
    assert exited.value.code == 2
    assert flag in capsys.readouterr().err
