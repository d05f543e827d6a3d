"""expertprompting: ExpertPrompting (Xu et al. 2023) as a library.

>>> from expertprompting import ExpertPrompter
>>> ep = ExpertPrompter(model="gpt-4o-mini")                      # doctest: +SKIP
>>> r = ep.answer("Explain how vaccines train the immune system.")  # doctest: +SKIP
>>> print(r.expert_identity, r.answer, sep="\\n\\n")                   # doctest: +SKIP
"""

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
