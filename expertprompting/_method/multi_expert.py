"""Multi-expert prompting: several experts answer, one aggregation combines them.

Following Multi-expert Prompting (Long et al. 2024): one request names ``n`` diverse experts
with one-sentence descriptions; each expert answers (``n`` requests, sent together); one
aggregation request finds the agreed, conflicting and unique viewpoints, resolves the conflicts,
writes a combined answer, and picks the best of the ``n`` answers and the combined one. That is
``n + 2`` requests, planned and budgeted by the same core as the method's two.

Everything here is pure: the parsers read model text (JSON first, never ``eval``), and
:func:`multi_expert_flow` is a flow like the others, which the drivers run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator
from typing import Any

from .config import CallOverrides
from .errors import ResponseError
from .planner import Planner, fold_input
from .results import ExpertAnswer, ExpertView, RequestRecord, Usage
from .wire import ChatRequest, Exchange

__all__ = ["multi_expert_flow", "parse_aggregation", "parse_experts"]

_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s+(\S.*)$")
# "### Combined answer", "**Best response:** 2", "Combined answer:" (rest of the line kept)
_HEADING = re.compile(
    r"^\s*(?:#+\s*|\*\*)?\s*([A-Za-z][A-Za-z ]*?)\s*(?:(?::\s*\*\*|\*\*\s*:?|:)\s*(.*)|$)"
)


def _text_of(item: Any) -> str | None:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for key in ("description", "expert", "persona", "role"):
            if isinstance(item.get(key), str):
                return str(item[key])
        strings = [v for v in item.values() if isinstance(v, str)]
        return strings[0] if strings else None
    return None


def parse_experts(text: str | None, n: int) -> list[str] | None:
    """``n`` expert descriptions from a reply, or None when it does not hold ``n`` of them.

    A JSON list (of strings, or of objects with a ``description``/``expert`` field) is read
    first, wherever it sits in the text; failing that, a numbered or bulleted list.

    >>> parse_experts('["You are A.", "You are B."]', 2)
    ['You are A.', 'You are B.']
    >>> parse_experts("1. You are A.\\n2. You are B.", 2)
    ['You are A.', 'You are B.']
    """
    if not text:
        return None
    start, end = text.find("["), text.rfind("]")
    if 0 <= start < end:
        try:
            data = json.loads(text[start : end + 1])
        except ValueError:
            data = None
        if isinstance(data, list):
            found = [t.strip() for t in map(_text_of, data) if t and t.strip()]
            if len(found) >= n:
                return found[:n]
    listed = [m.group(1).strip() for m in map(_LIST_ITEM.match, text.splitlines()) if m]
    listed = [item.strip('"').strip() for item in listed if item.strip('"').strip()]
    return listed[:n] if len(listed) >= n else None


def parse_aggregation(text: str | None, n: int) -> tuple[str | None, int | None]:
    """(the combined answer, the number of the best response) from an aggregation reply.

    Either may be None when the reply does not follow the headings; the best number must be
    1 to ``n + 1`` (``n + 1`` is the combined answer).
    """
    if not text:
        return None, None
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        heading = _HEADING.match(line)
        name = heading.group(1).strip().lower() if heading else ""
        is_heading = (
            heading is not None
            and len(name.split()) <= 3
            and (name.startswith(("combined", "best", "agreed", "conflicting", "unique")))
        )
        if heading is not None and is_heading:
            current = "combined" if "combined" in name else "best" if "best" in name else name
            rest = (heading.group(2) or "").strip()
            sections[current] = [rest] if rest else []
        elif current is not None:
            sections[current].append(line)
    combined = "\n".join(sections.get("combined", [])).strip() or None
    best = None
    digits = re.search(r"\d+", "\n".join(sections.get("best", [])))
    if digits and 1 <= int(digits.group()) <= n + 1:
        best = int(digits.group())
    return combined, best


def multi_expert_flow(
    planner: Planner,
    instruction: str,
    input: str | None,
    overrides: CallOverrides | None = None,
) -> Generator[ChatRequest | list[ChatRequest], Any, ExpertAnswer]:
    """The n + 2 requests of multi-expert prompting; yields the n answers as one batch.

    ``overrides`` (one call's settings) apply to every request; its ``max_tokens`` caps the
    expert answers and the aggregation, as the prompter's ``max_tokens`` does.
    """
    instruction, input = fold_input(instruction, input)
    c = planner.config
    n = c.n_experts
    records: list[RequestRecord] = []

    # 1. the experts, one request (asked again once if the list cannot be read)
    text = planner.templates["experts"].render(instruction=instruction, input=input, n=n)
    request = planner.request(
        "experts", planner.user_messages(text), cap=c.identity_max_tokens, overrides=overrides
    )
    experts: list[str] | None = None
    raw: str | None = None
    for attempt in (1, 2):
        exchange: Exchange = yield request.for_attempt(attempt)
        records.append(exchange.record)
        raw = exchange.completion.content
        experts = parse_experts(raw, n)
        if experts is not None:
            break
    if experts is None:
        raise ResponseError(
            f"The experts list could not be read twice (wanted {n} experts; got {raw!r:.200}). "
            "Use a model that follows the format, or a custom experts template.",
            reason="unparseable",
            attempts=2,
        )

    # 2. every expert answers; the n requests go out together
    asks = [
        planner.answer_request(instruction, input, expert, "expert", overrides=overrides)
        for expert in experts
    ]
    replies: list[Exchange] = yield asks
    records += [r.record for r in replies]
    views = [
        ExpertView(expert=expert, answer=(reply.completion.content or "").strip())
        for expert, reply in zip(experts, replies, strict=True)
    ]

    # 3. one aggregation
    text = planner.templates["aggregate"].render(
        instruction=instruction,
        input=input,
        answers=[{"expert": v.expert, "answer": v.answer} for v in views],
    )
    final: Exchange = yield planner.request(
        "answer",
        planner.user_messages(text),
        cap=planner.answer_cap(overrides),
        what="aggregation",
        overrides=overrides,
    )
    records.append(final.record)
    aggregation = (final.completion.content or "").strip()
    combined, best = parse_aggregation(aggregation, n)
    picked_expert = best is not None and best <= n
    answer = views[best - 1].answer if picked_expert and best else combined or aggregation
    return ExpertAnswer(
        instruction=instruction,
        input=input,
        expert_identity="\n".join(f"{i}. {e}" for i, e in enumerate(experts, start=1)),
        answer=answer,
        model=final.completion.model,
        strategy="multi-expert",
        truncated=final.completion.finish_reason == "length",
        usage=Usage.total(records),
        requests=records,
        seconds=sum(r.seconds for r in records),
        experts=views,
        aggregation=aggregation,
        chosen=best,
    )
