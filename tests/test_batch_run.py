"""`batch run` goes through our retry policy and rate limiter; Batch API calls fail in one line."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import openai
import pytest

from expertprompting import RetryPolicy
from expertprompting._datasets import batch as batch_module
from expertprompting._datasets.batch import BATCH_ENDPOINT, read_results, run_requests, status
from expertprompting._io.ratelimit import Permit, RateLimiter
from expertprompting._method.errors import ConfigurationError, RequestError, RetryError
from expertprompting.cli import main
from expertprompting.testing import FakeOpenAIServer, Reply

FAST = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05)


def _request_file(path: Path, *bodies: dict[str, Any]) -> Path:
    lines = [
        {"custom_id": f"r{i}", "method": "POST", "url": BATCH_ENDPOINT, "body": body}
        for i, body in enumerate(bodies)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def _body(text: str = "Explain tides.", **more: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 50,
        **more,
    }


def _client(server: FakeOpenAIServer, **options: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="k", **options)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there now


# -- run_requests: our retries, not the SDK's ----------------------------------------------------
def test_retries_are_ours_and_the_sdks_are_off(server: FakeOpenAIServer, tmp_path: Path) -> None:
    """A client built with SDK retries still sends max_attempts attempts, not more."""
    server.script(Reply(status=500), Reply(status=500), Reply(content="late"))
    requests = _request_file(tmp_path / "req.jsonl", _body())
    client = _client(server, max_retries=5)
    retry = RetryPolicy(max_attempts=2, initial_delay=0.01)
    run_requests(requests, tmp_path / "res.jsonl", client=client, retry=retry)
    assert len(server.chat_requests) == 2
    (line,) = _lines(tmp_path / "res.jsonl")
    assert line["response"]["status_code"] == 500
    assert read_results(tmp_path / "res.jsonl")["r0"].error == "HTTP 500: scripted 500"


def test_a_429_and_an_empty_reply_are_retried_by_the_policy(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    server.script(
        Reply(status=429, headers={"retry-after-ms": "10"}), Reply(content=""), Reply(content="ok")
    )
    requests = _request_file(tmp_path / "req.jsonl", _body(seed=7))
    run_requests(requests, tmp_path / "res.jsonl", client=_client(server), retry=FAST)
    sent = server.chat_requests
    assert len(sent) == 3
    assert [r.json["seed"] for r in sent] == [7, 8, 9]  # a retry does not repeat its reply
    assert {k: v for k, v in sent[0].json.items() if k != "seed"} == _body()  # as written
    (line,) = _lines(tmp_path / "res.jsonl")
    assert line["response"]["status_code"] == 200
    assert line["response"]["body"]["choices"][0]["message"]["content"] == "ok"


def test_every_attempt_passes_the_rate_limiter(
    server: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reserved: list[int] = []

    class Recording(RateLimiter):
        async def acquire(self, tokens: int) -> Permit:
            reserved.append(tokens)
            return await super().acquire(tokens)

    monkeypatch.setattr(batch_module, "RateLimiter", Recording)
    server.script(Reply(status=503))
    requests = _request_file(tmp_path / "req.jsonl", _body("one"), _body("two"))
    run_requests(requests, tmp_path / "res.jsonl", client=_client(server), retry=FAST, rpm=600)
    assert len(reserved) == 3  # two lines, one retried
    assert all(tokens > 50 for tokens in reserved)  # the prompt plus max_tokens


def test_an_unreachable_server_is_an_error_line(tmp_path: Path) -> None:
    requests = _request_file(tmp_path / "req.jsonl", _body())
    client = openai.AsyncOpenAI(base_url=_closed_port_url(), api_key="k")
    run_requests(requests, tmp_path / "res.jsonl", client=client, retry=FAST)
    (line,) = _lines(tmp_path / "res.jsonl")
    assert line["response"] is None
    assert line["error"]["code"] == "RetryError"
    assert "3 attempts" in line["error"]["message"]


def test_a_missing_request_file_is_a_configuration_error(tmp_path: Path) -> None:
    client = openai.AsyncOpenAI(base_url=_closed_port_url(), api_key="k")
    with pytest.raises(ConfigurationError, match="Cannot read the request file"):
        run_requests(tmp_path / "nope.jsonl", tmp_path / "res.jsonl", client=client)


# -- the command line ------------------------------------------------------------------------------
def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err
    return code, err


def test_cli_batch_run_has_its_own_retry_and_rate_options(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.script(Reply(status=500), Reply(status=500), Reply(status=500))
    requests = _request_file(tmp_path / "req.jsonl", _body())
    out = str(tmp_path / "res.jsonl")
    code, err = _cli(
        capsys, "batch", "run", str(requests), "-o", out, "--base-url", server.base_url,
        "--max-attempts", "2", "--rpm", "600", "--tpm", "100000", "--timeout", "5",
    )  # fmt: skip
    assert code == 1
    assert len(server.chat_requests) == 2  # --max-attempts, and no SDK retries on top
    assert err.strip().splitlines()[-1] == f"1 requests run (1 failed), results in {out}"


def test_cli_batch_run_needs_an_endpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    requests = _request_file(tmp_path / "req.jsonl", _body())
    code, err = _cli(capsys, "batch", "run", str(requests), "-o", str(tmp_path / "res.jsonl"))
    assert code == 2
    assert "--base-url" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("step", "expected_code", "expected"),
    [
        (["status", "batch_nope"], 1, "HTTP 404: no such batch. Check the batch id"),
        (["download", "batch_nope", "-o", "{tmp}/res.jsonl"], 1, "HTTP 404"),
        (["submit", "{tmp}/missing.jsonl"], 2, "Cannot read the request file"),
    ],
)
def test_cli_batch_api_errors_are_one_line(
    server: FakeOpenAIServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    step: list[str],
    expected_code: int,
    expected: str,
) -> None:
    args = [part.replace("{tmp}", str(tmp_path)) for part in step]
    code, err = _cli(capsys, "batch", *args, "--base-url", server.base_url)
    assert code == expected_code
    assert err.startswith("expertprompting: error: ")
    assert expected in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_cli_batch_status_without_a_server_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, err = _cli(capsys, "batch", "status", "batch_1", "--base-url", _closed_port_url())
    assert code == 1
    assert err.startswith("expertprompting: error: Reading batch batch_1 failed: could not connect")
    assert len(err.strip().splitlines()) == 1


def test_cli_batch_download_into_a_directory_is_one_line(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    requests = _request_file(tmp_path / "req.jsonl", _body())
    client = openai.OpenAI(base_url=server.base_url, api_key="k")
    job = batch_module.submit(client, requests)
    code, err = _cli(
        capsys, "batch", "download", job.id, "-o", str(tmp_path), "--base-url", server.base_url
    )
    assert code == 2
    assert err.startswith("expertprompting: error: ")
    assert str(tmp_path) in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


# -- the library's errors, typed -----------------------------------------------------------------
def test_batch_api_errors_are_typed(server: FakeOpenAIServer) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    with pytest.raises(RequestError) as refused:
        status(client, "batch_nope")
    assert refused.value.status_code == 404
    assert isinstance(refused.value.__cause__, openai.NotFoundError)
    offline = openai.OpenAI(base_url=_closed_port_url(), api_key="k", max_retries=0)
    with pytest.raises(RetryError, match="could not connect"):
        status(offline, "batch_1")
