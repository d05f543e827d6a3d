"""The OpenAI wire format of the server, with no I/O: requests in, replies and errors out.

- :func:`parse_chat_request` reads a raw ``POST /v1/chat/completions`` body into a checked
  :class:`ChatCompletionRequest`; every problem is an :class:`APIError` naming its ``param``.
- :func:`error_body`, :class:`APIError` and :func:`library_error` build the OpenAI error bodies
  (``{"error": {"message", "type", "param", "code"}}``) and map the library's errors to them.
- :func:`completion_body`, :func:`chunk` and :func:`sse` build the replies: a whole
  ``chat.completion``, or the ``chat.completion.chunk`` events of a stream.
- :func:`resolve_model` and :func:`model_ids`: which prompter and strategy a request's ``model``
  names (``<strategy>/<model>`` or a bare model), and what ``GET /v1/models`` lists.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._method.errors import (
    BudgetExceededError,
    ConfigurationError,
    RateLimitError,
    RequestError,
    ResponseError,
    RetryError,
    TemplateError,
    TokenBudgetError,
)
from .._method.results import ExpertAnswer, Usage

__all__ = [
    "APIError",
    "ChatCompletionRequest",
    "StreamOptions",
    "chunk",
    "completion_body",
    "completion_id",
    "error_body",
    "library_error",
    "model_ids",
    "parse_chat_request",
    "resolve_model",
    "sse",
    "usage_body",
]

SSE_DONE = b"data: [DONE]\n\n"
INTERNAL_MESSAGE = "The server failed while answering; the error is in the server's log."


# -- errors ------------------------------------------------------------------------------------
class APIError(Exception):
    """An error reply: HTTP ``status`` and the OpenAI error body's fields (and headers)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(
    message: str, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """An OpenAI error body."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


_PARAM_IN_MESSAGE = re.compile(r"\bmessages(?:\[\d+\](?:\.\w+(?:\[\d+\])?)*)?")


def library_error(
    exc: BaseException, scrub: Callable[[str], str], retry_after: float | None = None
) -> APIError:
    """The reply to a library error; ``scrub`` takes secrets out of its message.

    ``retry_after``: the seconds an upstream 429 asked for, if it said (else 1 is sent).
    Anything that is not one of the library's errors is a 500 with a generic message: its
    details belong in the server's log, never in a reply.
    """
    text = scrub(" ".join(str(exc).split()))
    if isinstance(exc, TokenBudgetError):
        return APIError(400, text, param="messages", code="context_length_exceeded")
    if isinstance(exc, (ConfigurationError, TemplateError)):
        found = _PARAM_IN_MESSAGE.search(text)
        return APIError(400, text, param=found.group(0) if found else None)
    if isinstance(exc, RateLimitError):
        wait = max(1, round(retry_after)) if retry_after is not None else 1
        return APIError(
            429,
            f"The upstream model is rate limited; retry after {wait} s. ({text})",
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(wait)},
        )
    if isinstance(exc, BudgetExceededError):
        return APIError(429, text, type="insufficient_quota", code="insufficient_quota")
    if isinstance(exc, (RetryError, RequestError, ResponseError)):
        message = scrub(" ".join(_upstream_failure(exc).split()))
        return APIError(502, message, type="upstream_error", code="upstream_error")
    return APIError(500, INTERNAL_MESSAGE, type="server_error", code="internal_error")


def _upstream_failure(exc: RetryError | RequestError | ResponseError) -> str:
    """What a client is told of an upstream failure: what happened, in the upstream's own
    words when it refused the request, but not the library's advice to its operator (which
    names the upstream's address: that goes to the server's log)."""
    if isinstance(exc, RequestError):
        said = getattr(exc.__cause__, "message", None)
        return f"The upstream model refused the request (HTTP {exc.status_code})" + (
            f": {said}" if isinstance(said, str) and said else "."
        )
    attempts = exc.attempts
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    if isinstance(exc, ResponseError):
        return f"The upstream model's reply was unusable ({exc.reason}) after {tries}."
    # how it failed, as the retry layer classified it ("timed out", "failed with HTTP 502")
    return f"The upstream model {exc.what or 'failed'} after {tries}; retry later."


# -- the request -------------------------------------------------------------------------------
class StreamOptions(BaseModel):
    """``stream_options``: only ``include_usage``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool | None = None


