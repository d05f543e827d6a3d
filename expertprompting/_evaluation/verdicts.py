"""Reading and scoring verdicts: the first line wins, both orders are averaged.

:func:`parse_verdict` reads a judge's two scores from the first line that has them (the
formats it reads are pinned by tests/test_verdict_parsing.py); :func:`score_pair` turns a
pair's two verdicts into the scores, the outcome and whether the orders agree.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - Python 3.10
    pass

from pydantic import BaseModel, Field

if TYPE_CHECKING:  # types only: importing the judge must not import the SDK
    pass


__all__ = ["Outcome", "PairVerdict", "Verdict", "parse_verdict", "score_pair"]

Outcome = Literal["win", "tie", "loss", "unparsed"]


# -- reading a verdict -------------------------------------------------------------------------
# A score is 1 to 10 (decimals allowed), never a piece of a longer number ("15", "10.5", "-3"),
# optionally "/10" or "out of 10"; "4/5" is another scale, not a score of 4.
def _score(name: str) -> str:
    return (
        rf"(?<![\d.\-])(?P<{name}>10(?:\.0+)?|[1-9](?:\.\d+)?)(?!\.?\d)"
        rf"(?P<{name}_of>\s*(?:/|out\s+of)\s*10(?!\.?\d))?(?!\s*/\s*\d)"
    )


# The asked-for form on one line: "8 7", "8, 7", "8/10 and 7/10", "Scores: 8 vs 7", "[8, 7]";
# a third number after the pair means it is something else ("8, 7, 9": three criteria).
_PAIR = re.compile(
    rf"^[^\w\n]*(?:[^:\n]{{0,60}}:[^\w\n]*)?{_score('one')}"
    rf"\s*(?:[,;|&]|\band\b|\bvs\b\.?|\bversus\b|[-\u2013\u2014])?\s*{_score('two')}"
    r"(?!\s*[,;|]?\s*\d)",
    re.IGNORECASE,
)
_LABEL_WORDS = "assistant|answer|response"
_LABEL = rf"(?:{_LABEL_WORDS})\s*#?\s*"
# "Assistant 1 ... 8": the gap before the score holds no digit and no other assistant's label.
_LABELLED = re.compile(
    rf"\b{_LABEL}(?P<who>[12])(?!\d)(?P<gap>(?:(?!{_LABEL}\d)\D){{0,60}}?){_score('s')}",
    re.IGNORECASE,
)
# What makes "Assistant 1 ... 8" a score rather than a count ("Assistant 1 listed 7 points"):
# the words between label and number, or a scoring verb earlier in the sentence.
_GAP_SAYS_SCORE = re.compile(
    r"[:=(\-\u2013\u2014]\s*$|\bscor|\brat(?:e|ed|es|ing)\b|\bgrade|\bgets?\b|\bgot\b|\breceiv|\bearn"
    r"|\bdeserv|\bmerit|\baward|\bgiven\b",
    re.IGNORECASE,
)
_SENTENCE_SAYS_SCORE = re.compile(
    r"\b(?:scor|rat(?:e|ed|es|ing)\b|grad(?:e|ed|es|ing)\b|giv|gave|award|assign)", re.IGNORECASE
)
# ...and it ends there: "Assistant 1: 3 tips" is a count, "Assistant 1: 8 points" a score.
_AFTER_SCORE = re.compile(
    r"[ \t]*(?:$|[^\w\s]|(?:points?|and|but|while|whereas|for|because|as|since|overall|vs"
    rf"|versus|{_LABEL_WORDS})\b)",
    re.IGNORECASE | re.MULTILINE,
)
# "1. 9" then "2. 8" (what the bundled model writes), or the two scores on lines of their own;
# the score ends its item or is followed by punctuation, never by more words ("1. 5 tips").
_ITEM = re.compile(r"^[^\w\n]*(?P<n>\d+)\s*[.):]\s")
_ITEM_SCORE = re.compile(
    rf"^[^\w\n]*(?P<n>[1-3])\s*[.):]\s*{_score('s')}\s*(?:$|[^\w\s]|points?\b)", re.IGNORECASE
)
_BARE_SCORE = re.compile(rf"^[^\w\n]*{_score('s')}[^\w\n]*$", re.IGNORECASE)


def _plain(text: str) -> str:
    """Without Markdown emphasis and code marks, which judges wrap around anything."""
    return re.sub(r"[*_`]", "", text)


def _labelled(text: str) -> tuple[float, float] | None:
    found: dict[str, float] = {}
    for match in _LABELLED.finditer(text):
        who = match["who"]
        if who in found:
            continue
        # the sentence before the label; a bounded look-back keeps long replies linear
        sentence = re.split(r"[.!?]\s|\n", text[max(0, match.start() - 200) : match.start()])[-1]
        says_score = (
            match["s_of"]
            or _GAP_SAYS_SCORE.search(match["gap"])
            or _SENTENCE_SAYS_SCORE.search(sentence)
        )
        if says_score and _AFTER_SCORE.match(text, match.end()):
            found[who] = float(match["s"])
    if "1" in found and "2" in found:
        return found["1"], found["2"]
    return None


def _numbered(lines: Sequence[str], start: int) -> tuple[float, float] | None:
    """Items "1. 9" at ``lines[start]`` and "2. 8" as the next item (explanations between)."""
    first = _ITEM_SCORE.match(lines[start])
    if not first or first["n"] != "1":
        return None
    later = (i for i in range(start + 1, len(lines)) if _ITEM.match(lines[i]))
    second_at, third_at = next(later, None), next(later, None)
    second = _ITEM_SCORE.match(lines[second_at]) if second_at is not None else None
    if not second or second["n"] != "2":
        return None
    if third_at is not None and _ITEM_SCORE.match(lines[third_at]):
        return None  # a third scored item: criteria, not two answers
    return float(first["s"]), float(second["s"])


def _bare(lines: Sequence[str], start: int) -> tuple[float, float] | None:
    """The two scores alone on two lines from ``lines[start]`` (and no third below them)."""
    bare = [_BARE_SCORE.match(line) for line in lines[start : start + 3]]
    if len(bare) >= 2 and bare[0] and bare[1] and not (len(bare) > 2 and bare[2]):
        return float(bare[0]["s"]), float(bare[1]["s"])
    return None


def parse_verdict(text: str | None) -> tuple[float, float] | None:
    """The two scores of a verdict, (Assistant 1, Assistant 2), or None when they cannot be read.

    The first line wins: the judge is asked to write the pair there ("8 7", "8, 7", "8/10 and
    7/10", "Scores: 8 vs 7", "Assistant 1: 8, Assistant 2: 7"), so numbers in the explanation
    never override it. Only when the first line holds no pair are the scores looked for
    elsewhere, in this order: a numbered list starting on the first line ("1. 9" then "2. 8"),
    the two scores alone on the first two lines, labelled scores anywhere ("Assistant 1: 8/10"
    ... "Assistant 2 gets 7"), a numbered list anywhere. Scores must be 1 to 10; a lead-in line
    such as "Scores:" is skipped.

    >>> parse_verdict("8 7\\nAssistant 1 listed 3 points while Assistant 2 gave 5.")
    (8.0, 7.0)
    >>> parse_verdict("Assistant 1: 6/10\\nAssistant 2: 9/10")
    (6.0, 9.0)
    >>> parse_verdict("1. 9\\n2. 8")
    (9.0, 8.0)
    >>> parse_verdict("Both answers are good.") is None
    True
    """
    if not text or not text.strip():
        return None
    text = _plain(text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    start = 0
    if len(lines) > 1 and lines[0].endswith(":") and not re.search(r"\d", lines[0]):
        start = 1  # "Here are my scores:" and the scores below it
    paired = _PAIR.match(lines[start])
    if paired:
        return float(paired["one"]), float(paired["two"])
    items = ((i, _ITEM_SCORE.match(line)) for i, line in enumerate(lines))
    first_item = next((i for i, item in items if item and item["n"] == "1"), None)
    return (
        _labelled(lines[start])
        or _numbered(lines, start)
        or _bare(lines, start)
        or _labelled(text)
        or (_numbered(lines, first_item) if first_item is not None else None)
    )


class Verdict(BaseModel):
    """One judgement of one pair in one order."""

    order: Literal["AB", "BA"] = Field(description="AB: A was shown as Assistant 1.")
    raw: str | None = Field(description="The judge's whole reply (None if no reply came).")
    scores: tuple[float, float] | None = Field(description="(Assistant 1, Assistant 2).")
    attempts: int = 1
    error: str | None = None

    def for_a_and_b(self) -> tuple[float, float] | None:
        """(A's score, B's score), whatever the order."""
        if self.scores is None:
            return None
        first, second = self.scores
        return (first, second) if self.order == "AB" else (second, first)


class PairVerdict(BaseModel):
    """Both orders of one question, and what they add up to."""

    id: str
    question: str
    category: str | None = None
    verdicts: list[Verdict]
    score_a: float | None = None
    score_b: float | None = None
    outcome: Outcome = "unparsed"
    consistent: bool | None = Field(
        default=None, description="Both orders prefer the same answer (None: not both read)."
    )
    judge_model: str | None = Field(
        default=None, description="The judge that wrote the verdicts (None in older files)."
    )
    length_a: int | None = Field(
        default=None,
        description="A's answer in tokens (None in older files: recounted from the answers).",
    )
    length_b: int | None = Field(default=None, description="B's answer in tokens.")


def _preference(a: float, b: float) -> int:
    return (a > b) - (a < b)


def score_pair(
    verdicts: Sequence[Verdict],
) -> tuple[float | None, float | None, Outcome, bool | None]:
    """Mean scores of A and B over the readable orders, the outcome for A, and consistency."""
    read = [v.for_a_and_b() for v in verdicts]
    scores = [s for s in read if s is not None]
    if not scores:
        return None, None, "unparsed", None
    a = sum(s[0] for s in scores) / len(scores)
    b = sum(s[1] for s in scores) / len(scores)
    outcome: Outcome = "win" if a > b else "loss" if a < b else "tie"
    consistent = None
    if len(scores) == 2:
        consistent = _preference(*scores[0]) == _preference(*scores[1])
    return a, b, outcome, consistent
