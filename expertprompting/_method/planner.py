"""The planner: every request of the method, sized and checked before anything is sent.

:class:`Planner` chooses exemplars under the identity prompt's token budget, renders the
templates, counts the prompt exactly and plans ``max_tokens`` against the context window
(:func:`plan_max_tokens`). Pure: no I/O, no state that changes between calls.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .config import DEFAULT_ANSWER_MAX_TOKENS, CallOverrides, PrompterConfig
from .conversation import Conversation
from .errors import ConfigurationError, TokenBudgetError, UnknownModelWarning
from .exemplars import Exemplar, ExemplarIndex, select_exemplars
from .model_table import lookup_model
from .results import Step, Strategy
from .templating import PromptTemplate
from .tokens import TokenCounter
from .wire import ChatMessage, ChatRequest

__all__ = [
    "DEFAULT_CONTEXT_WINDOW",
    "MIN_ANSWER_TOKENS",
    "Planner",
    "fold_input",
    "plan_max_tokens",
    "plan_room",
]

DEFAULT_CONTEXT_WINDOW = 8192
MIN_ANSWER_TOKENS = 16
_SEAM_SLACK = 2  # tokens allowed per exemplar for merges where its text meets its neighbours


def plan_max_tokens(
    *,
    prompt_tokens: int,
    context_window: int,
    cap: int | None,
    margin: int,
    what: str,
    minimum: int = 1,
) -> int:
    """``min(cap, context_window - prompt_tokens - margin)``, or TokenBudgetError if < minimum."""
    room = context_window - prompt_tokens - margin
    if room < minimum:
        raise TokenBudgetError(
            f"The {what} prompt needs {prompt_tokens} tokens, leaving {max(room, 0)} of the "
            f"{context_window}-token context window (after a {margin}-token margin) for the "
            f"reply, which needs at least {minimum}. Shorten the instruction or input, or use a "
            "model with a larger context window (context_window=).",
            needed=prompt_tokens + margin + minimum,
            available=context_window,
        )
    return room if cap is None else min(cap, room)


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
        request = self.request(
            "identity",
            messages,
            cap=c.identity_max_tokens,
            prompt_tokens=prompt,
            sampling=self.identity_sampling,
            overrides=overrides,
        )
        return request, [e.instruction for e in chosen]

    def answer_request(
        self,
        instruction: str,
        input: str | None,
        identity: str | None,
        strategy: Strategy,
        stream: bool = False,
        overrides: CallOverrides | None = None,
    ) -> ChatRequest:
        """Step 2's request (or a baseline's) for one instruction."""
        conversation = Conversation.single(instruction, input)
        return self.conversation_request(conversation, identity, strategy, stream, overrides)

    def conversation_messages(
        self, conversation: Conversation, identity: str | None, strategy: Strategy
    ) -> list[ChatMessage]:
        """The answer's messages for a conversation: its turns, the first user turn written
        as step 2 writes an instruction (for one instruction: :meth:`answer_messages`)."""
        turn = self.answer_messages(
            conversation.instruction, conversation.input, identity, strategy
        )[0]["content"]
        return conversation.rewritten(turn)

    def conversation_request(
        self,
        conversation: Conversation,
        identity: str | None,
        strategy: Strategy,
        stream: bool = False,
        overrides: CallOverrides | None = None,
    ) -> ChatRequest:
        """The answer request of a conversation, with the call's answer-only settings
        (``top_p``, ``stop``, ``response_format``) applied."""
        request = self.request(
            "answer",
            self.conversation_messages(conversation, identity, strategy),
            cap=self.answer_cap(overrides),
            what="answer" if conversation.is_single else "conversation",
            minimum=MIN_ANSWER_TOKENS,
            stream=stream,
            overrides=overrides,
        )
        answer_only = {} if overrides is None else overrides.answer_sampling()
        if not answer_only:
            return request
        return replace(request, sampling={**request.sampling, **answer_only})

    def request(
        self,
        step: Step,
        messages: list[ChatMessage],
        *,
        cap: int | None,
        what: str | None = None,
        minimum: int = 1,
        prompt_tokens: int | None = None,
        sampling: Mapping[str, Any] | None = None,
        stream: bool = False,
        overrides: CallOverrides | None = None,
    ) -> ChatRequest:
        """The one place a request is built: ``messages`` counted, ``max_tokens`` planned.

        ``max_tokens`` is ``cap`` clamped to the room the context window leaves (a
        :class:`~expertprompting.TokenBudgetError` naming ``what``, default the step, when less
        than ``minimum`` is left); the model's sampling settings, extra parameters and one
        call's ``overrides`` apply. ``prompt_tokens`` skips the count when it was just made.
        """
        prompt = self.counter.count_messages(messages) if prompt_tokens is None else prompt_tokens
        request = ChatRequest(
            step=step,
            model=self.config.model,
            messages=messages,
            prompt_tokens=prompt,
            max_tokens=plan_room(self, prompt, cap, what or step, minimum),
            max_tokens_param=self.max_tokens_param,
            sampling=self.sampling if sampling is None else sampling,
            stream=stream,
            extra=self.extra,
        )
        return self.overridden(request, overrides)

    def answer_cap(self, overrides: CallOverrides | None = None) -> int:
        """The cap on an answer's ``max_tokens`` before the context window clamps it: the
        call's override, else the prompter's ``max_tokens``, else
        :data:`~expertprompting._method.config.DEFAULT_ANSWER_MAX_TOKENS`; never more than
        the model's output limit, when the model table knows it (a larger number asks for
        the model's maximum)."""
        wanted = overrides.max_tokens if overrides is not None else None
        cap = wanted or self.config.max_tokens or DEFAULT_ANSWER_MAX_TOKENS
        return cap if self.max_output_tokens is None else min(cap, self.max_output_tokens)

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
        self.conversation_preflight(Conversation.single(instruction, input))

    def conversation_preflight(self, conversation: Conversation) -> None:
        """:meth:`preflight` for a conversation: its answer request, with the longest
        allowed identity, must leave room for an answer."""
        messages = self.conversation_messages(conversation, "-", "expert")
        worst = self.counter.count_messages(messages) + self.config.identity_max_tokens
        what = "answer" if conversation.is_single else "conversation"
        plan_room(
            self, worst, None, f"{what} (with the longest allowed identity)", MIN_ANSWER_TOKENS
        )

    def fingerprint(self, strategy: Strategy | None = None) -> str:
        """A short, stable digest of what, besides the model, shapes the answers.

        Five parts of six hex digits joined by ``-``, in this order: the template sources, the
        exemplar pool, the sampling settings (temperature, top_p, seed, repeat_penalty and the
        token caps, the answer's as :meth:`answer_cap` makes it), the planning limits
        (exemplars shown and their budget, identity layout, number of experts, context window
        and margin) and the answer-cleaning flag; so two fingerprints also tell which of these
        differ. With ``strategy``, only what that strategy
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
            # the effective cap, so a default and the same number given are one run, and a
            # change of the default is told apart from the outputs it made
            "max_tokens": self.answer_cap(),
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
