"""The method as flows: generators that yield each planned request and return the result.

:func:`identify_flow` is step 1 (the expert identity), :func:`answer_flow` steps 1 and 2
(:func:`conversation_flow` the same for a whole conversation, of which one instruction is the
one-turn case);
:func:`assemble_answer` builds the :class:`~expertprompting.ExpertAnswer` of every strategy and of
Batch API results. A driver (sync or async) sends a flow's requests and sends the replies back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Sequence

from .config import CallOverrides
from .conversation import Conversation
from .errors import ConfigurationError
from .planner import Planner, fold_input
from .results import ExpertAnswer, ExpertIdentity, RequestRecord, Strategy, Usage
from .wire import ChatRequest, Completion, Exchange

__all__ = [
    "answer_flow",
    "assemble_answer",
    "clean_answer",
    "conversation_flow",
    "identify_flow",
]

_RESTATEMENT = re.compile(r"^\s*As (?:an?|the|your)\s+[^,.!?\n]{1,120},\s*", re.IGNORECASE)


def clean_answer(text: str) -> str:
    """Drop a leading "As a <expert>," restatement of the identity, as the paper's data was.

    >>> clean_answer("As an experienced immunologist, I would say vaccines...")
    'I would say vaccines...'
    """
    match = _RESTATEMENT.match(text)
    if not match or match.end() >= len(text):
        return text
    rest = text[match.end() :]
    return rest[0].upper() + rest[1:]


def identify_flow(
    planner: Planner,
    instruction: str,
    input: str | None,
    overrides: CallOverrides | None = None,
) -> Generator[ChatRequest, Exchange, ExpertIdentity]:
    """Step 1 alone: ask for the expert identity."""
    instruction, input = fold_input(instruction, input)
    request, shown = planner.identity_request(instruction, input, overrides)
    exchange = yield request
    return ExpertIdentity(
        instruction=instruction,
        input=input,
        description=(exchange.completion.content or "").strip(),
        model=exchange.completion.model,
        exemplars=shown,
        usage=exchange.record.usage,
        requests=[exchange.record],
        cached=exchange.record.cached,
    )


def answer_flow(
    planner: Planner,
    instruction: str,
    input: str | None,
    identity: str | ExpertIdentity | None,
    strategy: Strategy,
    stream: bool = False,
    overrides: CallOverrides | None = None,
    on_identity: Callable[[str], None] | None = None,
) -> Generator[ChatRequest, Exchange, ExpertAnswer]:
    """The whole method (or a baseline): identity if needed, then the answer.

    ``overrides`` holds one call's settings (see ``CallOverrides``); ``on_identity`` is called
    with the identity's text once it is known, before the answer is asked for.
    """
    instruction, input = fold_input(instruction, input)
    return (
        yield from conversation_flow(
            planner,
            Conversation.single(instruction, input),
            identity,
            strategy,
            stream=stream,
            overrides=overrides,
            on_identity=on_identity,
        )
    )


def conversation_flow(
    planner: Planner,
    conversation: Conversation,
    identity: str | ExpertIdentity | None,
    strategy: Strategy,
    *,
    stream: bool = False,
    overrides: CallOverrides | None = None,
    on_identity: Callable[[str], None] | None = None,
    remembered: bool = False,
) -> Generator[ChatRequest, Exchange, ExpertAnswer]:
    """The method on a conversation: the identity for its first user turn (its system
    messages as that turn's input), then the answer to its last turn with the first rewritten
    as step 2 writes an instruction. One instruction is the conversation of one turn.

    ``remembered`` marks a given ``identity`` as this conversation's own, written earlier
    (the result then says ``identity_cached``).
    """
    records: list[RequestRecord] = []
    text: str | None = None
    cached = remembered
    if strategy == "expert":
        if identity is None:
            planner.conversation_preflight(conversation)
            found = yield from identify_flow(
                planner,
                conversation.instruction,
                conversation.input or conversation.context,
                overrides,
            )
            records += found.requests
            text = found.description
            cached = found.cached
        else:
            text = identity.description if isinstance(identity, ExpertIdentity) else identity
            if not text.strip():
                raise ConfigurationError("identity= is empty; pass a description or None.")
        if on_identity is not None:
            on_identity(text)
    elif identity is not None:
        raise ConfigurationError(
            f"identity= was given but strategy={strategy!r} does not use one; "
            "use strategy='expert' or drop identity=."
        )
    exchange = yield planner.conversation_request(conversation, text, strategy, stream, overrides)
    records.append(exchange.record)
    question = conversation.latest if not conversation.is_single else conversation.instruction
    return assemble_answer(
        planner, question, conversation.input, text, strategy, exchange.completion, records, cached
    )


def assemble_answer(
    planner: Planner,
    instruction: str,
    input: str | None,
    identity: str | None,
    strategy: Strategy,
    answer: Completion,
    records: Sequence[RequestRecord],
    identity_cached: bool = False,
    id: str | None = None,
) -> ExpertAnswer:
    """The :class:`ExpertAnswer` of a finished one-answer run (expert, the baselines, yours).

    ``answer`` is the final reply; ``records`` are every step's records (identity first), which
    carry the usage, cost and time. :func:`answer_flow` calls this at its end, and so does
    :func:`expertprompting.batch.assemble` with the replies of a batch engine, so an answer
    reads the same however its requests were sent. (Multi-expert adds its experts' views and
    builds its own, with the same :meth:`Usage.total`.)
    """
    raw = (answer.content or "").strip()
    cleaned = clean_answer(raw) if planner.config.clean_answers else raw
    return ExpertAnswer(
        instruction=instruction,
        input=input,
        expert_identity=identity,
        answer=cleaned,
        raw_answer=raw if cleaned != raw else None,
        model=answer.model,
        strategy=strategy,
        truncated=answer.finish_reason == "length",
        usage=Usage.total(records),
        requests=list(records),
        seconds=sum(r.seconds for r in records),
        identity_cached=identity_cached,
        id=id,
    )
