"""Transports: the only code that talks to an endpoint. One request in, one raw reply out.

:class:`OpenAITransport` and :class:`AsyncOpenAITransport` drive any OpenAI-compatible
endpoint through the official SDK, with the SDK's own retries turned off (our retry policy is
the only one, so attempts are never multiplied).

Every attempt has deadlines (:class:`~expertprompting._method.config.Deadlines`): a whole reply must
be complete within ``timeout`` of sending, and a stream must bring its first text within
``first_token`` and never fall silent for longer than ``idle``. The HTTP client's own timeouts
are per read, so a server that sends a byte now and then could otherwise hold a request for as
long as it likes. A deadline that passes raises :class:`DeadlineExceeded`, an
``openai.APITimeoutError``, so it is retried (and reported) like any timeout, and the
connection it used is closed. A request that carries its own ``deadlines`` (a call's
``timeout=``) is held to those instead of the transport's.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

import openai

try:  # openai 3.x ships its own fork of httpx
    import httpx2 as httpx
except ImportError:  # pragma: no cover - openai 1.x and 2.x
    import httpx  # type: ignore[no-redef,import-not-found,unused-ignore]

from .._method.config import Deadlines
from .._method.errors import ResponseError
from .._method.wire import ChatRequest, StreamAssembler
from .ratelimit import Headers

__all__ = [
    "AsyncOpenAITransport",
    "AsyncTransport",
    "DeadlineExceeded",
    "OpenAITransport",
    "Transport",
    "reply_headers",
]

T = TypeVar("T")


def _streaming(request: ChatRequest) -> dict[str, Any]:
    # include_usage: the last chunk reports the real usage, which the run budget settles with.
    return {**request.kwargs(), "stream": True, "stream_options": {"include_usage": True}}


_PATH = "/chat/completions"
# Whole replies are requested with the SDK's generic ``post`` and read as plain JSON: the
# request is already a complete, validated body, and the SDK's per-call parameter transform and
# response models cost more client CPU than the rest of a request (see docs/performance.md).
# Errors, timeouts, headers and authentication are the SDK's, as with ``create``. The reply
# comes back as the HTTP response (``cast_to=httpx.Response``), so its headers (the rate limits)
# reach the driver too: :meth:`OpenAITransport.complete_with_headers`.


def _body(response: httpx.Response) -> Any:
    """The reply's JSON, read as the SDK's ``cast_to=object`` reads it (text when not JSON)."""
    content_type = response.headers.get("content-type", "*").split(";")[0]
    if not content_type.endswith("json"):
        return response.text
    return response.json()


def _unparseable(exc: ValueError) -> ResponseError:
    return ResponseError(
        f"The endpoint's reply is not valid JSON ({exc}); check that the endpoint speaks the "
        "OpenAI API.",
        reason="unparseable",
        retryable=True,
    )


class DeadlineExceeded(openai.APITimeoutError):
    """An attempt ran past one of its deadlines. Retried like any timeout; the message says
    which deadline it was."""

    def __init__(self, message: str, request: httpx.Request) -> None:
        openai.APIConnectionError.__init__(self, message=message, request=request)


# Each names its setting as name=: the command line shows it as the flag (--idle-timeout).
_LATE = {
    "timeout": "no complete reply within timeout={seconds:g} s",
    "first_token": "no text within first_token_timeout={seconds:g} s",
    "idle": "no chunk within idle_timeout={seconds:g} s",
}


def _late(
    deadline: str, seconds: float, request: httpx.Request, cause: BaseException | None = None
) -> DeadlineExceeded:
    """The error for a passed deadline. Like the SDK's own timeouts, it carries the reason as
    its cause (a TimeoutError), which is what error reports show; raise it as it is (B904)."""
    message = _LATE[deadline].format(seconds=seconds)
    reason = TimeoutError(message)
    reason.__cause__ = cause
    error = DeadlineExceeded(message, request)
    error.__cause__ = reason
    return error


def _http_request(client: openai.OpenAI | openai.AsyncOpenAI) -> httpx.Request:
    """What an error about a request that never got a response names as its request."""
    return httpx.Request("POST", str(client.base_url).rstrip("/") + _PATH)


def _stream_headers(stream: Any) -> Headers | None:
    headers = getattr(getattr(stream, "response", None), "headers", None)
    return headers if isinstance(headers, Mapping) else None


def reply_headers(source: Any) -> Headers | None:
    """The HTTP headers an SDK error (``APIStatusError.response``) or one of our streams
    carries, or None."""
    if isinstance(source, openai.APIStatusError):
        return source.response.headers
    headers = getattr(source, "headers", None)
    return headers if isinstance(headers, Mapping) else None


def _has_text(chunk: Any) -> bool:
    try:
        return bool(StreamAssembler.chunk_text(chunk))
    except ResponseError:  # malformed: the driver's assembler reports it
        return False


# -- sync: deadlines enforced at the socket ----------------------------------------------------
# A blocking read in this thread can only be cut short by its socket's timeout. httpx sets that
# timeout per read, from the request's settings, so we cap it where it is applied: in the
# connection pool's network backend (httpcore's documented extension point), which we wrap so
# that every read, write and connect waits no longer than the deadline of the attempt running
# in this thread. The deadline lives in a context variable: requests that are not ours, and
# other threads, are untouched. When the cap fires, httpcore raises its ReadTimeout and closes
# the connection, and the SDK turns that into ``openai.APITimeoutError``.

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "expertprompting_deadline", default=None
)


def _capped(timeout: float | None, error: type[Exception] = TimeoutError) -> float | None:
    """``timeout`` capped by the time left to the attempt's deadline; ``error`` once it passed."""
    deadline = _DEADLINE.get()
    if deadline is None:  # not one of our attempts
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the deadline of the attempt passed")
    return left if timeout is None else min(timeout, left)


