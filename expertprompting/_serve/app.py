"""``create_app``: the FastAPI application of ``expertprompting serve``.

Routes: ``POST /v1/chat/completions`` (JSON or server-sent events), ``GET /v1/models``,
``GET /health`` and ``GET /`` (the playground page). In front of them a small ASGI guard checks
client keys, refuses new requests while draining and counts requests in flight; CORS is added
only when origins are configured.

Each model's :class:`~expertprompting.ExpertPrompter` is made once, when the app is made; a
request costs no construction. A call runs as its own task while the handler watches the
connection: a client that goes away cancels it, and with it the upstream request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import importlib.resources
import logging
import os
import re
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from .._io.retry import retry_after_seconds
from .._method.errors import RateLimitError
from .._prompter import AsyncAnswerStream, ExpertPrompter
from .admission import Admission, QueueFull
from .protocol import (
    SSE_DONE,
    APIError,
    ChatCompletionRequest,
    chunk,
    completion_body,
    completion_id,
    error_body,
    finish_reason,
    library_error,
    model_ids,
    parse_chat_request,
    resolve_model,
    sse,
    usage_body,
)
from .settings import ServerSettings

if TYPE_CHECKING:
    from .._method.results import ExpertAnswer

__all__ = ["ClientGone", "ServerState", "create_app", "make_prompters"]

logger = logging.getLogger("expertprompting.server")
T = TypeVar("T")

CHAT_PATH = "/v1/chat/completions"
QUEUE_FULL_RETRY = 1  # seconds a refused client is told to wait: slots free up quickly


class ClientGone(Exception):
    """The client closed its connection before its reply."""


def make_prompters(settings: ServerSettings) -> dict[str, ExpertPrompter]:
    """One prompter per served model, as ``settings`` describe them."""
    from .._io.local import is_local_model

    prompters = {}
    for model in settings.models:
        local = is_local_model(model)
        connection: dict[str, Any] = {}
        if not local:  # a local model talks to no endpoint
            if settings.base_url:
                connection["base_url"] = settings.base_url
            if settings.api_key is not None:
                connection["api_key"] = settings.api_key.get_secret_value()
        cache = str(settings.cache) if not isinstance(settings.cache, bool) else settings.cache
        prompters[model] = ExpertPrompter(
            model=model,
            strategy=settings.strategy,
            cache=cache,
            **connection,
            **settings.prompter,
        )
    return prompters


class ServerState:
    """What the routes share: the prompters, admission, secrets, and whether it is draining."""

    def __init__(self, settings: ServerSettings, prompters: Mapping[str, ExpertPrompter]) -> None:
        self.settings = settings
        self.prompters = dict(prompters)
        self.strategies = {model: ep.strategies for model, ep in self.prompters.items()}
        self.model_ids = model_ids(self.prompters, self.strategies)
        self.admission = Admission(settings.concurrency, settings.queue)
        self.created = int(time.time())
        self.draining = False
        self.in_flight = 0
        self.client_keys = [k.get_secret_value().encode() for k in settings.api_keys]
        secrets = [k.get_secret_value() for k in settings.api_keys]
        if settings.api_key is not None:
            secrets.append(settings.api_key.get_secret_value())
        if os.environ.get("OPENAI_API_KEY"):
            secrets.append(os.environ["OPENAI_API_KEY"])
        secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._secrets = re.compile("|".join(map(re.escape, secrets))) if secrets else None
        self._playground: bytes | None = None

    # -- secrets and errors ----------------------------------------------------------------------
    def scrub(self, text: str) -> str:
        """``text`` with every key (upstream and client) replaced by ``***``."""
        return text if self._secrets is None else self._secrets.sub("***", text)

    def failure(self, exc: BaseException) -> APIError:
        """The reply to an error of a call; unexpected ones are logged (scrubbed), not sent."""
        if isinstance(exc, APIError):
            return exc
        if isinstance(exc, QueueFull):
            return _queue_full()
        wait = None
        if isinstance(exc, RateLimitError):
            response = getattr(exc.__cause__, "response", None)
            headers = getattr(response, "headers", None)
            if headers is not None:
                wait = retry_after_seconds(headers)
        error = library_error(exc, self.scrub, wait)
        if error.status >= 500:
            if error.status == 500:
                text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                logger.error("a request failed:\n%s", self.scrub(text))
            else:
                logger.warning("upstream failure: %s", self.scrub(" ".join(str(exc).split())))
        return error

    def authorized(self, header: bytes | None) -> bool:
        """Whether an ``Authorization`` header carries a client key (Bearer, or Basic with the
        key as the password); compared in constant time against every key."""
        if header is None:
            return False
        scheme, _, value = header.partition(b" ")
        scheme = scheme.lower()
        if scheme == b"basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True)
            except (binascii.Error, ValueError):
                return False
            value = decoded.partition(b":")[2]
        elif scheme != b"bearer":
            return False
        value = value.strip()
        found = False
        for key in self.client_keys:  # no early exit: the time says nothing of which key
            found |= hmac.compare_digest(value, key)
        return found

    def playground(self) -> bytes:
        if self._playground is None:
            page = importlib.resources.files("expertprompting._serve").joinpath("playground.html")
            self._playground = page.read_bytes()
        return self._playground

    # -- the chat route --------------------------------------------------------------------------
    async def read_body(self, request: Request) -> bytes:
        """The request body, refused with 413 past the limit (before reading, when the
        Content-Length says so; else as soon as the bytes received pass it)."""
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        body = bytearray()
        try:
            async for piece in request.stream():
                body += piece
                if len(body) > limit:
                    raise _too_large(limit)
        except ClientDisconnect:
            raise ClientGone from None
        return bytes(body)

    async def chat(self, request: Request) -> Response:
        if self.admission.full:  # refused before the body is read: a burst costs no memory
            raise _queue_full()
        req = parse_chat_request(await self.read_body(request))
        model, strategy = resolve_model(req.model, self.strategies)
        ep = self.prompters[model]
        settings = req.call_settings()
        reply_id, created = completion_id(), int(time.time())
        if req.stream:
            return await self.chat_stream(request, ep, req, strategy, settings, reply_id, created)
        result = await until_disconnected(
            request.receive, self.answer(ep, req.messages, strategy, settings)
        )
        return JSONResponse(completion_body(reply_id, created, req.model, result))

    async def answer(
        self,
        ep: ExpertPrompter,
        messages: Sequence[Mapping[str, Any]],
        strategy: str | None,
        settings: dict[str, Any],
    ) -> ExpertAnswer:
        await self.admission.acquire()
        try:
            return await ep.achat(messages, strategy=strategy, **settings)
        finally:
            self.admission.release()

    async def first_text(
        self,
        ep: ExpertPrompter,
        messages: Sequence[Mapping[str, Any]],
        strategy: str | None,
        settings: dict[str, Any],
    ) -> tuple[AsyncAnswerStream, str]:
        """Take a slot, open the stream and read its first text (the identity is known then).

        On success the slot stays taken: the stream's response gives it back when it ends.
        """
        await self.admission.acquire()
        try:
            stream = ep.astream_chat(messages, strategy=strategy, **settings)
            try:
                text = await stream.__anext__()
            except StopAsyncIteration:
                text = ""
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await stream.aclose()
                raise
            return stream, text
        except BaseException:
            self.admission.release()
            raise

    async def chat_stream(
        self,
        request: Request,
        ep: ExpertPrompter,
        req: ChatCompletionRequest,
        strategy: str | None,
        settings: dict[str, Any],
        reply_id: str,
        created: int,
    ) -> Response:
        # an error before the first text (a bad conversation, an upstream failure) still gets
        # its own HTTP status: the response only starts once there is text to send
        stream, first = await until_disconnected(
            request.receive, self.first_text(ep, req.messages, strategy, settings)
        )

        def event(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
            return sse(chunk(reply_id, created, req.model, delta, finish, **extra))

        async def events() -> AsyncIterator[bytes]:
            try:
                try:
                    yield event(
                        {"role": "assistant", "content": ""}, expert_identity=stream.identity
                    )
                    if first:
                        yield event({"content": first})
                    async for piece in stream:
                        yield event({"content": piece})
                    result = stream.result
                    yield event({}, finish_reason(result))
                    if req.include_usage:
                        yield event(None, usage=usage_body(result.usage))
                except Exception as exc:  # the response has begun: the error is an event
                    yield sse(self.failure(exc).body())
                yield SSE_DONE
            finally:
                with anyio.CancelScope(shield=True):
                    await stream.aclose()

        return _EventStream(events(), self.admission.release)


class _EventStream(StreamingResponse):
    """Server-sent events whose ``release`` runs however the response ends (finished, failed,
    or cancelled by a disconnect), after the events' generator is closed."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(events, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._events = events
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                aclose = getattr(self._events, "aclose", None)
                if aclose is not None:
                    with anyio.CancelScope(shield=True):
                        await aclose()
            finally:
                self._release()


