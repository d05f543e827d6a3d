"""A local, OpenAI-compatible HTTP server for tests: ours, and those of our users.

``FakeOpenAIServer`` speaks enough of the OpenAI REST API (chat completions, plain and streamed,
and the model list) that the real ``openai`` SDK, sync or async, talks to it over real sockets.
Tests script what each chat request gets back (content, finish reason, usage, HTTP errors with
headers, malformed bodies, delays, replies dripped slowly or stalled, dropped connections) and
inspect every request that arrived.
Only the standard library is used, and the server listens on 127.0.0.1 only by default.

>>> from expertprompting.testing import FakeOpenAIServer, Reply
>>> with FakeOpenAIServer() as server:                                      # doctest: +SKIP
...     server.script(Reply(content="You are a chemist."), Reply(status=429))
...     client = openai.OpenAI(base_url=server.base_url, api_key="test")
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.parser
import email.policy
import functools
import itertools
import json
import random
import re
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, cast

from ._method.tokens import DEFAULT_ENCODING, TiktokenCounter, get_encoding, known_encoding_name

__all__ = ["FakeOpenAIServer", "RecordedRequest", "Reply"]

CHAT_PATH = "/v1/chat/completions"
FAKE_MODEL = "fake-model"
_ECHO_CHARS = 200


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the server received it (any route)."""

    method: str
    path: str
    headers: dict[str, str]  # keys lower-cased
    body: bytes
    json: Any  # the parsed body, or None when it is empty or not JSON
    time: float  # time.monotonic() at arrival
    query: str = ""  # the URL's query string, without the "?"

    @property
    def messages(self) -> list[Any]:
        """The chat ``messages`` the request carried, or ``[]``."""
        if isinstance(self.json, dict) and isinstance(self.json.get("messages"), list):
            return cast(list[Any], self.json["messages"])
        return []


@dataclass(kw_only=True)
class Reply:
    """What the server answers to one chat-completions request.

    Precedence: ``fault`` (no response at all), then ``body`` (sent verbatim), then an error
    (``status >= 400``), else a completion whose content is ``content`` exactly (``None`` is sent
    as a null content). Only the default responder makes up content (an echo).

    Pacing, for clients' deadlines: ``delay`` seconds pass before anything is sent. ``drip``
    seconds pass between the bytes of a whole reply's body (or between the chunks of a stream),
    and between the bytes of the status line and headers too with ``drip_headers``; ``stall``
    seconds of silence follow a stream's first text chunk.
    """

    content: str | None = None
    finish_reason: str = "stop"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error_body: dict[str, Any] | None = None
    body: str | bytes | None = None
    delay: float = 0.0
    drip: float = 0.0
    drip_headers: bool = False
    stall: float = 0.0
    fault: Literal["drop"] | None = None
    usage: dict[str, int] | None = None
    model: str | None = None


@functools.lru_cache(maxsize=64)
def _counter(model: str) -> TiktokenCounter:
    """The counter usage is reported with. Built without the unknown-model warning: the server
    runs in threads, where switching warning filters (catch_warnings) is not thread-safe."""
    encoding = get_encoding(known_encoding_name(model) or DEFAULT_ENCODING)
    return TiktokenCounter(model, encoding=encoding)


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # content parts: keep the text ones
                return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return "" if content is None else str(content)
    return ""


def _multipart_file(req: RecordedRequest) -> tuple[str, str, bytes]:
    """(purpose, filename, content) of a multipart/form-data upload."""
    head = f"Content-Type: {req.headers.get('content-type', '')}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + req.body)
    purpose, name, data = "", "upload.jsonl", b""
    for part in message.iter_parts():
        field_name = part.get_param("name", header="content-disposition")
        raw = part.get_payload(decode=True)
        payload = raw if isinstance(raw, bytes) else b""
        if field_name == "purpose":
            purpose = payload.decode()
        elif field_name == "file":
            name = str(part.get_filename() or name)
            data = payload
    return purpose, name, data


