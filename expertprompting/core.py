"""The sans-I/O core of the method: plan requests, read replies, assemble results.

Nothing here touches the network. The method is written once, as generator *flows* that yield
each :class:`ChatRequest` they need and receive the :class:`Exchange` it produced; the sync and
async drivers only carry requests to an endpoint and back, so the two faces cannot drift.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypedDict

from .budget import plan_max_tokens
from .config import CallOverrides, Deadlines, PrompterConfig
from .errors import ConfigurationError, ResponseError, TokenBudgetError, UnknownModelWarning
from .exemplars import Exemplar, ExemplarIndex, select_exemplars
from .model_table import lookup_model
from .results import ExpertAnswer, ExpertIdentity, RequestRecord, Step, Strategy, Usage
from .templating import PromptTemplate
from .tokens import TokenCounter

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "Completion",
    "Exchange",
    "Flow",
    "Planner",
    "answer_flow",
    "assemble_answer",
    "check_completion",
    "clean_answer",
    "identify_flow",
    "parse_completion",
]

DEFAULT_CONTEXT_WINDOW = 8192
MIN_ANSWER_TOKENS = 16
_SEAM_SLACK = 2  # tokens allowed per exemplar for merges where its text meets its neighbours


class ChatMessage(TypedDict):
    role: str
    content: str


@dataclass(frozen=True)
class ChatRequest:
    """One chat-completions request, fully planned: messages, exact prompt size, max_tokens."""

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


def fold_input(instruction: str, input: str | None) -> tuple[str, str | None]:
    """Validate an instruction and normalise its optional input ("" means none)."""
    if not isinstance(instruction, str):
        raise ConfigurationError(
            f"The instruction must be a string, not {type(instruction).__name__}."
        )
    if not instruction.strip():
        raise ConfigurationError(
            "The instruction is empty. Pass the text of the task to answer, "
            "e.g. ep.answer('Explain how vaccines train the immune system.')."
        )
    if input is not None and not isinstance(input, str):
        raise ConfigurationError(f"input must be a string or None, not {type(input).__name__}.")
    return instruction, (input if input and input.strip() else None)


@dataclass
class Planner:
    """Builds every request of the method for one configuration. Pure: no I/O, no state."""

    config: PrompterConfig
    templates: Mapping[str, PromptTemplate]
    exemplars: Sequence[Exemplar]
    counter: TokenCounter

    def __post_init__(self) -> None:
        self.index = ExemplarIndex(self.exemplars)
        self._exemplar_cost: dict[Exemplar, int] = {}
        info = lookup_model(self.config.model)
        self.max_output_tokens = info.max_output_tokens if info else None
        self.max_tokens_param = (
            "max_completion_tokens" if info and info.uses_max_completion_tokens else "max_tokens"
        )
        if self.config.context_window is not None:
            self.context_window = self.config.context_window
        elif info is not None:
            self.context_window = info.context_window
        else:
            warnings.warn(
                UnknownModelWarning(
                    f"Context window of model {self.config.model!r} unknown; assuming "
                    f"{DEFAULT_CONTEXT_WINDOW} tokens. Pass context_window= to set it.",
                    model=self.config.model,
                    assumption=f"assuming a context window of {DEFAULT_CONTEXT_WINDOW} tokens",
                    setting="context_window",
                ),
                stacklevel=4,
            )
            self.context_window = DEFAULT_CONTEXT_WINDOW
        c = self.config
        self.sampling = {
            k: v
            for k, v in (("temperature", c.temperature), ("top_p", c.top_p), ("seed", c.seed))
            if v is not None
        }
        self.identity_sampling = (
            {**self.sampling, "stop": list(c.identity_stop)} if c.identity_stop else self.sampling
        )
        self.extra = {"repeat_penalty": c.repeat_penalty} if c.repeat_penalty is not None else {}

    # -- messages ---------------------------------------------------------------------------
    def user_messages(self, text: str) -> list[ChatMessage]:
        """``text`` as the one user message of a request."""
        return [{"role": "user", "content": text}]

    def _identity_messages(
        self, instruction: str, input: str | None, exemplars: Sequence[Exemplar]
    ) -> list[ChatMessage]:
        if self.config.identity_layout == "text":
            text = self.templates["identity"].render(
                instruction=instruction, input=input, exemplars=list(exemplars)
            )
            return self.user_messages(text)
        # "chat": the task as the system message, each exemplar a user turn and its answer.
        turn = self.templates["identity_turn"]
        messages: list[ChatMessage] = [
            {"role": "system", "content": self.templates["identity_system"].render()}
        ]
        for exemplar in exemplars:
            messages.append(
                {
                    "role": "user",
                    "content": turn.render(instruction=exemplar.instruction, input=None),
                }
            )
            messages.append({"role": "assistant", "content": exemplar.description})
        messages.append(
            {"role": "user", "content": turn.render(instruction=instruction, input=input)}
        )
        return messages

    def answer_messages(
        self, instruction: str, input: str | None, identity: str | None, strategy: Strategy
    ) -> list[ChatMessage]:
        """Step 2's messages (or a baseline's)."""
        if strategy == "expert":
            if identity is None or not identity.strip():
                raise ConfigurationError("The expert strategy needs a non-empty identity.")
            text = self.templates["answer"].render(
                identity=identity.strip(), instruction=instruction, input=input
            )
        else:
            text = self.templates[strategy].render(instruction=instruction, input=input)
        return self.user_messages(text)

    def _exemplar_tokens(self, exemplar: Exemplar) -> int:
        """What showing ``exemplar`` adds to an identity prompt, in tokens (measured once)."""
        found = self._exemplar_cost.get(exemplar)
        if found is None:
            probe = "Describe the expert."
            alone = self.counter.count_messages(self._identity_messages(probe, None, []))
            shown = self.counter.count_messages(self._identity_messages(probe, None, [exemplar]))
            found = self._exemplar_cost[exemplar] = shown - alone
        return found

    # -- planning -----------------------------------------------------------------------------
    def identity_request(
        self, instruction: str, input: str | None, overrides: CallOverrides | None = None
    ) -> tuple[ChatRequest, list[str]]:
        """Step 1's request, with the most relevant exemplars that fit the budget.

        ``overrides`` may change its sampling and timeout; its length stays
        ``identity_max_tokens`` (an override's ``max_tokens`` is the answer's).
        """
        c = self.config
        budget = min(
            c.identity_prompt_budget, self.context_window - c.identity_max_tokens - c.margin_tokens
        )
        bare = self.counter.count_messages(self._identity_messages(instruction, input, []))
        if bare > budget:
            raise TokenBudgetError(
                f"The identity prompt for this instruction needs {bare} tokens before any "
                f"exemplar, over its budget of {budget} (identity_prompt_budget="
                f"{c.identity_prompt_budget}, context window {self.context_window} minus "
                f"identity_max_tokens={c.identity_max_tokens} and a {c.margin_tokens}-token "
                "margin). Shorten the instruction or raise identity_prompt_budget.",
                needed=bare,
                available=budget,
            )
        ranked = self.index.ranked(f"{instruction}\n{input or ''}")

        def exact(exs: Sequence[Exemplar]) -> int:
            return self.counter.count_messages(self._identity_messages(instruction, input, exs))

        # Choose with a cheap upper bound (each exemplar's own size, measured once, plus slack
        # for token merges at the seams), then count the chosen prompt exactly. Should the exact
        # count ever pass the budget, choose again counting every trial exactly.
        chosen = select_exemplars(
            ranked,
            c.k_exemplars,
            lambda exs: bare + sum(self._exemplar_tokens(e) + _SEAM_SLACK for e in exs),
            budget,
        )
        messages = self._identity_messages(instruction, input, chosen)
        prompt = self.counter.count_messages(messages)
        if prompt > budget:
            chosen = select_exemplars(ranked, c.k_exemplars, exact, budget)
            messages = self._identity_messages(instruction, input, chosen)
            prompt = self.counter.count_messages(messages)
        max_tokens = plan_room(self, prompt, c.identity_max_tokens, "identity")
        request = ChatRequest(
            "identity",
            c.model,
            messages,
            prompt,
            max_tokens,
            self.max_tokens_param,
            self.identity_sampling,
            extra=self.extra,
        )
        return self.overridden(request, overrides), [e.instruction for e in chosen]

    def answer_request(
        self,
        instruction: str,
        input: str | None,
        identity: str | None,
        strategy: Strategy,
        stream: bool = False,
        overrides: CallOverrides | None = None,
    ) -> ChatRequest:
        messages = self.answer_messages(instruction, input, identity, strategy)
        prompt = self.counter.count_messages(messages)
        max_tokens = plan_room(
            self, prompt, self.answer_cap(overrides), "answer", MIN_ANSWER_TOKENS
        )
        request = ChatRequest(
            "answer",
            self.config.model,
            messages,
            prompt,
            max_tokens,
            self.max_tokens_param,
            self.sampling,
            stream,
            self.extra,
        )
        return self.overridden(request, overrides)

    def answer_cap(self, overrides: CallOverrides | None = None) -> int | None:
        """The cap on an answer's ``max_tokens`` before the context window clamps it: the
        call's override, else the prompter's ``max_tokens``, else the model's output limit."""
        wanted = overrides.max_tokens if overrides is not None else None
        return wanted or self.config.max_tokens or self.max_output_tokens

    def overridden(self, request: ChatRequest, overrides: CallOverrides | None) -> ChatRequest:
        """``request`` with one call's sampling (temperature, seed) and timeout overrides.

        ``max_tokens`` is not touched here: it is planned against the prompt (see
        :meth:`answer_cap`).
        """
        if overrides is None:
            return request
        changed = {
            k: v
            for k, v in (("temperature", overrides.temperature), ("seed", overrides.seed))
            if v is not None
        }
        deadlines = (
            None if overrides.timeout is None else self.config.deadlines_for(overrides.timeout)
        )
        if not changed and deadlines is None:
            return request
        return replace(request, sampling={**request.sampling, **changed}, deadlines=deadlines)

    def preflight(self, instruction: str, input: str | None) -> None:
        """Before step 1: would step 2 fit with an identity of the longest allowed length?"""
        messages = self.answer_messages(instruction, input, "-", "expert")
        worst = self.counter.count_messages(messages) + self.config.identity_max_tokens
        plan_room(
            self, worst, None, "answer (with the longest allowed identity)", MIN_ANSWER_TOKENS
        )

    def fingerprint(self, strategy: Strategy | None = None) -> str:
        """A short, stable digest of what, besides the model, shapes the answers.

        Five parts of six hex digits joined by ``-``, in this order: the template sources, the
        exemplar pool, the sampling settings (temperature, top_p, seed, repeat_penalty and the
        token caps), the planning limits (exemplars shown and their budget, identity layout,
        number of experts, context window and margin) and the answer-cleaning flag; so two
        fingerprints also tell which of these differ. With ``strategy``, only what that strategy
        uses counts (a vanilla run is the same whatever the exemplars); without, everything.
        Connection settings (API key, base URL, timeouts, retries, budgets) never count.
        Output files record it, so a resumed run can tell it would mix different runs.
        """
        c = self.config
        identity = strategy in (None, "expert", "multi-expert")
        names: Sequence[str]
        if strategy is None:
            names = sorted(self.templates)
        elif strategy == "expert":
            names = ("identity", "identity_system", "identity_turn", "answer")
        elif strategy == "multi-expert":
            names = ("experts", "answer", "aggregate")
        else:
            names = (strategy,)
        templates = {n: t.source for n in names if (t := self.templates.get(n)) is not None}
        pool = [[e.instruction, e.description, e.domain] for e in self.exemplars]
        sampling: dict[str, Any] = {
            "temperature": c.temperature,
            "top_p": c.top_p,
            "seed": c.seed,
            "repeat_penalty": c.repeat_penalty,
            "max_tokens": c.max_tokens,
        }
        planning: dict[str, Any] = {
            "context_window": self.context_window,
            "margin_tokens": c.margin_tokens,
        }
        if identity:
            sampling.update(identity_max_tokens=c.identity_max_tokens, stop=list(c.identity_stop))
        if strategy in (None, "expert"):
            planning.update(
                k_exemplars=c.k_exemplars,
                identity_prompt_budget=c.identity_prompt_budget,
                identity_layout=c.identity_layout,
            )
        if strategy in (None, "multi-expert"):
            planning["n_experts"] = c.n_experts
        parts = (
            templates,
            pool if strategy in (None, "expert") else [],
            sampling,
            planning,
            c.clean_answers,
        )
        return "-".join(
            hashlib.sha256(
                json.dumps(part, sort_keys=True, ensure_ascii=False).encode("utf-8")
            ).hexdigest()[:6]
            for part in parts
        )