async def until_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Run ``work`` as a task, cancelled if the client disconnects first (:class:`ClientGone`).

    Only after the body has been read: from then on the ASGI ``receive`` only says
    ``http.disconnect``.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait((task,))  # its cleanup closes the upstream connection
    if task.cancelled():
        raise ClientGone
    if watcher.done() and not watcher.cancelled() and task.exception() is not None:
        raise ClientGone  # the work failed because it was cut short
    return task.result()


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _too_large(limit: int) -> APIError:
    return APIError(
        413,
        f"The request body is larger than this server accepts ({limit} bytes); send less.",
        code="request_too_large",
    )


def _queue_full() -> APIError:
    return APIError(
        429,
        "The server is busy: every slot and its queue are taken; retry shortly.",
        type="rate_limit_error",
        code="server_busy",
        headers={"Retry-After": str(QUEUE_FULL_RETRY)},
    )


def _reply(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


class _Guard:
    """Client keys, the drain, and the count of requests in flight, before any route.

    ``/health`` passes unchecked. A missing or wrong key is a 401 (``GET /`` also asks the
    browser for HTTP Basic credentials); while draining, new requests get 503.
    """

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        state = self.state
        if state.client_keys:
            header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
            if not state.authorized(header):
                headers = {}
                if scope["path"] == "/":
                    headers["WWW-Authenticate"] = 'Basic realm="expertprompting"'
                message = (
                    "Incorrect API key provided."
                    if header is not None
                    else "No API key provided: send 'Authorization: Bearer <key>'."
                )
                error = APIError(401, message, param=None, code="invalid_api_key", headers=headers)
                await _reply(error)(scope, receive, send)
                return
        if state.draining:
            error = APIError(
                503,
                "The server is shutting down; retry on another instance.",
                type="server_error",
                code="server_draining",
                headers={"Retry-After": "1", "Connection": "close"},
            )
            await _reply(error)(scope, receive, send)
            return
        state.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            state.in_flight -= 1


def create_app(
    settings: ServerSettings, *, prompters: Mapping[str, ExpertPrompter] | None = None
) -> FastAPI:
    """The server's ASGI application.

    :param settings: What to serve, and how (see :class:`ServerSettings`).
    :param prompters: The prompter of each model, when made elsewhere (the command line makes
        them as its other commands do); default: one per ``settings.models``, made here.
    """
    if prompters is None:
        prompters = make_prompters(settings)
    state = ServerState(settings, prompters)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with contextlib.ExitStack() as stack:
            if settings.rpm is not None or settings.tpm is not None:
                for ep in state.prompters.values():
                    limiter = ep.session.limiter
                    if limiter is not None:  # an in-process model has no rate limits
                        stack.enter_context(limiter.told(rpm=settings.rpm, tpm=settings.tpm))
            yield

    app = FastAPI(
        title="expertprompting",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.expertprompting = state

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return _reply(exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
        message = (
            f"No route {request.method} {request.url.path}."
            if exc.status_code in (404, 405)
            else str(exc.detail)
        )
        return JSONResponse(
            error_body(message, "invalid_request_error", None, kind),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.post(CHAT_PATH, response_model=None)
    async def chat_completions(request: Request) -> Response:
        try:
            return await state.chat(request)
        except ClientGone:
            return Response(status_code=499)  # nobody reads it; the access log shows it
        except APIError as exc:
            return _reply(exc)
        except Exception as exc:
            return _reply(state.failure(exc))

    @app.get("/v1/models", response_model=None)
    async def list_models() -> JSONResponse:
        data = [
            {"id": name, "object": "model", "created": state.created, "owned_by": "expertprompting"}
            for name in state.model_ids
        ]
        return JSONResponse({"object": "list", "data": data})

    @app.get("/health", response_model=None)
    async def health() -> JSONResponse:
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/", response_model=None)
    async def playground() -> Response:
        try:
            page = state.playground()
        except OSError:
            return _reply(APIError(404, "The playground page is not installed.", code="not_found"))
        return Response(page, media_type="text/html; charset=utf-8")

    app.add_middleware(_Guard, state=state)
    if settings.cors_origins:
        # outermost, so preflights are answered before the key check and errors carry CORS
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app
