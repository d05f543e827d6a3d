"""Result and usage models returned by :class:`~expertprompting.ExpertPrompter`.

All are pydantic models, so they validate, print, and round-trip through JSON
(``ExpertAnswer.model_validate_json(answer.model_dump_json()) == answer``).
"""

from __future__ import annotations

import html
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ExpertAnswer", "ExpertIdentity", "ExpertView", "RequestRecord", "Strategy", "Usage"]

Strategy = str
"""A strategy's name. Built in: ``expert`` (the method), ``vanilla`` (the instruction alone),
``static`` (a fixed expert prefix), ``multi-expert`` (several experts, then an aggregation);
users add their own by template (``ExpertPrompter(strategies={...})``)."""

Step = Literal["identity", "answer", "verdict", "experts"]


class Usage(BaseModel):
    """Tokens and requests spent. ``requests`` counts every attempt sent, failed ones included."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    requests: int = 0
    cost: float | None = Field(default=None, description="USD, when the model's price is known.")

    def __add__(self, other: Usage) -> Usage:
        cost = (
            None
            if self.cost is None and other.cost is None
            else ((self.cost or 0.0) + (other.cost or 0.0))
        )
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            requests=self.requests + other.requests,
            cost=cost,
        )


class RequestRecord(BaseModel):
    """One logical request (one step of the method) and every attempt it took."""

    model_config = ConfigDict(frozen=True)

    step: Step
    model: str
    attempts: int = Field(description="Attempts sent; 1 when the first try succeeded.")
    usage: Usage = Field(description="Usage summed over all attempts, failed ones included.")
    finish_reason: str | None = None
    seconds: float = Field(description="Wall time from the first attempt to the final reply.")
    cached: bool = Field(
        default=False, description="Served from the identity cache: no request, zero usage."
    )


class ExpertIdentity(BaseModel):
    """Step 1's output: the second-person description of the ideal expert for an instruction."""

    model_config = ConfigDict(frozen=True)

    instruction: str
    input: str | None = None
    description: str
    model: str
    exemplars: list[str] = Field(
        default_factory=list, description="Instructions of the exemplars shown to the model."
    )
    usage: Usage = Field(default_factory=Usage)
    requests: list[RequestRecord] = Field(default_factory=list)
    cached: bool = Field(
        default=False, description="Served from the identity cache: no request, zero usage."
    )

    def __str__(self) -> str:
        return self.description


class ExpertView(BaseModel):
    """One expert of a ``multi-expert`` answer: who, and what they answered."""

    expert: str
    answer: str


class ExpertAnswer(BaseModel):
    """The answer to an instruction, with the identity it was answered as and what it cost."""

    model_config = ConfigDict(frozen=True)

    instruction: str
    input: str | None = None
    expert_identity: str | None = Field(
        description="The identity prepended to the instruction (None for vanilla and static)."
    )
    answer: str
    raw_answer: str | None = Field(
        default=None,
        description="The model's text before the leading 'As a ...,' was removed, when it was.",
    )
    model: str
    strategy: Strategy
    truncated: bool = Field(
        default=False, description="True when the answer stopped at the max_tokens limit."
    )
    usage: Usage = Field(default_factory=Usage)
    requests: list[RequestRecord] = Field(default_factory=list)
    seconds: float = 0.0
    identity_cached: bool = Field(
        default=False, description="The identity came from the cache (it spent no tokens)."
    )
    id: str | None = Field(default=None, description="The item's id, in results of answer_many().")
    experts: list[ExpertView] | None = Field(
        default=None, description="multi-expert: each expert and its own answer."
    )
    aggregation: str | None = Field(
        default=None, description="multi-expert: the aggregation reply, whole."
    )
    chosen: int | None = Field(
        default=None,
        description="multi-expert: the response picked as best (1..n an expert, n+1 the "
        "combined answer).",
    )

    def _repr_markdown_(self) -> str:
        def quote(text: str) -> str:
            return "\n".join(f"> {html.escape(line)}" for line in text.splitlines())

        parts = [f"**Instruction** ({self.strategy}, `{self.model}`)", "", quote(self.instruction)]
        if self.input:
            parts += ["", quote(self.input)]
        if self.expert_identity:
            parts += ["", "**Expert identity**", "", quote(self.expert_identity)]
        parts += ["", "**Answer**", "", self.answer]
        u = self.usage
        parts += [
            "",
            f"<sub>{u.requests} requests, {u.prompt_tokens} prompt + {u.completion_tokens} "
            f"completion tokens, {self.seconds:.2f} s"
            + (" (truncated at max_tokens)" if self.truncated else "")
            + "</sub>",
        ]
        return "\n".join(parts)
