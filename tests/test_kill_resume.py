"""``expertprompting generate`` killed with SIGKILL mid-run, then rerun: every item exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from expertprompting.testing import FakeOpenAIServer, faulty_responder

EXE = str(Path(sys.executable).with_name("expertprompting"))
TOPICS = ["photosynthesis", "the water cycle", "inflation", "binary search", "sonnets"]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_then_rerun_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    items = [
        {"instruction": f"Explain {TOPICS[i % 5]} to student {i}.", "input": "", "output": ""}
        for i in range(300)
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    with FakeOpenAIServer(latency=0.01) as server:
        server.responder = faulty_responder(server.default_responder, 0.1, seed=3)
        command = [EXE, "generate", str(source), "-o", str(out), "--base-url", server.base_url]
        # 10% of replies fail; 8 attempts make an item that fails every one of them (1e-8 a
        # request) practically impossible, so the run's outcome does not hang on the dice
        command += ["--concurrency", "8", "--no-progress", "--cache", "off", "--max-attempts", "8"]
        first = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if out.exists() and out.read_bytes().count(b"\n") >= 40:
                break
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
        written_before = out.read_bytes().count(b"\n")
        assert 40 <= written_before < 300  # killed mid-run
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    ids = Counter(row["id"] for row in rows)
    assert len(ids) == 300  # nothing lost
    assert max(ids.values()) == 1  # nothing twice
    assert {row["instruction"] for row in rows} == {item["instruction"] for item in items}
    assert f"{written_before} already done" in second.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT delivery is POSIX")
def test_ctrl_c_stops_cleanly_and_keeps_finished_rows(tmp_path: Path) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = [{"instruction": f"Explain {TOPICS[i % 5]} to student {i}."} for i in range(200)]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    with FakeOpenAIServer(latency=0.02) as server:
        command = [EXE, "generate", str(source), "-o", str(out), "--base-url", server.base_url]
        command += ["--concurrency", "4", "--no-progress"]
        # A shell's background jobs start with SIGINT ignored, and Python keeps it that way;
        # restore the default so the child sees Ctrl-C however the suite was started.
        run = subprocess.Popen(
            command,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if out.exists() and out.read_bytes().count(b"\n") >= 10:
                break
            time.sleep(0.02)
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=30)
    assert run.returncode == 130
    assert "Rerun the same command to resume" in stderr
    assert "Traceback" not in stderr
    text = out.read_text(encoding="utf-8")
    assert text.endswith("\n")  # no torn line: the writer closed cleanly
    assert all(json.loads(line)["answer"] for line in text.splitlines())
