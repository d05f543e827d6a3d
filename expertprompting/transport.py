"""Transports: the only code that talks to an endpoint. One request in, one raw reply out.

:class:`OpenAITransport` and :class:`AsyncOpenAITransport` drive any OpenAI-compatible
endpoint through the official SDK, with the SDK's own retries turned off (our retry policy is
the only one, so attempts are never multiplied).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

import openai

from .core import ChatRequest
from .errors import ResponseError

__all__ = ["AsyncOpenAITransport", "AsyncTransport", "OpenAITransport", "Transport"]


def _streaming(request: ChatRequest) -> dict[str, Any]:
    # include_usage: the last chunk reports the real usage, which the run budget settles with.
    return {**request.kwargs(), "stream": True, "stream_options": {"include_usage": True}}


_PATH = "/chat/completions"
# Whole replies are requested with the SDK's generic ``post`` and read as plain JSON: the
# request is already a complete, validated body, and the SDK's per-call parameter transform and
# response models cost more client CPU than the rest of a request (see docs/performance.md).
# Errors, timeouts, headers and authentication are the SDK's, as with ``create``.


def _unparseable(exc: ValueError) -> ResponseError:
    return ResponseError(
        f"The endpoint's reply is not valid JSON ({exc}). It was retried; if it persists, "
        "check that base_url points at an OpenAI-compatible server.",
        reason="unparseable",
        retryable=True,
    )


class Transport(Protocol):
    """Sends a planned request; returns the reply as the SDK (or a dict) gives it."""

    def complete(self, request: ChatRequest) -> Any: ...

    def open_stream(self, request: ChatRequest) -> Iterator[Any]: ...


class AsyncTransport(Protocol):
    """The async twin of :class:`Transport`."""

    async def complete(self, request: ChatRequest) -> Any: ...

    async def open_stream(self, request: ChatRequest) -> AsyncIterator[Any]: ...


class OpenAITransport:
    """Chat completions over ``openai.OpenAI``."""

    def __init__(self, client: openai.OpenAI, timeout: float) -> None:
        self.client = client.with_options(max_retries=0, timeout=timeout)

    def complete(self, request: ChatRequest) -> Any:
        try:
            return self.client.post(_PATH, body=request.body(), cast_to=object)
        except ValueError as exc:  # the SDK lets a malformed JSON body's JSONDecodeError through
            raise _unparseable(exc) from exc

    def open_stream(self, request: ChatRequest) -> Iterator[Any]:
        stream: Iterator[Any] = self.client.chat.completions.create(**_streaming(request))
        return stream


class AsyncOpenAITransport:
    """Chat completions over ``openai.AsyncOpenAI``."""

    def __init__(self, client: openai.AsyncOpenAI, timeout: float) -> None:
        self.client = client.with_options(max_retries=0, timeout=timeout)

    async def complete(self, request: ChatRequest) -> Any:
        try:
            return await self.client.post(_PATH, body=request.body(), cast_to=object)
        except ValueError as exc:
            raise _unparseable(exc) from exc

    async def open_stream(self, request: ChatRequest) -> AsyncIterator[Any]:
        stream: AsyncIterator[Any] = await self.client.chat.completions.create(
            **_streaming(request)
        )
        return stream
