"""Resume knows what it resumes: rows record model, strategy and a settings fingerprint."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from expertprompting import ExpertPrompter, RetryPolicy
from expertprompting._method.errors import ConfigurationError
from expertprompting._method.exemplars import Exemplar
from expertprompting.cli import main
from expertprompting.testing import FakeOpenAIServer

Make = Callable[..., ExpertPrompter]


def _parts(prompter: ExpertPrompter, strategy: str | None = None) -> list[str]:
    return prompter.planner.fingerprint(strategy).split("-")


def _offline(**settings: Any) -> ExpertPrompter:
    settings.setdefault("api_key", "k")
    return ExpertPrompter(model=settings.pop("model", "gpt-4o-mini"), **settings)


def test_fingerprint_is_stable_and_ignores_connection_settings() -> None:
    base = _offline().planner.fingerprint()
    assert base == _offline().planner.fingerprint()
    assert len(base.split("-")) == 5
    same = _offline(
        api_key="other",
        base_url="http://127.0.0.1:9/v1",
        timeout=5,
        retry=RetryPolicy(max_attempts=7),
        max_requests=10,
        cache=False,
    )
    assert same.planner.fingerprint() == base


@pytest.mark.parametrize(
    ("settings", "part"),
    [
        ({"answer_template": "Be brief.\n\n{{ identity }}\n\n{{ instruction }} {{ input }}"}, 0),
        (
            {"exemplars": [Exemplar(instruction="Fix a bike.", description="You are a mechanic.")]},
            1,
        ),
        ({"temperature": 0.9}, 2),
        ({"top_p": 0.5}, 2),
        ({"seed": 7}, 2),
        ({"max_tokens": 99}, 2),
        ({"k_exemplars": 1}, 3),
        ({"identity_layout": "chat"}, 3),
        ({"clean_answers": True}, 4),
    ],
)
def test_fingerprint_tells_which_part_changed(settings: dict[str, Any], part: int) -> None:
    before, after = _parts(_offline()), _parts(_offline(**settings))
    assert [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b] == [part]


def test_a_strategys_fingerprint_counts_only_what_it_uses() -> None:
    other_pool = {"exemplars": [Exemplar(instruction="Bake.", description="You are a baker.")]}
    assert _offline().planner.fingerprint("vanilla") == (
        _offline(**other_pool).planner.fingerprint("vanilla")
    )
    assert _offline().planner.fingerprint("expert") != (
        _offline(**other_pool).planner.fingerprint("expert")
    )
    assert _offline().planner.fingerprint("vanilla") != (
        _offline(vanilla_template="Q: {{ instruction }} {{ input }}").planner.fingerprint("vanilla")
    )


def _items(path: Path, count: int) -> None:
    rows = [{"id": f"q{i}", "instruction": f"Explain topic {i}."} for i in range(count)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_rows_record_model_strategy_and_fingerprint(make_prompter: Make, tmp_path: Path) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _items(source, 2)
    ep = make_prompter(temperature=0.3)
    ep.generate(source, out, strategy="vanilla", progress=False)
    for row in _rows(out):
        assert row["requested_model"] == "gpt-4o-mini"
        assert row["strategy"] == "vanilla"
        assert row["fingerprint"] == ep.planner.fingerprint("vanilla")


@pytest.mark.parametrize(
    ("first", "second", "words"),
    [
        ({}, {"model": "gpt-4o"}, ["'gpt-4o-mini'", "'gpt-4o'"]),
        ({}, {"strategy": "vanilla"}, ["strategy 'expert'", "strategy 'vanilla'"]),
        ({"temperature": 0.2}, {"temperature": 0.9}, ["sampling settings"]),
        ({}, {"clean_answers": True}, ["answer cleaning"]),
        ({}, {"identity_template": "Who answers {{ instruction }}? {{ input }}"}, ["templates"]),
    ],
)
def test_resuming_with_another_model_strategy_or_settings_is_refused(
    make_prompter: Make,
    server: FakeOpenAIServer,
    tmp_path: Path,
    first: dict[str, Any],
    second: dict[str, Any],
    words: list[str],
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _items(source, 2)
    make_prompter(**first).generate(source, out, progress=False)
    _items(source, 4)  # two new items a resume would answer
    saved, sent = out.read_bytes(), len(server.chat_requests)
    with pytest.raises(ConfigurationError) as refused:
        make_prompter(**second).generate(source, out, progress=False)
    message = str(refused.value)
    for word in words:
        assert word in message
    assert "Choose another -o, or delete" in message
    assert out.read_bytes() == saved
    assert len(server.chat_requests) == sent


def test_the_same_settings_resume(make_prompter: Make, tmp_path: Path) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _items(source, 2)
    make_prompter(temperature=0.2).generate(source, out, progress=False)
    _items(source, 3)
    summary = make_prompter(temperature=0.2, timeout=9).generate(source, out, progress=False)
    assert (summary.done, summary.already_done) == (1, 2)


@pytest.mark.parametrize("served", ["gpt-4o-mini", "gpt-4o-mini-2024-07-18"])
def test_rows_of_older_versions_resume_when_model_and_strategy_match(
    make_prompter: Make, server: FakeOpenAIServer, tmp_path: Path, served: str
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _items(source, 3)
    old = {"instruction": "Explain topic 0.", "answer": "A.", "model": served, "strategy": "expert"}
    out.write_text(json.dumps({"id": "q0", **old}) + "\n", encoding="utf-8")
    summary = make_prompter().generate(source, out, progress=False)
    assert (summary.done, summary.already_done) == (2, 1)
    out.write_text(json.dumps({"id": "q0", **old, "model": "gpt-4o"}) + "\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="'gpt-4o'"):
        make_prompter().generate(source, out, progress=False)


def test_the_command_line_refuses_with_exit_2(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _items(source, 2)
    base = ["generate", str(source), "-o", str(out), "--base-url", server.base_url]
    base += ["--no-progress", "--cache", "off"]
    assert main([*base, "--model", "gpt-4o-mini"]) == 0
    capsys.readouterr()
    assert main([*base, "--model", "gpt-4o", "--strategy", "vanilla"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert (
        "holds answers made with model 'gpt-4o-mini' and strategy 'expert', but this run uses "
        "model 'gpt-4o' and strategy 'vanilla'"
    ) in err
