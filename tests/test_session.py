"""The model session: one object per model that prompters, judges and runs share."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import expertprompting
from expertprompting import ConfigurationError, ExpertPrompter, Judge, ModelSession, RetryPolicy
from expertprompting._io.session import session_config
from expertprompting._method.config import PrompterConfig
from expertprompting.testing import FakeOpenAIServer, Reply

FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05)


def test_a_prompter_runs_on_its_session(make_prompter: Callable[..., ExpertPrompter]) -> None:
    ep = make_prompter(cache=False)
    assert isinstance(ep.session, ModelSession)
    assert ep.config is ep.session.config
    assert ep.ledger is ep.session.ledger
    assert ep.counter is ep.session.counter
    ep.answer("Explain tides.", strategy="vanilla")
    assert ep.usage == ep.session.usage
    assert ep.usage.requests == 1


def test_a_judge_needs_no_prompter(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Judge built an ExpertPrompter")

    monkeypatch.setattr(ExpertPrompter, "__init__", refuse)
    server.script(Reply(content="8 6"), Reply(content="6 8"))
    judge = Judge(model="gpt-4o", base_url=server.base_url, api_key="k", retry=FAST_RETRY)
    verdict = judge.judge("Why is the sky blue?", "Rayleigh scattering.", "It is.")
    # the two orders go out at once, so which reply each gets is up to the server
    assert {verdict.score_a, verdict.score_b} == {6, 8}
    assert judge.usage == judge.session.usage
    assert judge.usage.requests == 2
    assert [r.json["temperature"] for r in server.chat_requests] == [0.0, 0.0]


def test_a_run_shares_the_sessions_ledger(server: FakeOpenAIServer) -> None:
    config = session_config(
        "gpt-4o-mini", {}, limits={"max_requests": 5}, retry=FAST_RETRY, connection_given=True
    )
    session = ModelSession(config, base_url=server.base_url, api_key="k", retry=FAST_RETRY)
    ep = ExpertPrompter(model="gpt-4o-mini", base_url=server.base_url, api_key="k")
    request = ep.planner.answer_request("Explain tides.", None, None, "vanilla")

    async def go() -> None:
        async with session.open_run(rpm=6000) as driver:
            await driver.execute(request)
        await session.async_driver().execute(request)

    asyncio.run(go())
    session.driver().execute(request)
    assert session.usage.requests == 3
    assert session.ledger.usage.requests == 3


def test_session_config_checks_local_connection_settings() -> None:
    with pytest.raises(ConfigurationError, match="runs in-process"):
        session_config("local", {}, limits={}, retry=None, connection_given=True)
    with pytest.raises(ConfigurationError, match="temperature"):
        session_config("gpt-4o", {"temperature": 9}, limits={}, retry=None, connection_given=False)


def test_a_session_without_a_key_fails_only_when_it_sends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    session = ModelSession(PrompterConfig(model="gpt-4o-mini"))
    assert "gpt-4o-mini" in repr(session)
    with pytest.raises(ConfigurationError, match="No API key"):
        session.driver()


def test_served_names_and_prices() -> None:
    session = ModelSession(PrompterConfig(model="gpt-4o-mini"))
    assert session.served_names == frozenset({"gpt-4o-mini"})
    assert session.price("gpt-4o-mini") is not None
    assert session.price("no-such-model") is None


def test_the_session_is_public() -> None:
    assert expertprompting.ModelSession is ModelSession
