"""The wire types of the method: requests, replies, and how a reply is read and checked.

A :class:`ChatRequest` is what a flow asks for, fully planned; a :class:`Completion` is the reply
as the library reads it (:func:`parse_completion` for whole replies, :class:`StreamAssembler`
for streams), checked against the request by :func:`check_completion`; an :class:`Exchange`
pairs the completion with the record of every attempt.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypedDict

from .config import Deadlines
from .errors import ResponseError
from .results import RequestRecord, Step
from .tokens import TokenCounter

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "Completion",
    "Exchange",
    "Flow",
    "StreamAssembler",
    "check_completion",
    "parse_completion",
]


class ChatMessage(TypedDict):
    role: str
    content: str


@dataclass(frozen=True, kw_only=True)
class ChatRequest:
    """One chat-completions request, fully planned: messages, exact prompt size, max_tokens.

    Built by :meth:`~expertprompting._method.planner.Planner.request` (keywords only)."""

    step: Step
    model: str
    messages: list[ChatMessage]
    prompt_tokens: int
    max_tokens: int
    max_tokens_param: str = "max_tokens"
    sampling: Mapping[str, Any] = field(default_factory=dict)
    stream: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Parameters outside OpenAI's API (e.g. ``repeat_penalty``), sent as ``extra_body``."""
    deadlines: Deadlines | None = None
    """This call's time limits (a per-call ``timeout=``); None: the transport's own. Not part
    of the body, nor of a cache key."""

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``client.chat.completions.create``."""
        kwargs = {
            "model": self.model,
            "messages": [dict(m) for m in self.messages],
            self.max_tokens_param: self.max_tokens,
            **self.sampling,
        }
        if self.extra:
            kwargs["extra_body"] = dict(self.extra)
        return kwargs

    def body(self) -> dict[str, Any]:
        """The JSON body of the request as sent (``extra`` merged in, as the SDK does)."""
        body = self.kwargs()
        body.update(body.pop("extra_body", {}))
        return body

    def for_attempt(self, attempt: int) -> ChatRequest:
        """The request to send on attempt ``attempt`` (1-based).

        With a fixed seed, a retry would repeat the reply it retries; later attempts use
        ``seed + attempt - 1``, which keeps whole runs reproducible.
        """
        seed = self.sampling.get("seed")
        if attempt <= 1 or seed is None:
            return self
        return replace(self, sampling={**self.sampling, "seed": int(seed) + attempt - 1})


@dataclass(frozen=True)
class Completion:
    """What the endpoint answered, reduced to what the method needs."""

    content: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    model: str


@dataclass(frozen=True)
class Exchange:
    """A request's final reply and the record of all attempts it took."""

    completion: Completion
    record: RequestRecord


Flow = Generator[ChatRequest, Exchange, Any]


_PLAIN = (str, bytes, bytearray, int, float, list, tuple)
"""Values in a reply that have no fields (JSON scalars and arrays)."""


def _get(obj: Any, name: str) -> Any:
    """Field ``name`` of a part of a reply (a dict's key, an SDK object's attribute), or None.

    A plain value (a string, a number, a list) has no fields: None, not one of its methods.
    """
    if isinstance(obj, Mapping):
        return obj.get(name)
    if obj is None or isinstance(obj, _PLAIN):
        return None
    return getattr(obj, name, None)


def _malformed(what: str) -> ResponseError:
    return ResponseError(
        f"The endpoint's reply is malformed: {what}; check that the endpoint speaks the "
        "OpenAI API.",
        reason="unparseable",
        retryable=True,
    )


def _kind(value: Any) -> str:
    return "a list" if isinstance(value, (list, tuple)) else type(value).__name__


def _object(value: Any, what: str) -> Any:
    """``value`` if it is a JSON object (or an SDK object) or absent; else a ResponseError."""
    if value is not None and isinstance(value, _PLAIN):
        raise _malformed(f"{what} is {_kind(value)}, not an object")
    return value