def _timeout_error(obj: Any, name: str) -> type[Exception]:
    """The timeout error ``name`` (ReadTimeout...) of the library ``obj`` comes from (httpcore
    or httpcore2): raised by us, it is handled exactly like one of its own."""
    package = sys.modules.get(type(obj).__module__.partition(".")[0])
    error = getattr(package, name, TimeoutError)
    return error if isinstance(error, type) and issubclass(error, Exception) else TimeoutError


class _DeadlineStream:
    """A network stream whose every wait ends by the current attempt's deadline.

    Past the deadline it does not read or write at all: a server that keeps sending fast, but
    never finishes, is cut too.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._read_timeout = _timeout_error(stream, "ReadTimeout")
        self._write_timeout = _timeout_error(stream, "WriteTimeout")
        self._connect_timeout = _timeout_error(stream, "ConnectTimeout")

    def read(self, max_bytes: int, timeout: float | None = None) -> Any:
        return self._stream.read(max_bytes, _capped(timeout, self._read_timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> Any:
        return self._stream.write(buffer, _capped(timeout, self._write_timeout))

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> _DeadlineStream:
        timeout = _capped(timeout, self._connect_timeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def __getattr__(self, name: str) -> Any:  # close, get_extra_info, ...
        return getattr(self._stream, name)


class _DeadlineBackend:
    """Wraps a connection pool's network backend so that its streams honour our deadlines."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._connect_timeout = _timeout_error(backend, "ConnectTimeout")

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, **options: Any
    ) -> _DeadlineStream:
        timeout = _capped(timeout, self._connect_timeout)
        return _DeadlineStream(self._backend.connect_tcp(host, port, timeout=timeout, **options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, **options: Any
    ) -> _DeadlineStream:
        timeout = _capped(timeout, self._connect_timeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, timeout=timeout, **options))

    def __getattr__(self, name: str) -> Any:  # sleep, ...
        return getattr(self._backend, name)


def _cap_sockets(client: openai.OpenAI) -> bool:
    """Install :class:`_DeadlineBackend` in the connection pools of ``client``'s HTTP client.

    Reaching the pools of a client that is already built takes private attributes of the SDK
    (``_client``) and of httpx (``_transport``, ``_mounts``, ``_pool``, ``_network_backend``).
    Returns False when there is no such pool (a custom or mock transport): then only the
    per-read timeouts apply to whole replies.
    """
    http = getattr(client, "_client", None)
    transports = [getattr(http, "_transport", None)]
    transports += list((getattr(http, "_mounts", None) or {}).values())
    capped = False
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if backend is None:
            continue
        if not isinstance(backend, _DeadlineBackend):
            pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]
        capped = True
    return capped


