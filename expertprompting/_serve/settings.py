"""``ServerSettings``: everything ``expertprompting serve`` can be told, checked in one place."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from .._io.session import explain_invalid
from .._method.errors import ConfigurationError

__all__ = ["MiB", "ServerSettings", "is_loopback"]

MiB = 1024 * 1024

# set by ServerSettings' own fields: the `prompter` dict may not set them again
_OWN_SETTINGS = frozenset({"model", "base_url", "api_key", "strategy", "cache"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: it may resolve anywhere


class ServerSettings(BaseModel):
    """The settings of the OpenAI-compatible server (``expertprompting serve``).

    One :class:`~expertprompting.ExpertPrompter` is made per model in ``models`` (an upstream
    model name, or ``"local"`` for the bundled model), with ``base_url``, ``api_key``,
    ``strategy``, ``cache`` and the extra prompter settings in ``prompter``. A bad value is a
    :class:`~expertprompting.ConfigurationError`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[str] = Field(min_length=1)
    """The models served: upstream names, ``"local"`` or ``"local:/path.gguf"``."""
    base_url: str | None = None
    """The upstream OpenAI-compatible endpoint (default ``OPENAI_BASE_URL``, else OpenAI)."""
    api_key: SecretStr | None = None
    """The upstream key (default ``OPENAI_API_KEY``); never sent to a client or logged."""
    host: str = "127.0.0.1"
    """The address to listen on; a non-loopback one needs ``api_keys``."""
    port: int = Field(default=8000, ge=0, le=65535)
    """The port to listen on (0: any free port)."""
    strategy: str = "expert"
    """The strategy of a request whose ``model`` names no strategy."""
    concurrency: int = Field(default=64, ge=1)
    """Calls answered at once (each is one or more upstream requests)."""
    max_queue: int | None = Field(default=None, ge=0)
    """Calls waiting for a slot, beyond which a request gets 429 (default 4 x concurrency)."""
    rpm: float | None = Field(default=None, gt=0)
    """Upstream requests per minute, per model (default: learned from the upstream's headers)."""
    tpm: float | None = Field(default=None, gt=0)
    """Upstream tokens per minute, per model."""
    cache: bool | Path = True
    """The identity cache: True in memory, False off, or a SQLite file path."""
    api_keys: list[SecretStr] = Field(default_factory=list)
    """Client keys; when given, every route but ``/health`` needs one."""
    cors_origins: list[str] = Field(default_factory=list)
    """Origins allowed to call from a browser page (CORS); empty: CORS off."""
    max_body_bytes: int = Field(default=MiB, ge=1024)
    """The largest request body accepted; a larger one gets 413."""
    grace_seconds: float = Field(default=30.0, ge=0)
    """On SIGTERM, how long in-flight requests may take to finish."""
    prompter: dict[str, Any] = Field(default_factory=dict)
    """More :class:`~expertprompting.ExpertPrompter` settings for every model (``timeout``,
    ``max_tokens``, ``strategies``, ``retry``...)."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigurationError(explain_invalid(exc, "server settings")) from None

    @field_validator("models")
    @classmethod
    def _distinct_models(cls, models: list[str]) -> list[str]:
        if any(not m.strip() for m in models):
            raise ValueError("a model name is empty")
        if len(set(models)) != len(models):
            raise ValueError("a model is named twice")
        return models

    @field_validator("prompter")
    @classmethod
    def _not_own_settings(cls, prompter: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(_OWN_SETTINGS & set(prompter))
        if clash:
            raise ValueError(f"set {', '.join(clash)} as server settings, not in prompter")
        return prompter

    @property
    def queue(self) -> int:
        """The queue's length: ``max_queue``, or 4 x ``concurrency``."""
        return 4 * self.concurrency if self.max_queue is None else self.max_queue

    def check_exposure(self) -> None:
        """Refuse to listen beyond this machine with no client keys."""
        if not self.api_keys and not is_loopback(self.host):
            raise ConfigurationError(
                f"refusing to serve on {self.host} with no client keys: anyone who can reach it "
                "could spend your upstream quota; set client keys (api_keys=) or listen on "
                "127.0.0.1"
            )
