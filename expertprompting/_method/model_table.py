"""What we know about OpenAI models: context window, output limit and list price.

A name is looked up as follows (:func:`lookup_model`):

1. the name itself, when it is in the table;
2. a dated snapshot, ``<name>-YYYY-MM-DD`` as providers return it in replies
   (``gpt-4o-mini-2024-07-18``), is its base entry, price included;
3. any other name that extends a table name (``o3-pro``, ``gpt-4o-audio-preview``) takes the
   limits of the longest such family (its context window, output cap and ``max_tokens``
   parameter), but no price: variants are priced differently (``o3-pro`` costs ten times
   ``o3``), and an unknown price is ``None``, never a wrong number.

Every figure can be overridden on the prompter (``context_window=``, ``max_tokens=``,
``prices=``); prices are the published list prices in USD per one million tokens when this
table was written, and change: check yours.
"""

from __future__ import annotations

import re
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


_DATED = re.compile(r"^(?P<base>.+)-\d{4}-\d{2}-\d{2}$")


def lookup_model(model: str) -> ModelInfo | None:
    """What the table knows of ``model`` (None: nothing); see the module's lookup rules."""
    if model in _TABLE:
        return _TABLE[model]
    dated = _DATED.match(model)
    if dated and dated["base"] in _TABLE:
        return _TABLE[dated["base"]]
    family = max((n for n in _TABLE if model.startswith(n + "-")), key=len, default=None)
    return _TABLE[family]._replace(price=None) if family else None