def _deadlines(value: Deadlines | float) -> Deadlines:
    return value if isinstance(value, Deadlines) else Deadlines(value, value)


def _read_timeout(d: Deadlines) -> float:
    # The HTTP client's per-read timeout of a stream must not cut it before our own deadlines do.
    return max(d.timeout, d.first_token, d.idle)


class Transport(Protocol):
    """Sends a planned request; returns the reply as the SDK (or a dict) gives it."""

    def complete(self, request: ChatRequest) -> Any: ...

    def open_stream(self, request: ChatRequest) -> Iterator[Any]: ...


class AsyncTransport(Protocol):
    """The async twin of :class:`Transport`."""

    async def complete(self, request: ChatRequest) -> Any: ...

    async def open_stream(self, request: ChatRequest) -> AsyncIterator[Any]: ...


class OpenAITransport:
    """Chat completions over ``openai.OpenAI``.

    ``deadlines`` is a :class:`~expertprompting._method.config.Deadlines` (a number means that many
    seconds for a whole reply and for a stream's first text).
    """

    def __init__(self, client: openai.OpenAI, deadlines: Deadlines | float) -> None:
        self.deadlines = _deadlines(deadlines)
        self.client = client.with_options(max_retries=0, timeout=self.deadlines.timeout)
        self.capped = _cap_sockets(self.client)

    def complete(self, request: ChatRequest) -> Any:
        return self.complete_with_headers(request)[0]

    def complete_with_headers(self, request: ChatRequest) -> tuple[Any, Headers]:
        """The reply's body, and its HTTP headers (for the rate limiter)."""
        timeout = (request.deadlines or self.deadlines).timeout
        deadline = time.monotonic() + timeout
        token = _DEADLINE.set(deadline)
        try:
            # the call's own timeout also sets the per-read one (a longer one than the client's)
            response = self.client.post(
                _PATH, body=request.body(), cast_to=httpx.Response, options={"timeout": timeout}
            )
            return _body(response), response.headers
        except openai.APIConnectionError as exc:  # timeouts included
            if isinstance(exc, openai.APITimeoutError) or time.monotonic() >= deadline:
                raise _late("timeout", timeout, exc.request, exc)  # noqa: B904
            raise
        except ValueError as exc:  # the SDK lets a malformed JSON body's JSONDecodeError through
            raise _unparseable(exc) from exc
        finally:
            _DEADLINE.reset(token)

    def open_stream(self, request: ChatRequest) -> Iterator[Any]:
        d = request.deadlines or self.deadlines
        first = time.monotonic() + d.first_token
        token = _DEADLINE.set(first)
        try:
            stream = self.client.chat.completions.create(
                **_streaming(request), timeout=_read_timeout(d)
            )
        except openai.APITimeoutError as exc:
            raise _late("first_token", d.first_token, exc.request, exc)  # noqa: B904
        finally:
            _DEADLINE.reset(token)
        return _Chunks(stream, first, d, _http_request(self.client))


class _Chunks(Iterator[Any]):
    """A stream's chunks, held to the first-token deadline, then to the idle deadline."""

    def __init__(
        self, stream: Any, first: float, deadlines: Deadlines, request: httpx.Request
    ) -> None:
        self._stream = stream
        self._chunks = iter(stream)
        self._first = first
        self._deadlines = deadlines
        self._request = request
        self._started = False

    def __next__(self) -> Any:
        deadline = time.monotonic() + self._deadlines.idle if self._started else self._first
        token = _DEADLINE.set(deadline)
        try:
            chunk = next(self._chunks)
        except (openai.APITimeoutError, httpx.TimeoutException) as exc:
            raise self._late(exc)  # noqa: B904
        except httpx.TransportError as exc:  # older SDKs let these through mid-stream
            raise openai.APIConnectionError(request=self._request) from exc
        except ValueError as exc:  # a chunk that is not JSON
            raise _unparseable(exc) from exc
        finally:
            _DEADLINE.reset(token)
        if not self._started:
            self._started = _has_text(chunk)
            if not self._started and time.monotonic() > deadline:  # chunks, but never text
                raise self._late(None)
        return chunk

    def _late(self, cause: BaseException | None) -> DeadlineExceeded:
        d = self._deadlines
        if self._started:
            return _late("idle", d.idle, self._request, cause)
        return _late("first_token", d.first_token, self._request, cause)

    @property
    def headers(self) -> Headers | None:
        """The stream's HTTP headers (the SDK's ``Stream.response``), for the rate limiter."""
        return _stream_headers(self._stream)

    def close(self) -> None:
        self._stream.close()


