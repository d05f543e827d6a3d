"""Input files as users have them: byte order marks, stray bytes, absurd nesting, directories,
missing files, non-UTF-8 stdin, and answer files with bad rows handed to the judge.

Every bad row is reported as ``file:line`` and skipped while the other rows run; every file
that cannot be read at all is one line and exit code 2 on the command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from expertprompting import ExpertPrompter
from expertprompting._datasets.items import DatasetItem, InputProblem, read_items
from expertprompting._method.errors import ConfigurationError
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

EXE = str(Path(sys.executable).with_name("expertprompting"))
BOM = b"\xef\xbb\xbf"
DEEP = b"[" * 100_000


def run(
    *args: str, stdin: bytes = b"", env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    clean["NO_COLOR"] = "1"
    clean.update(env or {})
    done = subprocess.run(
        [EXE, *args], input=stdin, capture_output=True, env=clean, timeout=300, check=False
    )
    return subprocess.CompletedProcess(
        done.args,
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
    )


def _line(**row: object) -> bytes:
    return json.dumps(row).encode() + b"\n"


def _rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _instructions(read: list[DatasetItem | InputProblem]) -> list[str]:
    return [r.instruction for r in read if isinstance(r, DatasetItem)]


# -- byte order marks ---------------------------------------------------------------------------
def test_a_bom_jsonl_file_keeps_its_first_row(
    make_prompter: Callable[..., ExpertPrompter], tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(BOM + _line(instruction="First?") + _line(instruction="Second?"))
    summary = make_prompter().generate(source, tmp_path / "out.jsonl", progress=False)
    assert (summary.done, summary.input_problems) == (2, 0)
    assert sorted(str(r["instruction"]) for r in _rows(tmp_path / "out.jsonl")) == [
        "First?",
        "Second?",
    ]


def test_a_bom_json_list_is_read_whole(
    make_prompter: Callable[..., ExpertPrompter], tmp_path: Path
) -> None:
    source = tmp_path / "alpaca.json"
    rows = [{"instruction": f"Task {i}", "input": "", "output": "x"} for i in range(3)]
    source.write_bytes(BOM + json.dumps(rows, indent=2).encode())
    assert _instructions(list(read_items(source))) == ["Task 0", "Task 1", "Task 2"]
    summary = make_prompter().generate(source, tmp_path / "out.jsonl", progress=False)
    assert (summary.done, summary.input_problems) == (3, 0)


# -- bad lines are reported and skipped --------------------------------------------------------
def test_bad_bytes_and_deep_nesting_are_skipped_by_generate(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        _line(instruction="One?")
        + b'{"instruction": "caf\xe9?"}\n'  # Latin-1, not UTF-8
        + DEEP
        + b"\n"
        + _line(instruction="Four?")
    )
    out = tmp_path / "out.jsonl"
    result = run("generate", str(source), "-o", str(out), "--base-url", server.base_url)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{source}:2: not valid UTF-8 (byte 0xe9" in result.stderr
    assert f"{source}:3: JSON nested too deeply" in result.stderr
    assert sorted(str(r["instruction"]) for r in _rows(out)) == ["Four?", "One?"]
    errors = _rows(tmp_path / "out.errors.jsonl")
    assert [e["kind"] for e in errors] == ["input", "input"]
    assert [str(e["where"]).split(": ")[0] for e in errors] == [f"{source}:2", f"{source}:3"]


def test_a_json_list_skips_an_element_with_a_bad_byte_or_too_deep(tmp_path: Path) -> None:
    source = tmp_path / "list.json"
    source.write_bytes(
        b'[\n{"instruction": "a"},\n'
        b'{"instruction": "b\xff"},\n'  # line 3: a bad byte inside a string
        b'{"instruction": "c", "deep": ' + DEEP + b"]" * 100_000 + b"},\n"  # line 4
        b'{"instruction": "d", "note": "brackets [{ in \\" a string"}\n]'
    )
    read = list(read_items(source))
    assert _instructions(read) == ["a", "d"]
    problems = [r for r in read if isinstance(r, InputProblem)]
    assert [(p.line, p.reason.split(" (")[0]) for p in problems] == [
        (3, "not valid UTF-8"),
        (4, "JSON nested too deeply to read"),
    ]


def test_a_bad_byte_that_breaks_a_json_list_stops_there_saying_where(tmp_path: Path) -> None:
    source = tmp_path / "list.json"
    source.write_bytes(b'[\n{"instruction": "a"},\n\xff{"instruction": "b"}\n]')
    read = list(read_items(source))
    assert _instructions(read) == ["a"]
    (problem,) = [r for r in read if isinstance(r, InputProblem)]
    assert problem.line == 3
    assert problem.reason.startswith("not valid UTF-8 (byte 0xff")
    assert problem.reason.endswith("reading stopped")


# -- files that cannot be read at all ----------------------------------------------------------
def test_a_directory_as_input_says_so_in_one_line(server: FakeOpenAIServer, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    with pytest.raises(ConfigurationError, match="is a directory"):
        list(read_items(folder))
    for args in (
        ("generate", str(folder), "-o", str(tmp_path / "out.jsonl")),
        ("judge", str(folder), str(folder), "-o", str(tmp_path / "v.jsonl")),
    ):
        result = run(*args, "--base-url", server.base_url)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert "is a directory" in result.stderr
    assert server.chat_requests == []


def test_a_missing_input_file_is_one_line_exit_2(server: FakeOpenAIServer, tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    for args in (
        (
            "generate",
            str(missing),
            "-o",
            str(tmp_path / "out.jsonl"),
            "--base-url",
            server.base_url,
        ),
        ("batch", "identity-requests", str(missing), "-o", str(tmp_path / "req.jsonl")),
    ):
        result = run(*args, "--model", "gpt-4o-mini")
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert str(missing) in result.stderr
        assert "Traceback" not in result.stderr


def test_a_utf16_file_is_named_as_such(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes('{"instruction": "a"}\n'.encode("utf-16"))
    with pytest.raises(ConfigurationError, match=r"UTF-16.*save it as UTF-8"):
        list(read_items(source))


def test_non_utf8_stdin_is_one_line_exit_2(server: FakeOpenAIServer) -> None:
    result = run("answer", "-", "--base-url", server.base_url, stdin=b"Why are there tides\xff?")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "standard input is not valid UTF-8" in result.stderr
    assert server.chat_requests == []


def test_a_bom_on_stdin_is_not_part_of_the_instruction(server: FakeOpenAIServer) -> None:
    result = run("answer", "-", "--base-url", server.base_url, stdin=BOM + b"Tides?\n")
    assert result.returncode == 0, result.stderr
    assert server.chat_requests[-1].messages[-1]["content"].endswith("\n\nTides?")


# -- the judge skips bad rows like generate ----------------------------------------------------
def _verdict(req: RecordedRequest) -> Reply:
    return Reply(content="8 7\nAssistant 1 is a little clearer.")


def test_judge_skips_bad_rows_with_file_and_line(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.responder = _verdict
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_bytes(
        _line(id="1", instruction="Q1", answer="A1")
        + b"{not json\n"  # 2
        + b'{"id": "3", "instruction": "Q3", "answer": "caf\xe9"}\n'  # 3: not UTF-8
        + b"[1, 2]\n"  # 4: not an object
        + _line(id="5", instruction="Q5")  # 5: no answer
        + DEEP  # 6
        + b"\n"
        + _line(id="7", instruction="Q7", answer="A7")
        + _line(id="9", instruction="Q9", answer="A9")
    )
    b.write_bytes(
        BOM  # and a BOM on B
        + _line(id="1", instruction="Q1", answer="B1")
        + _line(id="3", instruction="Q3", answer="B3")
        + _line(id="5", instruction="Q5", answer="B5")
        + _line(id="7", instruction="Q7", answer=None)  # 4: a null answer
        + _line(answer="B8")  # 5: no instruction (and no id to match by)
        + _line(id="9", answer="B9")  # matched by id: no instruction needed
    )
    verdicts = tmp_path / "v.jsonl"
    result = run(
        "judge", str(a), str(b), "-o", str(verdicts), "--json", "--base-url", server.base_url
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    skipped = [line for line in result.stderr.splitlines() if "skipped input row" in line]
    expected = [
        f"{b}:4: 'answer' must be a string, not null",
        f"{b}:5: no 'instruction' field",
        f"{a}:2: not valid JSON",
        f"{a}:3: not valid UTF-8",
        f"{a}:4: not a JSON object but an array",
        f"{a}:5: no 'answer' field",
        f"{a}:6: JSON nested too deeply",
    ]
    assert len(skipped) == len(expected), result.stderr
    for line, start in zip(skipped, expected, strict=True):
        assert line.startswith(f"expertprompting: skipped input row: {start}"), line
    report = json.loads(result.stdout)
    assert report["input_problems"] == len(expected)
    assert report["pairs"] == 2  # only ids 1 and 9 are usable on both sides
    assert sorted(str(row["id"]) for row in _rows(verdicts)) == ["1", "9"]
    errors = _rows(tmp_path / "v.errors.jsonl")
    assert [e["kind"] for e in errors] == ["input"] * len(expected)
    assert str(errors[0]["where"]).startswith(f"{b}:4")
