"""Exact metrics: questions with a gold answer are scored against it, with no judge.

A question row has a gold answer when it has an ``answer``: with ``choices`` it is multiple
choice (the answer is the right option's letter, its text, or its 0-based index), without them a
short exact answer (a number, or one line of at most ten words; a longer ``answer`` is shown to
the judge as a reference answer instead). Each reply is read by
:mod:`~expertprompting._evaluation.extract`'s documented rules (``extract_choice``,
``extract_exact``) and is **right**, **wrong** or **unreadable**.

**Accuracy** is ``correct / (correct + wrong + unreadable)``: an unreadable reply is counted,
never guessed, and counts as not right. A reply the rules cannot read did not give the asked
answer in a readable form, and leaving such replies out would reward a strategy for rambling
past the questions it gets wrong. The unreadable count is shown next to every accuracy, so a
reader can see how much of a difference is format rather than knowledge.

Every accuracy has a 95% paired-bootstrap interval over the questions (``stats.paired_bootstrap``,
seeded), and each strategy is compared with the first one (the baseline) on the questions both
answered: the difference of accuracies with its bootstrap interval (both strategies' replies to
a question are resampled together), and the exact sign test of the questions one got right and
the other did not (McNemar's test).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .._datasets.items import (
    DatasetItem,
    InputProblem,
    choice_letter,
    read_items,
    read_rows,
)
from .extract import extract_choice, extract_exact
from .stats import Interval, paired_bootstrap, sign_test

__all__ = [
    "SHORT_ANSWER_WORDS",
    "AccuracyDifference",
    "AccuracyReport",
    "AccuracyRow",
    "GoldScore",
    "accuracy_report",
    "every_row_has_gold",
    "has_gold",
    "score_answers",
    "score_reply",
]


class GoldScore(BaseModel):
    """One reply to a question with a gold answer, scored."""

    model_config = ConfigDict(frozen=True)

    id: str
    category: str | None = None
    correct: bool | None = Field(description="True right, False wrong, None unreadable.")


def _gold_answer(row: Mapping[str, Any]) -> str | int | float | None:
    answer = row.get("answer")
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        return None
    if isinstance(answer, str) and not answer.strip():
        return None
    return answer


def _choices(row: Mapping[str, Any]) -> list[str] | None:
    choices = row.get("choices")
    if isinstance(choices, list) and len(choices) >= 2 and all(isinstance(c, str) for c in choices):
        return choices
    return None


SHORT_ANSWER_WORDS = 10
"""Most words a gold ``answer`` without ``choices`` may have to be matched exactly (on one
line); a longer one serves as the judge's reference answer instead."""


def _short(answer: str) -> bool:
    text = answer.strip()
    return "\n" not in text and len(text.split()) <= SHORT_ANSWER_WORDS


def has_gold(row: Mapping[str, Any]) -> bool:
    """Whether a question row can be scored without a judge.

    ``row`` is a row of a question file (or a :class:`DatasetItem`'s ``extra``, which holds the
    same fields): it has an ``answer`` that is a number or a short string (one line, at most
    :data:`SHORT_ANSWER_WORDS` words), or, when it has ``choices``, an answer that names one of
    them. Not for rows of an answers file, whose ``answer`` is the model's reply.
    """
    answer = _gold_answer(row)
    if answer is None:
        return False
    if row.get("choices") is None:
        # a long answer is a model answer to compare with, not one to match: a reference
        return not isinstance(answer, str) or _short(answer)
    choices = _choices(row)
    return choices is not None and choice_letter(choices, answer) is not None


def score_reply(reply: str | None, question: Mapping[str, Any]) -> bool | None:
    """Whether ``reply`` gives the gold answer of ``question`` (a row with :func:`has_gold`);
    None when the reply cannot be read."""
    answer = _gold_answer(question)
    if answer is None:
        raise ValueError("the question has no gold answer (an 'answer' string or number)")
    choices = _choices(question)
    if choices is not None:
        gold = choice_letter(choices, answer)
        got = extract_choice(reply, choices)
        return None if got is None or gold is None else got == gold
    # a JSON number is compared as written ("42", "0.5"): extract_exact reads it as a number
    return extract_exact(reply, answer if isinstance(answer, str) else repr(answer))


def _category(item: DatasetItem) -> str | None:
    category = item.extra.get("category")
    return category if isinstance(category, str) and category else None