# -- async: deadlines are the event loop's ---------------------------------------------------
if sys.version_info >= (3, 11):

    async def _until(awaitable: Awaitable[T], when: float) -> T:
        """``await awaitable``, cancelled at ``when`` (the loop's clock): asyncio.TimeoutError."""
        async with asyncio.timeout_at(when):
            return await awaitable

else:  # pragma: no cover - Python 3.10

    async def _until(awaitable: Awaitable[T], when: float) -> T:
        """``await awaitable``, cancelled at ``when`` (the loop's clock): asyncio.TimeoutError."""
        delay = max(when - asyncio.get_running_loop().time(), 0.0)
        return await asyncio.wait_for(awaitable, delay)


class AsyncOpenAITransport:
    """Chat completions over ``openai.AsyncOpenAI``.

    Deadlines cancel the attempt's task at the deadline; httpx then closes the connection.
    """

    def __init__(self, client: openai.AsyncOpenAI, deadlines: Deadlines | float) -> None:
        self.deadlines = _deadlines(deadlines)
        self.client = client.with_options(max_retries=0, timeout=self.deadlines.timeout)

    async def complete(self, request: ChatRequest) -> Any:
        return (await self.complete_with_headers(request))[0]

    async def complete_with_headers(self, request: ChatRequest) -> tuple[Any, Headers]:
        """The reply's body, and its HTTP headers (for the rate limiter)."""
        timeout = (request.deadlines or self.deadlines).timeout
        when = asyncio.get_running_loop().time() + timeout
        try:
            post = self.client.post(
                _PATH, body=request.body(), cast_to=httpx.Response, options={"timeout": timeout}
            )
            response = await _until(post, when)
            return _body(response), response.headers
        except (asyncio.TimeoutError, openai.APITimeoutError) as exc:
            raise _late("timeout", timeout, _http_request(self.client), exc)  # noqa: B904
        except ValueError as exc:
            raise _unparseable(exc) from exc

    async def open_stream(self, request: ChatRequest) -> AsyncIterator[Any]:
        d = request.deadlines or self.deadlines
        first = asyncio.get_running_loop().time() + d.first_token
        try:
            stream = await _until(
                self.client.chat.completions.create(
                    **_streaming(request), timeout=_read_timeout(d)
                ),
                first,
            )
        except (asyncio.TimeoutError, openai.APITimeoutError) as exc:
            raise _late("first_token", d.first_token, _http_request(self.client), exc)  # noqa: B904
        return _AsyncChunks(stream, first, d, _http_request(self.client))


class _AsyncChunks(AsyncIterator[Any]):
    """The async twin of :class:`_Chunks`."""

    def __init__(
        self, stream: Any, first: float, deadlines: Deadlines, request: httpx.Request
    ) -> None:
        self._stream = stream
        self._chunks = aiter(stream)
        self._first = first
        self._deadlines = deadlines
        self._request = request
        self._started = False

    async def __anext__(self) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadlines.idle if self._started else self._first
        try:
            chunk = await _until(anext(self._chunks), deadline)
        except (asyncio.TimeoutError, openai.APITimeoutError, httpx.TimeoutException) as exc:
            raise self._late(exc)  # noqa: B904
        except httpx.TransportError as exc:
            raise openai.APIConnectionError(request=self._request) from exc
        except ValueError as exc:
            raise _unparseable(exc) from exc
        if not self._started:
            self._started = _has_text(chunk)
            if not self._started and loop.time() > deadline:
                raise self._late(None)
        return chunk

    def _late(self, cause: BaseException | None) -> DeadlineExceeded:
        d = self._deadlines
        if self._started:
            return _late("idle", d.idle, self._request, cause)
        return _late("first_token", d.first_token, self._request, cause)

    @property
    def headers(self) -> Headers | None:
        """The stream's HTTP headers (the SDK's ``Stream.response``), for the rate limiter."""
        return _stream_headers(self._stream)

    async def close(self) -> None:
        await self._stream.close()
