"""One error hierarchy: every error the library raises is an :class:`ExpertPromptingError`.

Each message ends with what to do next, so a user reading a traceback (or a one-line CLI
error) knows how to proceed without opening the source.
"""

from __future__ import annotations

__all__ = [
    "BudgetExceededError",
    "ConfigurationError",
    "ExpertPromptingError",
    "ExpertPromptingWarning",
    "RateLimitError",
    "RequestError",
    "ResponseError",
    "RetryError",
    "TemplateError",
    "TokenBudgetError",
    "UnknownModelWarning",
]


class ExpertPromptingError(Exception):
    """Base class of every error raised by :mod:`expertprompting`."""


class ConfigurationError(ExpertPromptingError, ValueError):
    """The prompter, a call or an input was set up wrongly (bad argument, empty instruction...)."""


class TemplateError(ExpertPromptingError, ValueError):
    """A prompt template failed to compile, misses a required variable, or failed to render."""


class TokenBudgetError(ExpertPromptingError):
    """A prompt cannot fit the model's context window or a configured per-prompt budget.

    Raised before any request is sent. ``needed`` and ``available`` carry the numbers.
    """

    def __init__(self, message: str, *, needed: int, available: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.available = available


class BudgetExceededError(ExpertPromptingError):
    """The next request would pass the prompter's run budget (tokens, requests or cost).

    Raised before the request is sent; nothing was spent on it.
    """

    def __init__(self, message: str, *, limit: str, used: float, requested: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.used = used
        self.requested = requested


class RetryError(ExpertPromptingError):
    """A request failed on every allowed attempt (timeouts, connection errors, 5xx...).

    ``attempts`` is how many were made; ``what`` how the last one failed, as a short clause
    ("timed out", "failed with HTTP 502", "could not connect"), when known; ``__cause__`` is
    the last underlying error.
    """

    def __init__(self, message: str, *, attempts: int, what: str | None = None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.what = what


class RateLimitError(RetryError):
    """The endpoint kept answering 429 (rate limited) until the retries ran out."""


class ResponseError(ExpertPromptingError):
    """The model's reply was unusable: empty, cut off by the length limit, or unparseable."""

    def __init__(
        self, message: str, *, reason: str, attempts: int = 1, retryable: bool = False
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.attempts = attempts
        self.retryable = retryable


class RequestError(ExpertPromptingError):
    """The endpoint refused the request (400, 401, 403, 404, 422...): retrying cannot help.

    ``status_code`` is the HTTP status; ``__cause__`` is the SDK's error.
    """

    def __init__(self, message: str, *, status_code: int | None) -> None:
        super().__init__(message)
        self.status_code = status_code


class ExpertPromptingWarning(UserWarning):
    """Base class of every warning :mod:`expertprompting` issues (filter them by this class)."""


class UnknownModelWarning(ExpertPromptingWarning):
    """A model the library has no facts about: it goes on with a stated assumption.

    ``model`` is the name, ``assumption`` what is done instead (a clause), ``setting``
    the prompter setting that replaces the assumption. The command line turns this into one
    ``note:`` line per model, naming its own option for the setting.
    """

    def __init__(self, message: str, *, model: str, assumption: str, setting: str) -> None:
        super().__init__(message)
        self.model = model
        self.assumption = assumption
        self.setting = setting
