"""Nothing the user owns is destroyed: clashing paths, foreign files, errors files fed back."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from expertprompting._datasets.items import ResultWriter, repair_jsonl
from expertprompting._method.errors import ConfigurationError
from expertprompting.cli import main
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

EXE = str(Path(sys.executable).with_name("expertprompting"))


def _failing(server: FakeOpenAIServer, marker: str = "FAIL") -> None:
    """Requests whose text holds ``marker`` are refused (400: no retry); others echo."""

    def respond(req: RecordedRequest) -> Reply:
        if marker in json.dumps(req.messages):
            return Reply(status=400, error_body={"error": {"message": "scripted refusal"}})
        return server.default_responder(req)

    server.responder = respond


def _write_items(path: Path, count: int, failing: set[int] | None = None) -> list[dict[str, str]]:
    failing = failing or set()
    rows = [
        {
            "id": f"q{i}",
            "instruction": ("FAIL " if i in failing else "") + f"Explain topic {i}.",
            "category": f"cat{i % 3}",
        }
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return rows


def _generate(server: FakeOpenAIServer, *args: str) -> int:
    return main(
        ["generate", *args, "--base-url", server.base_url, "--no-progress", "--cache", "off"]
    )


def _rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("expertprompting: error: "), err
    assert "Traceback" not in err
    return lines[0]


# -- files that clash -------------------------------------------------------------------------
def _link(kind: str, target: Path, link: Path) -> Path:
    if kind == "symlink":
        link.symlink_to(target.name)
    elif kind == "hardlink":
        os.link(target, link)
    else:
        return target
    return link


@pytest.mark.parametrize("kind", ["same", "symlink", "hardlink"])
def test_errors_file_that_is_the_output_is_refused_before_anything_is_opened(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_items(source, 3)
    assert _generate(server, str(source), "-o", str(out)) == 0
    errors = _link(kind, out, tmp_path / "alias.jsonl")
    before, sent = _snapshot(tmp_path), len(server.chat_requests)
    capsys.readouterr()
    _write_items(source, 5)  # two new items: a run would write them
    before = _snapshot(tmp_path)
    assert _generate(server, str(source), "-o", str(out), "--errors", str(errors)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "(--errors) is the output file" in line
    assert "Choose another --errors" in line
    assert _snapshot(tmp_path) == before  # the output kept whole: not truncated, not appended
    assert len(server.chat_requests) == sent


@pytest.mark.parametrize("kind", ["same", "symlink", "hardlink"])
def test_errors_file_that_is_the_input_is_refused(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    source = tmp_path / "in.jsonl"
    _write_items(source, 3)
    errors = _link(kind, source, tmp_path / "alias.jsonl")
    before = _snapshot(tmp_path)
    code = _generate(
        server, str(source), "-o", str(tmp_path / "out.jsonl"), "--errors", str(errors)
    )
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "is the input file" in line
    if kind != "same":
        assert {"symlink": "(through a symlink)", "hardlink": "(through a hard link)"}[kind] in line
    assert _snapshot(tmp_path) == before
    assert server.chat_requests == []


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_output_that_is_the_input_through_a_link_is_refused(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    source = tmp_path / "in.jsonl"
    _write_items(source, 3)
    out = _link(kind, source, tmp_path / "out.jsonl")
    before = _snapshot(tmp_path)
    assert _generate(server, str(source), "-o", str(out)) == 2
    assert "(-o) is the input file" in _one_error_line(capsys.readouterr().err)
    assert _snapshot(tmp_path) == before


def test_identity_cache_that_is_the_output_is_refused(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_items(source, 2)
    code = main(
        [
            *("generate", str(source), "-o", str(out), "--cache", str(out)),
            *("--base-url", server.base_url, "--no-progress"),
        ]
    )
    assert code == 2
    assert "(--cache) is the output file" in _one_error_line(capsys.readouterr().err)
    assert not out.exists()


# -- an errors file fed back as the input -------------------------------------------------------
def test_errors_file_fed_back_as_input_retries_without_losing_any(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "run.jsonl"
    errors = tmp_path / "run.errors.jsonl"
    items = _write_items(source, 8, failing={1, 4, 6})
    _failing(server)
    assert _generate(server, str(source), "-o", str(out)) == 1
    assert {r["id"] for r in _rows(errors)} == {"q1", "q4", "q6"}
    source.unlink()  # the errors file is now the only place these items are

    # a trial retry of one item: the other two are kept in the errors file, untried
    capsys.readouterr()
    assert _generate(server, str(errors), "-o", str(out), "--limit", "1") == 1
    assert "skipped input row" not in capsys.readouterr().err
    assert Counter(str(r["id"]) for r in _rows(errors)) == Counter(["q1", "q4", "q6"])

    # the endpoint now answers all but q6: q1 and q4 are done, q6 stays in the errors file
    _failing(server, "topic 6")
    assert _generate(server, str(errors), "-o", str(out)) == 1
    assert [r["id"] for r in _rows(errors)] == ["q6"]
    assert _rows(errors)[0]["extra"] == {"category": "cat0"}

    server.responder = server.default_responder
    assert _generate(server, str(errors), "-o", str(out)) == 0
    assert _rows(errors) == []
    rows = _rows(out)
    assert Counter(str(r["id"]) for r in rows) == Counter(str(i["id"]) for i in items)
    by_id = {r["id"]: r for r in rows}
    for item in items:  # the retried rows look like the others: no error bookkeeping
        assert by_id[item["id"]]["extra"] == {"category": item["category"]}
        assert by_id[item["id"]]["instruction"] == item["instruction"]


def test_errors_file_as_input_to_another_output_is_read_as_items(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "run.jsonl"
    bad = tmp_path / "bad.jsonl"
    _write_items(source, 3, failing={0, 2})
    with source.open("a", encoding="utf-8") as handle:
        handle.write("{not json\n")  # an input problem: its row in the errors file is no item
    _failing(server)
    assert _generate(server, str(source), "-o", str(out), "--errors", str(bad)) == 1
    kinds = Counter(str(r["kind"]) for r in _rows(bad))
    assert kinds == Counter({"item": 2, "input": 1})
    server.responder = server.default_responder
    retry = tmp_path / "retry.jsonl"
    assert _generate(server, str(bad), "-o", str(retry)) == 0
    rows = _rows(retry)
    assert sorted(str(r["id"]) for r in rows) == ["q0", "q2"]
    assert all(r["extra"] == {"category": "cat" + str(r["id"])[1]} for r in rows)
    assert _rows(tmp_path / "retry.errors.jsonl") == []  # the input-problem row is not an item
    assert len(_rows(bad)) == 3  # an input is never written


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_retry_killed_midway_keeps_the_errors_file_whole(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "run.jsonl"
    errors = tmp_path / "run.errors.jsonl"
    _write_items(source, 30, failing=set(range(30)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    _failing(server)
    base = ["--base-url", server.base_url, "--no-progress", "--cache", "off"]
    first = subprocess.run(
        [EXE, "generate", str(source), "-o", str(out), *base],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert first.returncode == 1
    assert len(_rows(errors)) == 30
    source.unlink()
    saved, answered = errors.read_bytes(), len(server.chat_requests)
    gate = threading.Event()  # the retry answers three items, then waits to be killed

    def respond(req: RecordedRequest) -> Reply:
        if len(server.chat_requests) > answered + 6:
            gate.wait(60)
        return server.default_responder(req)

    server.responder = respond
    command = [EXE, "generate", str(errors), "-o", str(out), "--concurrency", "1", *base]
    run = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if out.exists() and out.read_bytes().count(b"\n") >= 3:
                break
            time.sleep(0.01)
        run.send_signal(signal.SIGKILL)
        assert run.wait(timeout=10) == -signal.SIGKILL
    finally:
        gate.set()
    assert out.read_bytes().count(b"\n") == 3  # killed midway
    assert errors.read_bytes() == saved  # untouched until the run's items are safe
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "3 already done" in again.stderr
    assert Counter(str(r["id"]) for r in _rows(out)) == Counter(f"q{i}" for i in range(30))
    assert _rows(errors) == []
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


# -- files this tool did not write ---------------------------------------------------------------
ROW = json.dumps(
    {"id": "q0", "instruction": "x", "answer": "y", "model": "gpt-4o-mini", "strategy": "expert"}
)
FOREIGN = {
    "json.dump document": json.dumps({"results": [{"id": 1}], "total": 1}),
    "json.dump with indent": json.dumps({"id": "a", "answer": "b"}, indent=2),
    "notes": "my notes about the run\nremember to check q7\n",
    "notes without newline": "TODO: rerun",
    "foreign last line": ROW + "\nsee above",
    "foreign complete last line": ROW + '\n{"note": "mine"}\n',
    "foreign row in the middle": ROW + '\n{"name": "x"}\n' + ROW + "\n",
    "other JSONL": '{"instruction": "a dataset of mine", "input": ""}\n',
}


@pytest.mark.parametrize("content", FOREIGN.values(), ids=FOREIGN.keys())
def test_output_not_written_by_us_is_refused_and_left_as_it_was(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_items(source, 3)
    out.write_text(content, encoding="utf-8")
    before = _snapshot(tmp_path)
    assert _generate(server, str(source), "-o", str(out)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{out} was not written by expertprompting" in line
    assert "Choose another -o" in line
    assert _snapshot(tmp_path) == before
    assert server.chat_requests == []


@pytest.mark.parametrize("content", FOREIGN.values(), ids=FOREIGN.keys())
def test_errors_file_not_written_by_us_is_refused(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    source, errors = tmp_path / "in.jsonl", tmp_path / "notes.txt"
    _write_items(source, 3)
    errors.write_text(content, encoding="utf-8")
    before = _snapshot(tmp_path)
    code = _generate(server, str(source), "-o", str(tmp_path / "o.jsonl"), "--errors", str(errors))
    assert code == 2
    assert "was not written by expertprompting" in _one_error_line(capsys.readouterr().err)
    assert _snapshot(tmp_path) == before


def test_repair_cuts_only_a_torn_row_of_ours(tmp_path: Path) -> None:
    from expertprompting._datasets.outputs import OUTPUT_ROWS

    path = tmp_path / "x.jsonl"
    for content in FOREIGN.values():
        path.write_text(content, encoding="utf-8")
        with pytest.raises(ConfigurationError, match="not written by expertprompting"):
            repair_jsonl(path, OUTPUT_ROWS)
        assert path.read_text(encoding="utf-8") == content
        # with no shape given, JSONL of any objects may be appended to, but nothing is cut
        with contextlib.suppress(ConfigurationError):
            assert repair_jsonl(path) == 0
        assert path.read_text(encoding="utf-8") == content
    path.write_text(ROW + "\n" + ROW[:25], encoding="utf-8")
    assert repair_jsonl(path, OUTPUT_ROWS) == 25
    assert path.read_text(encoding="utf-8") == ROW + "\n"
    path.write_text(ROW + "\n" + ROW, encoding="utf-8")  # whole, only its newline missing
    assert repair_jsonl(path, OUTPUT_ROWS) == 0
    assert path.read_text(encoding="utf-8") == ROW + "\n" + ROW + "\n"
    path.write_text(ROW + "\n" + '{"other": "cut sh', encoding="utf-8")  # torn, but not ours
    with pytest.raises(ConfigurationError, match="last line"):
        repair_jsonl(path, OUTPUT_ROWS)


def test_a_torn_row_is_redone_and_a_whole_one_kept(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_items(source, 4)
    assert _generate(server, str(source), "-o", str(out)) == 0
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:3]) + lines[3][:40])  # killed while writing the 4th
    sent = len(server.chat_requests)
    assert _generate(server, str(source), "-o", str(out)) == 0
    assert len(server.chat_requests) == sent + 2  # the torn item alone: identity and answer
    assert Counter(str(r["id"]) for r in _rows(out)) == Counter(f"q{i}" for i in range(4))
    out.write_bytes(out.read_bytes().rstrip(b"\n"))  # a last row whose newline never came
    sent = len(server.chat_requests)
    assert _generate(server, str(source), "-o", str(out)) == 0
    assert len(server.chat_requests) == sent  # kept, not redone
    assert len(_rows(out)) == 4


def test_result_writer_replaces_only_a_file_of_its_rows(tmp_path: Path) -> None:
    notes = tmp_path / "notes.jsonl"
    notes.write_text("dear diary\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="not written by expertprompting"):
        ResultWriter(notes, truncate=True)
    assert notes.read_text(encoding="utf-8") == "dear diary\n"


# -- judge, compare and batch ------------------------------------------------------------------
def _answers(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for path, answer in ((a, "long answer"), (b, "short")):
        row = {"id": "q1", "instruction": "Q?", "answer": answer}
        path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    return a, b


def _judge(server: FakeOpenAIServer, *args: str) -> int:
    server.responder = lambda req: Reply(content="8 6\nFine.")
    return main(
        ["judge", *args, "--judge-model", "gpt-4o", "--base-url", server.base_url, "--no-progress"]
    )


@pytest.mark.parametrize("kind", ["same", "symlink", "hardlink"])
def test_judge_verdicts_that_are_an_answers_file_are_refused(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    a, b = _answers(tmp_path)
    verdicts = _link(kind, b, tmp_path / "v.jsonl")
    before = _snapshot(tmp_path)
    assert _judge(server, str(a), str(b), "-o", str(verdicts)) == 2
    assert "is the answers file B" in _one_error_line(capsys.readouterr().err)
    assert _snapshot(tmp_path) == before


def test_judge_refuses_verdicts_and_errors_files_not_ours(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = _answers(tmp_path)
    verdicts = tmp_path / "v.jsonl"
    verdicts.write_text(json.dumps({"my": "summary"}), encoding="utf-8")
    before = _snapshot(tmp_path)
    assert _judge(server, str(a), str(b), "-o", str(verdicts)) == 2
    assert "v.jsonl was not written by expertprompting" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before
    verdicts.unlink()
    (tmp_path / "v.errors.jsonl").write_text("keep me\n", encoding="utf-8")
    before = _snapshot(tmp_path)
    assert _judge(server, str(a), str(b), "-o", str(verdicts)) == 2
    assert "v.errors.jsonl was not written by expertprompting" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before
    (tmp_path / "v.errors.jsonl").unlink()
    assert _judge(server, str(a), str(b), "-o", str(verdicts)) == 0
    lines = verdicts.read_text(encoding="utf-8").splitlines()
    verdicts.write_text(lines[0][:30], encoding="utf-8")  # a torn verdict of ours: repaired
    assert _judge(server, str(a), str(b), "-o", str(verdicts)) == 0
    assert len(verdicts.read_text(encoding="utf-8").splitlines()) == 1


def _compare(server: FakeOpenAIServer, questions: Path, folder: Path) -> int:
    server.responder = lambda req: (
        Reply(content="8 6\nFine.")
        if "Assistant 1" in json.dumps(req.messages)
        else server.default_responder(req)
    )
    return main(
        [
            *("compare", str(questions), "-o", str(folder), "--base-url", server.base_url),
            *("--model", "gpt-4o-mini", "--judge-model", "gpt-4o", "--no-progress"),
        ]
    )


@pytest.mark.parametrize("name", ["report.md", "report.json", "wtl.svg"])
def test_compare_refuses_a_report_file_it_did_not_write(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    questions, folder = tmp_path / "q.jsonl", tmp_path / "project"
    _write_items(questions, 2)
    folder.mkdir()
    (folder / name).write_text("# My project\n\nHand-written notes.\n", encoding="utf-8")
    before = _snapshot(folder)
    assert _compare(server, questions, folder) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{folder / name} was not written by expertprompting compare" in line
    assert _snapshot(folder) == before
    assert server.chat_requests == []


def test_compare_rerun_replaces_its_own_reports(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    questions, folder = tmp_path / "q.jsonl", tmp_path / "cmp"
    _write_items(questions, 2)
    assert _compare(server, questions, folder) == 0
    assert _compare(server, questions, folder) == 0
    assert not (folder / "compare.lock").exists()


def test_compare_refuses_questions_it_would_overwrite(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "cmp"
    folder.mkdir()
    questions = folder / "answers-vanilla.jsonl"
    _write_items(questions, 2)
    before = _snapshot(folder)
    assert _compare(server, questions, folder) == 2
    assert "is the questions file" in _one_error_line(capsys.readouterr().err)
    assert _snapshot(folder) == before


def test_batch_outputs_never_overwrite_what_they_read_or_foreign_files(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.jsonl"
    _write_items(source, 2)
    base = ["--base-url", server.base_url]
    assert main(["batch", "identity-requests", str(source), "-o", str(source)]) == 2
    assert "is the input file" in _one_error_line(capsys.readouterr().err)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n", encoding="utf-8")
    assert main(["batch", "identity-requests", str(source), "-o", str(notes)]) == 2
    assert "was not written by expertprompting" in _one_error_line(capsys.readouterr().err)
    requests = tmp_path / "req.jsonl"
    assert main(["batch", "identity-requests", str(source), "-o", str(requests)]) == 0
    capsys.readouterr()
    assert main(["batch", "run", str(requests), "-o", str(requests), *base]) == 2
    assert "is the request file" in _one_error_line(capsys.readouterr().err)
    results = tmp_path / "res.jsonl"
    assert main(["batch", "run", str(requests), "-o", str(results), *base]) == 0
    capsys.readouterr()
    code = main(
        [
            *("batch", "assemble", str(source), "--identities", str(results)),
            *("--answers", str(results), "-o", str(tmp_path / "out.jsonl")),
            *("--errors", str(results)),
        ]
    )
    assert code == 2
    assert "(--errors) is the identity results file" in _one_error_line(capsys.readouterr().err)
    assert notes.read_text(encoding="utf-8") == "mine\n"
    assert len(_rows(source)) == 2
