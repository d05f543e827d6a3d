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
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .compare import CompareResult, compare
    from .config import ModelPrice, PrompterConfig, RetryPolicy, RunBudget
    from .dataset import DatasetItem, FailedItem
    from .errors import (
        BudgetExceededError,
        ConfigurationError,
        ExpertPromptingError,
        RateLimitError,
        RequestError,
        ResponseError,
        RetryError,
        TemplateError,
        TokenBudgetError,
    )
    from .exemplars import Exemplar, default_exemplars, load_exemplars
    from .generate import GenerateSummary
    from .judge import ComparisonReport, Judge, PairVerdict, Verdict
    from .prompter import AnswerStream, AsyncAnswerStream, ExpertPrompter
    from .results import ExpertAnswer, ExpertIdentity, RequestRecord, Strategy, Usage
    from .runner import TooManyErrorsError
    from .session import ModelSession
    from .tokens import TiktokenCounter, TokenCounter, count_tokens

__version__ = "0.1.0"

__all__ = [
    "AnswerStream",
    "AsyncAnswerStream",
    "BudgetExceededError",
    "CompareResult",
    "ComparisonReport",
    "ConfigurationError",
    "DatasetItem",
    "Exemplar",
    "ExpertAnswer",
    "ExpertIdentity",
    "ExpertPrompter",
    "ExpertPromptingError",
    "FailedItem",
    "GenerateSummary",
    "Judge",
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
    "Strategy",
    "TemplateError",
    "TiktokenCounter",
    "TokenBudgetError",
    "TokenCounter",
    "TooManyErrorsError",
    "Usage",
    "Verdict",
    "__version__",
    "compare",
    "count_tokens",
    "default_exemplars",
    "load_exemplars",
]

# Public name -> the submodule that defines it (its home module).
_EXPORTS: dict[str, str] = {
    "AnswerStream": "prompter",
    "AsyncAnswerStream": "prompter",
    "BudgetExceededError": "errors",
    "CompareResult": "compare",
    "ComparisonReport": "judge",
    "ConfigurationError": "errors",
    "DatasetItem": "dataset",
    "Exemplar": "exemplars",
    "ExpertAnswer": "results",
    "ExpertIdentity": "results",
    "ExpertPrompter": "prompter",
    "ExpertPromptingError": "errors",
    "FailedItem": "dataset",
    "GenerateSummary": "generate",
    "Judge": "judge",
    "ModelPrice": "config",
    "ModelSession": "session",
    "PairVerdict": "judge",
    "PrompterConfig": "config",
    "RateLimitError": "errors",
    "RequestError": "errors",
    "RequestRecord": "results",
    "ResponseError": "errors",
    "RetryError": "errors",
    "RetryPolicy": "config",
    "RunBudget": "config",
    "Strategy": "results",
    "TemplateError": "errors",
    "TiktokenCounter": "tokens",
    "TokenBudgetError": "errors",
    "TokenCounter": "tokens",
    "TooManyErrorsError": "runner",
    "Usage": "results",
    "Verdict": "judge",
    "compare": "compare",
    "count_tokens": "tokens",
    "default_exemplars": "exemplars",
    "load_exemplars": "exemplars",
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


class _Package(types.ModuleType):
    """The package's module type: keeps the function ``compare`` when its submodule loads.

    The import system binds every submodule it loads as an attribute of the package, and the
    submodule ``compare`` shares its name with the public function it defines. Imported eagerly,
    the function was bound after the submodule and won; imported lazily, the submodule could load
    at any time and hide the function, so that binding is refused (the submodule stays reachable
    through ``sys.modules`` and ``from expertprompting.compare import ...``).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
