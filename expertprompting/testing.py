"""A local, OpenAI-compatible HTTP server for tests: ours, and those of our users.

``FakeOpenAIServer`` speaks enough of the OpenAI REST API (chat completions, plain and streamed,
and the model list) that the real ``openai`` SDK, sync or async, talks to it over real sockets.
Tests script what each chat request gets back (content, finish reason, usage, HTTP errors with
headers, malformed bodies, delays, replies dripped slowly or stalled, dropped connections) and
inspect every request that arrived. With ``limits=ProviderLimits(...)`` it also enforces
provider-style rate limits (short windows, refused requests counted, ``max_tokens`` reserved,
``x-ratelimit-*`` headers), so clients can be tried against what providers really do.
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
import math
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
from typing import TYPE_CHECKING, Any, Literal, cast

from ._method.errors import ConfigurationError
from ._method.model_table import lookup_model
from ._method.tokens import DEFAULT_ENCODING, TiktokenCounter, get_encoding, known_encoding_name

if TYPE_CHECKING:
    import argparse

__all__ = ["FakeOpenAIServer", "LimitStats", "ProviderLimits", "RecordedRequest", "Reply"]

CHAT_PATH = "/v1/chat/completions"
LIMIT_STATS_PATH = "/fake/limit-stats"  # GET: the LimitStats as JSON, for servers in a subprocess
# What a request without max_tokens reserves when the model table does not know its model: the
# output cap of gpt-4o and gpt-4o-mini, which providers reserve in full.
UNKNOWN_MODEL_MAX_OUTPUT = 16_384
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


@dataclass(frozen=True)
class ProviderLimits:
    """Provider-style rate limits for ``FakeOpenAIServer(limits=...)``: off unless given.

    ``rpm`` and ``tpm`` are the per-minute figures (either may be None: not limited). As
    providers do, they are enforced over short windows: each is a bucket holding ``window``
    seconds' share of the limit (``rpm * window / 60`` requests, ``tpm * window / 60`` tokens),
    full at the start and refilled continuously at the per-minute rate. So a full bucket admits a
    burst of one window's share at once, and after that the steady rate; a client that paces
    itself to the limit with a burst of at most a window's share is never refused.

    A chat request is admitted when the requests bucket holds at least one request and the
    tokens bucket at least its tokens (or, for a request bigger than a whole window's share, when
    the bucket is full; it then goes into debt, repaid before the next request). Its tokens,
    counted before it runs, are its prompt tokens (counted as the usage reports them) plus
    ``max_completion_tokens`` or ``max_tokens`` times ``n``; a request that names neither
    reserves the model's maximum output (16384 for gpt-4o-mini and unknown models), as
    providers do. Tokens are not given back when the answer is shorter. A request over a limit
    gets HTTP 429, and a refused request still takes its request from the bucket (providers
    count failed requests too: resending at once digs the hole deeper, down to one window's
    share below empty); refused requests
    take no tokens. A request with more tokens than ``tpm`` can never run: its 429 says so and
    carries no ``retry-after``.

    With ``headers`` (the default) every chat reply, 200 or 429, carries OpenAI's header
    families: ``x-ratelimit-limit-{requests,tokens}`` (the per-minute figures),
    ``x-ratelimit-remaining-*`` (what the bucket holds, scaled to a minute, so it reads against
    the limit and is 0 when the bucket is empty) and ``x-ratelimit-reset-*`` (the time until the
    bucket is full again, "resets to its initial state" in OpenAI's words, in the providers'
    duration format such as ``20ms``, ``1.5s``, ``6m0s``). A family whose limit is None is not
    sent. A 429's ``retry-after`` (seconds, with decimals) is sent with or without ``headers``.
    """

    rpm: int | None = None
    tpm: int | None = None
    window: float = 1.0
    headers: bool = True

    def __post_init__(self) -> None:
        if self.rpm is None and self.tpm is None:
            raise ConfigurationError("ProviderLimits needs rpm, tpm or both.")
        for name, value in (("rpm", self.rpm), ("tpm", self.tpm)):
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise ConfigurationError(f"ProviderLimits {name} must be positive, got {value!r}.")
        if not (self.window > 0 and math.isfinite(self.window)):
            raise ConfigurationError(
                f"ProviderLimits window must be a positive number of seconds, got {self.window!r}."
            )


@dataclass(frozen=True)
class LimitStats:
    """What a server with ``limits`` did so far (``FakeOpenAIServer.limit_stats``).

    ``accepted`` chat requests ran; ``refused`` got a 429 (``refused_requests`` of them for the
    request limit, ``refused_tokens`` for the token limit); ``tokens`` is what the accepted ones
    were counted for (prompt plus reserved output). All zero without limits.
    """

    accepted: int = 0
    refused: int = 0
    refused_requests: int = 0
    refused_tokens: int = 0
    tokens: int = 0


def format_duration(seconds: float) -> str:
    """A duration as providers write it in ``x-ratelimit-reset-*``: ``20ms``, ``1.5s``,
    ``6m0s``, ``1m30.5s``, ``1h0m0s`` (Go's style, at millisecond resolution, rounded up so a
    client that waits that long is never early)."""
    # round() first: 0.02 * 1000 is 20.000000000000004, which must not become 21 ms
    ms = max(math.ceil(round(seconds * 1000, 6)), 0)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs = f"{ms // 1000}.{ms % 1000:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs


def _seconds(seconds: float) -> str:
    """A ``retry-after`` value: seconds with up to three decimals, rounded up, at least 1 ms."""
    ms = max(math.ceil(round(seconds * 1000, 6)), 1)
    return f"{ms // 1000}.{ms % 1000:03d}".rstrip("0").rstrip(".")


class _Bucket:
    """One limit: ``window`` seconds' share of a per-minute figure, refilled continuously."""

    def __init__(self, per_minute: int, window: float, now: float) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = per_minute * window / 60.0
        self.level = self.capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def _need(self, cost: float) -> float:
        # a cost over the whole bucket is let through when the bucket is full (then owed)
        return min(cost, self.capacity)

    def fits(self, cost: float) -> bool:
        # a float-sized tolerance: refills of exactly one request must not fall 1e-16 short
        return self.level >= self._need(cost) - 1e-9 * max(self.capacity, 1.0)

    def wait(self, cost: float) -> float:
        """Seconds until ``cost`` fits."""
        return max(self._need(cost) - self.level, 0.0) / self.rate

    def remaining(self) -> int:
        """What the bucket holds, scaled to a minute (0 when it is empty or in debt)."""
        # round() first: 0.85 * 60000 is 50999.99999999999, which must read 51000
        scaled = math.floor(round(max(self.level, 0.0) / self.capacity * self.per_minute, 6))
        return min(scaled, self.per_minute)

    def headers(self, kind: str) -> dict[str, str]:
        return {
            f"x-ratelimit-limit-{kind}": str(self.per_minute),
            f"x-ratelimit-remaining-{kind}": str(self.remaining()),
            f"x-ratelimit-reset-{kind}": format_duration((self.capacity - self.level) / self.rate),
        }


