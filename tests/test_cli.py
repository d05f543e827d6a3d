"""The installed ``expertprompting`` command, run as a subprocess against loopback servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from expertprompting import ExpertAnswer, ExpertPrompter
from expertprompting.cli import DEFAULT_OPENAI_MODEL, LOCAL_NOTE, UsageError, resolve_model
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

EXE = str(Path(sys.executable).with_name("expertprompting"))
IDENTITY = "You are a marine biologist who explains tides plainly."
ANSWER = "The Moon's gravity pulls the oceans into two bulges."


def run(
    *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    clean["NO_COLOR"] = "1"
    clean.update(env or {})
    return subprocess.run(
        [EXE, *args], input=stdin, capture_output=True, text=True, env=clean, timeout=300
    )


def test_the_entry_point_is_installed() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("expertprompting ")


def test_answer_prints_identity_then_answer(server: FakeOpenAIServer) -> None:
    server.script(Reply(content=IDENTITY), Reply(content=ANSWER))
    result = run("answer", "Why are there tides?", "--base-url", server.base_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Expert identity:\n{IDENTITY}\n\nAnswer:\n{ANSWER}\n"
    assert len(server.chat_requests) == 2
    assert server.chat_requests[0].json["model"] == DEFAULT_OPENAI_MODEL


def test_no_show_identity_and_stdin(server: FakeOpenAIServer) -> None:
    server.script(Reply(content=IDENTITY), Reply(content=ANSWER))
    result = run(
        "answer", "-", "--no-show-identity", "--base-url", server.base_url, stdin="Tides?\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ANSWER + "\n"
    assert server.chat_requests[1].messages[-1]["content"].endswith("Tides?")


def test_json_round_trips_into_the_result_model(server: FakeOpenAIServer) -> None:
    server.script(Reply(content=IDENTITY), Reply(content=ANSWER))
    result = run(
        "answer", "Tides?", "--input", "for a child", "--json", "--base-url", server.base_url
    )
    assert result.returncode == 0, result.stderr
    parsed = ExpertAnswer.model_validate_json(result.stdout)
    assert (parsed.expert_identity, parsed.answer, parsed.input) == (
        IDENTITY,
        ANSWER,
        "for a child",
    )
    assert parsed.usage.requests == 2


def test_stream_prints_the_answer_and_streams_the_request(server: FakeOpenAIServer) -> None:
    server.script(Reply(content=IDENTITY), Reply(content=ANSWER))
    result = run(
        "answer", "Tides?", "--stream", "--no-show-identity", "--base-url", server.base_url
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ANSWER + "\n"
    assert server.chat_requests[1].json["stream"] is True


def test_sampling_options_reach_the_request(server: FakeOpenAIServer) -> None:
    args = ["--seed", "7", "--temperature", "0.3", "--max-tokens", "50", "--strategy", "vanilla"]
    result = run("answer", "Tides?", "--base-url", server.base_url, *args)
    assert result.returncode == 0, result.stderr
    (body,) = [r.json for r in server.chat_requests]
    assert (body["seed"], body["temperature"], body["max_tokens"]) == (7, 0.3, 50)
    assert body["messages"] == [{"role": "user", "content": "Tides?"}]


def test_identify_prints_the_identity(server: FakeOpenAIServer) -> None:
    server.script(Reply(content=IDENTITY))
    result = run("identify", "Tides?", "--base-url", server.base_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == IDENTITY + "\n"


def test_prompt_sends_nothing_and_prints_the_exact_messages(server: FakeOpenAIServer) -> None:
    result = run("prompt", "Tides?", "--json")  # no key, no endpoint: it sends nothing
    assert result.returncode == 0, result.stderr
    steps = json.loads(result.stdout)
    ep = ExpertPrompter(base_url=server.base_url)
    assert steps["identity"] == ep.identity_messages("Tides?")
    assert steps["answer"][0]["content"].endswith("Tides?")
    assert server.requests == []


def test_a_refused_request_is_one_line_and_exit_1(server: FakeOpenAIServer) -> None:
    server.script(Reply(status=401))
    result = run("answer", "Tides?", "--base-url", server.base_url)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("expertprompting: error: The endpoint refused the request (HTTP 401)")


def test_debug_shows_the_traceback(server: FakeOpenAIServer) -> None:
    server.script(Reply(status=401))
    result = run("answer", "Tides?", "--base-url", server.base_url, "--debug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr


def test_max_attempts_sets_how_often_a_request_is_tried(server: FakeOpenAIServer) -> None:
    server.script(
        Reply(status=500), Reply(status=500), Reply(content=IDENTITY), Reply(content=ANSWER)
    )
    patient = run("answer", "Tides?", "--base-url", server.base_url, "--max-attempts", "3")
    assert patient.returncode == 0, patient.stderr
    assert len(server.chat_requests) == 4
    server.script(Reply(status=500), Reply(content=IDENTITY), Reply(content=ANSWER))
    hasty = run("answer", "Tides?", "--base-url", server.base_url, "--max-attempts", "1")
    assert hasty.returncode == 1
    assert len(server.chat_requests) == 5  # the one attempt, then the error
    assert "HTTP 500" in hasty.stderr
    for bad in ("0", "two"):
        refused = run("answer", "x", "--base-url", server.base_url, "--max-attempts", bad)
        assert refused.returncode == 2
        assert "--max-attempts: must be a whole number of at least 1" in refused.stderr
    assert len(server.chat_requests) == 5


def test_strategy_templates_add_strategies(server: FakeOpenAIServer, tmp_path: Path) -> None:
    template = tmp_path / "socratic.jinja"
    template.write_text("Ask three questions first.\n\n{{ instruction }}", encoding="utf-8")
    server.script(Reply(content=ANSWER))
    base = ["--base-url", server.base_url, "--strategy-template", f"socratic={template}"]
    result = run("answer", "Tides?", *base, "--strategy", "socratic", "--json")
    assert result.returncode == 0, result.stderr
    assert ExpertAnswer.model_validate_json(result.stdout).strategy == "socratic"
    (req,) = server.chat_requests
    assert req.messages[-1]["content"] == "Ask three questions first.\n\nTides?"
    unknown = run("answer", "Tides?", *base, "--strategy", "wizard")
    assert unknown.returncode == 2
    assert "Unknown strategy 'wizard'" in unknown.stderr
    assert "'socratic'" in unknown.stderr
    malformed = run("answer", "Tides?", "--base-url", server.base_url, "--strategy-template", "x")
    assert malformed.returncode == 2
    assert "NAME=FILE" in malformed.stderr
    missing = run("answer", "x", "--base-url", server.base_url, "--strategy-template", "s=nope.j2")
    assert missing.returncode == 2
    assert "nope.j2" in missing.stderr
    assert len(server.chat_requests) == 1


def test_usage_errors_exit_2() -> None:
    assert run("answer").returncode == 2  # argparse: missing instruction
    assert run("answer", "x", "--temperature", "hot").returncode == 2
    result = run("answer", "x", "--model", "gpt-4o-mini")
    assert result.returncode == 2
    assert "OPENAI_API_KEY" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    empty = run("answer", "-", "--model", "gpt-4o-mini", stdin="  \n", env={"OPENAI_API_KEY": "k"})
    assert empty.returncode == 2
    assert "empty" in empty.stderr


def test_bad_settings_exit_2(server: FakeOpenAIServer) -> None:
    result = run("answer", "x", "--base-url", server.base_url, "--temperature", "9")
    assert result.returncode == 2
    assert "temperature" in result.stderr
    assert server.requests == []


def test_model_resolution_rules() -> None:
    def yes() -> bool:
        return True

    def no() -> bool:
        return False

    assert resolve_model("m", None, {}, no) == ("m", None)
    assert resolve_model(None, "http://127.0.0.1:1/v1", {}, yes) == (DEFAULT_OPENAI_MODEL, None)
    assert resolve_model(None, None, {"OPENAI_API_KEY": "k"}, yes) == (DEFAULT_OPENAI_MODEL, None)
    env = {"OPENAI_BASE_URL": "http://127.0.0.1:1/v1", "EXPERTPROMPTING_MODEL": "qwen"}
    assert resolve_model(None, None, env, yes) == ("qwen", None)
    assert resolve_model(None, None, {}, yes) == ("local", LOCAL_NOTE)
    with pytest.raises(UsageError, match=r"OPENAI_API_KEY.*--base-url.*expertprompting\[local\]"):
        resolve_model(None, None, {}, no)


def test_generate_writes_rows_and_resumes(server: FakeOpenAIServer, tmp_path: Path) -> None:
    source, out = tmp_path / "alpaca.json", tmp_path / "out.jsonl"
    rows = [{"instruction": f"Task {i}", "input": "", "output": "x"} for i in range(5)]
    source.write_text(json.dumps(rows), encoding="utf-8")
    args = ["generate", str(source), "-o", str(out), "--base-url", server.base_url]
    first = run(*args, "--limit", "3", "--no-progress")
    assert first.returncode == 0, first.stderr
    assert "3 written" in first.stderr
    second = run(*args, "--no-progress", "--json")
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert (summary["done"], summary["already_done"]) == (2, 3)
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 5


@pytest.mark.local_model
def test_the_bundled_model_answers_with_no_key() -> None:
    result = run("answer", "Name three primary colours.", "--max-tokens", "24", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert LOCAL_NOTE in result.stderr
    identity, _, answer = result.stdout.partition("\n\nAnswer:\n")
    assert identity.startswith("Expert identity:\n")
    assert identity.removeprefix("Expert identity:\n").strip()
    assert answer.strip()


def test_batch_two_passes_from_the_command_line(server: FakeOpenAIServer, tmp_path: Path) -> None:
    def model(req: RecordedRequest) -> Reply:
        last = req.messages[-1]["content"]
        if "[Agent Description]:" in last:
            return Reply(content="You are the expert.")
        return Reply(content="The answer.")

    server.responder = model
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "q1", "instruction": "Tides?"}\n', encoding="utf-8")
    url = ["--base-url", server.base_url]
    r1, o1, r2, o2 = (str(tmp_path / f"{n}.jsonl") for n in ("r1", "o1", "r2", "o2"))
    out = str(tmp_path / "out.jsonl")
    steps = [
        ["identity-requests", str(source), "-o", r1],  # file steps: no endpoint
        ["run", r1, "-o", o1, *url],
        ["answer-requests", str(source), "--identities", o1, "-o", r2],
        ["run", r2, "-o", o2, *url],
        ["assemble", str(source), "--identities", o1, "--answers", o2, "-o", out],
    ]
    for step in steps:
        result = run("batch", *step)
        assert result.returncode == 0, (step, result.stderr)
    (row,) = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert (row["id"], row["expert_identity"], row["answer"]) == (
        "q1",
        "You are the expert.",
        "The answer.",
    )
    assert len(server.chat_requests) == 2
