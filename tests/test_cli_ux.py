"""The command line as a new user meets it: options, notes, messages, no-key commands.

Most tests run :func:`expertprompting.cli.main` in-process (fast); the ones about what a real
terminal shows (Python's warning printer, the installed script) run the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from expertprompting import (
    ConfigurationError,
    ExpertPrompter,
    GenerateSummary,
    RateLimitError,
    RetryError,
    RetryPolicy,
    Usage,
)
from expertprompting._io.local import local_backend_available
from expertprompting._method.errors import UnknownModelWarning
from expertprompting.cli import DEFAULT_OPENAI_MODEL, LOCAL_NOTE, build_parser, for_cli, main
from expertprompting.testing import FakeOpenAIServer, Reply

EXE = str(Path(sys.executable).with_name("expertprompting"))
IDENTITY = "You are a marine biologist who explains tides plainly."
ANSWER = "The Moon's gravity pulls the oceans into two bulges."
BAR = re.compile(r"\d+%\||item/s")  # what a tqdm bar draws


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of one in-process run."""
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def unknown_model() -> str:
    # a fresh name each time: tiktoken's lookup (and its warning) is cached per model name
    return f"house-model-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "EXPERTPROMPTING_MODEL", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)


def _no_local_model() -> bool:
    raise AssertionError("a command that sends nothing must not look for the local model")


# -- every option explains itself; no option is offered where it is ignored -------------------
def _parsers(
    parser: argparse.ArgumentParser, path: str = "expertprompting"
) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _parsers(child, f"{path} {name}")
    return found


def test_every_option_and_argument_of_every_command_has_help() -> None:
    missing = []
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            if not action.help:
                missing.append(f"{path}: {'/'.join(action.option_strings) or action.dest}")
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    if not choice.help:
                        missing.append(f"{path} {choice.dest}")
    assert missing == []


MODEL_COMMANDS = [
    ["answer", "x"],
    ["identify", "x"],
    ["prompt", "x"],
    ["generate", "in.jsonl", "-o", "out.jsonl"],
    ["judge", "a.jsonl", "b.jsonl"],
    ["compare", "q.jsonl", "-o", "dir"],
    ["batch", "identity-requests", "in.jsonl", "-o", "r.jsonl"],
    ["batch", "answer-requests", "in.jsonl", "-o", "r.jsonl"],
    ["batch", "assemble", "in.jsonl", "--answers", "a.jsonl", "-o", "o.jsonl"],
]


@pytest.mark.parametrize("command", MODEL_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_every_model_command_takes_a_context_window(command: list[str]) -> None:
    args = build_parser().parse_args([*command, "--context-window", "4096"])
    assert args.context_window == 4096


@pytest.mark.parametrize(
    "command",
    [
        ["identify", "x", "--strategy", "vanilla"],  # identify has no strategy
        ["identify", "x", "--max-tokens", "50"],  # the identity has its own cap
        ["prompt", "x", "--base-url", "http://127.0.0.1:1/v1"],  # sends nothing
        ["prompt", "x", "--temperature", "0.5"],
        ["prompt", "x", "--max-attempts", "2"],
        ["prompt", "x", "-v"],
        ["generate", "i.jsonl", "-o", "o.jsonl", "-v"],
        ["judge", "a.jsonl", "b.jsonl", "--strategy", "expert"],
        ["judge", "a.jsonl", "b.jsonl", "--temperature", "0.5"],
        ["compare", "q.jsonl", "-o", "d", "--strategy", "expert"],  # it takes --strategies
        ["batch", "identity-requests", "i.jsonl", "-o", "r.jsonl", "--base-url", "http://x"],
        ["batch", "identity-requests", "i.jsonl", "-o", "r.jsonl", "--json"],
        ["batch", "assemble", "i.jsonl", "--answers", "a", "-o", "o", "--temperature", "1"],
        ["batch", "run", "r.jsonl", "-o", "o.jsonl", "--json"],
        ["batch", "status", "batch_1", "--json"],
        ["identify", "x", "--idle-timeout", "5"],  # only streams have an idle time
    ],
    ids=lambda c: " ".join(c),
)
def test_options_a_command_would_ignore_are_not_offered(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, *command)
    assert code == 2
    assert "unrecognized arguments" in err


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--stream", "--json"], "--stream and --json"),
        (["--json", "--show-identity"], "--show-identity does not apply to --json"),
        (["--json", "--no-show-identity"], "--no-show-identity does not apply to --json"),
        (["--show-identity", "--strategy", "vanilla"], "writes no expert identity"),
        (["--idle-timeout", "5"], "apply to --stream only"),
    ],
)
def test_answer_refuses_option_combinations_it_would_ignore(
    server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str], extra: list[str], words: str
) -> None:
    code, out, err = cli(capsys, "answer", "Tides?", "--base-url", server.base_url, *extra)
    assert (code, out) == (2, "")
    assert words in err
    assert len(err.strip().splitlines()) == 1
    assert server.requests == []


