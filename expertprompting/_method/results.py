"""Result and usage models returned by :class:`~expertprompting.ExpertPrompter`.

All are pydantic models, so they validate, print, and round-trip through JSON
(``ExpertAnswer.model_validate_json(answer.model_dump_json()) == answer``).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ExpertAnswer",
    "ExpertIdentity",
    "ExpertView",
    "RequestRecord",
    "Strategy",
    "Usage",
    "format_cost",
]

Strategy = str
"""A strategy's name. Built in: ``expert`` (the method), ``vanilla`` (the instruction alone),
``static`` (a fixed expert prefix), ``multi-expert`` (several experts, then an aggregation);
users add their own by template (``ExpertPrompter(strategies={...})``)."""

Step = Literal["identity", "answer", "verdict", "experts"]


class _Spent(Protocol):
    """Anything that reports its usage: a request record, an identity, an answer."""

    @property
    def usage(self) -> Usage: ...


class Usage(BaseModel):
    """Tokens and requests spent. ``requests`` counts every attempt sent, failed ones included."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    requests: int = 0
    cost: float | None = Field(
        default=None,
        description="USD; None unless the price of every request counted here is known.",
    )

    def __add__(self, other: Usage) -> Usage:
        # Nothing spent (a cache hit, an empty total) has nothing to price. Anything else with
        # an unknown price makes the sum's cost unknown: a total is never a silent partial sum,
        # so rows and the summary of a run agree on null versus a number.
        spent = [u for u in (self, other) if u.requests or u.total_tokens]
        costs = [u.cost for u in spent]
        cost = (
            None
            if not spent or any(c is None for c in costs)
            else sum(c for c in costs if c is not None)
        )
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            requests=self.requests + other.requests,
            cost=cost,
        )

    @classmethod
    def total(cls, spent: Iterable[Usage | _Spent]) -> Usage:
        """The sum of usages, or of the usage of each record or result in ``spent``.

        Every total in the library is made here, with ``+``, so all agree on what an unknown
        price does to a sum.
        """
        out = cls()
        for part in spent:
            out = out + (part if isinstance(part, Usage) else part.usage)
        return out

    def summary(self) -> str:
        """A short account, e.g. ``2 requests/812 tokens/$0.0003`` (cost only when known)."""
        text = f"{_count(self.requests, 'request')}/{self.total_tokens} tokens"
        return text if self.cost is None else f"{text}/{format_cost(self.cost)}"


def format_cost(cost: float) -> str:
    """A cost in USD as people read it: ``$0.0012``, ``$1.25``; ``<$0.0001`` for crumbs."""
    if cost <= 0:
        return "$0"
    if cost < 0.0001:
        return "<$0.0001"
    return f"${cost:,.2f}" if cost >= 1 else f"${cost:.4f}"


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _short(text: str | None, limit: int = 60) -> str:
    """``text`` for a repr: whole when short, else its start, an ellipsis and its length."""
    if text is None or len(text) <= limit:
        return repr(text)
    return f"{text[:limit].rstrip() + '...'!r} ({len(text)} chars)"


# -- Markdown views ---------------------------------------------------------------------------
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`).+?(?<!`)\1(?!`)")


def _escape_line(line: str) -> str:
    pieces: list[str] = []
    end = 0
    for span in _CODE_SPAN.finditer(line):
        pieces += [html.escape(line[end : span.start()], quote=False), span.group(0)]
        end = span.end()
    pieces.append(html.escape(line[end:], quote=False))
    return "".join(pieces)


def _md(text: str) -> str:
    """Text for a Markdown view, escaped the same way everywhere.

    Markdown renders (a model's lists, emphasis and code are meant to), but raw HTML is shown
    as text: ``<div>`` in an instruction must appear, not vanish into a tag. Code blocks and
    code spans are left alone, since Markdown already shows them verbatim.
    """
    lines: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        mark = _FENCE.match(line)
        if fence is not None:
            if mark and mark.group(1)[0] == fence[0] and len(mark.group(1)) >= len(fence):
                fence = None
            lines.append(line)
        elif mark:
            fence = mark.group(1)
            lines.append(line)
        else:
            lines.append(_escape_line(line))
    if fence is not None:  # a cut-off answer must not pull what follows into its code block
        lines.append(fence)
    return "\n".join(lines)


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in _md(text).split("\n"))


def _footer(usage: Usage, *more: str) -> str:
    parts = [
        _count(usage.requests, "request"),
        f"{usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens",
    ]
    if usage.cost is not None:
        parts.append(format_cost(usage.cost))
    return "<sub>" + ", ".join([*parts, *more]) + "</sub>"


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

    def __repr__(self) -> str:
        parts = [
            f"model={self.model!r}",
            f"description={_short(self.description)}",
            f"exemplars={len(self.exemplars)}",
        ]
        if self.cached:
            parts.append("cached=True")
        parts.append(f"usage={self.usage.summary()}")
        return f"ExpertIdentity({', '.join(parts)})"

    def _repr_markdown_(self) -> str:
        parts = [f"**Instruction** (`{self.model}`)", "", _quote(self.instruction)]
        if self.input:
            parts += ["", _quote(self.input)]
        parts += ["", "**Expert identity**", "", _md(self.description), ""]
        more = [_count(len(self.exemplars), "exemplar") + " shown"]
        if self.cached:
            more.append("from the cache")
        parts.append(_footer(self.usage, *more))
        return "\n".join(parts)


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
    turns_answers: list[str] | None = Field(
        default=None,
        description="A question of several turns (MT-Bench's) answered as a conversation: the "
        "answer to each turn, the first being ``answer``; usage, requests and seconds are "
        "those of every turn.",
    )

    def __repr__(self) -> str:
        parts = [f"strategy={self.strategy!r}", f"model={self.model!r}"]
        if self.id is not None:
            parts.insert(0, f"id={self.id!r}")
        parts.append(f"answer={_short(self.answer)}")
        if self.expert_identity is not None:
            parts.append(f"identity={_short(self.expert_identity)}")
        if self.experts:
            parts.append(f"experts={len(self.experts)}")
        if self.truncated:
            parts.append("truncated=True")
        parts.append(f"usage={self.usage.summary()}")
        return f"ExpertAnswer({', '.join(parts)})"

    def _repr_markdown_(self) -> str:
        header = f"**Instruction** ({_md(self.strategy)}, `{self.model}`)"
        parts = [header, "", _quote(self.instruction)]
        if self.input:
            parts += ["", _quote(self.input)]
        if self.expert_identity:
            label = "**Experts**" if self.experts else "**Expert identity**"
            parts += ["", label, "", _quote(self.expert_identity)]
        parts += ["", "**Answer**", "", _md(self.answer), ""]
        more = [f"{self.seconds:.2f} s"]
        if self.truncated:
            more.append("truncated at max_tokens")
        parts.append(_footer(self.usage, *more))
        return "\n".join(parts)
