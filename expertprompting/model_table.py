"""What we know about OpenAI models: context window, output limit and list price.

Looked up by the longest matching name prefix, so dated snapshots
(``gpt-4o-2024-08-06``) find their family. Every figure can be overridden on the prompter
(``context_window=``, ``max_tokens=``, ``prices=``); prices are the published list prices in USD
per one million tokens when this table was written, and change: check yours.
"""

from __future__ import annotations

from typing import NamedTuple

from .config import ModelPrice

__all__ = ["ModelInfo", "lookup_model"]


class ModelInfo(NamedTuple):
    context_window: int
    max_output_tokens: int
    price: ModelPrice | None
    # Reasoning models take ``max_completion_tokens`` instead of ``max_tokens``.
    uses_max_completion_tokens: bool = False


def _p(inp: float, out: float) -> ModelPrice:
    return ModelPrice(input=inp, output=out)


_TABLE: dict[str, ModelInfo] = {
    "gpt-5": ModelInfo(400_000, 128_000, _p(1.25, 10.00), True),
    "gpt-5-mini": ModelInfo(400_000, 128_000, _p(0.25, 2.00), True),
    "gpt-5-nano": ModelInfo(400_000, 128_000, _p(0.05, 0.40), True),
    "gpt-4.1": ModelInfo(1_047_576, 32_768, _p(2.00, 8.00)),
    "gpt-4.1-mini": ModelInfo(1_047_576, 32_768, _p(0.40, 1.60)),
    "gpt-4.1-nano": ModelInfo(1_047_576, 32_768, _p(0.10, 0.40)),
    "gpt-4o": ModelInfo(128_000, 16_384, _p(2.50, 10.00)),
    "gpt-4o-mini": ModelInfo(128_000, 16_384, _p(0.15, 0.60)),
    "chatgpt-4o-latest": ModelInfo(128_000, 16_384, _p(5.00, 15.00)),
    "gpt-4-turbo": ModelInfo(128_000, 4_096, _p(10.00, 30.00)),
    "gpt-4-32k": ModelInfo(32_768, 4_096, _p(60.00, 120.00)),
    "gpt-4": ModelInfo(8_192, 4_096, _p(30.00, 60.00)),
    "gpt-3.5-turbo": ModelInfo(16_385, 4_096, _p(0.50, 1.50)),
    "o1": ModelInfo(200_000, 100_000, _p(15.00, 60.00), True),
    "o1-mini": ModelInfo(128_000, 65_536, _p(1.10, 4.40), True),
    "o3": ModelInfo(200_000, 100_000, _p(2.00, 8.00), True),
    "o3-mini": ModelInfo(200_000, 100_000, _p(1.10, 4.40), True),
    "o4-mini": ModelInfo(200_000, 100_000, _p(1.10, 4.40), True),
}


def lookup_model(model: str) -> ModelInfo | None:
    """The table entry whose name is the longest prefix of ``model`` (None when none is)."""
    best: str | None = None
    for name in _TABLE:
        matches = model == name or model.startswith(name + "-")
        if matches and (best is None or len(name) > len(best)):
            best = name
    return _TABLE[best] if best else None
