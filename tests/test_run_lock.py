"""One run per output at a time: a second run on a live run's output is refused at once."""

from __future__ import annotations

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

from expertprompting.cli import main
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the run lock is POSIX (flock)")

EXE = str(Path(sys.executable).with_name("expertprompting"))
ENV = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}

# A process that takes the run lock of argv[1] (lock file argv[2], if given) the way a run does,
# says so, and waits.
HOLDER = """
import sys, time
from pathlib import Path
from expertprompting._datasets.outputs import RunLock
lock = RunLock(Path(sys.argv[1]), "-o", Path(sys.argv[2]) if sys.argv[2] else None).acquire()
print("held", flush=True)
time.sleep(600)
"""


def _hold(target: Path, lock_file: Path | None = None) -> subprocess.Popen[str]:
    where = str(lock_file) if lock_file else ""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(target), where, "generate", "in.jsonl"],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder


def _kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=10) == -signal.SIGKILL


def _items(path: Path, count: int) -> None:
    rows = [{"id": f"q{i}", "instruction": f"Explain topic {i}."} for i in range(count)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_generate_on_a_locked_output_is_refused_and_runs_once_the_holder_is_killed(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _items(source, 3)
    command = ["generate", str(source), "-o", str(out), "--base-url", server.base_url]
    command += ["--no-progress", "--cache", "off"]
    holder = _hold(out)
    try:
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"{out} is being written by another run (pid {holder.pid}:" in err
        assert "generate in.jsonl" in err  # the holder's command line
        assert "choose another -o" in err
        assert server.chat_requests == []  # nothing paid twice
        assert not out.exists()
    finally:
        _kill(holder)  # SIGKILL: the lock dies with its holder, its file stays behind
    assert (tmp_path / "out.jsonl.lock").exists()
    assert main(command) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3
    assert not (tmp_path / "out.jsonl.lock").exists()  # a clean release removes it


def test_a_symlinked_name_of_a_locked_output_is_refused_too(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, out, link = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "link.jsonl"
    _items(source, 2)
    out.write_text("", encoding="utf-8")
    link.symlink_to(out.name)
    holder = _hold(out)
    try:
        command = ["generate", str(source), "-o", str(link), "--base-url", server.base_url]
        assert main([*command, "--no-progress"]) == 2
        assert f"(pid {holder.pid}:" in capsys.readouterr().err
        assert out.read_text(encoding="utf-8") == ""
    finally:
        _kill(holder)


def test_the_errors_file_is_locked_too(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.jsonl"
    _items(source, 2)
    shared = tmp_path / "shared.errors.jsonl"
    holder = _hold(shared)
    try:
        command = ["generate", str(source), "-o", str(tmp_path / "b.jsonl"), "--errors"]
        command += [str(shared), "--base-url", server.base_url, "--no-progress"]
        assert main(command) == 2
        assert f"(pid {holder.pid}:" in capsys.readouterr().err
    finally:
        _kill(holder)


def test_two_generate_runs_on_one_output_never_both_run(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _items(source, 10)
    gate = threading.Event()  # holds the first run after its first item, however slow we are

    def respond(req: RecordedRequest) -> Reply:
        if len(server.chat_requests) > 2:
            gate.wait(60)
        return server.default_responder(req)

    server.responder = respond
    command = [EXE, "generate", str(source), "-o", str(out), "--base-url", server.base_url]
    command += ["--concurrency", "1", "--no-progress", "--cache", "off"]
    first = subprocess.Popen(command, env=ENV, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out.exists() and out.stat().st_size):
            time.sleep(0.01)
        assert first.poll() is None
        second = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert f"is being written by another run (pid {first.pid}:" in second.stderr
        assert "Traceback" not in second.stderr
        gate.set()
        assert first.wait(timeout=120) == 0
    finally:
        gate.set()
        if first.poll() is None:
            first.kill()
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    ids = Counter(row["id"] for row in rows)
    assert len(ids) == 10
    assert max(ids.values()) == 1  # nothing written twice
    assert len(server.chat_requests) == 20  # nothing paid twice: 2 requests an item


def test_judge_and_compare_on_a_locked_output_are_refused(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.responder = lambda req: Reply(content="8 6\nFine.")
    for name in ("a", "b"):
        row = {"id": "q1", "instruction": "Q?", "answer": name}
        (tmp_path / f"{name}.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    verdicts = tmp_path / "v.jsonl"
    judge = ["judge", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "-o", str(verdicts)]
    judge += ["--judge-model", "gpt-4o", "--base-url", server.base_url, "--no-progress"]
    holder = _hold(verdicts)
    try:
        assert main(judge) == 2
        assert f"{verdicts} is being written by another run (pid {holder.pid}" in (
            capsys.readouterr().err
        )
    finally:
        _kill(holder)
    assert main(judge) == 0

    folder = tmp_path / "cmp"
    folder.mkdir()
    holder = _hold(folder, folder / "compare.lock")
    try:
        code = main(
            [
                *("compare", str(tmp_path / "a.jsonl"), "-o", str(folder)),
                *("--model", "gpt-4o-mini", "--judge-model", "gpt-4o"),
                *("--base-url", server.base_url, "--no-progress"),
            ]
        )
        assert code == 2
        assert f"{folder} is being written by another run (pid {holder.pid}" in (
            capsys.readouterr().err
        )
    finally:
        _kill(holder)
