"""Configuration models: the prompter's settings, its retry policy and its run budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .results import Strategy

__all__ = [
    "DEFAULT_ANSWER_MAX_TOKENS",
    "CallOverrides",
    "Deadlines",
    "IdentityLayout",
    "ModelPrice",
    "PrompterConfig",
    "RetryPolicy",
    "RunBudget",
]

DEFAULT_ANSWER_MAX_TOKENS = 2048
"""The answer cap when ``max_tokens`` is not set (None), still clamped to the model's output
limit and the context window. Not the model's maximum: providers reserve a request's
``max_tokens`` against a tokens-per-minute limit before it runs, so a 16k cap admits a seventh
of the requests a 2k cap does, while answers to instructions are a few hundred tokens
(docs/performance.md, "The default answer cap", has the figures). Pass a larger ``max_tokens``
(e.g. 1_000_000: the cap is clamped to what the model allows) for the model's maximum."""

IdentityLayout = Literal["text", "chat"]
"""How the identity prompt shows its exemplars: one text block, or few-shot chat turns."""


class RetryPolicy(BaseModel):
    """When and how a failed request is tried again.

    Retried: timeouts, connection errors, HTTP 408, 409, 429 and 5xx, an empty completion, and an
    identity cut off by the length limit. Never retried: 400, 401, 403, 404, 422 and other 4xx.
    The wait before retry n (n = 1, 2, ...) is ``min(initial_delay * 2**(n-1), max_delay)``
    shortened by up to ``jitter`` (a fraction), unless the server sent ``retry-after-ms`` or
    ``retry-after`` (seconds or an HTTP date): then that wait is honoured, capped at
    ``max_retry_after``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=3, ge=1, description="Attempts in all, the first included.")
    initial_delay: float = Field(default=0.5, ge=0)
    max_delay: float = Field(default=8.0, ge=0)
    jitter: float = Field(default=0.25, ge=0, le=1)
    max_retry_after: float = Field(
        default=60.0, ge=0, description="Longest server-requested wait honoured, in seconds."
    )
    retry_statuses: frozenset[int] = Field(
        default=frozenset({408, 409, 429}), description="Retried besides every 5xx."
    )


class RunBudget(BaseModel):
    """Limits shared by every call of one prompter; a request that would pass one is refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_total_tokens: int | None = Field(default=None, ge=1)
    max_requests: int | None = Field(default=None, ge=1)
    max_cost: float | None = Field(default=None, gt=0, description="USD.")


