"""The synchronous driver: carries the core's requests to a transport, with retries.

Mirror of :mod:`expertprompting.async_driver`, line for line; every decision is made by the
core, :class:`~expertprompting.attempts.AttemptTracker` and :mod:`~expertprompting.retry`.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any, TypeVar

from .attempts import AttemptTracker
from .budget import BudgetLedger
from .core import ChatRequest, Exchange, StreamAssembler, parse_completion
from .errors import ResponseError
from .retry import RetrySpec, sync_retrying
from .tokens import TokenCounter
from .transport import Transport

__all__ = ["SyncDriver"]

T = TypeVar("T")


def _first_text(chunks: Iterator[Any], assembler: StreamAssembler) -> str:
    for chunk in chunks:
        text = assembler.feed(chunk)
        if text:
            return text
    return ""


class SyncDriver:
    """Runs flows against a :class:`~expertprompting.transport.Transport`."""

    def __init__(
        self, transport: Transport, ledger: BudgetLedger, retry: RetrySpec, counter: TokenCounter
    ) -> None:
        self.transport = transport
        self.ledger = ledger
        self.retry = retry
        self.counter = counter

    def execute(self, request: ChatRequest) -> Exchange:
        """Send one request, retrying as the policy says; its final reply and record."""
        tracker = AttemptTracker(self.ledger, request)
        try:
            for attempt in sync_retrying(self.retry):
                with attempt:
                    sent = tracker.begin()
                    try:
                        completion = parse_completion(
                            self.transport.complete(sent), request, self.counter
                        )
                    except Exception:
                        tracker.failed()
                        raise
                    tracker.replied(completion)
        except Exception as exc:
            tracker.give_up(exc)
        return tracker.exchange()

    def stream(self, request: ChatRequest) -> Generator[str, None, Exchange]:
        """Send one streaming request; yield its text as it comes; return its record.

        Attempts are retried until the first text arrives; a stream that breaks off later
        raises :class:`ResponseError` (text already shown cannot be taken back).
        """
        tracker = AttemptTracker(self.ledger, request)
        assembler = StreamAssembler(request)
        stream: Any = None
        first = ""
        try:
            for attempt in sync_retrying(self.retry):
                with attempt:
                    sent = tracker.begin()
                    assembler = StreamAssembler(request)
                    try:
                        stream = self.transport.open_stream(sent)
                        chunks = iter(stream)
                        first = _first_text(chunks, assembler)
                    except Exception:
                        tracker.failed()
                        raise
                    if not first:
                        tracker.replied(assembler.completion(self.counter))
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
                    tracker.failed()
                    raise ResponseError(
                        f"The {request.step} stream broke off after {len(assembler.parts)} "
                        f"chunks: {exc}. Call again (text already shown cannot be retried).",
                        reason="interrupted",
                        attempts=tracker.attempts,
                    ) from exc
                tracker.replied(assembler.completion(self.counter))
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        return tracker.exchange()

    def run(self, flow: Generator[ChatRequest, Exchange, T]) -> T:
        """Drive a flow to its result."""
        request = next(flow)
        while True:
            try:
                request = flow.send(self.execute(request))
            except StopIteration as stop:
                result: T = stop.value
                return result

    def run_streaming(self, flow: Generator[ChatRequest, Exchange, T]) -> Generator[str, None, T]:
        """Drive a flow, streaming the text of its streaming requests."""
        request = next(flow)
        while True:
            if request.stream:
                exchange = yield from self.stream(request)
            else:
                exchange = self.execute(request)
            try:
                request = flow.send(exchange)
            except StopIteration as stop:
                result: T = stop.value
                return result
