"""The report of a comparison: wins, ties, losses and score ratios, overall and per category."""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - Python 3.10
    pass

from pydantic import BaseModel, Field

if TYPE_CHECKING:  # types only: importing the judge must not import the SDK
    pass

from .verdicts import PairVerdict

__all__ = ["CategoryRow", "ComparisonReport", "build_report"]


class CategoryRow(BaseModel):
    category: str
    wins: int = 0
    ties: int = 0
    losses: int = 0
    unparsed: int = 0


class ComparisonReport(BaseModel):
    """A against B, from A's side."""

    a: str = Field(description="Name of system A (e.g. a strategy).")
    b: str = Field(description="Name of system B.")
    pairs: int = Field(description="Questions judged.")
    wins: int
    ties: int
    losses: int
    unparsed: int = Field(description="Questions with no readable verdict in either order.")
    failed: int = Field(
        default=0,
        description="Questions whose judging failed this run (see the errors file); a rerun "
        "judges them again. Not among the pairs.",
    )
    unparsed_verdicts: int = Field(description="Single verdicts that could not be read.")
    input_problems: int = Field(
        default=0,
        description="Rows of the answer files that could not be judged (not UTF-8, not JSON, "
        "no instruction or answer): skipped, listed in the errors file as file:line.",
    )
    adjusted_win_rate: float | None = Field(
        description="(wins + ties/2) / (wins + ties + losses): A's side; None with no scored pair."
    )
    score_sum_a: float
    score_sum_b: float
    score_ratio: float | None = Field(
        description="score_sum_a / score_sum_b: A's score as a share of B's (the paper's 96%)."
    )
    score_ratio_b_over_a: float | None
    position_consistency: float | None = Field(
        description="Share of pairs read in both orders whose two orders prefer the same answer."
    )
    categories: list[CategoryRow] = Field(default_factory=list)
    verdicts: list[PairVerdict] = Field(default_factory=list, description="Every raw verdict.")

    @property
    def nothing_read(self) -> bool:
        """Pairs were judged but not one verdict could be read: the judge ignores the format."""
        return self.pairs > 0 and self.unparsed == self.pairs


def build_report(a: str, b: str, pairs: Sequence[PairVerdict], failed: int = 0) -> ComparisonReport:
    """The figures of a comparison from its pair verdicts (``failed``: pairs not judged)."""
    count: dict[str, int] = defaultdict(int)
    by_category: dict[str, CategoryRow] = {}
    sum_a = sum_b = 0.0
    both = agree = 0
    for pair in pairs:
        count[pair.outcome] += 1
        if pair.category is not None:
            row = by_category.setdefault(pair.category, CategoryRow(category=pair.category))
            key = {"win": "wins", "tie": "ties", "loss": "losses"}.get(pair.outcome, "unparsed")
            setattr(row, key, getattr(row, key) + 1)
        if pair.score_a is not None and pair.score_b is not None:
            sum_a += pair.score_a
            sum_b += pair.score_b
        if pair.consistent is not None:
            both += 1
            agree += int(pair.consistent)
    scored = count["win"] + count["tie"] + count["loss"]
    return ComparisonReport(
        a=a,
        b=b,
        pairs=len(pairs),
        wins=count["win"],
        ties=count["tie"],
        losses=count["loss"],
        unparsed=count["unparsed"],
        failed=failed,
        unparsed_verdicts=sum(v.scores is None for p in pairs for v in p.verdicts),
        adjusted_win_rate=(count["win"] + count["tie"] / 2) / scored if scored else None,
        score_sum_a=sum_a,
        score_sum_b=sum_b,
        score_ratio=sum_a / sum_b if sum_b else None,
        score_ratio_b_over_a=sum_b / sum_a if sum_a else None,
        position_consistency=agree / both if both else None,
        categories=sorted(by_category.values(), key=lambda r: r.category),
        verdicts=list(pairs),
    )


# -- matching rows of two answer files ---------------------------------------------------------