def plan_room(planner: Planner, prompt: int, cap: int | None, what: str, minimum: int = 1) -> int:
    """Plan ``max_tokens`` for a prompt of ``prompt`` tokens under the planner's window."""
    return plan_max_tokens(
        prompt_tokens=prompt,
        context_window=planner.context_window,
        cap=cap,
        margin=planner.config.margin_tokens,
        what=what,
        minimum=minimum,
    )


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
) -> Generator[ChatRequest, Exchange, ExpertAnswer]:
    """The whole method (or a baseline): identity if needed, then the answer.

    ``overrides`` holds one call's settings (see :class:`~expertprompting.config.CallOverrides`).
    """
    instruction, input = fold_input(instruction, input)
    records: list[RequestRecord] = []
    text: str | None = None
    cached = False
    if strategy == "expert":
        if identity is None:
            planner.preflight(instruction, input)
            found = yield from identify_flow(planner, instruction, input, overrides)
            records += found.requests
            text = found.description
            cached = found.cached
        else:
            text = identity.description if isinstance(identity, ExpertIdentity) else identity
            if not text.strip():
                raise ConfigurationError("identity= is empty; pass a description or None.")
    elif identity is not None:
        raise ConfigurationError(
            f"identity= was given but strategy={strategy!r} does not use one; "
            "use strategy='expert' or drop identity=."
        )
    exchange = yield planner.answer_request(instruction, input, text, strategy, stream, overrides)
    records.append(exchange.record)
    return assemble_answer(
        planner, instruction, input, text, strategy, exchange.completion, records, cached
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
    """The :class:`ExpertAnswer` of a finished run of the method: the one place it is built.

    ``answer`` is the final reply; ``records`` are every step's records (identity first), which
    carry the usage, cost and time. The flows call this at their end, and so does
    :func:`expertprompting.batch.assemble` with the replies of a batch engine, so an answer
    reads the same however its requests were sent.
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