def every_row_has_gold(questions_file: str | os.PathLike[str]) -> bool:
    """True when the file has usable rows and every one has a gold answer (``compare``'s
    ``--metric auto`` picks accuracy then). Unusable rows are not counted either way."""
    found = False
    for item in read_items(questions_file):
        if isinstance(item, InputProblem):
            continue
        if not has_gold(item.extra):
            return False
        found = True
    return found


def score_answers(
    answers_file: str | os.PathLike[str],
    questions_file: str | os.PathLike[str],
    *,
    on_problem: Callable[[InputProblem], None] | None = None,
) -> list[GoldScore]:
    """Score an answers file (``generate``'s output) against the gold answers of its questions.

    Rows are matched by id (an item's own, else the content hash ``generate`` gives it), in the
    question file's order. Questions without a gold answer, and questions with no answer row
    (failed or not yet generated), are left out. A row of either file that cannot be read goes
    to ``on_problem`` (file and line) and is skipped. An answer row whose ``answer`` is not a
    string is unreadable.
    """
    questions: dict[str, DatasetItem] = {}
    for item in read_items(questions_file):
        if isinstance(item, InputProblem):
            if on_problem is not None:
                on_problem(item)
        elif has_gold(item.extra) and item.key not in questions:
            questions[item.key] = item
    replies: dict[str, str | None] = {}
    where = str(answers_file)
    for row in read_rows(answers_file, what="answers file"):
        if isinstance(row, InputProblem):
            if on_problem is not None:
                on_problem(row)
            continue
        value = row.value
        if not isinstance(value, dict) or value.get("id") is None:
            if on_problem is not None:
                on_problem(InputProblem(where, row.line, "not an answer row (no 'id')"))
            continue
        key = str(value["id"])
        if key in questions and key not in replies:
            answer = value.get("answer")
            replies[key] = answer if isinstance(answer, str) else None
    return [
        GoldScore(id=key, category=_category(item), correct=score_reply(replies[key], item.extra))
        for key, item in questions.items()
        if key in replies
    ]


# -- the report --------------------------------------------------------------------------------
class AccuracyRow(BaseModel):
    """One strategy's accuracy, overall (``category`` None) or on one category."""

    strategy: str
    category: str | None = None
    correct: int
    wrong: int
    unreadable: int
    accuracy: float | None = Field(description="correct / (correct + wrong + unreadable).")
    interval: Interval | None = Field(description="95% paired-bootstrap interval of accuracy.")

    @property
    def questions(self) -> int:
        """Questions scored: right, wrong and unreadable."""
        return self.correct + self.wrong + self.unreadable


class AccuracyDifference(BaseModel):
    """A strategy against the baseline on the questions both answered."""

    strategy: str
    baseline: str
    questions: int = Field(description="Questions both strategies have a scored reply to.")
    better: int = Field(description="Questions the strategy got right and the baseline not.")
    worse: int = Field(description="Questions the baseline got right and the strategy not.")
    difference: Interval | None = Field(
        description="Accuracy of the strategy minus the baseline's, with its interval."
    )
    p_value: float | None = Field(
        description="Exact sign test of better against worse (McNemar); None if both are 0."
    )

    def verdict(self) -> str:
        """In plain words: is the difference distinguishable from none?

        Both tests must agree: the bootstrap interval leaves out 0 *and* the sign test's
        p-value is below ``1 - level``. With few questions where the two differ, a percentile
        interval can leave out 0 while the exact test cannot tell (4 to 0 has p = 0.125); the
        exact test is then the one to believe.
        """
        interval = self.difference
        if interval is None:
            return "no question answered by both, so nothing to compare"
        level = f"{interval.level:.0%}"
        significant = self.p_value is not None and self.p_value < 1 - interval.level
        if interval.excludes(0) and significant:
            side = "more" if interval.low > 0 else "less"
            return f"{side} accurate than {self.baseline} at the {level} level"
        if interval.excludes(0):
            return (
                f"not distinguishable from {self.baseline} at the {level} level: the interval "
                f"leaves out no difference, but only {self.better + self.worse} questions "
                "differ, too few for the sign test"
            )
        return f"not distinguishable from {self.baseline} at the {level} level"


def _share_right(sample: Sequence[bool | None]) -> float | None:
    return sum(c is True for c in sample) / len(sample) if sample else None


