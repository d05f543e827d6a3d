"""The default answer cap (not the model's maximum), its overrides, and cut answers reported."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from expertprompting import (
    ConfigurationError,
    ExpertAnswer,
    ExpertPrompter,
    count_tokens,
    generate,
)
from expertprompting._datasets.progress import RunStats
from expertprompting._method.config import DEFAULT_ANSWER_MAX_TOKENS
from expertprompting.cli import main
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

Make = Callable[..., ExpertPrompter]
IDENTITY = "You are a marine biologist who explains tides plainly."
ANSWER = "The Moon's gravity pulls the oceans into two bulges."
GPT_4O_MINI_MAX_OUTPUT = 16_384


def _answer_bodies(server: FakeOpenAIServer, identity_cap: int = 400) -> list[dict[str, object]]:
    return [r.json for r in server.chat_requests if r.json["max_tokens"] != identity_cap]


def test_the_default_cap_is_sent_not_the_models_maximum(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    server.script(Reply(content=IDENTITY), Reply(content=ANSWER))
    make_prompter().answer("Why are there tides?")
    identity, answer = (r.json for r in server.chat_requests)
    assert identity["max_tokens"] == 400  # the identity keeps its own cap
    assert DEFAULT_ANSWER_MAX_TOKENS == 2048
    assert answer["max_tokens"] == DEFAULT_ANSWER_MAX_TOKENS
    assert answer["max_tokens"] != GPT_4O_MINI_MAX_OUTPUT


def test_the_prompters_and_the_calls_max_tokens_win(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter(max_tokens=300)
    server.script(Reply(content=IDENTITY), Reply(content=ANSWER))
    ep.answer("Why are there tides?")
    server.script(Reply(content=IDENTITY), Reply(content=ANSWER))
    ep.answer("Why is the sea salty?", max_tokens=50)
    caps = [r.json["max_tokens"] for r in server.chat_requests]
    assert caps == [400, 300, 400, 50]  # identities keep identity_max_tokens


def test_a_large_cap_asks_for_the_models_maximum(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter(max_tokens=1_000_000, identity_max_tokens=300)
    server.script(Reply(content=IDENTITY), Reply(content=ANSWER))
    ep.answer("Why are there tides?")
    # clamped to gpt-4o-mini's output limit (a provider refuses more), not the context room
    assert [r.json["max_tokens"] for r in server.chat_requests] == [300, GPT_4O_MINI_MAX_OUTPUT]


def test_the_context_window_still_clamps_the_default(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter(context_window=1500)
    server.script(Reply(content=IDENTITY), Reply(content=ANSWER))
    ep.answer("Why are there tides?")
    answer = server.chat_requests[1].json
    room = 1500 - count_tokens(answer["messages"], model="gpt-4o-mini") - 16
    assert room < DEFAULT_ANSWER_MAX_TOKENS
    assert answer["max_tokens"] == room


def _experts_world(req: RecordedRequest) -> Reply:
    text = req.messages[-1]["content"]
    if text.startswith("Name the "):
        return Reply(content=json.dumps(["You are a physicist.", "You are a sailor."]))
    if text.startswith("Several experts answered"):
        return Reply(content="### Combined answer\nThe Moon.\n### Best response\n3")
    return Reply(content="The Moon.")


def test_multi_expert_answers_use_the_same_cap(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    server.responder = _experts_world
    ep = make_prompter(n_experts=2)
    ep.answer("Why are there tides?", strategy="multi-expert")
    experts, *answers, aggregation = (r.json for r in server.chat_requests)
    assert experts["max_tokens"] == 400  # the experts list has the identity's cap
    assert [a["max_tokens"] for a in answers] == [DEFAULT_ANSWER_MAX_TOKENS] * 2
    assert aggregation["max_tokens"] == DEFAULT_ANSWER_MAX_TOKENS


def test_the_fingerprint_holds_the_effective_cap() -> None:
    def fp(**settings: object) -> str:
        return ExpertPrompter(model="gpt-4o-mini", **settings).planner.fingerprint()  # type: ignore[arg-type]

    default = fp()
    assert fp(max_tokens=DEFAULT_ANSWER_MAX_TOKENS) == default  # the same cap, said twice
    assert fp(max_tokens=4096) != default
    assert fp(max_tokens=GPT_4O_MINI_MAX_OUTPUT) != default
    # both ask for the model's maximum: the same requests, so the same run
    assert fp(max_tokens=1_000_000) == fp(max_tokens=GPT_4O_MINI_MAX_OUTPUT)


# -- cut answers are counted ---------------------------------------------------------------------
def _cut_long_ones(server: FakeOpenAIServer) -> Callable[[RecordedRequest], Reply]:
    """Identities and short items answer briefly; an answer to a LONG item is the server's own
    echo, which it cuts at max_tokens as a real model would (finish_reason "length")."""

    def respond(req: RecordedRequest) -> Reply:
        if req.json["max_tokens"] != 400 and "LONG" in req.messages[-1]["content"]:
            return server.default_responder(req)
        return Reply(content=IDENTITY if req.json["max_tokens"] == 400 else ANSWER)

    return respond


def _items(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    rows = [
        {"id": "a", "instruction": "LONG: explain the tides in depth."},
        {"id": "b", "instruction": "Why is the sea salty?"},
        {"id": "c", "instruction": "LONG: explain ocean currents in depth."},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_cut_answers_are_counted_in_the_generate_summary(
    server: FakeOpenAIServer, make_prompter: Make, tmp_path: Path
) -> None:
    server.responder = _cut_long_ones(server)
    out = tmp_path / "out.jsonl"
    summary = generate(make_prompter(max_tokens=5), _items(tmp_path), out, progress=False)
    assert (summary.done, summary.failed, summary.truncated) == (3, 0, 2)
    assert "2 cut at the answer cap" in summary.line()
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert {k: r["truncated"] for k, r in rows.items()} == {"a": True, "b": False, "c": True}
    # and a resumed run with another cap is refused: it would mix two runs
    with pytest.raises(ConfigurationError, match="fingerprint"):
        generate(make_prompter(max_tokens=50), _items(tmp_path), out, progress=False)


def test_run_stats_count_cut_answers(server: FakeOpenAIServer, make_prompter: Make) -> None:
    server.responder = _cut_long_ones(server)
    results = make_prompter(max_tokens=5).answer_many(
        ["LONG: explain the tides.", "Why is the sea salty?"]
    )
    assert [isinstance(r, ExpertAnswer) and r.truncated for r in results] == [True, False]
    stats = RunStats()
    for r in results:
        stats.add(r)
    assert (stats.done, stats.truncated) == (2, 1)


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_generate_command_reports_cut_answers(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.responder = _cut_long_ones(server)
    out = tmp_path / "out.jsonl"
    args = ["generate", str(_items(tmp_path)), "-o", str(out), "--base-url", server.base_url]
    code, _, err = _cli(capsys, *args, "--max-tokens", "5", "--no-progress")
    assert code == 0, err
    assert "3 written" in err
    assert "2 cut at the answer cap" in err
    assert "2 answers cut off at the answer cap of 5 tokens" in err
    assert "--max-tokens" in err


def test_the_answer_command_notes_a_cut_answer(
    server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.responder = _cut_long_ones(server)
    base = ["answer", "--no-show-identity", "--base-url", server.base_url, "--max-tokens", "5"]
    code, out, err = _cli(capsys, *base, "LONG: explain the tides.")
    assert code == 0, err
    assert "cut off at the answer cap of 5 tokens" in err
    assert "--max-tokens" in err
    code, out, err = _cli(capsys, *base, "Why is the sea salty?")
    assert (code, out) == (0, ANSWER + "\n")
    assert "cut off" not in err
    code, out, err = _cli(capsys, *base, "--stream", "LONG: explain the tides.")
    assert code == 0, err
    assert "cut off at the answer cap of 5 tokens" in err
