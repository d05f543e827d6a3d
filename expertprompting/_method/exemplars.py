"""In-context exemplars: the pool, loading it, and choosing the best few for an instruction.

Choice is in two steps, both pure:

1. rank the pool by lexical relevance to the instruction (TF-IDF cosine over word stems, no
   heavy dependency), then
2. walk down that ranking keeping each exemplar whose addition still fits the token budget of
   the *whole rendered prompt*, skipping (not stopping at) one that does not, until k are kept.

The kept exemplars are shown least relevant first, so the most relevant one sits right above the
new instruction.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigurationError

__all__ = ["Exemplar", "ExemplarIndex", "default_exemplars", "load_exemplars", "select_exemplars"]


class Exemplar(BaseModel):
    """An instruction and the second-person description of the ideal expert for it."""

    model_config = ConfigDict(frozen=True)

    instruction: str = Field(min_length=1)
    description: str = Field(min_length=1)
    domain: str | None = None

    @field_validator("instruction", "description")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


def load_exemplars(path: str | os.PathLike[str]) -> list[Exemplar]:
    """Read exemplars from a JSONL file: one ``{"instruction": ..., "description": ...}`` a line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigurationError(f"Cannot read exemplar file {path}: {exc}.") from exc
    pool: list[Exemplar] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            pool.append(Exemplar.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise ConfigurationError(
                f"{path}:{number}: not a valid exemplar ({exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0]}). Each line must be a JSON object with non-empty "
                '"instruction" and "description".'
            ) from exc
    if not pool:
        raise ConfigurationError(f"Exemplar file {path} holds no exemplars.")
    return pool


@lru_cache(maxsize=1)
def _default_pool() -> tuple[Exemplar, ...]:
    text = resources.files("expertprompting").joinpath("data/exemplars.jsonl").read_text("utf-8")
    return tuple(Exemplar.model_validate_json(line) for line in text.splitlines() if line.strip())


def default_exemplars() -> list[Exemplar]:
    """The library's own pool: 16 exemplars across distinct domains."""
    return list(_default_pool())


_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    " ".join(
        [
            "a about all an and any are as at be been but by can could do does for from give",
            "how i if in into is it its me my of on one or our please should so some such",
            "than that the their them then there these they this those three to two up us was",
            "we what when where which who why will with would write you your explain describe",
            "list following",
        ]
    ).split()
)


def _stem(word: str) -> str:
    for suffix in ("ing", "ies", "ed", "es", "s", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def _terms(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1]


class ExemplarIndex:
    """TF-IDF vectors of a pool, built once, to rank exemplars by relevance to an instruction.

    An exemplar's instruction counts twice as much as its description.
    """

    def __init__(self, pool: Sequence[Exemplar]) -> None:
        self.pool = list(pool)
        docs = [
            Counter(_terms(e.instruction) * 2 + _terms(e.description) + _terms(e.domain or ""))
            for e in self.pool
        ]
        df: Counter[str] = Counter(term for doc in docs for term in doc)
        n = len(docs)
        self._idf = {term: math.log((1 + n) / (1 + count)) + 1 for term, count in df.items()}
        self._vectors = [self._weigh(doc) for doc in docs]

    def _weigh(self, counts: Counter[str]) -> dict[str, float]:
        vector = {t: c * self._idf.get(t, 0.0) for t, c in counts.items()}
        norm = math.sqrt(sum(v * v for v in vector.values())) or 1.0
        return {t: v / norm for t, v in vector.items()}

    def scores(self, text: str) -> list[float]:
        """Cosine similarity of ``text`` to each exemplar, in pool order."""
        query = self._weigh(Counter(_terms(text)))
        return [sum(w * vec.get(t, 0.0) for t, w in query.items()) for vec in self._vectors]

    def ranked(self, text: str) -> list[Exemplar]:
        """The pool, most relevant first (ties keep pool order)."""
        scores = self.scores(text)
        order = sorted(range(len(self.pool)), key=lambda i: (-scores[i], i))
        return [self.pool[i] for i in order]


def select_exemplars(
    ranked: Iterable[Exemplar],
    k: int,
    prompt_tokens: Callable[[Sequence[Exemplar]], int],
    budget: int,
) -> list[Exemplar]:
    """Keep up to ``k`` of ``ranked`` whose rendered prompt fits ``budget`` tokens.

    ``prompt_tokens(exemplars)`` is the exact token count of the whole prompt shown with those
    exemplars (in display order). An exemplar that does not fit is skipped, and the next one
    tried. Returns them in display order: least relevant first.
    """
    kept: list[Exemplar] = []
    for exemplar in ranked:
        if len(kept) >= k:
            break
        trial = [exemplar, *kept]
        if prompt_tokens(trial) <= budget:
            kept = trial
    return kept