def _text(value: Any, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _malformed(f"{what} is {_kind(value)}, not text")


def _choices(reply: Any) -> list[Any] | tuple[Any, ...]:
    choices = _get(reply, "choices")
    if choices is None:
        return []
    if not isinstance(choices, (list, tuple)):
        raise _malformed(f"'choices' is {_kind(choices)}, not a list")
    return choices


def _count(value: Any) -> int | None:
    """A token count as the server reported it, or None when it is not a whole number >= 0.

    Usage settles the run budget, so a count that is negative, fractional, a string, a bool or
    missing is not trusted: the caller counts the tokens itself instead.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def parse_completion(response: Any, request: ChatRequest, counter: TokenCounter) -> Completion:
    """Read a chat completion (SDK object or plain dict); a malformed one is a ResponseError.

    Usage the server did not report, or reported as anything but a whole number >= 0, is
    counted exactly: the planned prompt size, and ``counter`` over the text.
    """
    _object(response, "the body")
    choices = _choices(response)
    if not choices:
        raise ResponseError(
            "The endpoint's reply has no choices; check that the endpoint speaks the OpenAI API.",
            reason="unparseable",
            retryable=True,
        )
    choice = _object(choices[0], "choices[0]")
    message = _object(_get(choice, "message"), "the message")
    content = _text(_get(message, "content"), "the message content")
    finish_reason = _text(_get(choice, "finish_reason"), "finish_reason")
    usage = _object(_get(response, "usage"), "usage")
    prompt = _count(_get(usage, "prompt_tokens"))
    completion = _count(_get(usage, "completion_tokens"))
    model = _get(response, "model")
    return Completion(
        content=content,
        finish_reason=finish_reason,
        prompt_tokens=request.prompt_tokens if prompt is None else prompt,
        completion_tokens=counter.count_text(content or "") if completion is None else completion,
        model=model if isinstance(model, str) and model else request.model,
    )


def check_completion(request: ChatRequest, completion: Completion) -> None:
    """Raise a retryable :class:`ResponseError` for a reply the method cannot use."""
    if not (completion.content or "").strip():
        raise ResponseError(
            f"The model returned an empty {request.step}. It was retried; if it persists, "
            "check the model and prompt (see identity_messages()/answer_messages()).",
            reason="empty",
            retryable=True,
        )
    if request.step == "identity" and completion.finish_reason == "length":
        raise ResponseError(
            f"The expert identity was cut off at identity_max_tokens={request.max_tokens}. "
            "Raise identity_max_tokens, or use a model that writes shorter descriptions.",
            reason="length",
            retryable=True,
        )


class StreamAssembler:
    """Collects a streamed reply's chunks into a :class:`Completion`; hands out text deltas.

    A malformed chunk raises :class:`ResponseError`; usage is checked as in
    :func:`parse_completion`.
    """

    def __init__(self, request: ChatRequest) -> None:
        self.request = request
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.model = request.model
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None

    @staticmethod
    def chunk_text(chunk: Any) -> str:
        """The text one chunk carries ("" for none); ResponseError if it is malformed."""
        text = ""
        for choice in _choices(_object(chunk, "a stream chunk")):
            delta = _object(_get(_object(choice, "a chunk's choice"), "delta"), "a chunk's delta")
            piece = _text(_get(delta, "content"), "a chunk's content")
            if piece:
                text += piece
        return text

    def feed(self, chunk: Any) -> str:
        """Take one chunk; return the text it adds ("" for none)."""
        text = self.chunk_text(chunk)
        model = _get(chunk, "model")
        if isinstance(model, str) and model:
            self.model = model
        usage = _object(_get(chunk, "usage"), "a chunk's usage")
        if usage is not None:
            self.prompt_tokens = _count(_get(usage, "prompt_tokens"))
            self.completion_tokens = _count(_get(usage, "completion_tokens"))
        for choice in _choices(chunk):
            finish_reason = _text(_get(choice, "finish_reason"), "a chunk's finish_reason")
            if finish_reason:
                self.finish_reason = finish_reason
        if text:
            self.parts.append(text)
        return text

    def completion(self, counter: TokenCounter) -> Completion:
        """The whole reply. Usage the server did not send (or sent as nonsense) is counted
        exactly with ``counter``."""
        content = "".join(self.parts)
        return Completion(
            content=content,
            finish_reason=self.finish_reason,
            prompt_tokens=(
                self.request.prompt_tokens if self.prompt_tokens is None else self.prompt_tokens
            ),
            completion_tokens=(
                counter.count_text(content)
                if self.completion_tokens is None
                else self.completion_tokens
            ),
            model=self.model,
        )
