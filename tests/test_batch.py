"""Batch files: the two passes, in the documented request/result formats, round-tripped."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from expertprompting import ExpertPrompter
from expertprompting._datasets.batch import (
    BATCH_ENDPOINT,
    assemble,
    download,
    read_results,
    run_requests,
    status,
    submit,
    write_answer_requests,
    write_identity_requests,
)
from expertprompting._method.errors import ConfigurationError
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

Make = Callable[..., ExpertPrompter]


def model(req: RecordedRequest) -> Reply:
    last = req.messages[-1]["content"]
    if "[Agent Description]:" in last:
        asked = last.rsplit("[Instruction]:", 1)[1].split("[Agent Description]:")[0].strip()
        return Reply(content=f"You are the expert for: {asked}")
    if "broken" in last:
        return Reply(status=400)
    return Reply(content="Answer: " + last.splitlines()[-1])


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    rows = [
        {"id": "a", "instruction": "Explain tides."},
        {"id": "b", "instruction": "Explain rainbows.", "input": "for a child"},
        {"id": "c", "instruction": "A broken one."},
        {"id": "a", "instruction": "Explain tides."},  # duplicate id: once
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{bad\n", encoding="utf-8")
    return path


def test_request_files_have_the_documented_format(
    server: FakeOpenAIServer, make_prompter: Make, dataset: Path, tmp_path: Path
) -> None:
    ep = make_prompter()
    summary = write_identity_requests(ep, dataset, tmp_path / "req1.jsonl")
    assert summary.written == 3
    (problem,) = summary.problems
    assert problem.startswith(f"{dataset}:5: not valid JSON")
    lines = _rows(tmp_path / "req1.jsonl")
    assert [line["custom_id"] for line in lines] == ["a", "b", "c"]
    for line in lines:
        assert set(line) == {"custom_id", "method", "url", "body"}
        assert (line["method"], line["url"]) == ("POST", BATCH_ENDPOINT)
    # the body is exactly what a direct call would send
    assert lines[1]["body"]["messages"] == ep.identity_messages("Explain rainbows.", "for a child")
    assert server.requests == []  # writing files sends nothing


def test_round_trip_through_the_batch_api(
    server: FakeOpenAIServer, make_prompter: Make, dataset: Path, tmp_path: Path
) -> None:
    server.responder = model
    ep = make_prompter()
    client = openai.OpenAI(base_url=server.base_url, api_key="k")
    write_identity_requests(ep, dataset, tmp_path / "req1.jsonl")
    job = submit(client, tmp_path / "req1.jsonl")
    assert status(client, job.id).status == "completed"
    download(client, job.id, tmp_path / "res1.jsonl")
    assert set(read_results(tmp_path / "res1.jsonl")) == {"a", "b", "c"}

    answers = write_answer_requests(ep, dataset, tmp_path / "req2.jsonl", tmp_path / "res1.jsonl")
    assert answers.written == 3
    second = _rows(tmp_path / "req2.jsonl")[1]["body"]["messages"]
    assert second == ep.answer_messages(
        "Explain rainbows.", "You are the expert for: Explain rainbows.\nfor a child", "for a child"
    )
    job2 = submit(client, tmp_path / "req2.jsonl")
    download(client, job2.id, tmp_path / "res2.jsonl")

    out = tmp_path / "out.jsonl"
    summary = assemble(ep, dataset, tmp_path / "res2.jsonl", out, tmp_path / "res1.jsonl")
    assert summary.written == 2
    assert summary.errors == ["c: HTTP 400: scripted 400"]
    rows = _rows(out)
    assert [r["id"] for r in rows] == ["a", "b"]
    assert rows[0]["expert_identity"] == "You are the expert for: Explain tides."
    assert str(rows[0]["answer"]).startswith("Answer: ")
    usage = rows[0]["usage"]
    assert isinstance(usage, dict)
    assert usage["requests"] == 2
    errors = _rows(tmp_path / "out.errors.jsonl")
    assert errors == [
        {"kind": "item", "id": "c", "step": "answer", "error": "HTTP 400: scripted 400"}
    ]


def test_run_requests_against_any_server(
    server: FakeOpenAIServer, make_prompter: Make, dataset: Path, tmp_path: Path
) -> None:
    server.responder = model
    ep = make_prompter(strategy="vanilla")
    with pytest.raises(ConfigurationError, match="no identity step"):
        write_identity_requests(ep, dataset, tmp_path / "x.jsonl")
    write_answer_requests(ep, dataset, tmp_path / "req.jsonl")
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    assert run_requests(tmp_path / "req.jsonl", tmp_path / "res.jsonl", client=client) == 3
    results = read_results(tmp_path / "res.jsonl")
    assert results["c"].error == "HTTP 400: scripted 400"
    summary = assemble(ep, dataset, tmp_path / "res.jsonl", tmp_path / "out.jsonl")
    rows = _rows(tmp_path / "out.jsonl")
    assert summary.written == 2
    assert {r["strategy"] for r in rows} == {"vanilla"}
    assert all(r["expert_identity"] is None for r in rows)


def test_a_missing_identity_leaves_the_item_out(
    server: FakeOpenAIServer, make_prompter: Make, dataset: Path, tmp_path: Path
) -> None:
    ep = make_prompter()
    (tmp_path / "res1.jsonl").write_text(
        json.dumps(
            {
                "id": "x",
                "custom_id": "a",
                "response": {
                    "status_code": 200,
                    "body": {
                        "model": "m",
                        "choices": [
                            {"message": {"content": "You are cut"}, "finish_reason": "length"}
                        ],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 3},
                    },
                },
                "error": None,
            }
        )
        + "\n",
        encoding="utf-8",
    )
    summary = write_answer_requests(ep, dataset, tmp_path / "req2.jsonl", tmp_path / "res1.jsonl")
    assert summary.written == 0
    assert summary.errors[0].startswith("a: The expert identity was cut off")
    assert summary.errors[1] == "b: no identity result for this item"


def test_a_bad_result_line_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "res.jsonl"
    path.write_text('{"custom_id": "a", "response": null}\nnot json\n', encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"res\.jsonl:2 is not a batch result line"):
        read_results(path)
