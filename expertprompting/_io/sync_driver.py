# generated from async_driver.py by tools/unasync.py; do not edit
"""A driver: carries the core's requests to a transport, with retries.

``async_driver.py`` (:class:`AsyncDriver`) is the one source of both drivers:
``sync_driver.py`` (:class:`SyncDriver`) is generated from it by ``tools/unasync.py``, and CI
fails when the generated file is stale. Every decision is made by the core,
:class:`~expertprompting._io.attempts.AttemptTracker` and :mod:`~expertprompting._io.retry`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Any, TypeVar

from .._method.tokens import TokenCounter
from .._method.wire import ChatRequest, Exchange, StreamAssembler, parse_completion
from .attempts import AttemptTracker
from .budget import BudgetLedger
from .cache import IdentityCache, remember_identity, reuse_identity
from .ratelimit import Headers, RateLimiter
from .retry import RetrySpec, sync_retrying
from .transport import Transport, reply_headers

__all__ = ["SyncDriver"]

T = TypeVar("T")


def _first_text(chunks: Iterator[Any], assembler: StreamAssembler) -> str:
    for chunk in chunks:
        text = assembler.feed(chunk)
        if text:
            return text
    return ""


def _complete(transport: Transport, request: ChatRequest) -> tuple[Any, Headers | None]:
    """The reply and its HTTP headers (None from a transport that has none, e.g. local)."""
    with_headers = getattr(transport, "complete_with_headers", None)
    if with_headers is None:
        return transport.complete(request), None
    reply, headers = with_headers(request)
    return reply, headers


def _close(stream: Any) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        close()


def _fetch_all(
    fetch: Callable[[ChatRequest], Exchange], requests: list[ChatRequest]
) -> list[Exchange]:
    """A flow's list of requests: sent at once by the async driver, in turn by the sync one."""
    return [fetch(r) for r in requests]


class SyncDriver:
    """Runs flows against a transport (see :mod:`~expertprompting._io.transport`)."""

    def __init__(
        self,
        transport: Transport,
        ledger: BudgetLedger,
        retry: RetrySpec,
        counter: TokenCounter,
        *,
        limiter: RateLimiter | None = None,
        cache: IdentityCache | None = None,
    ) -> None:
        self.transport = transport
        self.ledger = ledger
        self.retry = retry
        self.counter = counter
        self.limiter = limiter
        self.cache = cache

    def fetch(self, request: ChatRequest) -> Exchange:
        """The reply to ``request``: from the identity cache when it has one, else sent."""
        exchange = reuse_identity(self.cache, request)
        if exchange is None:
            exchange = self.execute(request)
            remember_identity(self.cache, request, exchange)
        return exchange

    def execute(self, request: ChatRequest) -> Exchange:
        """Send one request, retrying as the policy says; its final reply and record."""
        tracker = AttemptTracker(self.ledger, request, self.limiter)
        try:
            for attempt in sync_retrying(self.retry, tracker.retrying):
                with attempt:
                    sent = tracker.begin(
                        self.limiter.acquire_sync(tracker.worst_case_tokens)
                        if self.limiter
                        else None
                    )
                    try:
                        reply, headers = _complete(self.transport, sent)
                        completion = parse_completion(reply, request, self.counter)
                    except Exception as exc:
                        tracker.failed(exc)
                        raise
                    tracker.replied(completion, headers)
        except Exception as exc:
            tracker.give_up(exc)
        return tracker.exchange()

    def stream(self, request: ChatRequest) -> Generator[str, None, Exchange]:
        """Send one streaming request; yield its text as it comes; its Exchange comes last.

        The async driver yields the Exchange last; the sync one returns it (the value of its
        ``yield from``), as an async generator cannot return a value. Attempts are retried until
        the first text arrives; a stream that breaks off later raises :class:`ResponseError`
        (text already shown cannot be taken back).
        """
        tracker = AttemptTracker(self.ledger, request, self.limiter)
        assembler = StreamAssembler(request)
        stream: Any = None
        first = ""
        try:
            for attempt in sync_retrying(self.retry, tracker.retrying):
                with attempt:
                    sent = tracker.begin(
                        self.limiter.acquire_sync(tracker.worst_case_tokens)
                        if self.limiter
                        else None
                    )
                    assembler = StreamAssembler(request)
                    stream = None
                    try:
                        stream = self.transport.open_stream(sent)
                        chunks = iter(stream)
                        first = _first_text(chunks, assembler)
                    except Exception as exc:
                        _close(stream)  # a failed attempt lets go of its connection at once
                        tracker.failed(exc)
                        raise
                    if not first:
                        tracker.replied(assembler.completion(self.counter), reply_headers(stream))
        except Exception as exc:
            tracker.give_up(exc)
        try:
            if first:
                yield first
                try:
                    for chunk in chunks:
                        text = assembler.feed(chunk)
                        if text:
                            yield text
                except Exception as exc:
                    raise tracker.broke_off(exc, assembler.completion(self.counter)) from exc
                tracker.replied(assembler.completion(self.counter), reply_headers(stream))
        finally:
            _close(stream)
        return tracker.exchange()

    def run(
        self,
        flow: Generator[Any, Any, T],
        fetch: Callable[[ChatRequest], Exchange] | None = None,
    ) -> T:
        """Drive a flow to its result (a list of requests: see :func:`_fetch_all`).

        ``fetch`` replaces :meth:`fetch` for each request (the runner's priority gate wraps the
        async driver's).
        """
        fetch = fetch or self.fetch
        request = next(flow)
        while True:
            if isinstance(request, list):
                exchange: Any = _fetch_all(fetch, request)
            else:
                exchange = fetch(request)
            try:
                request = flow.send(exchange)
            except StopIteration as stop:
                result: T = stop.value
                return result

    def run_streaming(self, flow: Generator[Any, Any, T]) -> Generator[str, None, T]:
        """Drive a flow, streaming the text of its streaming requests; its result comes last.

        The result is yielded last by the async driver and returned by the sync one, as in
        :meth:`stream`.
        """
        request = next(flow)
        while True:
            exchange: Any
            if isinstance(request, list):
                exchange = _fetch_all(self.fetch, request)
            elif request.stream:
                exchange = yield from self.stream(request)
            else:
                exchange = self.fetch(request)
            try:
                request = flow.send(exchange)
            except StopIteration as stop:
                result: T = stop.value
                break
        return result
