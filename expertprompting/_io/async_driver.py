"""A driver: carries the core's requests to a transport, with retries.

``async_driver.py`` (:class:`AsyncDriver`) is the one source of both drivers:
``sync_driver.py`` (:class:`SyncDriver`) is generated from it by ``tools/unasync.py``, and CI
fails when the generated file is stale. Every decision is made by the core,
:class:`~expertprompting._io.attempts.AttemptTracker` and :mod:`~expertprompting._io.retry`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator
from typing import Any, TypeVar

from .._method.tokens import TokenCounter
from .._method.wire import ChatRequest, Exchange, StreamAssembler, parse_completion
from .attempts import AttemptTracker
from .budget import BudgetLedger
from .cache import IdentityCache, remember_identity, reuse_identity
from .ratelimit import Headers, RateLimiter
from .retry import RetrySpec, async_retrying
from .transport import AsyncTransport, reply_headers

__all__ = ["AsyncDriver"]

T = TypeVar("T")


async def _first_text(chunks: AsyncIterator[Any], assembler: StreamAssembler) -> str:
    async for chunk in chunks:
        text = assembler.feed(chunk)
        if text:
            return text
    return ""


async def _complete(transport: AsyncTransport, request: ChatRequest) -> tuple[Any, Headers | None]:
    """The reply and its HTTP headers (None from a transport that has none, e.g. local)."""
    with_headers = getattr(transport, "complete_with_headers", None)
    if with_headers is None:
        return await transport.complete(request), None
    reply, headers = await with_headers(request)
    return reply, headers


async def _close(stream: Any) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        await close()


async def _fetch_all(
    fetch: Callable[[ChatRequest], Awaitable[Exchange]], requests: list[ChatRequest]
) -> list[Exchange]:
    """A flow's list of requests: sent at once by the async driver, in turn by the sync one."""
    return list(await asyncio.gather(*(fetch(r) for r in requests)))


class AsyncDriver:
    """Runs flows against a transport (see :mod:`~expertprompting._io.transport`)."""

    def __init__(
        self,
        transport: AsyncTransport,
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

    async def fetch(self, request: ChatRequest) -> Exchange:
        """The reply to ``request``: from the identity cache when it has one, else sent."""
        exchange = reuse_identity(self.cache, request)
        if exchange is None:
            exchange = await self.execute(request)
            remember_identity(self.cache, request, exchange)
        return exchange

    async def execute(self, request: ChatRequest) -> Exchange:
        """Send one request, retrying as the policy says; its final reply and record."""
        tracker = AttemptTracker(self.ledger, request, self.limiter)
        try:
            async for attempt in async_retrying(self.retry, tracker.retrying):
                with attempt:
                    sent = tracker.begin(
                        await self.limiter.acquire(tracker.worst_case_tokens)
                        if self.limiter
                        else None
                    )
                    try:
                        reply, headers = await _complete(self.transport, sent)
                        completion = parse_completion(reply, request, self.counter)
                    except Exception as exc:
                        tracker.failed(exc)
                        raise
                    tracker.replied(completion, headers)
        except Exception as exc:
            tracker.give_up(exc)
        return tracker.exchange()

    async def stream(self, request: ChatRequest) -> AsyncGenerator[str | Exchange, None]:
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
            async for attempt in async_retrying(self.retry, tracker.retrying):
                with attempt:
                    sent = tracker.begin(
                        await self.limiter.acquire(tracker.worst_case_tokens)
                        if self.limiter
                        else None
                    )
                    assembler = StreamAssembler(request)
                    stream = None
                    try:
                        stream = await self.transport.open_stream(sent)
                        chunks = aiter(stream)
                        first = await _first_text(chunks, assembler)
                    except Exception as exc:
                        await _close(stream)  # a failed attempt lets go of its connection at once
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
                    async for chunk in chunks:
                        text = assembler.feed(chunk)
                        if text:
                            yield text
                except Exception as exc:
                    raise tracker.broke_off(exc, assembler.completion(self.counter)) from exc
                tracker.replied(assembler.completion(self.counter), reply_headers(stream))
        finally:
            await _close(stream)
        yield tracker.exchange()

    async def run(
        self,
        flow: Generator[Any, Any, T],
        fetch: Callable[[ChatRequest], Awaitable[Exchange]] | None = None,
    ) -> T:
        """Drive a flow to its result (a list of requests: see :func:`_fetch_all`).

        ``fetch`` replaces :meth:`fetch` for each request (the runner's priority gate wraps the
        async driver's).
        """
        fetch = fetch or self.fetch
        request = next(flow)
        while True:
            if isinstance(request, list):
                exchange: Any = await _fetch_all(fetch, request)
            else:
                exchange = await fetch(request)
            try:
                request = flow.send(exchange)
            except StopIteration as stop:
                result: T = stop.value
                return result

    async def run_streaming(self, flow: Generator[Any, Any, T]) -> AsyncGenerator[str | T, None]:
        """Drive a flow, streaming the text of its streaming requests; its result comes last.

        The result is yielded last by the async driver and returned by the sync one, as in
        :meth:`stream`.
        """
        request = next(flow)
        while True:
            exchange: Any
            if isinstance(request, list):
                exchange = await _fetch_all(self.fetch, request)
            elif request.stream:
                exchange = None
                async for item in self.stream(request):
                    if isinstance(item, Exchange):
                        exchange = item
                    else:
                        yield item
                assert exchange is not None
            else:
                exchange = await self.fetch(request)
            try:
                request = flow.send(exchange)
            except StopIteration as stop:
                result: T = stop.value
                break
        yield result
