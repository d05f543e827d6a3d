"""The model session: everything needed to talk to one model, shared by every use of it.

A :class:`ModelSession` owns, for one model: the transport (an OpenAI-compatible client per event
loop, or the in-process local model), the retry policy, the run-budget ledger, the identity or
verdict cache and the token counter. It runs the requests of the method's flows through its
drivers and adds up what they cost.

:class:`~expertprompting.ExpertPrompter` and :class:`~expertprompting.Judge` are each built
on a session, and dataset runs, ``compare`` and the server use a prompter's or judge's
``session`` through the public methods here: :meth:`ModelSession.driver` for sync calls,
:meth:`ModelSession.async_driver` for async calls, :meth:`ModelSession.open_run` for a run over
many items (its own client; the session's rate limiter, with the run's limits on top).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import AsyncIterator, Mapping
from typing import Any

import openai
from pydantic import ValidationError
from tenacity import BaseRetrying

from .._method.config import ModelPrice, PrompterConfig, RetryPolicy, RunBudget
from .._method.errors import ConfigurationError
from .._method.model_table import lookup_model
from .._method.results import Usage
from .._method.tokens import TiktokenCounter, TokenCounter
from .async_driver import AsyncDriver
from .budget import BudgetLedger
from .cache import CacheSpec, IdentityCache, resolve_cache
from .local import (
    LOCAL_DEFAULTS,
    AsyncLocalTransport,
    LlamaCounter,
    LocalModel,
    LocalTransport,
    is_local_model,
)
from .loop_drivers import Close, LoopDrivers
from .ratelimit import RateLimiter
from .retry import RetrySpec
from .sync_driver import SyncDriver
from .transport import AsyncOpenAITransport, AsyncTransport, OpenAITransport, Transport

__all__ = ["ModelSession", "explain_invalid", "given", "session_config"]


def given(**values: Any) -> dict[str, Any]:
    """The keyword arguments that were given (not None)."""
    return {k: v for k, v in values.items() if v is not None}


def explain_invalid(exc: ValidationError, what: str = "prompter settings") -> str:
    """A pydantic validation error as one line naming each bad setting."""

    def one(err: Any) -> str:
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        if err["type"] == "extra_forbidden":
            return f"{where}: unexpected keyword (see PrompterConfig for the valid settings)"
        return f"{where}: {err['msg']}"

    problems = "; ".join(one(err) for err in exc.errors())
    return f"Invalid {what}: {problems}."


def session_config(
    model: str,
    settings: Mapping[str, Any],
    *,
    limits: Mapping[str, Any],
    retry: RetrySpec | None,
    connection_given: bool,
) -> PrompterConfig:
    """The checked configuration of a prompter or judge for ``model``.

    ``settings`` holds only what the caller gave; a local model first gets
    :data:`~expertprompting._io.local.LOCAL_DEFAULTS`, and refuses connection settings.
    """
    merged = dict(settings)
    if is_local_model(model):
        if connection_given:
            raise ConfigurationError(
                f"model={model!r} runs in-process; base_url=, api_key= and clients do not "
                "apply. For a model behind a server, pass its name and base_url= instead."
            )
        merged = {**LOCAL_DEFAULTS, **merged}
    try:
        if limits:
            merged["budget"] = RunBudget(**limits)
        if isinstance(retry, RetryPolicy):
            merged["retry"] = retry
        elif retry is not None and not isinstance(retry, BaseRetrying):
            raise ConfigurationError(
                "retry= takes a RetryPolicy or a tenacity Retrying/AsyncRetrying, "
                f"not {type(retry).__name__}."
            )
        return PrompterConfig(model=model, **merged)
    except ValidationError as exc:
        raise ConfigurationError(explain_invalid(exc)) from None
    except TypeError as exc:
        raise ConfigurationError(str(exc)) from None


class ModelSession:
    """Everything needed to talk to one model: transports, retry, budget, cache, token counter.

    Thread-safe and usable from any number of event loops: sync calls share one client (made
    at the first call), async calls get a client per running loop, closed when that loop shuts
    down. Nothing is sent, and no key is needed, until the first request.
    """

    def __init__(
        self,
        config: PrompterConfig,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        client: openai.OpenAI | None = None,
        async_client: openai.AsyncOpenAI | None = None,
        retry: RetrySpec | None = None,
        token_counter: TokenCounter | None = None,
        cache: CacheSpec = False,
    ) -> None:
        """Set up the session for ``config.model`` (a local model is loaded here, once per process).

        :param config: The checked settings (see :func:`session_config`); a local model's
            context window fills in ``context_window`` when it is unset.
        :param base_url: The endpoint (default ``OPENAI_BASE_URL``, else OpenAI).
        :param api_key: The key (default ``OPENAI_API_KEY``; a placeholder with ``base_url``).
        :param client: Your own ``openai.OpenAI`` client (its retries are not used).
        :param async_client: Your own ``openai.AsyncOpenAI`` client for the async calls.
        :param retry: A RetryPolicy or tenacity retrying object (default ``config.retry``).
        :param token_counter: Counts prompt tokens (default: exact counts for the model).
        :param cache: The request cache: ``True`` in memory, ``False`` off, a path, an object.
        """
        self._base_url = base_url
        self._api_key = api_key
        self._client = client
        self._async_client = async_client
        self.local: LocalModel | None = None
        """The in-process model, for ``"local"`` models; None for a model behind an endpoint."""
        if is_local_model(config.model):
            self.local = LocalModel.load(config.model, config.context_window)
            if config.context_window is None:
                config = config.model_copy(update={"context_window": self.local.context_window})
        self.config = config
        self.model = config.model
        self.retry: RetrySpec = retry if retry is not None else config.retry
        self.counter: TokenCounter = token_counter or (
            LlamaCounter(self.local) if self.local is not None else TiktokenCounter(self.model)
        )
        if config.budget.max_cost is not None and self.price(self.model) is None:
            raise ConfigurationError(
                f"max_cost is set but the price of {self.model!r} is unknown; pass "
                f"prices={{{self.model!r}: ModelPrice(input=..., output=...)}} (USD per 1M tokens)."
            )
        self.ledger = BudgetLedger(config.budget, self.price)
        self.cache: IdentityCache | None = resolve_cache(cache)
        self.limiter: RateLimiter | None = (
            None if self.local is not None else RateLimiter(burst_seconds=config.burst_seconds)
        )
        """The rate limiter of every request to the endpoint: what it learns (limits from the
        replies' headers, or a rate adapted to 429s) serves every later call and run. None for
        an in-process model, which has no rate limits."""
        self._sync: SyncDriver | None = None
        self._sync_lock = threading.Lock()  # threads making their first call at once share one
        self._async_drivers = LoopDrivers()

    @classmethod
    def for_model(
        cls,
        model: str,
        settings: Mapping[str, Any],
        *,
        max_total_tokens: int | None = None,
        max_requests: int | None = None,
        max_cost: float | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        client: openai.OpenAI | None = None,
        async_client: openai.AsyncOpenAI | None = None,
        retry: RetrySpec | None = None,
        token_counter: TokenCounter | None = None,
        cache: CacheSpec = False,
    ) -> ModelSession:
        """A session for ``model`` with the given ``settings`` (only those set), checked.

        The way :class:`~expertprompting.ExpertPrompter` and :class:`~expertprompting.Judge`
        build theirs: :func:`session_config` checks the settings (a local model first gets
        its defaults), then the session is made; the run-budget limits become ``budget``.
        """
        limits = given(
            max_total_tokens=max_total_tokens, max_requests=max_requests, max_cost=max_cost
        )
        config = session_config(
            model,
            settings,
            limits=limits,
            retry=retry,
            connection_given=bool(base_url or api_key or client or async_client),
        )
        return cls(
            config,
            base_url=base_url,
            api_key=api_key,
            client=client,
            async_client=async_client,
            retry=retry,
            token_counter=token_counter,
            cache=cache,
        )

    @property
    def usage(self) -> Usage:
        """Running totals of every request this session sent (failed attempts included)."""
        return self.ledger.usage

    @property
    def served_names(self) -> frozenset[str]:
        """The names replies of this model may carry (a local model's: also its file's stem)."""
        return frozenset({self.model} if self.local is None else {self.model, self.local.name})

    def price(self, model: str) -> ModelPrice | None:
        """What ``model`` costs per 1M tokens: the configured price, else the table's."""
        if model in self.config.prices:
            return self.config.prices[model]
        if self.local is not None:
            return ModelPrice(input=0, output=0)
        info = lookup_model(model)
        return info.price if info else None

    def driver(self) -> SyncDriver:
        """The driver of sync calls (one for all threads, made at the first call)."""
        with self._sync_lock:
            if self._sync is None:
                self._sync = SyncDriver(
                    self._sync_transport(),
                    self.ledger,
                    self.retry,
                    self.counter,
                    limiter=self.limiter,
                    cache=self.cache,
                )
            return self._sync

    def async_driver(self) -> AsyncDriver:
        """The driver of async calls in the running event loop."""

        # An async HTTP client belongs to the event loop it first ran in: one driver per loop,
        # closed with its loop, so a session works across asyncio.run() calls, in several
        # threads' loops at once, and in notebooks alike.
        def make() -> tuple[AsyncDriver, Close | None]:
            transport, close = self._async_transport()
            driver = AsyncDriver(
                transport,
                self.ledger,
                self.retry,
                self.counter,
                limiter=self.limiter,
                cache=self.cache,
            )
            return driver, close

        return self._async_drivers.get(make)

    @contextlib.asynccontextmanager
    async def open_run(
        self, *, rpm: float | None = None, tpm: float | None = None
    ) -> AsyncIterator[AsyncDriver]:
        """A driver for one run over many items: its own client, the session's rate limiter.

        The run shares this session's budget ledger, retry policy, cache, counter and rate
        limiter, so its usage adds to :attr:`usage` and what the limiter learned from earlier
        calls paces it from its first request. ``rpm``/``tpm`` are told to the shared limiter
        for the run's duration (:meth:`RateLimiter.told`): the smaller of told and learned
        applies, to every call of this session while the run lasts.
        """
        # an in-process model has no limiter of its own: a run told limits gets one for itself
        limiter = self.limiter or RateLimiter(burst_seconds=self.config.burst_seconds)
        transport, close = self._async_transport()
        try:
            with limiter.told(rpm=rpm, tpm=tpm):
                yield AsyncDriver(
                    transport,
                    self.ledger,
                    self.retry,
                    self.counter,
                    limiter=limiter,
                    cache=self.cache,
                )
        finally:
            if close is not None:
                await close()

    # -- transports ----------------------------------------------------------------------------
    def _openai_kwargs(self) -> dict[str, Any]:
        api_key = self._api_key or os.environ.get("OPENAI_API_KEY")
        base_url = self._base_url or os.environ.get("OPENAI_BASE_URL")
        if not api_key:
            if not base_url:
                raise ConfigurationError(
                    f"No API key for model {self.model!r}: set OPENAI_API_KEY, pass "
                    "api_key=, or pass base_url= of a local OpenAI-compatible server."
                )
            api_key = "not-needed"  # local servers ignore it, the SDK insists on one
        return {"api_key": api_key, "base_url": base_url}

    def _sync_transport(self) -> Transport:
        if self.local is not None:
            return LocalTransport(self.local)
        client = self._client or openai.OpenAI(**self._openai_kwargs())
        return OpenAITransport(client, self.config.deadlines)

    def _async_transport(self) -> tuple[AsyncTransport, Close | None]:
        """A transport for the running event loop, and how to close it (None: not ours)."""
        if self.local is not None:
            return AsyncLocalTransport(self.local), None
        if self._async_client is not None:
            return AsyncOpenAITransport(self._async_client, self.config.deadlines), None
        if self._client is not None:
            c = self._client
            # the settings a sync client can carry over; an HTTP client or proxies cannot be
            client = openai.AsyncOpenAI(
                api_key=c.api_key,
                base_url=c.base_url,
                organization=c.organization,
                project=c.project,
                default_headers=getattr(c, "_custom_headers", None),
                default_query=getattr(c, "_custom_query", None),
            )
        else:
            client = openai.AsyncOpenAI(**self._openai_kwargs())
        return AsyncOpenAITransport(client, self.config.deadlines), client.close

    def __repr__(self) -> str:
        where = "in-process" if self.local is not None else (self._base_url or "default endpoint")
        return f"ModelSession(model={self.model!r}, {where})"