def _difference(sample: Sequence[tuple[bool | None, bool | None]]) -> float | None:
    if not sample:
        return None
    return sum((a is True) - (b is True) for a, b in sample) / len(sample)


class AccuracyReport(BaseModel):
    """Accuracy per strategy (overall, then per category) and each strategy against the first."""

    rows: list[AccuracyRow]
    differences: list[AccuracyDifference] = Field(default_factory=list)
    seed: int = 0

    def markdown(self) -> str:
        """A table of accuracies with intervals, then a line per strategy against the first."""
        lines = [
            "| strategy | category | correct | wrong | unreadable | accuracy [95% interval] |",
            "|---|---|---|---|---|---|",
        ]
        for row in self.rows:
            figure = "n/a" if row.accuracy is None else f"{row.accuracy:.1%}"
            if row.interval is not None:
                figure += f" [{row.interval.low:.1%}, {row.interval.high:.1%}]"
            lines.append(
                f"| {row.strategy} | {row.category or 'all'} | {row.correct} | {row.wrong} "
                f"| {row.unreadable} | {figure} |"
            )
        lines += [
            "",
            "Accuracy is correct / (correct + wrong + unreadable): a reply whose answer cannot "
            "be read is counted as not right, never guessed. Intervals are 95% paired-bootstrap "
            f"intervals over the questions (seed {self.seed}).",
        ]
        if self.differences:
            lines.append("")
        for diff in self.differences:
            if diff.difference is None:
                lines.append(f"- **{diff.strategy} vs {diff.baseline}**: {diff.verdict()}.")
                continue
            d = diff.difference
            p = "n/a" if diff.p_value is None else f"{diff.p_value:.3g}"
            lines.append(
                f"- **{diff.strategy} vs {diff.baseline}**: accuracy difference "
                f"{d.estimate * 100:+.1f} points [{d.low * 100:+.1f}, {d.high * 100:+.1f}] over "
                f"{diff.questions} questions ({diff.strategy} alone right on {diff.better}, "
                f"{diff.baseline} alone right on {diff.worse}; sign test p = {p}): "
                f"{diff.verdict()}."
            )
        return "\n".join(lines) + "\n"


def _row(
    strategy: str, category: str | None, scores: Sequence[GoldScore], seed: int, resamples: int
) -> AccuracyRow:
    marks = [s.correct for s in scores]
    return AccuracyRow(
        strategy=strategy,
        category=category,
        correct=sum(m is True for m in marks),
        wrong=sum(m is False for m in marks),
        unreadable=sum(m is None for m in marks),
        accuracy=_share_right(marks),
        interval=paired_bootstrap(marks, _share_right, resamples=resamples, seed=seed),
    )


def accuracy_report(
    scores_by_strategy: Mapping[str, Sequence[GoldScore]],
    *,
    seed: int = 0,
    resamples: int = 2000,
) -> AccuracyReport:
    """Accuracy of each strategy with intervals, and each against the first (the baseline).

    Rows: every strategy overall, then every category (sorted) for every strategy. The
    difference of a strategy from the baseline is taken on the questions (ids) both have a
    score for, so a failed answer on one side does not count against the other.
    """
    rows = [
        _row(name, None, scores, seed, resamples) for name, scores in scores_by_strategy.items()
    ]
    categories = sorted(
        {s.category for scores in scores_by_strategy.values() for s in scores if s.category}
    )
    for category in categories:
        for name, scores in scores_by_strategy.items():
            inside = [s for s in scores if s.category == category]
            if inside:
                rows.append(_row(name, category, inside, seed, resamples))
    differences = []
    names = list(scores_by_strategy)
    if names:
        baseline = {s.id: s.correct for s in scores_by_strategy[names[0]]}
        for name in names[1:]:
            pairs = [
                (s.correct, baseline[s.id]) for s in scores_by_strategy[name] if s.id in baseline
            ]
            better = sum(a is True and b is not True for a, b in pairs)
            worse = sum(b is True and a is not True for a, b in pairs)
            differences.append(
                AccuracyDifference(
                    strategy=name,
                    baseline=names[0],
                    questions=len(pairs),
                    better=better,
                    worse=worse,
                    difference=paired_bootstrap(pairs, _difference, resamples=resamples, seed=seed),
                    p_value=sign_test(better, worse),
                )
            )
    return AccuracyReport(rows=rows, differences=differences, seed=seed)
