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

A question with a reference answer (a ``reference`` field, Alpaca's ``output``, or a gold
``answer``, copied into the answer rows' ``extra`` by ``generate``) is judged with the
reference-guided prompt (``judge_reference.jinja``), which shows the judge the reference, as
MT-Bench does for maths and coding; its verdicts are read and scored the same way. Questions
without one get the plain prompt, exactly as before.

A question of several turns (MT-Bench's ``turns``) that both files answered as a conversation
(their rows carry ``turns_answers``) is judged on the whole conversation with
``judge_multiturn.jinja``, MT-Bench style: the judge sees every turn and both assistants'
answers to each, scores the answers to the last turn, and is shown the reference answer of each
turn that has one. A pair where either side answered the first turn only is judged on that
turn, as a one-turn question.

Parsing (:func:`parse_verdict`), scoring (:func:`score_pair`) and the report
(:func:`build_report`) are pure functions; :class:`Judge` sends the requests through the same
drivers, retries, rate limits and budget as everything else.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if sys.version_info >= (3, 11):
    from typing import Never
else:  # pragma: no cover - Python 3.10
    from typing import NoReturn as Never


from .._datasets.generate import default_errors_path
from .._datasets.items import (
    InputProblem,
    ResultWriter,
    item_turns,
    json_type,
    read_rows,
    reference_answer,
)
from .._datasets.outputs import (
    ERROR_ROWS,
    VERDICT_ROWS,
    FileRole,
    RunLock,
    check_clashes,
    check_replaceable,
    fix_tail,
    hold,
    refuse_directory,
    refuse_foreign,
    scan_jsonl,
)
from .._datasets.pool import check_concurrency, run_pool, run_sync
from .._datasets.progress import Progress, RunStats
from .._io.session import ModelSession, given
from .._method.errors import ConfigurationError, ExpertPromptingError
from .._method.planner import Planner
from .._method.results import Usage
from .._method.templating import TemplateSource, load_template
from .._method.wire import ChatRequest

if TYPE_CHECKING:  # types only: importing the judge must not import the SDK
    import openai

    from .._io.cache import CacheSpec
    from .._io.retry import RetrySpec
    from .._method.config import ModelPrice, RunBudget
    from .._method.tokens import TokenCounter

from .report import ComparisonReport, build_report, with_lengths
from .verdicts import PairVerdict, Verdict, parse_verdict, score_pair

__all__ = ["Judge", "MatchedPair", "match_rows"]


def _not_a_string(row: Mapping[str, Any], field: str) -> str | None:
    """Why ``row[field]`` is not a usable string, or None if it is one."""
    if field not in row:
        return f"no {field!r} field"
    if not isinstance(row[field], str):
        return f"{field!r} must be a string, not {json_type(row[field])}"
    return None


def _answer_row_problem(row: Mapping[str, Any], *, question: bool) -> str | None:
    """Why a row cannot be judged: it needs an ``answer``, and an ``instruction`` where it
    supplies the question (file A) or has no ``id`` to be matched by."""
    reason = _not_a_string(row, "answer")
    if reason is None and (question or row.get("id") is None):
        reason = _not_a_string(row, "instruction")
    return reason


def _read_jsonl(
    path: str | os.PathLike[str],
    on_problem: Callable[[InputProblem], None] | None = None,
    check: Callable[[Mapping[str, Any]], str | None] | None = None,
) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL file, read by the datasets' reader (the one JSONL reader).

    A row that is not usable (not UTF-8, not JSON, not an object, or one that ``check`` finds
    a reason against) goes to ``on_problem`` with its file and line, and is skipped; the rest
    is still read.
    """
    where = str(path)
    for row in read_rows(path, what="answers file"):
        if isinstance(row, InputProblem):
            problem = row
        else:
            value = row.value
            reason: str | None = None
            if not isinstance(value, dict):
                reason = f"not a JSON object but {json_type(value)}"
            elif check is not None:
                reason = check(value)
            if reason is None:
                yield value
                continue
            problem = InputProblem(where, row.line, reason)
        if on_problem is not None:
            on_problem(problem)


def _category(*rows: Mapping[str, Any]) -> str | None:
    for row in rows:
        extra = row.get("extra")
        for source in (row, extra if isinstance(extra, Mapping) else {}):
            value = source.get("category")
            if isinstance(value, str) and value:
                return value
    return None


class MatchedPair(NamedTuple):
    """One question answered in both files: what the judge is shown."""

    id: str
    question: str
    category: str | None
    answer_a: str
    answer_b: str
    reference: str | None = None
    """The question's reference answer, from the ``extra`` that ``generate`` copies from the
    question row (see ``reference_answer``); None: judged without one."""
    turns: tuple[str, ...] | None = None
    """A question of several turns both files answered as a conversation: the user turns
    (``question`` is the first); None: a one-turn pair."""
    turns_a: tuple[str, ...] | None = None
    """A's answer to each turn (``answer_a`` is the first)."""
    turns_b: tuple[str, ...] | None = None
    """B's answer to each turn (``answer_b`` is the first)."""
    references: tuple[str | None, ...] | None = None
    """The reference answer of each turn (None where a turn has none), when any has one."""

    @property
    def judged_a(self) -> str:
        """A's text the judge weighs, for the length figures: every turn's answer."""
        return "\n\n".join(self.turns_a) if self.turns_a is not None else self.answer_a

    @property
    def judged_b(self) -> str:
        """B's text the judge weighs, for the length figures: every turn's answer."""
        return "\n\n".join(self.turns_b) if self.turns_b is not None else self.answer_b


def _reference(*rows: Mapping[str, Any]) -> str | None:
    """The reference answer the answer rows carry: their question's fields (``extra``), else a
    ``reference`` field of the row itself (never its ``answer``: that is the model's)."""
    for row in rows:
        extra = row.get("extra")
        found = reference_answer(extra) if isinstance(extra, Mapping) else None
        if found is None and isinstance(row.get("reference"), (str, list)):
            found = reference_answer({"reference": row["reference"]})
        if found is not None:
            return found
    return None


def _turn_answers(row: Mapping[str, Any], count: int) -> tuple[str, ...] | None:
    answers = row.get("turns_answers")
    if not isinstance(answers, list) or len(answers) != count:
        return None
    if not all(isinstance(answer, str) for answer in answers):
        return None
    return tuple(answers)


def _turn_references(rows: tuple[Mapping[str, Any], ...], count: int) -> tuple[str | None, ...]:
    """Each turn's reference answer: MT-Bench's ``reference`` list, one per turn; a single
    reference (a string) is the first turn's."""
    for row in rows:
        extra = row.get("extra")
        fields = extra if isinstance(extra, Mapping) else {}
        given = fields.get("reference", row.get("reference"))
        if isinstance(given, list):
            found = [r if isinstance(r, str) and r.strip() else None for r in given[:count]]
            return tuple(found + [None] * (count - len(found)))
        first = reference_answer(fields)
        if first is None and isinstance(given, str) and given.strip():
            first = given
        if first is not None:
            return (first, *([None] * (count - 1)))
    return (None,) * count


_Conversation = tuple[
    tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str | None, ...] | None
]


def _conversation(
    instruction: str, question: str, a: Mapping[str, Any], b: Mapping[str, Any]
) -> _Conversation | None:
    """``(turns, turns_a, turns_b, references)`` of a pair both files answered as a
    conversation (rows with ``turns_answers``, one per turn of ``extra["turns"]``), else None.
    The first turn is ``question``: the instruction as asked, its input included."""
    extra = a.get("extra")
    fields = extra if isinstance(extra, Mapping) else b.get("extra")
    turns = item_turns(instruction, fields) if isinstance(fields, Mapping) else None
    if turns is None:
        return None
    turns[0] = question
    turns_a = _turn_answers(a, len(turns))
    turns_b = _turn_answers(b, len(turns))
    if turns_a is None or turns_b is None:
        return None
    references = _turn_references((a, b), len(turns))
    return tuple(turns), turns_a, turns_b, references if any(references) else None


def match_rows(
    a_path: str | os.PathLike[str],
    b_path: str | os.PathLike[str],
    *,
    on_problem: Callable[[InputProblem], None] | None = None,
) -> list[MatchedPair]:
    """``(id, question, category, answer_a, answer_b, reference)`` for rows in both files.

    Rows are matched by ``id``; files without ids are matched by instruction (and input). Each
    row needs an ``answer``, and an ``instruction`` in file A (the question) or in a row of B
    without an ``id``. A row that cannot be judged (not UTF-8, not JSON, not an object, a
    needed field missing or not a string) is passed to ``on_problem`` as an
    :class:`InputProblem` (file and line) and skipped.
    """

    def key(row: Mapping[str, Any]) -> str:
        if row.get("id") is not None:
            return str(row["id"])
        return json.dumps([row.get("instruction"), row.get("input") or ""])

    def b_check(row: Mapping[str, Any]) -> str | None:
        return _answer_row_problem(row, question=False)

    def a_check(row: Mapping[str, Any]) -> str | None:
        return _answer_row_problem(row, question=True)

    b_rows = {key(row): row for row in _read_jsonl(b_path, on_problem, b_check)}
    matched = []
    for row in _read_jsonl(a_path, on_problem, a_check):
        other = b_rows.get(key(row))
        if other is None:
            continue
        instruction = question = str(row.get("instruction", ""))
        if row.get("input"):
            question += "\n\n" + str(row["input"])
        conversation = _conversation(instruction, question, row, other)
        matched.append(
            MatchedPair(
                key(row),
                question,
                _category(row, other),
                row["answer"],
                str(other.get("answer", "")),
                _reference(row, other),
                *(conversation or ()),
            )
        )
    return matched


def _check_verdict_paths(a: Path, b: Path, verdicts: Path, errors: Path) -> None:
    """Refuse a verdicts or errors file that is an answers file (or each other), or a folder."""
    refuse_directory(verdicts, "-o")
    refuse_directory(errors, "-o")
    check_clashes(
        [FileRole(verdicts, "verdicts file", "-o"), FileRole(errors, "errors file", "-o")],
        [FileRole(a, "answers file A"), FileRole(b, "answers file B")],
    )


# -- the judge ---------------------------------------------------------------------------------
class Judge:
    """Judges pairs of answers with a model, in both orders (see the module docstring).

    ``Judge(model="gpt-4o", ...)`` takes the connection, sampling and budget settings of
    :class:`~expertprompting.ExpertPrompter` that shape a verdict request (``base_url``,
    ``api_key``, ``client``, ``retry``, ``max_total_tokens``...); ``template=`` replaces the
    judge prompt (variables ``question``, ``answer_1``, ``answer_2``), and
    ``reference_template=`` the prompt of questions that carry a reference answer (the same
    and ``reference``; built in: ``judge_reference.jinja``), and ``multiturn_template=`` the
    prompt of questions answered as conversations (variables ``turns``, ``answers_1``,
    ``answers_2``, ``references``: lists, one entry a turn; built in:
    ``judge_multiturn.jinja``). Verdicts use temperature 0 unless set. ``cache=`` (off by
    default; a path for a SQLite file) reuses verdicts of identical requests, across runs and
    comparisons.
    """

    def __init__(
        self,
        model: str = "gpt-4o",
        *,
        template: TemplateSource | None = None,
        reference_template: TemplateSource | None = None,
        multiturn_template: TemplateSource | None = None,
        max_verdict_tokens: int = 400,
        base_url: str | None = None,
        api_key: str | None = None,
        client: openai.OpenAI | None = None,
        async_client: openai.AsyncOpenAI | None = None,
        context_window: int | None = None,
        margin_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        repeat_penalty: float | None = None,
        timeout: float | None = None,
        retry: RetrySpec | None = None,
        max_total_tokens: int | None = None,
        max_requests: int | None = None,
        max_cost: float | None = None,
        budget: RunBudget | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
        token_counter: TokenCounter | None = None,
        cache: CacheSpec = False,
        **unknown: Never,
    ) -> None:
        """Set up a judge; nothing is sent until the first verdict.

        Settings left None take the default of
        :class:`~expertprompting.ExpertPrompter` (and of a local model), which also checks
        them; the prompter's other settings (strategy, exemplars, answer lengths...) do not
        change a verdict and are refused, like a misspelt keyword, with a
        :class:`~expertprompting.ConfigurationError`.

        :param model: The judge model (a name on an OpenAI-compatible endpoint, or
            ``"local"``...).
        :param template: Replaces the judge prompt (variables ``question``, ``answer_1``,
            ``answer_2``).
        :param reference_template: Replaces the prompt of questions with a reference answer
            (the same variables and ``reference``).
        :param multiturn_template: Replaces the prompt of questions answered as conversations
            (variables ``turns``, ``answers_1``, ``answers_2``, optional ``references``).
        :param max_verdict_tokens: Cap on a verdict's length (default 400).
        :param base_url: The endpoint (default ``OPENAI_BASE_URL``, else OpenAI).
        :param api_key: The key (default ``OPENAI_API_KEY``).
        :param client: Your own ``openai.OpenAI`` client.
        :param async_client: Your own ``openai.AsyncOpenAI`` client (verdicts are async).
        :param context_window: The judge model's context window (models outside the table).
        :param margin_tokens: Kept free in the context window (default 16).
        :param temperature: Sampling temperature of verdicts, 0 to 2 (default 0).
        :param top_p: Nucleus sampling of verdicts.
        :param seed: Sampling seed of verdicts (a second ask uses ``seed + 1``).
        :param repeat_penalty: Penalty on repeated tokens (local models).
        :param timeout: Seconds per attempt for a whole verdict (default 60).
        :param retry: A :class:`~expertprompting.RetryPolicy` or a tenacity
            ``AsyncRetrying``.
        :param max_total_tokens: Run budget: most tokens all verdicts may spend.
        :param max_requests: Run budget: most requests all verdicts may send.
        :param max_cost: Run budget: most USD all verdicts may spend (needs a known price).
        :param budget: The run budget as a :class:`~expertprompting.RunBudget`.
        :param prices: Per-model prices, overriding the built-in table.
        :param token_counter: Counts prompt tokens (default: exact tiktoken counts).
        :param cache: Verdict cache: off (default), ``True`` in memory, a path for a SQLite
            file, or a cache object.
        :param unknown: Not a setting: refused with a ConfigurationError (and by type
            checkers).
        """
        if unknown:
            names = ", ".join(f"{name}=" for name in sorted(unknown))
            raise ConfigurationError(
                f"Judge does not take {names}: only settings that shape a verdict request "
                "(see Judge's parameters)."
            )
        settings = given(
            context_window=context_window,
            margin_tokens=margin_tokens,
            temperature=0.0 if temperature is None else temperature,
            top_p=top_p,
            seed=seed,
            repeat_penalty=repeat_penalty,
            timeout=timeout,
            budget=budget,
            prices=prices,
        )
        self.session = ModelSession.for_model(
            model,
            settings,
            max_total_tokens=max_total_tokens,
            max_requests=max_requests,
            max_cost=max_cost,
            base_url=base_url,
            api_key=api_key,
            client=client,
            async_client=async_client,
            retry=retry,
            token_counter=token_counter,
            cache=cache,
        )
        """Transports, retry, budget ledger, verdict cache and token counter of the judge model."""
        self.config = self.session.config
        # the planner's request sizing and sampling; the method's templates are not needed
        self._planner = Planner(self.config, {}, [], self.session.counter)
        self.template = load_template("judge", template)
        self.reference_template = load_template("judge_reference", reference_template)
        self.multiturn_template = load_template("judge_multiturn", multiturn_template)
        self.max_verdict_tokens = max_verdict_tokens

    @property
    def model(self) -> str:
        """The judge model's name."""
        return self.config.model

    @property
    def usage(self) -> Usage:
        """Running totals of every verdict request this judge sent."""
        return self.session.usage

    def request(
        self, question: str, first: str, second: str, reference: str | None = None
    ) -> ChatRequest:
        """The exact request judging ``first`` (Assistant 1) against ``second``.

        With a ``reference`` answer, the reference-guided prompt shows it to the judge (as
        MT-Bench does for maths and coding); the verdict is read the same way.
        """
        if reference is None:
            text = self.template.render(question=question, answer_1=first, answer_2=second)
        else:
            text = self.reference_template.render(
                question=question, answer_1=first, answer_2=second, reference=reference
            )
        messages = self._planner.user_messages(text)
        return self._planner.request("verdict", messages, cap=self.max_verdict_tokens)

    def conversation_request(
        self,
        turns: Sequence[str],
        first: Sequence[str],
        second: Sequence[str],
        references: Sequence[str | None] | None = None,
    ) -> ChatRequest:
        """The exact request judging the conversation of ``first`` (Assistant 1's answer to
        each of ``turns``) against ``second``'s, on the answers to the last turn.

        ``references`` holds each turn's reference answer (None where a turn has none); the
        verdict is read as any other.
        """
        if not len(turns) == len(first) == len(second):
            raise ConfigurationError(
                f"A conversation to judge needs one answer per turn: {len(turns)} turns, "
                f"{len(first)} and {len(second)} answers."
            )
        text = self.multiturn_template.render(
            turns=list(turns),
            answers_1=list(first),
            answers_2=list(second),
            references=list(references) if references and any(references) else [],
        )
        messages = self._planner.user_messages(text)
        return self._planner.request("verdict", messages, cap=self.max_verdict_tokens)

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
        self,
        driver: Any,
        id: str,
        question: str,
        category: str | None,
        a: str,
        b: str,
        reference: str | None = None,
        turns: Sequence[str] | None = None,
        turns_a: Sequence[str] | None = None,
        turns_b: Sequence[str] | None = None,
        references: Sequence[str | None] | None = None,
    ) -> PairVerdict:
        if turns is not None and turns_a is not None and turns_b is not None:
            ab = self.conversation_request(turns, turns_a, turns_b, references)
            ba = self.conversation_request(turns, turns_b, turns_a, references)
        else:
            ab = self.request(question, a, b, reference)
            ba = self.request(question, b, a, reference)
        first, second = await asyncio.gather(
            self._verdict(driver, ab, "AB"), self._verdict(driver, ba, "BA")
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
            judge_model=self.model,
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
        on_problem: Callable[[str], None] | None = None,
        counter: TokenCounter | None = None,
        seed: int = 0,
    ) -> ComparisonReport:
        """Async twin of :meth:`judge_files`."""
        check_concurrency(concurrency)
        verdicts = Path(verdicts_path)
        errors = Path(errors_path) if errors_path is not None else default_errors_path(verdicts)
        _check_verdict_paths(Path(a_path), Path(b_path), verdicts, errors)
        with hold([RunLock(verdicts, "-o"), RunLock(errors, "-o")]):
            return await self._ajudge_files(
                a_path,
                b_path,
                verdicts,
                errors,
                a_name=a_name,
                b_name=b_name,
                concurrency=concurrency,
                rpm=rpm,
                tpm=tpm,
                progress=progress,
                on_problem=on_problem,
                counter=counter,
                seed=seed,
            )

    async def _ajudge_files(
        self,
        a_path: str | os.PathLike[str],
        b_path: str | os.PathLike[str],
        verdicts_path: Path,
        errors: Path,
        *,
        a_name: str,
        b_name: str,
        concurrency: int,
        rpm: float | None,
        tpm: float | None,
        progress: bool,
        on_problem: Callable[[str], None] | None,
        counter: TokenCounter | None,
        seed: int,
    ) -> ComparisonReport:
        """:meth:`ajudge_files` once its files are checked and locked."""
        # answer lengths, for the length-controlled win rate: the answering model's tokens
        lengths = counter if counter is not None else self.session.counter
        # before reading anything else: refuse a verdicts or errors file that is not ours
        done: set[str] = set()
        judges: set[str] = set()

        def seen(_: int, row: dict[str, Any]) -> None:
            done.add(str(row["id"]))
            if isinstance(row.get("judge_model"), str):
                judges.add(row["judge_model"])

        scan = scan_jsonl(verdicts_path, VERDICT_ROWS, seen)
        refuse_foreign(verdicts_path, scan, "-o")
        other = sorted(judges - {self.model})
        if other:
            # a resume would mix two judges' verdicts in one report
            raise ConfigurationError(
                f"{verdicts_path} holds verdicts by the judge {other[0]!r}, not {self.model!r}; "
                f"pass another -o, or delete {verdicts_path} to judge again with {self.model!r}."
            )
        check_replaceable(errors, ERROR_ROWS, "-o")
        problems: list[InputProblem] = []

        def note(problem: InputProblem) -> None:
            problems.append(problem)
            if on_problem is not None:
                on_problem(str(problem))

        pairs = match_rows(a_path, b_path, on_problem=note)
        if not pairs:
            unread = f"; {len(problems)} rows unusable, first {problems[0]}" if problems else ""
            raise ConfigurationError(
                f"No rows of {a_path} match rows of {b_path} (by id, else by instruction){unread}."
            )
        fix_tail(verdicts_path, scan)
        todo = [p for p in pairs if p[0] not in done]
        bar = Progress(len(todo), enabled=progress)
        stats = RunStats()
        # this run's failures only: earlier ones are judged again, as generate retries items
        with (
            ResultWriter(verdicts_path, shape=VERDICT_ROWS, repair=False) as out,
            ResultWriter(errors, truncate=True, shape=ERROR_ROWS) as error_log,
        ):
            for problem in problems:  # the same record as generate's unusable input rows
                error_log.write({"kind": "input", "where": str(problem), "error": problem.reason})
            async with self.session.open_run(rpm=rpm, tpm=tpm) as driver:

                async def judge(_: int, item: MatchedPair) -> PairVerdict:
                    verdict = await self._judge_pair(driver, *item)
                    return with_lengths(verdict, item.judged_a, item.judged_b, lengths)

                def record(_: int, __: object, verdict: PairVerdict) -> None:
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
                    # `concurrency` pairs at once, pulled as workers free up; each pair's two
                    # orders go out together
                    await run_pool(todo, judge, concurrency=concurrency, on_result=record)
                finally:
                    bar.close()
        answers = {p.id: (p.judged_a, p.judged_b) for p in pairs}
        judged = [
            # rows of older files carry no lengths: counted here from the answers
            with_lengths(PairVerdict.model_validate(row), *answers[row["id"]], lengths)
            for row in _read_jsonl(verdicts_path)
            if row.get("id") in answers
        ]
        report = build_report(a_name, b_name, judged, failed=stats.failed, seed=seed)
        report.input_problems = len(problems)
        several = {p.id for p in pairs if p.turns is not None}
        report.conversations = sum(1 for v in judged if v.id in several)
        return report

    def judge_files(
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
        on_problem: Callable[[str], None] | None = None,
        counter: TokenCounter | None = None,
        seed: int = 0,
    ) -> ComparisonReport:
        """Judge every question answered in both files; resumable through ``verdicts_path``.

        Each pair's verdicts are appended to ``verdicts_path`` as soon as both orders are in;
        rerunning skips pairs already there. A pair whose request failed is written to
        ``errors_path`` with its reason instead, counted in the report's ``failed``, and judged
        again by a rerun.

        :param a_path: Answers of system A (JSONL, e.g. ``generate``'s output).
        :param b_path: Answers of system B, matched to A's by id, else by instruction.
        :param verdicts_path: The JSONL file verdicts are appended to (and resumed from).
        :param a_name: System A's name in the report.
        :param b_name: System B's name in the report.
        :param concurrency: Most pairs judged at once (default 8).
        :param rpm: Cap on requests per minute of the whole run.
        :param tpm: Cap on tokens per minute of the whole run.
        :param errors_path: Where failed pairs go (default ``<verdicts>.errors.jsonl``).
        :param progress: Show a progress bar (default True).
        :param on_problem: Called with ``file:line: reason`` for each row of the answer files
            that cannot be judged; such rows are skipped, written to the errors file and
            counted in ``input_problems``.
        :param counter: Counts the answers' tokens for the length figures (default: the
            judge's counter; ``compare`` passes the answering prompter's).
        :param seed: Seed of the report's bootstrap intervals (same seed, same intervals).
        """
        return run_sync(
            self.ajudge_files(
                a_path,
                b_path,
                verdicts_path,
                a_name=a_name,
                b_name=b_name,
                concurrency=concurrency,
                rpm=rpm,
                tpm=tpm,
                errors_path=errors_path,
                progress=progress,
                on_problem=on_problem,
                counter=counter,
                seed=seed,
            )
        )

    def judge(self, question: str, a: str, b: str, reference: str | None = None) -> PairVerdict:
        """Judge one pair, in both orders (shown the ``reference`` answer, if given)."""

        async def go() -> PairVerdict:
            async with self.session.open_run() as driver:
                return await self._judge_pair(driver, "-", question, None, a, b, reference)

        return run_sync(go())
