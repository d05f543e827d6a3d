"""Transports: the only code that talks to an endpoint. One request in, one reply out.

:class:`OpenAITransport` and :class:`AsyncOpenAITransport` drive any OpenAI-compatible
endpoint through the official SDK, with the SDK's own retries turned off (our retry policy is
the only one, so attempts are never multiplied).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

import openai

from .core import ChatRequest, Completion, parse_completion

__all__ = ["AsyncOpenAITransport", "AsyncTransport", "OpenAITransport", "Transport"]


def _streaming(request: ChatRequest) -> dict[str, Any]:
    # include_usage: the last chunk reports the real usage, which the run budget settles with.
    return {**request.kwargs(), "stream": True, "stream_options": {"include_usage": True}}


class Transport(Protocol):
    def complete(self, request: ChatRequest) -> Completion: ...

    def open_stream(self, request: ChatRequest) -> Iterator[Any]: ...


class AsyncTransport(Protocol):
    async def complete(self, request: ChatRequest) -> Completion: ...

    async def open_stream(self, request: ChatRequest) -> AsyncIterator[Any]: ...


class OpenAITransport:
    """Chat completions over ``openai.OpenAI``."""

    def __init__(self, client: openai.OpenAI, timeout: float) -> None:
        self.client = client.with_options(max_retries=0, timeout=timeout)

    def complete(self, request: ChatRequest) -> Completion:
        response = self.client.chat.completions.create(**request.kwargs())
        return parse_completion(response, request)

    def open_stream(self, request: ChatRequest) -> Iterator[Any]:
        stream: Iterator[Any] = self.client.chat.completions.create(**_streaming(request))
        return stream


class AsyncOpenAITransport:
    """Chat completions over ``openai.AsyncOpenAI``."""

    def __init__(self, client: openai.AsyncOpenAI, timeout: float) -> None:
        self.client = client.with_options(max_retries=0, timeout=timeout)

    async def complete(self, request: ChatRequest) -> Completion:
        response = await self.client.chat.completions.create(**request.kwargs())
        return parse_completion(response, request)

    async def open_stream(self, request: ChatRequest) -> AsyncIterator[Any]:
        stream: AsyncIterator[Any] = await self.client.chat.completions.create(
            **_streaming(request)
        )
        return stream
