"""``expertprompting serve``: its refusals at start, its fast --help, the SIGTERM drain of the real
command in a subprocess, client keys from the environment, and the bundled model end to end."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest

from expertprompting.cli import main
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

ROOT = Path(__file__).resolve().parent.parent


def _wait(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


# -- refused at start --------------------------------------------------------------------------
def test_a_non_loopback_host_with_no_keys_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EXPERTPROMPTING_API_KEYS", raising=False)
    upstream = ["--model", "gpt-4o-mini", "--base-url", "http://127.0.0.1:9/v1"]
    code = main(["serve", "--host", "0.0.0.0", *upstream])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("expertprompting: error: --host 0.0.0.0 lets other machines in")
    assert "--api-keys-file" in err
    assert "EXPERTPROMPTING_API_KEYS" in err


def test_a_missing_extra_says_what_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "uvicorn" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert main(["serve", "--model", "gpt-4o-mini"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "expertprompting: error: the server needs FastAPI and uvicorn: "
        'pip install "expertprompting[serve]"\n'
    )


def test_a_port_in_use_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    monkeypatch.setenv("OPENAI_API_KEY", "upstream-key")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        upstream = ["--model", "gpt-4o-mini", "--base-url", "http://127.0.0.1:9/v1"]
        code = main(["serve", "--port", str(port), *upstream])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith(f"expertprompting: error: Cannot listen on 127.0.0.1:{port} (")
    assert "choose another port" in err


def test_a_missing_keys_file_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["serve", "--api-keys-file", str(tmp_path / "none.txt"), "--model", "gpt-4o-mini"])
    assert code == 2
    assert "--api-keys-file: cannot read" in capsys.readouterr().err
    empty = tmp_path / "keys.txt"
    empty.write_text("# no keys yet\n\n", encoding="utf-8")
    assert main(["serve", "--api-keys-file", str(empty), "--model", "gpt-4o-mini"]) == 2
    assert "holds no key" in capsys.readouterr().err


def test_the_prompters_are_built_as_the_other_commands_build_theirs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import expertprompting.server

    served: dict[str, Any] = {}

    def fake_serve(settings: Any, *, prompters: Any, on_ready: Any) -> None:
        served.update(settings=settings, prompters=prompters)
        on_ready("http://127.0.0.1:8000")

    monkeypatch.setattr(expertprompting.server, "serve", fake_serve)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # no --model: the OpenAI default
    monkeypatch.setenv("EXPERTPROMPTING_API_KEYS", "a,b")
    template = tmp_path / "socratic.jinja"
    template.write_text("Ask: {{ instruction }}", encoding="utf-8")
    code = main(
        ["serve", "--strategy-template", f"socratic={template}", "--temperature", "0.5",
         "--strategy", "vanilla", "--concurrency", "8", "--cors-origin", "http://a.example"]
    )  # fmt: skip
    assert code == 0
    assert capsys.readouterr().out == (
        "serving gpt-4o-mini at http://127.0.0.1:8000 (playground: http://127.0.0.1:8000/)\n"
    )
    settings = served["settings"]
    assert settings.models == ["gpt-4o-mini"]
    assert (settings.strategy, settings.concurrency, settings.queue) == ("vanilla", 8, 32)
    assert [k.get_secret_value() for k in settings.api_keys] == ["a", "b"]
    assert settings.cors_origins == ["http://a.example"]
    ep = served["prompters"]["gpt-4o-mini"]
    assert ep.config.temperature == 0.5
    assert ep.config.strategy == "vanilla"
    assert ep.resolve_strategy("socratic") == "socratic"


def test_serve_help_loads_no_heavy_module() -> None:
    code = (
        "import sys\nfrom expertprompting.cli import main\n"
        "try:\n    main(['serve', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('fastapi', 'uvicorn', 'starlette', 'openai', 'pydantic') "
        "if m in sys.modules]\nprint('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert "--api-keys-file" in out
    assert out.strip().endswith("HEAVY []")


# -- the real command ------------------------------------------------------------------------
class Command:
    """``expertprompting serve ... --port 0`` in a subprocess, and the URL it printed."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "expertprompting.cli", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
        lines: list[str] = []
        reader = threading.Thread(
            target=lambda: lines.append(self.proc.stdout.readline() if self.proc.stdout else ""),
            daemon=True,
        )
        reader.start()
        reader.join(600)  # the bundled model takes a while to load on a busy machine
        self.line = lines[0] if lines else ""
        found = re.fullmatch(r"serving (.+) at (http://\S+) \(playground: \2/\)\n", self.line)
        if found is None:
            self.proc.kill()
            raise AssertionError(f"no start line: {self.line!r}; stderr: {self.proc.stderr}")
        self.models = found.group(1)
        self.url = found.group(2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def command() -> Iterator[Callable[..., Command]]:
    started: list[Command] = []

    def make(args: list[str], env: dict[str, str] | None = None) -> Command:
        started.append(Command(args, env))
        return started[-1]

    yield make
    for c in started:
        c.stop()


@pytest.mark.timeout(120)
def test_sigterm_drains_in_flight_requests_then_exits_0(
    server: FakeOpenAIServer, command: Callable[..., Command]
) -> None:
    release = threading.Event()

    def slow(request: RecordedRequest) -> Reply:
        release.wait(60)
        return server.default_responder(request)

    server.responder = slow
    cmd = command(
        ["--model", "gpt-4o-mini", "--base-url", server.base_url, "--grace-seconds", "60"],
        env={"EXPERTPROMPTING_API_KEYS": "k1, k2"},
    )
    assert cmd.models == "gpt-4o-mini"
    auth = {"Authorization": "Bearer k2"}
    assert httpx.get(f"{cmd.url}/v1/models").status_code == 401  # keys from the environment
    body = {"model": "vanilla/gpt-4o-mini", "messages": [{"role": "user", "content": "Slow?"}]}
    done: list[httpx.Response] = []
    slow_request = threading.Thread(
        target=lambda: done.append(
            httpx.post(f"{cmd.url}/v1/chat/completions", json=body, headers=auth, timeout=90)
        )
    )
    slow_request.start()
    _wait(lambda: len(server.chat_requests) == 1)
    cmd.proc.send_signal(signal.SIGTERM)
    # draining: health says so, new requests are refused, the one in flight goes on
    _wait(lambda: httpx.get(f"{cmd.url}/health").status_code == 503)
    assert httpx.get(f"{cmd.url}/health").json() == {"status": "draining"}
    refused = httpx.post(f"{cmd.url}/v1/chat/completions", json=body, headers=auth)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "server_draining"
    assert cmd.proc.poll() is None
    release.set()
    slow_request.join(60)
    assert done[0].status_code == 200
    assert done[0].json()["choices"][0]["message"]["content"] == "Echo: Slow?"
    assert cmd.proc.wait(30) == 0
    assert len(server.chat_requests) == 1


@pytest.mark.local_model
@pytest.mark.timeout(900)
def test_serve_local_answers_the_sdk_streamed_and_not(command: Callable[..., Command]) -> None:
    cmd = command(["--model", "local", "--max-tokens", "48"])
    assert cmd.models == "local"
    client = openai.OpenAI(base_url=f"{cmd.url}/v1", api_key="unused", max_retries=0, timeout=600)
    assert [m.id for m in client.models.list()][:2] == ["local", "expert/local"]
    question = [{"role": "user", "content": "Name one planet."}]
    reply = client.chat.completions.create(model="local", messages=question)  # type: ignore[arg-type]
    assert reply.choices[0].message.content
    identity = (reply.model_extra or {})["expert_identity"]
    assert isinstance(identity, str)
    assert identity.strip()
    assert reply.usage is not None
    assert reply.usage.model_dump()["requests"] == 2
    chunks = list(
        client.chat.completions.create(
            model="expert/local",
            messages=[{"role": "user", "content": "Name one ocean."}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    first = (chunks[0].model_extra or {})["expert_identity"]
    assert isinstance(first, str)
    assert first.strip()
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    assert chunks[-1].usage is not None
