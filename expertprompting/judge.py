"""A position-fair pairwise judge, and the report of a comparison.

The protocol is the paper's (after Vicuna's): a judge model sees a question and two answers and
writes a 1-10 score for each on its first line, then an explanation. Judges favour a position,
so every pair is judged in **both orders** and each answer's score is the mean of its two
scores. From A's side, a pair is a **win** when A's mean is higher, a **loss** when lower, and a
**tie** when the means are equal (they are multiples of 0.5, so "equal" is exact). A judge that
always prefers whichever answer comes second therefore produces only ties.

A verdict that cannot be read is asked for once more; if it still cannot be read it is recorded
as unparsed. A pair with no readable order counts as unparsed, never as a win, loss or tie; a
pair with one readable order is scored from that order alone. A pair whose request failed (an
HTTP error after the retries, a budget refusal) is not a verdict at all: it goes to the errors
file with its reason, counts as failed, and a rerun judges it again.

Parsing (:func:`parse_verdict`), scoring (:func:`score_pair`) and the report
(:func:`build_report`) are pure functions; :class:`Judge` sends the requests through the same
drivers, retries, rate limits and budget as everything else.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from .core import ChatRequest, plan_room
from .dataset import ResultWriter, read_done_ids, repair_jsonl
from .errors import ConfigurationError, ExpertPromptingError
from .generate import default_errors_path
from .progress import Progress
from .runner import RunStats, check_concurrency, run_sync
from .templating import TemplateSource, load_template

__all__ = [
    "CategoryRow",
    "ComparisonReport",
    "Judge",
    "PairVerdict",
    "Verdict",
    "build_report",
    "match_rows",
    "parse_verdict",
    "score_pair",
]

Outcome = Literal["win", "tie", "loss", "unparsed"]

_NUMBER = r"(10(?:\.0+)?|[1-9](?:\.\d+)?)"
_LABELLED = re.compile(
    rf"assistant\s*1\D{{0,12}}?{_NUMBER}(?:\s*/\s*10)?.*?assistant\s*2\D{{0,12}}?{_NUMBER}",
    re.IGNORECASE | re.DOTALL,
)
_OUT_OF = r"(?:\s*/\s*10)?"
_LABEL = r"(?:[A-Za-z ]{1,20}:\s*)?"  # "Scores: 8 7"
_PAIR = re.compile(
    rf"^\W*{_LABEL}{_NUMBER}{_OUT_OF}\s*(?:[,;/|]|\s|and|vs\.?)\s*{_NUMBER}{_OUT_OF}\b"
)


def parse_verdict(text: str | None) -> tuple[float, float] | None:
    """The two scores of a verdict, or None when they cannot be read.

    Accepts "8 7", "8, 7", "8/10 7/10", "Assistant 1: 8 Assistant 2: 7" and the like, on the
    first non-empty line (the labelled form anywhere in the text). Scores must be 1 to 10.

    >>> parse_verdict("8 7\\nAssistant 1 was more precise.")
    (8.0, 7.0)
    >>> parse_verdict("Assistant 1: 6/10, Assistant 2: 9/10") is not None
    True
    >>> parse_verdict("Both answers are good.") is None
    True
    """
    if not text or not text.strip():
        return None
    labelled = _LABELLED.search(text)
    if labelled:
        return float(labelled.group(1)), float(labelled.group(2))
    first = next((line for line in text.splitlines() if line.strip()), "")
    first = first.strip().strip("*#`").strip()
    paired = _PAIR.match(first)
    if paired:
        return float(paired.group(1)), float(paired.group(2))
    return None


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
def _read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    file = Path(path)
    try:
        handle = file.open(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"Cannot read the answers file {path}: {exc.strerror}.") from exc
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigurationError(f"{path}:{number} is not valid JSON ({exc.msg}).") from exc
            if isinstance(row, dict):
                yield row


def _category(*rows: Mapping[str, Any]) -> str | None:
    for row in rows:
        extra = row.get("extra")
        for source in (row, extra if isinstance(extra, Mapping) else {}):
            value = source.get("category")
            if isinstance(value, str) and value:
                return value
    return None


def match_rows(
    a_path: str | os.PathLike[str], b_path: str | os.PathLike[str]
) -> list[tuple[str, str, str | None, str, str]]:
    """``(id, question, category, answer_a, answer_b)`` for rows present in both files.

    Rows are matched by ``id``; files without ids are matched by instruction (and input).
    """

    def key(row: Mapping[str, Any]) -> str:
        if row.get("id") is not None:
            return str(row["id"])
        return json.dumps([row.get("instruction"), row.get("input") or ""])

    b_rows = {key(row): row for row in _read_jsonl(b_path)}
    matched = []
    for row in _read_jsonl(a_path):
        other = b_rows.get(key(row))
        if other is None or not isinstance(row.get("answer"), str):
            continue
        question = str(row.get("instruction", ""))
        if row.get("input"):
            question += "\n\n" + str(row["input"])
        matched.append(
            (key(row), question, _category(row, other), row["answer"], str(other.get("answer", "")))
        )
    return matched


# -- the judge ---------------------------------------------------------------------------------
class Judge:
    """Judges pairs of answers with a model, in both orders (see the module docstring).

    ``Judge(model="gpt-4o", ...)`` takes the same connection and budget settings as
    :class:`~expertprompting.ExpertPrompter` (``base_url``, ``api_key``, ``client``,
    ``retry``, ``max_total_tokens``...); ``template=`` replaces the judge prompt (variables
    ``question``, ``answer_1``, ``answer_2``). Verdicts use temperature 0 unless set.
    ``cache=`` (off by default; a path for a SQLite file) reuses verdicts of identical
    requests, across runs and comparisons.
    """

    def __init__(
        self,
        model: str = "gpt-4o",
        *,
        template: TemplateSource | None = None,
        max_verdict_tokens: int = 400,
        **settings: Any,
    ) -> None:
        from .prompter import ExpertPrompter

        settings.setdefault("temperature", 0.0)
        settings.setdefault("cache", False)
        self.prompter = ExpertPrompter(model=model, **settings)
        self.template = load_template("judge", template)
        self.max_verdict_tokens = max_verdict_tokens

    @property
    def model(self) -> str:
        return self.prompter.config.model

    def request(self, question: str, first: str, second: str) -> ChatRequest:
        """The exact request judging ``first`` (Assistant 1) against ``second``."""
        planner = self.prompter.planner
        text = self.template.render(question=question, answer_1=first, answer_2=second)
        messages = [{"role": "user", "content": text}]
        prompt = self.prompter.counter.count_messages(messages)
        max_tokens = plan_room(planner, prompt, self.max_verdict_tokens, "verdict")
        return ChatRequest(
            "verdict",
            self.model,
            messages,  # type: ignore[arg-type]
            prompt,
            max_tokens,
            planner.max_tokens_param,
            planner.sampling,
            extra=planner.extra,
        )

    async def _verdict(
        self, driver: Any, request: ChatRequest, order: Literal["AB", "BA"]
    ) -> Verdict:
        raw: str | None = None
        for attempt in (1, 2):  # an unreadable verdict is asked for once more
            sent = request.for_attempt(attempt)
            try:
                # the first ask may come from the cache; the second always goes out afresh
                fetch = driver.fetch if attempt == 1 else driver.execute
                exchange = await fetch(sent)
            except ExpertPromptingError as exc:
                return Verdict(
                    order=order,
                    raw=raw,
                    scores=None,
                    attempts=attempt,
                    error=" ".join(str(exc).split()),
                )
            raw = exchange.completion.content
            scores = parse_verdict(raw)
            if scores is not None:
                return Verdict(order=order, raw=raw, scores=scores, attempts=attempt)
        return Verdict(order=order, raw=raw, scores=None, attempts=2)

    async def _judge_pair(
        self, driver: Any, id: str, question: str, category: str | None, a: str, b: str
    ) -> PairVerdict:
        first, second = await asyncio.gather(
            self._verdict(driver, self.request(question, a, b), "AB"),
            self._verdict(driver, self.request(question, b, a), "BA"),
        )
        verdicts = [first, second]
        score_a, score_b, outcome, consistent = score_pair(verdicts)
        return PairVerdict(
            id=id,
            question=question,
            category=category,
            verdicts=verdicts,
            score_a=score_a,
            score_b=score_b,
            outcome=outcome,
            consistent=consistent,
        )

    async def ajudge_files(
        self,
        a_path: str | os.PathLike[str],
        b_path: str | os.PathLike[str],
        verdicts_path: str | os.PathLike[str],
        *,
        a_name: str = "A",
        b_name: str = "B",
        concurrency: int = 8,
        rpm: float | None = None,
        tpm: float | None = None,
        errors_path: str | os.PathLike[str] | None = None,
        progress: bool = True,
    ) -> ComparisonReport:
        """Async twin of :meth:`judge_files`."""
        check_concurrency(concurrency)
        pairs = match_rows(a_path, b_path)
        if not pairs:
            raise ConfigurationError(
                f"No rows of {a_path} match rows of {b_path} (by id, else by instruction)."
            )
        errors = (
            Path(errors_path) if errors_path is not None else default_errors_path(verdicts_path)
        )
        repair_jsonl(verdicts_path)
        done = read_done_ids(verdicts_path)
        todo = [p for p in pairs if p[0] not in done]
        bar = Progress(len(todo), enabled=progress)
        stats = RunStats()
        gate = asyncio.Semaphore(concurrency)
        # this run's failures only: earlier ones are judged again, as generate retries items
        with ResultWriter(verdicts_path) as out, ResultWriter(errors, truncate=True) as error_log:
            async with self.prompter._run_driver(rpm=rpm, tpm=tpm) as driver:

                async def one(item: tuple[str, str, str | None, str, str]) -> None:
                    async with gate:
                        verdict = await self._judge_pair(driver, *item)
                    failure = next((v.error for v in verdict.verdicts if v.error), None)
                    if failure is None:
                        out.write(json.loads(verdict.model_dump_json()))
                        stats.done += 1
                    else:
                        row = {"kind": "pair", "id": verdict.id, "question": verdict.question}
                        error_log.write({**row, "error": failure})
                        stats.failed += 1
                    bar.update(stats)

                try:
                    await asyncio.gather(*(one(item) for item in todo))
                finally:
                    bar.close()
        wanted = {p[0] for p in pairs}
        judged = [
            PairVerdict.model_validate(row)
            for row in _read_jsonl(verdicts_path)
            if row.get("id") in wanted
        ]
        return build_report(a_name, b_name, judged, failed=stats.failed)

    def judge_files(
        self,
        a_path: str | os.PathLike[str],
        b_path: str | os.PathLike[str],
        verdicts_path: str | os.PathLike[str],
        **options: Any,
    ) -> ComparisonReport:
        """Judge every question answered in both files; resumable through ``verdicts_path``.

        Each pair's verdicts are appended to ``verdicts_path`` as soon as both orders are in;
        rerunning skips pairs already there. A pair whose request failed is written to
        ``errors_path`` (default ``<verdicts>.errors.jsonl``) with its reason instead, counted in
        the report's ``failed``, and judged again by a rerun. Options: ``a_name``, ``b_name``,
        ``concurrency``, ``rpm``, ``tpm``, ``errors_path``, ``progress``.
        """
        return run_sync(self.ajudge_files(a_path, b_path, verdicts_path, **options))

    def judge(self, question: str, a: str, b: str) -> PairVerdict:
        """Judge one pair, in both orders."""

        async def go() -> PairVerdict:
            async with self.prompter._run_driver() as driver:
                return await self._judge_pair(driver, "-", question, None, a, b)

        return run_sync(go())
