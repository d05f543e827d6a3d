"""expertprompting: ExpertPrompting (Xu et al. 2023) as a library.

>>> from expertprompting import ExpertPrompter
>>> ep = ExpertPrompter(model="gpt-4o-mini")                      # doctest: +SKIP
>>> r = ep.answer("Explain how vaccines train the immune system.")  # doctest: +SKIP
>>> print(r.expert_identity, r.answer, sep="\\n\\n")                   # doctest: +SKIP

Every public name is imported on first use (PEP 562), so ``import expertprompting`` and
``expertprompting --version`` do not load the OpenAI SDK, pydantic or tiktoken. Type checkers
and IDEs read the ``TYPE_CHECKING`` imports below; ``tests/test_public_api.py`` keeps those
imports, ``_EXPORTS`` and ``__all__`` in step.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._datasets.generate import GenerateSummary, agenerate, generate
    from ._datasets.items import DatasetItem, FailedItem, read_items
    from ._datasets.pool import ItemResult, TooManyErrorsError
    from ._evaluation.compare import CompareResult, compare
    from ._evaluation.judge import Judge
    from ._evaluation.report import ComparisonReport, build_report
    from ._evaluation.verdicts import PairVerdict, Verdict, parse_verdict, score_pair
    from ._io.cache import CachedIdentity, CacheWarning, IdentityCache, MemoryCache, SQLiteCache
    from ._io.local import LOCAL_DEFAULTS, is_local_model
    from ._io.session import ModelSession
    from ._method.config import ModelPrice, PrompterConfig, RetryPolicy, RunBudget
    from ._method.errors import (
        BudgetExceededError,
        ConfigurationError,
        ExpertPromptingError,
        ExpertPromptingWarning,
        RateLimitError,
        RequestError,
        ResponseError,
        RetryError,
        TemplateError,
        TokenBudgetError,
        UnknownModelWarning,
    )
    from ._method.exemplars import Exemplar, default_exemplars, load_exemplars
    from ._method.results import (
        ExpertAnswer,
        ExpertIdentity,
        ExpertView,
        RequestRecord,
        Strategy,
        Usage,
    )
    from ._method.tokens import TiktokenCounter, TokenCounter, count_tokens
    from ._prompter import AnswerStream, AsyncAnswerStream, ExpertPrompter

__version__ = "0.2.0"

__all__ = [
    "LOCAL_DEFAULTS",
    "AnswerStream",
    "AsyncAnswerStream",
    "BudgetExceededError",
    "CacheWarning",
    "CachedIdentity",
    "CompareResult",
    "ComparisonReport",
    "ConfigurationError",
    "DatasetItem",
    "Exemplar",
    "ExpertAnswer",
    "ExpertIdentity",
    "ExpertPrompter",
    "ExpertPromptingError",
    "ExpertPromptingWarning",
    "ExpertView",
    "FailedItem",
    "GenerateSummary",
    "IdentityCache",
    "ItemResult",
    "Judge",
    "MemoryCache",
    "ModelPrice",
    "ModelSession",
    "PairVerdict",
    "PrompterConfig",
    "RateLimitError",
    "RequestError",
    "RequestRecord",
    "ResponseError",
    "RetryError",
    "RetryPolicy",
    "RunBudget",
    "SQLiteCache",
    "Strategy",
    "TemplateError",
    "TiktokenCounter",
    "TokenBudgetError",
    "TokenCounter",
    "TooManyErrorsError",
    "UnknownModelWarning",
    "Usage",
    "Verdict",
    "__version__",
    "agenerate",
    "build_report",
    "compare",
    "count_tokens",
    "default_exemplars",
    "generate",
    "is_local_model",
    "load_exemplars",
    "parse_verdict",
    "read_items",
    "score_pair",
]

# Public name -> the submodule that defines it (its home module).
_EXPORTS: dict[str, str] = {
    "AnswerStream": "_prompter",
    "AsyncAnswerStream": "_prompter",
    "BudgetExceededError": "_method.errors",
    "CacheWarning": "_io.cache",
    "CachedIdentity": "_io.cache",
    "CompareResult": "_evaluation.compare",
    "ComparisonReport": "_evaluation.report",
    "ConfigurationError": "_method.errors",
    "DatasetItem": "_datasets.items",
    "Exemplar": "_method.exemplars",
    "ExpertAnswer": "_method.results",
    "ExpertIdentity": "_method.results",
    "ExpertPrompter": "_prompter",
    "ExpertPromptingError": "_method.errors",
    "ExpertPromptingWarning": "_method.errors",
    "ExpertView": "_method.results",
    "FailedItem": "_datasets.items",
    "GenerateSummary": "_datasets.generate",
    "IdentityCache": "_io.cache",
    "ItemResult": "_datasets.pool",
    "Judge": "_evaluation.judge",
    "LOCAL_DEFAULTS": "_io.local",
    "MemoryCache": "_io.cache",
    "ModelPrice": "_method.config",
    "ModelSession": "_io.session",
    "PairVerdict": "_evaluation.verdicts",
    "PrompterConfig": "_method.config",
    "RateLimitError": "_method.errors",
    "RequestError": "_method.errors",
    "RequestRecord": "_method.results",
    "ResponseError": "_method.errors",
    "RetryError": "_method.errors",
    "RetryPolicy": "_method.config",
    "RunBudget": "_method.config",
    "SQLiteCache": "_io.cache",
    "Strategy": "_method.results",
    "TemplateError": "_method.errors",
    "TiktokenCounter": "_method.tokens",
    "TokenBudgetError": "_method.errors",
    "TokenCounter": "_method.tokens",
    "TooManyErrorsError": "_datasets.pool",
    "UnknownModelWarning": "_method.errors",
    "Usage": "_method.results",
    "Verdict": "_evaluation.verdicts",
    "agenerate": "_datasets.generate",
    "build_report": "_evaluation.report",
    "compare": "_evaluation.compare",
    "count_tokens": "_method.tokens",
    "default_exemplars": "_method.exemplars",
    "generate": "_datasets.generate",
    "is_local_model": "_io.local",
    "load_exemplars": "_method.exemplars",
    "parse_verdict": "_evaluation.verdicts",
    "read_items": "_datasets.items",
    "score_pair": "_evaluation.verdicts",
}


# Hidden from type checkers: a visible module ``__getattr__`` makes mypy accept any attribute
# (``expertprompting.Typo``) as ``Any``; the TYPE_CHECKING imports above are what they should see.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        home = _EXPORTS.get(name)
        if home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
        globals()[name] = value  # later lookups are plain attribute reads
        return value


def __dir__() -> list[str]:
    # What completion offers: the public names (loaded or not), not this file's helpers.
    return sorted(set(__all__) | {name for name in globals() if name.startswith("__")})