class ChatCompletionRequest(BaseModel):
    """The parameters of a chat completion the server takes; anything else is refused.

    ``messages`` are checked by the library (``ep.achat``), which names the message at fault.
    ``user`` is accepted and ignored; ``n`` may only be 1.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = Field(default=None)
    seed: int | None = None
    response_format: dict[str, Any] | None = None
    n: Literal[1] | None = None
    user: str | None = None

    def call_settings(self) -> dict[str, Any]:
        """The ``ep.achat`` keyword arguments this request sets (the answer's sampling)."""
        settings = {
            "max_tokens": self.max_completion_tokens or self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": self.stop,
            "response_format": self.response_format,
        }
        return {k: v for k, v in settings.items() if v is not None}

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def _param(loc: Sequence[int | str]) -> str:
    """A pydantic location as OpenAI names a parameter: ``messages[0].content``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("str", "list[str]") or "[" in part:  # union member tags, not fields
            break
        else:
            text += f".{part}" if text else part
    return text


def _explain(err: Mapping[str, Any], param: str) -> APIError:
    kind = err["type"]
    if kind == "extra_forbidden":
        return APIError(
            400,
            f"Unsupported parameter: {param!r} is not supported by this server.",
            param=param,
            code="unsupported_parameter",
        )
    if kind == "missing":
        return APIError(
            400,
            f"Missing required parameter: {param!r}.",
            param=param,
            code="missing_required_parameter",
        )
    if kind == "too_short":
        return APIError(
            400,
            f"{param!r} is empty; send at least one"
            + (" message." if param == "messages" else " value."),
            param=param,
            code="invalid_value",
        )
    if param == "n":
        return APIError(
            400,
            "'n' must be 1: this server writes one answer per request.",
            param="n",
            code="unsupported_value",
        )
    got = json.dumps(err.get("input"), ensure_ascii=False, default=str)
    if len(got) > 80:
        got = got[:77] + "..."
    reason = str(err["msg"]).removeprefix("Input should be ").removeprefix("Value error, ")
    return APIError(
        400,
        f"Invalid value for {param!r}: {got}; it should be {reason}.",
        param=param,
        code="invalid_value" if kind not in ("dict_type", "list_type") else "invalid_type",
    )


def parse_chat_request(body: bytes) -> ChatCompletionRequest:
    """Read and check a raw request body; an :class:`APIError` (400) names what is wrong."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        where = (
            f" (line {exc.lineno}, column {exc.colno})"
            if isinstance(exc, json.JSONDecodeError)
            else ""
        )
        raise APIError(
            400,
            f"The request body is not valid JSON{where}; send a JSON object.",
            code="invalid_json",
        ) from None
    if not isinstance(data, dict):
        raise APIError(400, "The request body must be a JSON object.", code="invalid_json")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # the most useful error first: an unknown parameter, then a missing one, then the rest
        order = {"extra_forbidden": 0, "missing": 1}
        err = min(errors, key=lambda e: order.get(e["type"], 2))
        raise _explain(err, _param(err["loc"])) from None


# -- models ------------------------------------------------------------------------------------
def model_ids(models: Iterable[str], strategies: Mapping[str, Sequence[str]]) -> list[str]:
    """What ``GET /v1/models`` lists: each model, then ``<strategy>/<model>`` for each of its
    strategies (``strategies[model]``, built-in first)."""
    ids: list[str] = []
    for model in models:
        ids.append(model)
        ids.extend(f"{strategy}/{model}" for strategy in strategies[model])
    return ids


def resolve_model(
    requested: str, strategies: Mapping[str, Sequence[str]]
) -> tuple[str, str | None]:
    """The served model and strategy (None: the default) a request's ``model`` names.

    A served name matches whole first (names may hold slashes, ``org/model``); otherwise the
    part before the first slash is the strategy. Unknown: a 404 ``model_not_found``.
    """
    if requested in strategies:
        return requested, None
    strategy, sep, model = requested.partition("/")
    if sep and model in strategies and strategy in strategies[model]:
        return model, strategy
    served = ", ".join(repr(m) for m in strategies)
    raise APIError(
        404,
        f"The model {requested!r} does not exist here; use one of {served} (or "
        "<strategy>/<model>, as GET /v1/models lists).",
        param="model",
        code="model_not_found",
    )


# -- replies -----------------------------------------------------------------------------------
def completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


def usage_body(usage: Usage) -> dict[str, int]:
    """The reply's ``usage``: the sum over every upstream request of the answer."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "requests": usage.requests,
    }


def finish_reason(result: ExpertAnswer) -> str:
    return "length" if result.truncated else "stop"


def completion_body(id: str, created: int, model: str, result: ExpertAnswer) -> dict[str, Any]:
    """A whole ``chat.completion``, with the ``expert_identity`` extra field."""
    return {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.answer},
                "finish_reason": finish_reason(result),
            }
        ],
        "usage": usage_body(result.usage),
        "expert_identity": result.expert_identity,
    }


def chunk(
    id: str,
    created: int,
    model: str,
    delta: dict[str, Any] | None,
    finish: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; ``delta=None`` makes the usage chunk (no choices)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
        **extra,
    }


def sse(data: Mapping[str, Any]) -> bytes:
    """One server-sent event carrying ``data`` as JSON."""
    return b"data: " + json.dumps(data, ensure_ascii=False).encode("utf-8") + b"\n\n"