def _request_model(req: RecordedRequest) -> str:
    model = req.json.get("model") if isinstance(req.json, dict) else None
    return model if isinstance(model, str) and model else FAKE_MODEL


def _pieces(content: str) -> list[str]:
    """Split text into word-sized pieces (spaces kept) whose concatenation is the text."""
    return [p for p in re.split(r"(?<=\s)(?=\S)", content) if p]


class _Handler(BaseHTTPRequestHandler):
    """Serves one connection; HTTP/1.1 keep-alive with an exact Content-Length on every reply."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeOpenAI/1.0"
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle and delayed ACKs
    # hold the body back ~40 ms per reply.
    disable_nagle_algorithm = True

    @property
    def fake(self) -> FakeOpenAIServer:
        return cast(_HTTPServer, self.server).fake

    def setup(self) -> None:
        super().setup()
        self.fake._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.fake._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            data = bytearray()
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                data += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return bytes(data)
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _handle(self) -> None:
        try:
            body = self._read_body()
            try:
                parsed: Any = json.loads(body) if body else None
            except ValueError:
                parsed = None
            path, _, query = self.path.partition("?")
            req = RecordedRequest(
                method=self.command,
                path=path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                json=parsed,
                time=time.monotonic(),
                query=query,
            )
            self.fake._record(req)
            if self.fake.latency > 0:
                time.sleep(self.fake.latency)
            if self.command == "POST" and path == CHAT_PATH:
                self._chat(req, self.fake._next_reply(req))
            elif path.startswith(("/v1/files", "/v1/batches")):
                self._batch_api(req)
            elif self.command == "GET" and path == "/v1/models":
                model = {"id": FAKE_MODEL, "object": "model", "created": 0, "owned_by": "fake"}
                self._send_json(200, {"object": "list", "data": [model]})
            else:
                message = f"no route {self.command} {path}"
                error = {"message": message, "type": "invalid_request_error", "code": "not_found"}
                self._send_json(404, {"error": error})
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            self.close_connection = True  # the client gave up (e.g. its timeout); nothing to tell
        except Exception as exc:  # a bug in a responder: make it visible to the test
            self._send_json(500, {"error": {"message": repr(exc), "type": "fake_server_error"}})

    def _send(
        self,
        status: int,
        frames: list[bytes],
        content_type: str,
        headers: dict[str, str],
        pace: Reply | None = None,
    ) -> None:
        """One response with an exact Content-Length; each frame is written and flushed alone.

        ``pace`` drips it as the reply says: a single frame (a whole body) byte by byte, several
        (a stream's chunks) one by one, with a stall after the first text chunk.
        """
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(sum(len(f) for f in frames)))
        self.send_header("x-request-id", f"req_fake_{self.fake._next_id('request')}")
        for name, value in headers.items():
            self.send_header(name, value)
        drip = pace.drip if pace is not None else 0.0
        if pace is not None and pace.drip_headers:
            buffer: list[bytes] = vars(self)["_headers_buffer"]  # where send_header() puts them
            head = b"".join([*buffer, b"\r\n"])  # what end_headers() would send at once
            buffer.clear()
            self._drip([head[i : i + 1] for i in range(len(head))], [drip] * len(head))
        else:
            self.end_headers()
        if self.command == "HEAD":
            return
        if len(frames) == 1 and drip > 0:
            frames = [frames[0][i : i + 1] for i in range(len(frames[0]))]
        pauses = [drip] * len(frames)
        if pace is not None and pace.stall > 0 and len(frames) > 2:
            pauses[1] += pace.stall  # frame 0 is the role chunk, frame 1 the first text
        self._drip(frames, pauses)

    def _drip(self, pieces: list[bytes], pauses: list[float]) -> None:
        """Write and flush each piece alone, pausing after each but the last."""
        for i, (piece, pause) in enumerate(zip(pieces, pauses, strict=True)):
            self.wfile.write(piece)
            self.wfile.flush()
            if pause > 0 and i < len(pieces) - 1:
                self._pause(pause)

    def _pause(self, seconds: float) -> None:
        """Sleep, but end the reply at once if the client closes the connection meanwhile (as a
        real server would notice), so tests can see that it did."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
            if readable:
                if self.connection.recv(1, socket.MSG_PEEK) == b"":
                    raise ConnectionResetError("the client closed the connection")
                time.sleep(max(end - time.monotonic(), 0))  # data, not a close: just wait
                return

    def _send_json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, [json.dumps(data).encode()], "application/json", headers or {})

    # -- a minimal Batch API: upload a file, run a batch at once, read its status and output --
    def _batch_api(self, req: RecordedRequest) -> None:
        fake, path = self.fake, req.path
        if self.command == "POST" and path == "/v1/files":
            purpose, name, data = _multipart_file(req)
            file = fake._store_file(name, data, purpose)
            self._send_json(200, file)
        elif self.command == "GET" and path.startswith("/v1/files/") and path.endswith("/content"):
            file_id = path.removeprefix("/v1/files/").removesuffix("/content")
            content = fake._files.get(file_id)
            if content is None:
                self._send_json(404, {"error": {"message": f"no file {file_id}"}})
            else:
                self._send(200, [content[1]], "application/octet-stream", {})
        elif self.command == "POST" and path == "/v1/batches":
            self._send_json(200, fake._run_batch(req.json if isinstance(req.json, dict) else {}))
        elif self.command == "GET" and path.startswith("/v1/batches/"):
            batch = fake._batches.get(path.removeprefix("/v1/batches/"))
            if batch is None:
                self._send_json(404, {"error": {"message": "no such batch"}})
            else:
                self._send_json(200, batch)
        else:
            self._send_json(404, {"error": {"message": f"no route {self.command} {path}"}})

    def _chat(self, req: RecordedRequest, reply: Reply) -> None:
        if reply.delay > 0:
            self._pause(reply.delay)
        if reply.fault == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if reply.body is not None:
            raw = reply.body.encode() if isinstance(reply.body, str) else reply.body
            self._send(reply.status, [raw], "application/json", reply.headers, reply)
            return
        if reply.status >= 400:
            default = {"message": f"scripted {reply.status}", "type": "scripted", "code": None}
            self._send_json(
                reply.status,
                {"error": default} if reply.error_body is None else reply.error_body,
                reply.headers,
            )
            return
        request_json = req.json if isinstance(req.json, dict) else {}
        model = reply.model or _request_model(req)
        usage = self.fake._usage(req, reply.content) if reply.usage is None else reply.usage
        n = self.fake._next_id("completion")
        base = {"id": f"chatcmpl-fake-{n}", "created": int(time.time()), "model": model}
        if not request_json.get("stream"):
            body = json.dumps(self.fake._completion(req, reply)).encode()
            self._send(reply.status, [body], "application/json", reply.headers, reply)
            return
        chunk = {**base, "object": "chat.completion.chunk", "usage": None}

        def choice_chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            return {**chunk, "choices": [choice]}

        events = [choice_chunk({"role": "assistant", "content": ""})]
        events += [choice_chunk({"content": piece}) for piece in _pieces(reply.content or "")]
        events.append(choice_chunk({}, reply.finish_reason))
        stream_options = request_json.get("stream_options")
        if isinstance(stream_options, dict) and stream_options.get("include_usage"):
            events.append({**chunk, "choices": [], "usage": usage})
        frames = [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]
        self._send(reply.status, frames, "text/event-stream; charset=utf-8", reply.headers, reply)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # many concurrent clients connect at once; 5 would drop them
    fake: FakeOpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connections the client dropped are normal in tests; don't print tracebacks."""