@dataclass(frozen=True)
class _Admission:
    """The limiter's answer to one chat request: headers to send, and a 429's body if refused."""

    headers: dict[str, str]
    refusal: dict[str, Any] | None = None


class _Limiter:
    """The buckets of ``ProviderLimits`` and their counts; thread-safe."""

    def __init__(self, limits: ProviderLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._requests = None if limits.rpm is None else _Bucket(limits.rpm, limits.window, now)
        self._tokens = None if limits.tpm is None else _Bucket(limits.tpm, limits.window, now)
        self._stats = LimitStats()

    @property
    def stats(self) -> LimitStats:
        with self._lock:
            return self._stats

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.limits.headers:
            for kind, bucket in (("requests", self._requests), ("tokens", self._tokens)):
                if bucket is not None:
                    headers.update(bucket.headers(kind))
        return headers

    def admit(self, tokens: int, model: str) -> _Admission:
        with self._lock:
            now = self._clock()
            requests, token_bucket = self._requests, self._tokens
            for bucket in (requests, token_bucket):
                if bucket is not None:
                    bucket.refill(now)
            too_large = token_bucket is not None and tokens > token_bucket.per_minute
            kind: Literal["requests", "tokens"] | None = None
            if requests is not None and not requests.fits(1):
                kind = "requests"
            elif token_bucket is not None and (too_large or not token_bucket.fits(tokens)):
                kind = "tokens"
            if requests is not None:
                # refused or not, a request counts; refusals dig at most one window's share
                # deep, so a client that waits the retry-after it was told gets through
                requests.level -= 1
                if kind is not None:
                    requests.level = max(requests.level, -requests.capacity)
            stats = self._stats
            if kind is None:
                if token_bucket is not None:
                    token_bucket.level -= tokens
                self._stats = dataclasses.replace(
                    stats, accepted=stats.accepted + 1, tokens=stats.tokens + tokens
                )
                return _Admission(self._headers())
            self._stats = dataclasses.replace(
                stats,
                refused=stats.refused + 1,
                refused_requests=stats.refused_requests + (kind == "requests"),
                refused_tokens=stats.refused_tokens + (kind == "tokens"),
            )
            headers = self._headers()
            if too_large and kind == "tokens":
                assert token_bucket is not None
                message = (
                    f"Request too large for {model} on tokens per min (TPM): Limit "
                    f"{token_bucket.per_minute}, Requested {tokens}. The input or output tokens "
                    "must be reduced in order to run successfully."
                )
            else:
                wait = max(
                    requests.wait(1) if requests is not None else 0.0,
                    token_bucket.wait(tokens)
                    if token_bucket is not None and not too_large
                    else 0.0,
                )
                headers["retry-after"] = _seconds(wait)
                bucket = requests if kind == "requests" else token_bucket
                assert bucket is not None
                used = bucket.per_minute - bucket.remaining()
                asked = 1 if kind == "requests" else tokens
                unit = "RPM" if kind == "requests" else "TPM"
                message = (
                    f"Rate limit reached for {model} on {kind} per min ({unit}): Limit "
                    f"{bucket.per_minute}, Used {used}, Requested {asked}. Please try again in "
                    f"{format_duration(wait)}."
                )
            error = {"message": message, "type": kind, "param": None, "code": "rate_limit_exceeded"}
            return _Admission(headers, {"error": error})


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
            chat = self.command == "POST" and path == CHAT_PATH
            # limits are applied on arrival, as a provider's gateway does, before any latency
            admission = self.fake._admit(req) if chat else None
            if self.fake.latency > 0:
                time.sleep(self.fake.latency)
            if admission is not None and admission.refusal is not None:
                self._send_json(429, admission.refusal, admission.headers)
            elif chat:
                reply = self.fake._next_reply(req)
                if admission is not None and admission.headers:  # a scripted header wins
                    reply = dataclasses.replace(
                        reply, headers={**admission.headers, **reply.headers}
                    )
                self._chat(req, reply)
            elif self.command == "GET" and path == LIMIT_STATS_PATH:
                self._send_json(200, dataclasses.asdict(self.fake.limit_stats))
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

    ``limits=ProviderLimits(...)`` enforces provider-style rate limits on chat requests (see
    :class:`ProviderLimits`; Batch API requests are not limited); ``limit_stats`` counts what
    they did, also served as JSON at ``GET /fake/limit-stats``. ``clock`` (default
    ``time.monotonic``) is the limits' time, so tests can move it by hand.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        record: bool = True,
        *,
        limits: ProviderLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.latency = latency
        self.record = record
        self.clock = clock
        self._limiter = None if limits is None else _Limiter(limits, clock)
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

    @property
    def limits(self) -> ProviderLimits | None:
        """The rate limits enforced, or None."""
        return None if self._limiter is None else self._limiter.limits

    @property
    def limit_stats(self) -> LimitStats:
        """Chat requests accepted and refused under ``limits``, and tokens counted (a snapshot)."""
        return LimitStats() if self._limiter is None else self._limiter.stats

    def reset(self) -> None:
        """Forget queued replies and recorded requests; restore the default responder; refill
        the limits' buckets and zero their counts."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
        self.responder = self.default_responder
        if self._limiter is not None:
            self._limiter = _Limiter(self._limiter.limits, self.clock)

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

    def _admit(self, req: RecordedRequest) -> _Admission | None:
        """Count a chat request against the limits (None: there are none)."""
        limiter = self._limiter
        if limiter is None:
            return None
        model = _request_model(req)
        return limiter.admit(self._reserved_tokens(req, model), model)

    def _reserved_tokens(self, req: RecordedRequest, model: str) -> int:
        """Prompt tokens plus the output the request may produce, as providers reserve it."""
        body = req.json if isinstance(req.json, dict) else {}
        prompt = _counter(model).count_messages(req.messages)
        caps = (body.get("max_completion_tokens"), body.get("max_tokens"))
        cap = next((c for c in caps if isinstance(c, int) and not isinstance(c, bool)), None)
        if cap is None:  # no cap asked: the model's maximum output is reserved
            info = lookup_model(model)
            cap = UNKNOWN_MODEL_MAX_OUTPUT if info is None else info.max_output_tokens
        n = body.get("n")
        choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
        return prompt + max(cap, 0) * choices

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


def build_parser() -> argparse.ArgumentParser:
    """The arguments of ``python -m expertprompting.testing``."""
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
    limits = parser.add_argument_group(
        "provider-style rate limits (off unless --rpm or --tpm is given)"
    )
    limits.add_argument("--rpm", type=int, default=None, help="requests per minute")
    limits.add_argument("--tpm", type=int, default=None, help="tokens per minute")
    limits.add_argument(
        "--window",
        type=float,
        default=None,
        help="seconds over which the per-minute limits are enforced (default 1)",
    )
    limits.add_argument(
        "--no-rate-headers",
        dest="rate_headers",
        action="store_false",
        help="send no x-ratelimit-* headers (429s still carry retry-after)",
    )
    return parser


def limits_from_args(args: argparse.Namespace) -> ProviderLimits | None:
    """The ``ProviderLimits`` the command line asks for, or None; a one-line
    ``ConfigurationError`` naming the flag when a value is wrong."""
    if args.rpm is None and args.tpm is None:
        if args.window is not None or not args.rate_headers:
            raise ConfigurationError("--window and --no-rate-headers need --rpm or --tpm.")
        return None
    for flag, value in (("--rpm", args.rpm), ("--tpm", args.tpm), ("--window", args.window)):
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise ConfigurationError(f"{flag} must be positive, got {value}.")
    window = 1.0 if args.window is None else args.window
    return ProviderLimits(rpm=args.rpm, tpm=args.tpm, window=window, headers=args.rate_headers)


def main(argv: list[str] | None = None) -> None:
    """Serve a FakeOpenAIServer until interrupted: ``python -m expertprompting.testing``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        limits = limits_from_args(args)
    except ConfigurationError as exc:
        parser.error(str(exc))
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("the test server only serves loopback addresses")
    server = FakeOpenAIServer(args.host, args.port, args.latency, record=False, limits=limits)
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
