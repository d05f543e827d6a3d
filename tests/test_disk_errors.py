"""A full disk, a file-size limit, a path that cannot be written: one line, valid files, resume."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from expertprompting._method.errors import ConfigurationError, ExpertPromptingError
from expertprompting.cli import main
from expertprompting.testing import FakeOpenAIServer, Reply

EXE = str(Path(sys.executable).with_name("expertprompting"))


def _items(path: Path, count: int) -> list[str]:
    rows = [{"id": f"q{i}", "instruction": f"Explain topic {i}."} for i in range(count)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return [r["id"] for r in rows]


def _rows(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n")  # no torn row
    return [json.loads(line) for line in text.splitlines()]


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("expertprompting: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_file_size_limit_is_one_line_leaves_whole_rows_and_the_rerun_resumes(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    import resource

    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = _items(source, 20)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    command = [EXE, "generate", str(source), "-o", str(out), "--base-url", server.base_url]
    command += ["--no-progress", "--cache", "off", "--concurrency", "2"]

    def limit() -> None:  # every file this process writes stays under 3000 bytes
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))

    cut = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, preexec_fn=limit
    )
    assert cut.returncode == 1
    line = _one_error_line(cut.stderr)
    assert f"Cannot write to {out}: File too large" in line
    assert "rerun the same command to resume" in line
    kept = _rows(out)
    assert 0 < len(kept) < 20
    assert out.stat().st_size <= 3000
    assert not (tmp_path / "out.jsonl.lock").exists()
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"{len(kept)} already done" in again.stderr
    assert Counter(row["id"] for row in _rows(out)) == Counter(ids)


def test_disk_full_midway_cuts_the_torn_row_and_the_rerun_resumes(
    make_prompter: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = _items(source, 6)
    real_write = os.write
    rows_written = 0

    def full_disk(fd: int, data: Any) -> int:
        nonlocal rows_written
        if b'"requested_model"' not in bytes(data):  # not an output row: leave it alone
            return real_write(fd, data)
        if rows_written == 2:  # the third row: half of it fits, then the disk is full
            real_write(fd, bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        rows_written += 1
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    ep = make_prompter()
    with pytest.raises(ExpertPromptingError) as failed:
        ep.generate(source, out, progress=False, concurrency=1)
    assert not isinstance(failed.value, ConfigurationError)  # exit 1: a failure, not usage
    assert "No space left on device" in str(failed.value)
    assert "rerun the same command" in str(failed.value)
    assert [row["id"] for row in _rows(out)] == ids[:2]  # the torn third row was cut back
    monkeypatch.setattr(os, "write", real_write)
    summary = make_prompter().generate(source, out, progress=False)
    assert (summary.done, summary.already_done) == (4, 2)
    assert Counter(row["id"] for row in _rows(out)) == Counter(ids)


@pytest.mark.parametrize("option", ["-o", "--errors"])
def test_a_path_under_a_regular_file_is_one_line_and_exit_2(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    # chmod would not stop root; a regular file in place of a folder stops everyone
    source, blocker = tmp_path / "in.jsonl", tmp_path / "somefile"
    _items(source, 2)
    blocker.write_text("mine\n", encoding="utf-8")
    paths = {"-o": str(tmp_path / "out.jsonl"), "--errors": str(tmp_path / "e.jsonl")}
    paths[option] = str(blocker / "x.jsonl")
    command = ["generate", str(source), "-o", paths["-o"], "--errors", paths["--errors"]]
    command += ["--base-url", server.base_url, "--no-progress", "--cache", "off"]
    assert main(command) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(blocker) in line
    assert "is a file, not a folder" in line
    assert blocker.read_text(encoding="utf-8") == "mine\n"
    assert server.chat_requests == []


def test_a_directory_as_output_is_one_line_and_exit_2(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, folder = tmp_path / "in.jsonl", tmp_path / "results"
    _items(source, 2)
    folder.mkdir()
    command = ["generate", str(source), "-o", str(folder), "--base-url", server.base_url]
    assert main([*command, "--no-progress"]) == 2
    assert f"{folder} is a directory; -o takes a file path" in _one_error_line(
        capsys.readouterr().err
    )
    assert list(folder.iterdir()) == []


def test_judge_and_batch_outputs_that_are_directories_are_refused(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.responder = lambda req: Reply(content="8 6\nFine.")
    for name in ("a", "b"):
        row = {"id": "q1", "instruction": "Q?", "answer": name}
        (tmp_path / f"{name}.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    folder = tmp_path / "dir"
    folder.mkdir()
    judge = ["judge", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "-o", str(folder)]
    judge += ["--judge-model", "gpt-4o", "--base-url", server.base_url, "--no-progress"]
    assert main(judge) == 2
    assert "is a directory" in _one_error_line(capsys.readouterr().err)
    requests = tmp_path / "req.jsonl"
    requests.write_text("", encoding="utf-8")
    assert main(["batch", "run", str(requests), "-o", str(folder), "--base-url", "x"]) == 2
    assert "is a directory" in _one_error_line(capsys.readouterr().err)


def test_compare_into_a_file_is_one_line_and_leaves_the_file(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    questions, target = tmp_path / "q.jsonl", tmp_path / "results.txt"
    _items(questions, 2)
    target.write_text("my results\n", encoding="utf-8")
    command = ["compare", str(questions), "-o", str(target), "--model", "gpt-4o-mini"]
    command += ["--judge-model", "gpt-4o", "--base-url", server.base_url, "--no-progress"]
    assert main(command) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{target} is a file, but compare writes a folder of results there" in line
    assert target.read_text(encoding="utf-8") == "my results\n"
    assert server.chat_requests == []
    nested = tmp_path / "results.txt" / "cmp"
    assert main([*command[:2], "-o", str(nested), *command[4:]]) == 2
    assert "Cannot create the folder" in _one_error_line(capsys.readouterr().err)