def test_no_show_identity_still_works_for_a_strategy_without_one(
    server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.script(Reply(content=ANSWER))
    code, out, _ = cli(
        capsys, "answer", "Tides?", "--strategy", "vanilla", "--no-show-identity",
        "--base-url", server.base_url,
    )  # fmt: skip
    assert (code, out) == (0, ANSWER + "\n")


def test_prompt_identity_needs_the_expert_strategy(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "prompt", "Tides?", "--strategy", "static", "--identity", "x")
    assert (code, out) == (2, "")
    assert "--identity only applies to --strategy expert" in err


@pytest.mark.parametrize(
    "option",
    [
        ["--concurrency", "0"],
        ["--rpm", "0"],
        ["--tpm", "-5"],
        ["--limit", "-1"],
        ["--max-errors", "-1"],
        ["--max-tokens", "0"],
        ["--temperature", "9"],
        ["--context-window", "10"],
    ],
    ids=lambda o: o[0],
)
def test_bad_numbers_are_usage_errors_before_any_progress_bar(
    server: FakeOpenAIServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    option: list[str],
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"instruction": "Tides?"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code, _, err = cli(
        capsys, "generate", str(source), "-o", str(out), "--base-url", server.base_url, *option
    )
    assert code == 2
    assert f"argument {option[0]}" in err  # names the flag
    assert not BAR.search(err)
    assert server.requests == []
    assert not out.exists()


# -- -q ------------------------------------------------------------------------------------------
def test_quiet_draws_no_progress_bar(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"instruction": "Tides?"}\n{"instruction": "Rain?"}\n', encoding="utf-8")
    base = ["generate", str(source), "--base-url", server.base_url, "--strategy", "vanilla"]
    code, _, err = cli(capsys, *base, "-o", str(tmp_path / "loud.jsonl"))
    assert code == 0
    assert BAR.search(err)  # the bar this test looks for is there without -q
    code, _, err = cli(capsys, *base, "-o", str(tmp_path / "quiet.jsonl"), "-q")
    assert code == 0, err
    assert not BAR.search(err)
    assert "2 written" in err  # the summary is a result, not a note: it stays


# -- notes -----------------------------------------------------------------------------------------
def test_an_unknown_model_is_one_note_line(
    server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    model = unknown_model()
    server.script(Reply(content=ANSWER))
    args = ["answer", "Tides?", "--strategy", "vanilla", "--base-url", server.base_url]
    code, out, err = cli(capsys, *args, "--model", model)
    assert (code, out) == (0, ANSWER + "\n")
    (line,) = err.strip().splitlines()
    assert line.startswith(f"note: unknown model {model!r}: ")
    assert "8192" in line
    assert "--context-window" in line
    assert "o200k_base" in line
    assert "context_window=" not in line
    assert "token_counter" not in line


def test_a_context_window_answers_the_note_and_reaches_the_request(
    server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    model = unknown_model()
    server.script(Reply(content=ANSWER))
    args = ["answer", "Tides?", "--strategy", "vanilla", "--base-url", server.base_url]
    code, _, err = cli(capsys, *args, "--model", model, "--context-window", "1000")
    assert code == 0, err
    (line,) = err.strip().splitlines()
    assert "context window" not in line  # the one assumption left: the tokenizer
    assert "o200k_base" in line
    (body,) = [r.json for r in server.chat_requests]
    assert body["max_tokens"] < 1000  # planned against the window given


def test_quiet_hides_notes(server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["answer", "Tides?", "--strategy", "vanilla", "--base-url", server.base_url]
    server.script(Reply(content=ANSWER))
    code, _, err = cli(capsys, *args, "--model", unknown_model())
    assert code == 0
    assert err.startswith("note: ")  # the note this test hides is there without -q
    server.script(Reply(content=ANSWER))
    code, out, err = cli(capsys, *args, "--model", unknown_model(), "-q")
    assert (code, out, err) == (0, ANSWER + "\n", "")


def test_the_library_still_warns_with_its_own_class() -> None:
    model = unknown_model()
    with pytest.warns(UnknownModelWarning) as caught:
        ExpertPrompter(model=model)
    assert {w.message.setting for w in caught if isinstance(w.message, UnknownModelWarning)} == {
        "context_window",
        "token_counter",
    }


def test_a_real_terminal_sees_no_python_warning_lines(server: FakeOpenAIServer) -> None:
    server.script(Reply(content=ANSWER))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    command = [EXE, "answer", "Tides?", "--strategy", "vanilla", "--base-url", server.base_url]
    result = subprocess.run(
        [*command, "--model", "house-model"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr
    assert ".py:" not in result.stderr
    assert [line[:6] for line in result.stderr.splitlines()] == ["note: "]


# -- commands that send nothing need no key ------------------------------------------------------
def test_prompt_needs_no_key_and_loads_no_model(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("expertprompting.cli._common.local_available", _no_local_model)
    code, out, err = cli(capsys, "prompt", "Tides?", "--json")
    assert (code, err) == (0, "")
    steps = json.loads(out)
    ep = ExpertPrompter(model=DEFAULT_OPENAI_MODEL)  # the default name counts the tokens
    assert steps["identity"] == ep.identity_messages("Tides?")


def test_prompt_takes_the_model_name_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EXPERTPROMPTING_MODEL", "gpt-4")
    code, out, _ = cli(capsys, "prompt", "Tides?")
    assert code == 0
    first = out.splitlines()[0]
    ep = ExpertPrompter(model="gpt-4")  # cl100k_base: other counts than gpt-4o-mini's
    tokens = ep.counter.count_messages(ep.identity_messages("Tides?"))
    assert first == f"== identity request ({tokens} prompt tokens)"


def test_prompt_shows_the_first_multi_expert_request_and_says_why_not_more(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = cli(capsys, "prompt", "Why is the sky blue?", "--strategy", "multi-expert")
    assert code == 0, err
    headers = [line for line in out.splitlines() if line.startswith("== ")]
    assert headers[0].startswith("== experts request (")
    assert "3 expert answers and an aggregation request follow" in headers[1]
    assert "Why is the sky blue?" in out
    code, out, err = cli(capsys, "prompt", "Why?", "--strategy", "multi-expert", "--json")
    assert code == 0
    assert list(json.loads(out)) == ["experts"]
    assert err.startswith("note: 3 expert answers")


def test_prompt_shows_a_user_strategy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    template = tmp_path / "terse.jinja"
    template.write_text("Answer in one line.\n\n{{ instruction }}{{ input or '' }}\n")
    args = ["prompt", "Tides?", "--strategy", "terse", "--strategy-template", f"terse={template}"]
    code, out, err = cli(capsys, *args, "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "answer": [{"role": "user", "content": "Answer in one line.\n\nTides?"}]
    }


def test_batch_file_steps_need_no_key_and_print_no_model_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("expertprompting.cli._common.local_available", _no_local_model)
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "q1", "instruction": "Tides?"}\n', encoding="utf-8")
    requests = tmp_path / "r1.jsonl"
    code, _, err = cli(capsys, "batch", "identity-requests", str(source), "-o", str(requests))
    assert code == 0, err
    assert "note" not in err
    (line,) = requests.read_text().splitlines()
    assert json.loads(line)["body"]["model"] == DEFAULT_OPENAI_MODEL
    results = tmp_path / "o1.jsonl"
    body = {"choices": [{"message": {"content": IDENTITY}, "finish_reason": "stop"}]}
    response = {"status_code": 200, "body": {**body, "model": DEFAULT_OPENAI_MODEL}}
    results.write_text(json.dumps({"custom_id": "q1", "response": response}) + "\n")
    answers = tmp_path / "r2.jsonl"
    step = ["batch", "answer-requests", str(source), "--identities", str(results)]
    code, _, err = cli(capsys, *step, "-o", str(answers))
    assert code == 0, err
    assert "note" not in err
    out = tmp_path / "out.jsonl"
    step = ["batch", "assemble", str(source), "--identities", str(results)]
    code, _, err = cli(capsys, *step, "--answers", str(results), "-o", str(out))
    assert code == 0, err
    assert "note" not in err  # it used to say it would run the bundled model


@pytest.mark.skipif(not local_backend_available(), reason="needs the local extra")
def test_the_tiny_model_note_shows_once_per_command_that_uses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"instruction": "Tides?"}\n', encoding="utf-8")
    # compare builds a prompter and a judge on the bundled model; one strategy is refused
    # after both are built, before any answer
    args = ["compare", str(questions), "-o", str(tmp_path / "cmp"), "--strategies", "vanilla"]
    code, _, err = cli(capsys, *args)
    assert code == 2
    assert err.count(LOCAL_NOTE) == 1
    # judge runs on it too: it says so (files with no common rows stop it before any verdict)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"id": "1", "instruction": "x", "answer": "y"}\n', encoding="utf-8")
    b.write_text('{"id": "2", "instruction": "z", "answer": "w"}\n', encoding="utf-8")
    code, _, err = cli(capsys, "judge", str(a), str(b), "-o", str(tmp_path / "v.jsonl"))
    assert code == 2
    assert err.count(LOCAL_NOTE) == 1


# -- messages name flags, once, in plain words ---------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_failed_request_names_the_flags_and_the_endpoint(
    server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.script(Reply(status=500))
    args = ["answer", "Tides?", "--strategy", "vanilla", "--max-attempts", "1"]
    code, _, err = cli(capsys, *args, "--base-url", server.base_url)
    assert code == 1
    (line,) = err.strip().splitlines()
    assert "failed with HTTP 500 after 1 attempt (" in line
    assert "--timeout" in line
    assert "--max-attempts" in line
    for python_word in ("timeout=", "RetryPolicy", "max_attempts", "base_url", "on all"):
        assert python_word not in line
    assert not re.search(r"(?<!\.)\.\.(?!\.)", line)


def test_a_refused_connection_is_one_line_with_the_endpoint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    args = ["answer", "Tides?", "--strategy", "vanilla", "--max-attempts", "1"]
    code, _, err = cli(capsys, *args, "--base-url", url)
    assert code == 1
    (line,) = err.strip().splitlines()
    assert "could not connect after 1 attempt" in line
    assert url.removesuffix("/v1") in line
    assert ".." not in line.replace("...", "")
    assert "base_url" not in line


def test_an_unknown_strategy_names_the_template_flag(
    server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "answer", "x", "--strategy", "wizard", "--base-url", server.base_url)
    assert code == 2
    assert "--strategy-template NAME=FILE" in err
    assert "ExpertPrompter(" not in err


@pytest.mark.parametrize(
    ("library", "command_line"),
    [
        ("raise timeout= or RetryPolicy.max_attempts.", "raise --timeout or --max-attempts."),
        ("Pass context_window= to set it.", "Pass --context-window to set it."),
        ("strategy='vanilla' has no identity step", "--strategy vanilla has no identity step"),
        ("from model='local:/m.gguf').", "from --model local:/m.gguf)."),
        ("over budget (identity_max_tokens=400)", "over budget (identity_max_tokens=400)"),
        ("max_tokens=50, or", "--max-tokens 50, or"),
        ("Check the API key (OPENAI_API_KEY or api_key=).", "Check the API key (OPENAI_API_KEY)."),
        ("It timed out.. Check", "It timed out. Check"),
        ("Wait...", "Wait..."),
    ],
)
def test_library_words_become_flags(library: str, command_line: str) -> None:
    assert for_cli(library) == command_line


def test_retry_errors_count_attempts_in_plain_words(server: FakeOpenAIServer) -> None:
    def prompter(attempts: int, **settings: Any) -> ExpertPrompter:
        retry = RetryPolicy(max_attempts=attempts, initial_delay=0, max_delay=0)
        return ExpertPrompter(
            model="gpt-4o-mini", base_url=server.base_url, retry=retry, **settings
        )

    server.script(Reply(content=ANSWER, delay=2.0))
    with pytest.raises(RetryError) as slow:
        prompter(1, timeout=0.2).answer("Tides?", strategy="vanilla")
    text = str(slow.value)
    assert "timed out after 1 attempt" in text
    assert "attempts" not in text.split(". ")[0]
    assert server.base_url.removesuffix("/v1") in text  # where it went, not "base_url"
    assert "base_url" not in text
    assert not re.search(r"(?<!\.)\.\.(?!\.)", text)
    server.script(*[Reply(status=429, headers={"retry-after": "0"})] * 3)
    with pytest.raises(RateLimitError) as limited:
        prompter(3).answer("Tides?", strategy="vanilla")
    assert "after 3 attempts." in str(limited.value)
    assert "on all" not in str(limited.value)


# -- the instruction must be text -----------------------------------------------------------------
def test_a_non_text_instruction_is_one_clear_error_at_the_call() -> None:
    ep = ExpertPrompter(model="gpt-4o-mini", base_url="http://127.0.0.1:9/v1")
    calls: list[Callable[[], object]] = [
        lambda: ep.answer(123),  # type: ignore[arg-type]
        lambda: ep.identify(123),  # type: ignore[arg-type]
        lambda: ep.stream(123),  # type: ignore[arg-type]
        lambda: ep.astream(123),  # type: ignore[arg-type]
        lambda: asyncio.run(ep.aanswer(123)),  # type: ignore[arg-type]
        lambda: asyncio.run(ep.aidentify(123)),  # type: ignore[arg-type]
        lambda: ep.identity_messages(123),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(ConfigurationError) as info:
            call()
        assert str(info.value).startswith("The instruction must be a string, not int")
        assert "\n" not in str(info.value)


# -- cost, rounded and consistent ---------------------------------------------------------------
def test_the_usage_line_shows_the_cost_rounded(
    server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.script(Reply(content=ANSWER))
    args = ["answer", "Tides?", "--strategy", "vanilla", "--base-url", server.base_url, "-v"]
    code, _, err = cli(capsys, *args)
    assert code == 0
    (line,) = [x for x in err.splitlines() if x.startswith("usage:")]
    assert re.fullmatch(
        r"usage: 1 request, \d+ prompt \+ \d+ completion tokens, <?\$\d\.\d{4}", line
    )


def test_the_generate_summary_line_shows_the_cost() -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=500, total_tokens=1500, requests=2)
    priced = usage.model_copy(update={"cost": 0.00123456})
    line = GenerateSummary(output="o", errors_file="e", done=1, usage=priced).line()
    assert "$0.0012" in line
    assert "$" not in GenerateSummary(output="o", errors_file="e", usage=usage).line()


@pytest.mark.parametrize(
    "options", [{"rpm": 0}, {"tpm": -1}, {"concurrency": 0}], ids=["rpm", "tpm", "concurrency"]
)
def test_library_runs_refuse_bad_settings_before_a_bar_or_a_file(
    options: dict[str, float], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ep = ExpertPrompter(model="gpt-4o-mini", api_key="x", base_url="http://127.0.0.1:9/v1")
    source = tmp_path / "in.jsonl"
    source.write_text('{"instruction": "Name a colour."}\n', encoding="utf-8")
    with pytest.raises(ConfigurationError):
        ep.answer_many(["Name a colour."], progress=True, **options)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        ep.generate(source, tmp_path / "out.jsonl", progress=True, **options)  # type: ignore[arg-type]
    assert capsys.readouterr().err == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