class _HTTPServerV6(_HTTPServer):
    address_family = socket.AF_INET6


class FakeOpenAIServer:
    """An OpenAI-compatible HTTP server on 127.0.0.1, serving from a daemon thread.

    ``script(*replies)`` queues replies for the next chat-completions requests (first in, first
    out); with the queue empty, ``responder(request)`` decides (by default an echo of the last user
    message, cut to ``max_tokens`` like a real model). Every request is recorded in ``requests``.
    ``latency`` seconds are added before every response; ``record=False`` keeps no requests
    (for long benchmark runs). Use it as a context manager, or call ``start()`` and ``stop()``.
    ``python -m expertprompting.testing`` serves one from the command line.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0, record: bool = True
    ) -> None:
        self.host = host
        self.port = port
        self.latency = latency
        self.record = record
        self.responder: Callable[[RecordedRequest], Reply] = self.default_responder
        self._lock = threading.Lock()
        self._queue: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._connections: set[socket.socket] = set()
        self._files: dict[str, tuple[str, bytes]] = {}
        self._batches: dict[str, dict[str, Any]] = {}
        self._ids = {"request": itertools.count(1), "completion": itertools.count(1)}
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> FakeOpenAIServer:
        """Bind and serve in a daemon thread (no-op if already running)."""
        if self._httpd is not None:
            return self
        server_class = _HTTPServerV6 if ":" in self.host else _HTTPServer
        httpd = server_class((self.host, self.port), _Handler)
        httpd.fake = self
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FakeOpenAIServer:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close open connections. Safe to call more than once."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # keep-alive connections must not outlive the server
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``: pass it as ``base_url`` to ``openai.OpenAI``."""
        if self._httpd is None:
            raise RuntimeError("FakeOpenAIServer is not running; call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    # scripting and inspection
    def script(self, *replies: Reply) -> None:
        """Append replies to the queue; each chat-completions request takes the oldest."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far (any route), in arrival order (a snapshot)."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The ``POST /v1/chat/completions`` requests received so far."""
        return [r for r in self.requests if r.method == "POST" and r.path == CHAT_PATH]

    @property
    def open_connections(self) -> int:
        """Client connections open right now (one the client closed is gone within moments)."""
        with self._lock:
            return len(self._connections)

    def reset(self) -> None:
        """Forget queued replies and recorded requests; restore the default responder."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
        self.responder = self.default_responder

    def default_responder(self, req: RecordedRequest) -> Reply:
        """Echo the last user message ("Echo: " + its first 200 characters).

        With ``max_tokens`` (or ``max_completion_tokens``) smaller than the echo, the echo is cut
        to that many tokens and the finish reason is "length", as a real model would do.
        """
        content = "Echo: " + _last_user_text(req.messages)[:_ECHO_CHARS]
        body = req.json if isinstance(req.json, dict) else {}
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if isinstance(limit, int) and not isinstance(limit, bool):
            encoding = _counter(_request_model(req)).encoding
            tokens = encoding.encode_ordinary(content)
            if len(tokens) > limit:
                content = encoding.decode(tokens[: max(limit, 0)])
                usage = self._usage(req, content)
                usage["completion_tokens"] = max(limit, 0)  # what the model generated
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                return Reply(content=content, finish_reason="length", usage=usage)
        return Reply(content=content)

    # used by the handler threads
    def _completion(self, req: RecordedRequest, reply: Reply) -> dict[str, Any]:
        """The JSON body of a whole (not streamed) chat completion for ``reply``."""
        usage = self._usage(req, reply.content) if reply.usage is None else reply.usage
        n = self._next_id("completion")
        message = {"role": "assistant", "content": reply.content}
        return {
            "id": f"chatcmpl-fake-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.model or _request_model(req),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": reply.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": usage,
        }

    def _store_file(self, name: str, data: bytes, purpose: str) -> dict[str, Any]:
        with self._lock:
            file_id = f"file-fake-{len(self._files) + 1}"
            self._files[file_id] = (name, data)
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": name,
            "purpose": purpose,
            "status": "processed",
        }

    def _run_batch(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Run every request of the input file now, through the scripted replies/responder."""
        _, data = self._files.get(str(spec.get("input_file_id")), ("", b""))
        lines: list[bytes] = []
        failed = 0
        for raw in data.splitlines():
            if not raw.strip():
                continue
            row = json.loads(raw)
            body = json.dumps(row["body"]).encode()
            req = RecordedRequest("POST", CHAT_PATH, {}, body, row["body"], time.monotonic())
            self._record(req)
            reply = self._next_reply(req)
            if reply.status >= 400 or reply.fault or reply.body is not None:
                failed += 1
                error = reply.error_body or {"error": {"message": f"scripted {reply.status}"}}
                response = {
                    "status_code": reply.status if reply.status >= 400 else 500,
                    "request_id": "req_fake",
                    "body": error,
                }
            else:
                response = {
                    "status_code": 200,
                    "request_id": "req_fake",
                    "body": self._completion(req, reply),
                }
            line = {
                "id": f"batch_req_{len(lines) + 1}",
                "custom_id": row["custom_id"],
                "response": response,
                "error": None,
            }
            lines.append(json.dumps(line).encode())
        output = self._store_file("output.jsonl", b"\n".join(lines) + b"\n", "batch_output")
        with self._lock:
            batch_id = f"batch_fake_{len(self._batches) + 1}"
            batch = {
                "id": batch_id,
                "object": "batch",
                "endpoint": spec.get("endpoint"),
                "input_file_id": spec.get("input_file_id"),
                "completion_window": spec.get("completion_window"),
                "status": "completed",
                "created_at": int(time.time()),
                "output_file_id": output["id"],
                "error_file_id": None,
                "request_counts": {
                    "total": len(lines),
                    "completed": len(lines) - failed,
                    "failed": failed,
                },
            }
            self._batches[batch_id] = batch
        return batch

    def _usage(self, req: RecordedRequest, content: str | None) -> dict[str, int]:
        counter = _counter(_request_model(req))
        prompt = counter.count_messages(req.messages)
        completion = counter.count_text(content or "")
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _next_reply(self, req: RecordedRequest) -> Reply:
        with self._lock:
            reply = self._queue.popleft() if self._queue else None
        return reply if reply is not None else self.responder(req)

    def _record(self, req: RecordedRequest) -> None:
        if not self.record:  # long benchmark runs: keep memory flat
            return
        with self._lock:
            self._requests.append(req)

    def _next_id(self, kind: Literal["request", "completion"]) -> int:
        with self._lock:
            return next(self._ids[kind])

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


def faulty_responder(
    base: Callable[[RecordedRequest], Reply], rate: float, seed: int | None = None
) -> Callable[[RecordedRequest], Reply]:
    """A responder that fails a fraction ``rate`` of requests: 429 (with Retry-After), 500,
    503 or a dropped connection, in equal parts; the rest go to ``base``.

    >>> server.responder = faulty_responder(server.default_responder, 0.1, seed=1)  # doctest: +SKIP
    """
    rng = random.Random(seed)
    lock = threading.Lock()
    faults = [
        Reply(status=429, headers={"retry-after": "0.05"}),
        Reply(status=500),
        Reply(status=503),
        Reply(fault="drop"),
    ]

    def respond(req: RecordedRequest) -> Reply:
        with lock:
            roll, pick = rng.random(), rng.randrange(len(faults))
        if roll < rate:
            return faults[pick]
        return base(req)

    return respond


def main(argv: list[str] | None = None) -> None:
    """Serve a FakeOpenAIServer until interrupted: ``python -m expertprompting.testing``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m expertprompting.testing",
        description="An OpenAI-compatible test server on loopback (echo replies).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per response")
    parser.add_argument("--faults", type=float, default=0.0, help="fraction of failed replies")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--drip", type=float, default=0.0, help="seconds between the bytes of every reply's body"
    )
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("the test server only serves loopback addresses")
    server = FakeOpenAIServer(args.host, args.port, args.latency, record=False)
    if args.faults:
        server.responder = faulty_responder(server.default_responder, args.faults, args.seed)
    if args.drip:
        respond = server.responder
        server.responder = lambda req: dataclasses.replace(respond(req), drip=args.drip)
    with server:
        print(server.base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