class ModelPrice(BaseModel):
    """USD per one million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


class PrompterConfig(BaseModel):
    """Every setting of an :class:`~expertprompting.ExpertPrompter`, validated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "gpt-4o-mini"
    strategy: Strategy = "expert"
    k_exemplars: int = Field(default=3, ge=0, description="Exemplars shown in the identity prompt.")
    n_experts: int = Field(
        default=3, ge=2, le=10, description="multi-expert: how many experts answer."
    )
    identity_prompt_budget: int = Field(
        default=2048, ge=64, description="Most tokens the identity prompt may use."
    )
    identity_max_tokens: int = Field(
        default=400, ge=16, description="Cap on the identity's length (about 180 words fit 250)."
    )
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Cap on the answer's length, clamped to the model's output limit and the "
        f"context window; None: the default cap, {DEFAULT_ANSWER_MAX_TOKENS} tokens.",
    )
    context_window: int | None = Field(
        default=None, ge=64, description="Overrides the model table (needed for unknown models)."
    )
    margin_tokens: int = Field(
        default=16, ge=0, description="Kept free in the context window as a safety margin."
    )
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(
        default=None, description="Fixed sampling seed (retries use seed + 1, + 2, ...)."
    )
    repeat_penalty: float | None = Field(
        default=None,
        gt=0,
        description="Penalty on repeated tokens (local models; sent as extra body to servers).",
    )
    identity_layout: IdentityLayout = Field(
        default="text",
        description="Exemplars as one text block ('text') or as few-shot chat turns ('chat').",
    )
    identity_stop: tuple[str, ...] = Field(
        default=(), description="Stop sequences for the identity request (one paragraph: '\\n\\n')."
    )
    clean_answers: bool = Field(
        default=False, description="Remove a leading 'As a ...,' restatement of the identity."
    )
    timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds per attempt for a whole reply, from sending to its last byte.",
    )
    first_token_timeout: float | None = Field(
        default=None,
        gt=0,
        description="Streams: seconds from sending to the first text; None: the same as timeout.",
    )
    idle_timeout: float = Field(
        default=30.0, gt=0, description="Streams: longest silence between two chunks, in seconds."
    )
    burst_seconds: float = Field(
        default=0.25,
        gt=0,
        le=60,
        description="Rate limits: the most sent at once, in seconds of the rate in force.",
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    budget: RunBudget = Field(default_factory=RunBudget)
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict, description="Per-model prices, overriding the built-in table."
    )

    @model_validator(mode="after")
    def _model_named(self) -> PrompterConfig:
        if not self.model.strip():
            raise ValueError("model must be a non-empty model name, e.g. 'gpt-4o-mini'")
        return self

    @property
    def deadlines(self) -> Deadlines:
        """The time limits of one attempt, as the transports take them."""
        return self.deadlines_for(None)

    def deadlines_for(self, timeout: float | None) -> Deadlines:
        """:attr:`deadlines` with ``timeout`` in place of the configured one (None: as set).

        A stream's first-token deadline follows ``timeout`` unless ``first_token_timeout`` is
        set, exactly as it follows the configured ``timeout``.
        """
        whole = self.timeout if timeout is None else timeout
        first = whole if self.first_token_timeout is None else self.first_token_timeout
        return Deadlines(whole, first, self.idle_timeout)


class CallOverrides(BaseModel):
    """Settings one call may change without touching the prompter: ``ep.answer(q,
    max_tokens=20)``. A field left None keeps the prompter's setting.

    Each field is checked as the :class:`PrompterConfig` field of the same name (a test holds
    the two to the same limits). ``max_tokens`` caps the answer (and a multi-expert run's
    expert answers and aggregation), still clamped to the context window; ``temperature``
    and ``seed`` apply to every request of the call (retries use ``seed + 1``, ...);
    ``timeout`` is the whole-reply deadline of each attempt of the call's requests (and a
    stream's first-token deadline unless ``first_token_timeout`` is set). The in-process local
    model has no deadlines, so ``timeout`` does not apply to it. ``top_p``, ``stop`` and
    ``response_format`` (the chat calls') apply to the answer request only.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int | None = Field(default=None, ge=1, description="Cap on the answer's length.")
    temperature: float | None = Field(default=None, ge=0, le=2)
    seed: int | None = Field(default=None, description="Sampling seed for this call.")
    timeout: float | None = Field(
        default=None, gt=0, description="Seconds per attempt for a whole reply, for this call."
    )
    # Answer-only settings (the chat calls and the server): they shape the answer the caller
    # asked for, never the identity, whose prompt expects one plain paragraph.
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: tuple[str, ...] | None = Field(
        default=None, max_length=4, description="Stop sequences of the answer (at most 4)."
    )
    response_format: dict[str, Any] | None = Field(
        default=None, description="The answer's response_format, passed through as given."
    )

    def answer_sampling(self) -> dict[str, Any]:
        """The answer-only settings that are set, as request parameters."""
        found: dict[str, Any] = {}
        if self.top_p is not None:
            found["top_p"] = self.top_p
        if self.stop is not None:
            found["stop"] = list(self.stop)
        if self.response_format is not None:
            found["response_format"] = dict(self.response_format)
        return found


@dataclass(frozen=True)
class Deadlines:
    """Time limits of one attempt, in seconds.

    ``timeout`` covers a whole reply, from sending to its last byte, however the server paces
    it. A stream is held to ``first_token`` (from sending to its first text) and ``idle`` (the
    longest silence between two chunks) instead, since a long answer may rightly stream for
    longer than ``timeout``.
    """

    timeout: float = 60.0
    first_token: float = 60.0
    idle: float = 30.0
