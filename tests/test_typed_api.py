"""The public API is typed: explicit keyword arguments, the same on sync and async twins, and
per-call overrides (``ep.answer(q, max_tokens=20)``) that change one call only."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openai
import pytest

from expertprompting import (
    ConfigurationError,
    ExpertAnswer,
    ExpertPrompter,
    Judge,
    ModelPrice,
    PrompterConfig,
    RetryError,
    RetryPolicy,
    RunBudget,
    TiktokenCounter,
)
from expertprompting._datasets.generate import agenerate, generate
from expertprompting._io.cache import MemoryCache
from expertprompting._io.local import LOCAL_DEFAULTS, LocalModel
from expertprompting._io.transport import DeadlineExceeded
from expertprompting._method.config import CallOverrides, Deadlines
from expertprompting._method.exemplars import default_exemplars
from expertprompting.testing import FakeOpenAIServer, Reply

Make = Callable[..., ExpertPrompter]

ROOT = Path(__file__).resolve().parents[1]
Q = "Why is the sky blue?"
ANSWER = "Air scatters blue light more than red light."
ONE_ATTEMPT = RetryPolicy(max_attempts=1)
DRIP = 0.3  # seconds per byte: a dripped reply would take far longer than any deadline here
SOON = 5.0  # "cut at about the deadline" on a loaded two-core machine


# -- signatures ---------------------------------------------------------------------------------
TWINS: list[tuple[Callable[..., Any], Callable[..., Any]]] = [
    (ExpertPrompter.identify, ExpertPrompter.aidentify),
    (ExpertPrompter.answer, ExpertPrompter.aanswer),
    (ExpertPrompter.stream, ExpertPrompter.astream),
    (ExpertPrompter.answer_many, ExpertPrompter.aanswer_many),
    (ExpertPrompter.generate, ExpertPrompter.agenerate),
    (generate, agenerate),
    (Judge.judge_files, Judge.ajudge_files),
]


@pytest.mark.parametrize(("sync", "twin"), TWINS, ids=[s.__qualname__ for s, _ in TWINS])
def test_sync_and_async_twins_have_identical_signatures(
    sync: Callable[..., Any], twin: Callable[..., Any]
) -> None:
    s, a = inspect.signature(sync), inspect.signature(twin)
    assert list(s.parameters.values()) == list(a.parameters.values())


def test_the_prompters_generate_takes_what_the_module_function_takes() -> None:
    method = list(inspect.signature(ExpertPrompter.generate).parameters.values())[1:]
    function = list(inspect.signature(generate).parameters.values())[1:]
    assert method == function  # self and prompter aside


ENTRY_POINTS: list[Callable[..., Any]] = [
    ExpertPrompter.__init__,
    ExpertPrompter.identify,
    ExpertPrompter.answer,
    ExpertPrompter.stream,
    ExpertPrompter.generate,
    generate,
    Judge.__init__,
    Judge.judge_files,
]


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=[e.__qualname__ for e in ENTRY_POINTS])
def test_entry_points_take_typed_documented_keywords(entry: Callable[..., Any]) -> None:
    doc = inspect.getdoc(entry) or ""
    for name, param in inspect.signature(entry).parameters.items():
        if name == "self":
            continue
        assert param.annotation is not inspect.Parameter.empty, name
        assert "Any" not in str(param.annotation), f"{name}: {param.annotation}"
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            # only a catch-all typed Never: a misspelt keyword is a type error, and at run
            # time a ConfigurationError rather than a TypeError
            assert param.annotation == "Never", name
        assert f":param {name}:" in doc, f"{entry.__qualname__} does not document {name}"


def test_every_prompter_setting_is_a_keyword() -> None:
    params = inspect.signature(ExpertPrompter.__init__).parameters
    settings = set(PrompterConfig.model_fields) | set(RunBudget.model_fields)
    missing = settings - set(params)
    assert not missing
    for name in settings - {"model"}:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name


def test_call_overrides_are_checked_as_the_prompter_settings_are() -> None:
    answer_only = {"stop", "response_format"}  # chat calls only; no prompter setting
    for name in set(CallOverrides.model_fields) - answer_only:
        ours = CallOverrides.model_fields[name].metadata
        assert ours == PrompterConfig.model_fields[name].metadata, name
    per_call = {"max_tokens", "temperature", "seed", "timeout"}
    assert set(CallOverrides.model_fields) == per_call | answer_only | {"top_p"}
    for method in (ExpertPrompter.answer, ExpertPrompter.stream):
        assert per_call <= set(inspect.signature(method).parameters)
    assert set(inspect.signature(ExpertPrompter.identify).parameters) >= per_call - {"max_tokens"}
    chat_call = set(CallOverrides.model_fields)
    for chat_method in (ExpertPrompter.chat, ExpertPrompter.stream_chat):
        assert chat_call <= set(inspect.signature(chat_method).parameters)


def test_mypy_sees_the_keywords(tmp_path: Path) -> None:
    """A misspelt keyword is a type error (with ``**settings: Any`` it was not)."""
    pytest.importorskip("mypy")
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from expertprompting import ExpertPrompter, Judge\n"
        "from expertprompting._datasets.generate import generate\n"
        "ep = ExpertPrompter('gpt-4o-mini', temprature=0.2)\n"
        "ep.answer('x', max_token=3)\n"
        "generate(ep, 'in.jsonl', 'out.jsonl', concurency=2)\n"
        "Judge(seeds=1).judge_files('a', 'b', 'v', a_nam='A')\n"
        "ep.answer('x', max_tokens='20')\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file=",
            "--no-error-summary",
            "--follow-imports=silent",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(probe),
        ],
        cwd=ROOT,
        env={**os.environ, "MYPYPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = {
        int(line.split(":")[1])
        for line in result.stdout.splitlines()
        if line.startswith(str(probe)) and "error:" in line
    }
    assert lines == {3, 4, 5, 6, 7}, result.stdout + result.stderr


# -- the constructors ---------------------------------------------------------------------------
def test_settings_left_out_are_the_config_defaults() -> None:
    assert ExpertPrompter(api_key="k").config == PrompterConfig()


def test_every_keyword_reaches_the_config(tmp_path: Path) -> None:
    price = ModelPrice(input=1.0, output=2.0)
    ep = ExpertPrompter(
        "gpt-4o-mini",
        base_url="http://127.0.0.1:9/v1",
        api_key="k",
        client=None,
        async_client=None,
        strategy="vanilla",
        exemplars=default_exemplars()[:5],
        k_exemplars=2,
        identity_prompt_budget=1500,
        identity_max_tokens=300,
        identity_layout="chat",
        identity_stop=["\n\n"],
        n_experts=4,
        max_tokens=200,
        context_window=16000,
        margin_tokens=20,
        temperature=0.4,
        top_p=0.9,
        seed=5,
        repeat_penalty=1.1,
        clean_answers=True,
        timeout=30.0,
        first_token_timeout=10.0,
        idle_timeout=5.0,
        retry=RetryPolicy(max_attempts=2),
        max_total_tokens=10_000,
        max_requests=50,
        max_cost=1.0,
        budget=None,
        prices={"gpt-4o-mini": price},
        token_counter=TiktokenCounter("gpt-4o-mini"),
        cache=MemoryCache(),
        identity_template=None,
        identity_system_template=None,
        identity_turn_template=None,
        answer_template=None,
        static_template="Imagine you are an expert.\n\n{{ instruction }}",
        vanilla_template=None,
        strategies={"terse": "Answer in one line.\n\n{{ instruction }}"},
    )
    assert ep.config == PrompterConfig(
        model="gpt-4o-mini",
        strategy="vanilla",
        k_exemplars=2,
        identity_prompt_budget=1500,
        identity_max_tokens=300,
        identity_layout="chat",
        identity_stop=("\n\n",),
        n_experts=4,
        max_tokens=200,
        context_window=16000,
        margin_tokens=20,
        temperature=0.4,
        top_p=0.9,
        seed=5,
        repeat_penalty=1.1,
        clean_answers=True,
        timeout=30.0,
        first_token_timeout=10.0,
        idle_timeout=5.0,
        retry=RetryPolicy(max_attempts=2),
        budget=RunBudget(max_total_tokens=10_000, max_requests=50, max_cost=1.0),
        prices={"gpt-4o-mini": price},
    )
    assert ep.answer_messages(Q, strategy="terse")[0]["content"].startswith("Answer in one line.")


def test_a_budget_object_is_taken() -> None:
    budget = RunBudget(max_requests=3)
    assert ExpertPrompter(api_key="k", budget=budget).config.budget == budget


def test_a_misspelt_keyword_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="temprature: unexpected keyword"):
        ExpertPrompter(temprature=0.2)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"Judge does not take k_exemplars="):
        Judge(api_key="k", k_exemplars=2)  # type: ignore[arg-type]


def test_the_local_models_defaults_still_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    # the file is not loaded: only the settings are under test here
    monkeypatch.setattr(
        LocalModel,
        "load",
        classmethod(lambda cls, model, window: SimpleNamespace(context_window=2048)),
    )
    counter = TiktokenCounter("gpt-4o-mini")
    plain = ExpertPrompter("local", token_counter=counter).config
    for name, value in LOCAL_DEFAULTS.items():
        assert getattr(plain, name) == value, name
    mine = ExpertPrompter("local", token_counter=counter, max_tokens=64, temperature=0.7).config
    assert (mine.max_tokens, mine.temperature) == (64, 0.7)
    assert mine.repeat_penalty == LOCAL_DEFAULTS["repeat_penalty"]


def test_a_judge_keeps_its_defaults_and_takes_its_settings() -> None:
    judge = Judge("gpt-4o", api_key="k")
    assert judge.config.temperature == 0.0
    assert judge.session.cache is None  # verdict cache off unless asked for
    judge = Judge(
        "gpt-4o",
        template=None,
        max_verdict_tokens=100,
        base_url="http://127.0.0.1:9/v1",
        api_key="k",
        client=None,
        async_client=None,
        context_window=9000,
        margin_tokens=8,
        temperature=0.3,
        top_p=0.5,
        seed=9,
        repeat_penalty=1.2,
        timeout=7.5,
        retry=RetryPolicy(max_attempts=2),
        max_total_tokens=1000,
        max_requests=10,
        max_cost=None,
        budget=None,
        prices=None,
        token_counter=None,
        cache=True,
    )
    c = judge.config
    assert (c.context_window, c.margin_tokens, c.temperature, c.top_p, c.seed) == (
        9000,
        8,
        0.3,
        0.5,
        9,
    )
    assert (c.repeat_penalty, c.timeout, c.retry.max_attempts) == (1.2, 7.5, 2)
    assert c.budget == RunBudget(max_total_tokens=1000, max_requests=10)
    assert judge.max_verdict_tokens == 100
    assert judge.session.cache is not None


# -- per-call overrides -------------------------------------------------------------------------
def _bodies(server: FakeOpenAIServer) -> list[dict[str, Any]]:
    bodies = [r.json for r in server.chat_requests]
    server.reset()
    return bodies


OVERRIDES: list[dict[str, Any]] = [
    {"max_tokens": 20},
    {"temperature": 0.9},
    {"seed": 42},
    {"max_tokens": 33, "temperature": 0.0, "seed": 7},
    {"max_tokens": 10_000_000},  # clamped to the context window, as the prompter's setting is
]


@pytest.mark.parametrize("override", OVERRIDES, ids=lambda o: ",".join(o))
@pytest.mark.parametrize("strategy", ["expert", "multi-expert"])
def test_an_override_sends_what_the_same_prompter_setting_sends(
    server: FakeOpenAIServer, make_prompter: Make, override: dict[str, Any], strategy: str
) -> None:
    experts = '["You are A.", "You are B.", "You are C."]'
    script = [Reply(content=experts)] if strategy == "multi-expert" else []
    base = {"temperature": 0.2, "seed": 1, "max_tokens": 100, "cache": False}
    ep = make_prompter(**base)
    server.script(*script)
    ep.answer(Q, strategy=strategy, **override)
    overridden = _bodies(server)
    server.script(*script)
    make_prompter(**{**base, **override}).answer(Q, strategy=strategy)
    assert overridden == _bodies(server)
    # the next call, without overrides, is the prompter's own again
    server.script(*script)
    ep.answer(Q, strategy=strategy)
    again = _bodies(server)
    server.script(*script)
    make_prompter(**base).answer(Q, strategy=strategy)
    assert again == _bodies(server)
    assert again != overridden
    assert all((b["temperature"], b["seed"]) == (0.2, 1) for b in again)


def test_max_tokens_is_the_answers_and_sampling_is_every_requests(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter(cache=False)
    planner = ep.planner
    ep.answer(Q, max_tokens=20, temperature=0.5, seed=3)
    identity, answer = _bodies(server)
    assert identity["max_tokens"] == ep.config.identity_max_tokens
    assert answer["max_tokens"] == 20
    assert all((b["temperature"], b["seed"]) == (0.5, 3) for b in (identity, answer))
    # nothing was rebuilt: the prompter's settings are as they were
    assert ep.planner is planner
    assert ep.config == make_prompter(cache=False).config


async def test_both_faces_send_the_same_overrides(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    kw: dict[str, Any] = {"max_tokens": 25, "temperature": 1.5, "seed": 8, "timeout": 30.0}
    make_prompter().answer(Q, **kw)
    sync = _bodies(server)
    await make_prompter().aanswer(Q, **kw)
    assert _bodies(server) == sync
    assert sync[-1]["max_tokens"] == 25

    stream = make_prompter().stream(Q, **kw)
    assert "".join(stream)
    sync = _bodies(server)
    astream = make_prompter().astream(Q, **kw)
    assert "".join([chunk async for chunk in astream])
    assert _bodies(server) == sync
    assert sync[-1]["stream"] is True
    assert (sync[-1]["max_tokens"], sync[-1]["temperature"], sync[-1]["seed"]) == (25, 1.5, 8)

    ident: dict[str, Any] = {"temperature": 0.1, "seed": 4, "timeout": 30.0}
    make_prompter().identify(Q, **ident)
    sync = _bodies(server)
    await make_prompter().aidentify(Q, **ident)
    assert _bodies(server) == sync
    assert (sync[0]["temperature"], sync[0]["seed"]) == (0.1, 4)
    assert sync[0]["max_tokens"] == PrompterConfig().identity_max_tokens


BAD: list[dict[str, Any]] = [
    {"max_tokens": 0},
    {"max_tokens": -5},
    {"temperature": 5},
    {"temperature": -0.1},
    {"timeout": 0},
    {"timeout": -1.0},
]


@pytest.mark.parametrize("bad", BAD, ids=lambda b: f"{next(iter(b))}={next(iter(b.values()))}")
async def test_a_bad_override_is_refused_before_any_request(
    server: FakeOpenAIServer, make_prompter: Make, bad: dict[str, Any]
) -> None:
    ep = make_prompter()
    (name,) = bad
    calls: list[Callable[[], Any]] = [
        lambda: ep.answer(Q, **bad),
        lambda: ep.stream(Q, **bad),  # at the call, not when it is read
        lambda: ep.astream(Q, **bad),
    ]
    if name != "max_tokens":
        calls.append(lambda: ep.identify(Q, **bad))
    for call in calls:
        with pytest.raises(ConfigurationError, match=rf"^Invalid call settings: {name}: ") as info:
            call()
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigurationError, match=name):
        await ep.aanswer(Q, **bad)
    if name != "max_tokens":
        with pytest.raises(ConfigurationError, match=name):
            await ep.aidentify(Q, **bad)
    assert server.requests == []


def test_overridden_deadlines_follow_the_configured_ones() -> None:
    assert PrompterConfig().deadlines_for(5) == Deadlines(timeout=5, first_token=5, idle=30)
    config = PrompterConfig(first_token_timeout=12, idle_timeout=3)
    assert config.deadlines_for(5) == Deadlines(timeout=5, first_token=12, idle=3)
    assert config.deadlines_for(None) == config.deadlines


async def _answer(ep: ExpertPrompter, face: str, **kw: Any) -> ExpertAnswer:
    """``ep.answer(Q)`` through the sync or the async face."""
    return ep.answer(Q, **kw) if face == "sync" else await ep.aanswer(Q, **kw)


def _cause_says(error: BaseException, text: str) -> bool:
    cause = error.__cause__
    return isinstance(cause, DeadlineExceeded) and text in str(cause)


@pytest.mark.parametrize("face", ["sync", "async"])
async def test_a_shorter_timeout_for_one_call(
    server: FakeOpenAIServer, make_prompter: Make, face: str
) -> None:
    ep = make_prompter(strategy="vanilla", retry=ONE_ATTEMPT)  # timeout: 60 s
    server.script(Reply(content=ANSWER, drip=DRIP))
    started = time.monotonic()
    with pytest.raises(RetryError, match="timed out") as info:
        await _answer(ep, face, timeout=1.0)
    assert time.monotonic() - started < SOON
    assert _cause_says(info.value, "within timeout=1 s")
    # the next call has the prompter's 60 s again: a reply slower than 1 s is kept
    server.script(Reply(content=ANSWER, delay=1.5))
    assert (await _answer(ep, face)).answer == ANSWER


@pytest.mark.parametrize("face", ["sync", "async"])
async def test_a_longer_timeout_for_one_call(
    server: FakeOpenAIServer, make_prompter: Make, face: str
) -> None:
    ep = make_prompter(strategy="vanilla", timeout=0.5, retry=ONE_ATTEMPT)
    server.script(Reply(content=ANSWER, delay=1.5))
    assert (await _answer(ep, face, timeout=30.0)).answer == ANSWER
    server.script(Reply(content=ANSWER, delay=1.5))
    with pytest.raises(RetryError) as info:
        await _answer(ep, face)
    assert _cause_says(info.value, "within timeout=0.5 s")


def test_a_streams_first_token_follows_the_calls_timeout(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter(strategy="vanilla", retry=ONE_ATTEMPT)
    server.script(Reply(content=ANSWER, delay=30))
    started = time.monotonic()
    with pytest.raises(RetryError, match="timed out") as info:
        list(ep.stream(Q, timeout=1.0))
    assert time.monotonic() - started < SOON
    assert _cause_says(info.value, "within first_token_timeout=1 s")


# -- calls with every keyword (also what mypy --strict checks in CI) ---------------------------
async def test_every_keyword_of_the_dataset_functions(
    server: FakeOpenAIServer, make_prompter: Make, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    rows = [{"id": str(i), "instruction": f"Name colour number {i}."} for i in range(3)]
    source.write_text("not json\n" + "".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    problems: list[str] = []
    ep = make_prompter()
    summary = ep.generate(
        source,
        tmp_path / "a.jsonl",
        strategy="vanilla",
        concurrency=2,
        rpm=None,
        tpm=None,
        limit=2,
        errors_path=tmp_path / "a.errors.jsonl",
        max_errors=None,
        progress=False,
        on_problem=problems.append,
    )
    assert (summary.done, summary.input_problems, len(problems)) == (2, 1, 1)
    summary = generate(
        ep,
        source,
        tmp_path / "b.jsonl",
        strategy="static",
        concurrency=1,
        rpm=600.0,
        tpm=None,
        limit=None,
        errors_path=None,
        max_errors=3,
        progress=False,
        on_problem=None,
    )
    assert summary.done == 3
    summary = await ep.agenerate(source, tmp_path / "c.jsonl", strategy="vanilla", progress=False)
    assert summary.done == 3

    server.script(*[Reply(content="7 7\nBoth are fine.")] * 6)
    judge = Judge("gpt-4o", base_url=server.base_url, api_key="k")
    report = judge.judge_files(
        tmp_path / "b.jsonl",
        tmp_path / "c.jsonl",
        tmp_path / "verdicts.jsonl",
        a_name="static",
        b_name="vanilla",
        concurrency=2,
        rpm=None,
        tpm=None,
        errors_path=tmp_path / "verdicts.errors.jsonl",
        progress=False,
        on_problem=None,
    )
    assert (report.a, report.b, report.ties, report.failed) == ("static", "vanilla", 3, 0)


def test_a_users_client_gets_the_calls_timeout_too(server: FakeOpenAIServer) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="k")
    ep = ExpertPrompter(client=client, strategy="vanilla", timeout=0.5, retry=ONE_ATTEMPT)
    server.script(Reply(content=ANSWER, delay=1.5))
    assert ep.answer(Q, timeout=30.0).answer == ANSWER
