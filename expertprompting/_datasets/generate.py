"""Answer a whole input file into an output file, resumably: ``expertprompting generate``.

Rows already in the output are skipped by id, each new row is appended and flushed the moment
it is done, failed items go to an errors file (and are tried again by the next run), and input
rows that are not usable items are reported with file and line and skipped. Killing the run at
any point loses nothing that had finished; rerunning the same command picks up the rest.

Files are guarded as the module ``outputs`` describes: the output and errors files are
never the input (also through a link), are refused when this library did not write them, are
locked for the run, and a resume that would mix runs of another model, strategy or settings is
refused. The errors file fed back as the input (``generate run.errors.jsonl -o run.jsonl``, the
natural retry) works: its items are read as items, and the file is only replaced at the end of
the run, by its rows this run did not settle plus this run's failures, so an interrupted or
killed retry loses none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from .._io.ratelimit import check_rates
from .._method.errors import ConfigurationError, ExpertPromptingError
from .._method.results import ExpertAnswer, Strategy, Usage, format_cost
from .answerer import Answerer
from .items import (
    DatasetItem,
    FailedItem,
    InputProblem,
    ResultWriter,
    coerce_item,
    output_row,
    read_items,
    read_rows,
)
from .outputs import (
    ERROR_ROWS,
    OUTPUT_ROWS,
    FileRole,
    JsonlScan,
    OutputRefusedError,
    RunLock,
    check_clashes,
    check_replaceable,
    fix_tail,
    hold,
    is_ours,
    os_error,
    refuse_directory,
    refuse_foreign,
    same_file,
    scan_jsonl,
)
from .pool import ItemResult, TooManyErrorsError, check_concurrency, run_items, run_sync
from .progress import Progress, RunStats

__all__ = ["GenerateSummary", "agenerate", "default_errors_path", "generate"]


class GenerateSummary(BaseModel):
    """What one ``generate`` run did."""

    output: str
    errors_file: str
    done: int = Field(default=0, description="Items answered and written by this run.")
    failed: int = Field(
        default=0, description="Items that failed (see the errors file); retried next run."
    )
    already_done: int = Field(
        default=0, description="Items skipped because the output already had them."
    )
    duplicates: int = Field(
        default=0, description="Input rows whose id appeared earlier in the input."
    )
    input_problems: int = Field(default=0, description="Input rows that are not usable items.")
    identities_cached: int = 0
    truncated: int = Field(
        default=0,
        description="Answers written that were cut at the answer cap (finish_reason 'length'); "
        "a larger max_tokens lets them finish.",
    )
    usage: Usage = Field(default_factory=Usage)
    seconds: float = 0.0
    interrupted: bool = False
    stopped_early: bool = Field(default=False, description="max_errors was exceeded.")

    def line(self) -> str:
        """A one-line human summary."""
        parts = [
            f"{self.done} written",
            f"{self.failed} failed",
            f"{self.already_done} already done",
        ]
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicate ids skipped")
        if self.input_problems:
            parts.append(f"{self.input_problems} bad input rows")
        if self.truncated:
            parts.append(f"{self.truncated} cut at the answer cap")
        parts += [
            f"{self.identities_cached} identities from cache",
            f"{self.usage.requests} requests",
            f"{self.usage.total_tokens} tokens",
        ]
        if self.usage.cost is not None:
            parts.append(format_cost(self.usage.cost))
        parts.append(f"{self.seconds:.1f} s")
        text = ", ".join(parts)
        if self.interrupted:
            text += " (interrupted: rerun the same command to resume)"
        elif self.failed:
            text += f" (failed items are in {self.errors_file}; rerun to retry them)"
        return text


def default_errors_path(output: str | os.PathLike[str]) -> Path:
    """``out.jsonl`` -> ``out.errors.jsonl``."""
    path = Path(output)
    return path.with_name(path.name.removesuffix(".jsonl") + ".errors.jsonl")


def _count_rows(path: Path) -> int | None:
    """Non-blank lines of a JSONL file (cheap); None for a JSON list."""
    with path.open("rb") as handle:
        head = handle.read(64).removeprefix(b"\xef\xbb\xbf").lstrip()  # a BOM, then space
        if head.startswith(b"["):
            return None
        handle.seek(0)
        return sum(1 for line in handle if line.strip())


async def agenerate(
    prompter: Answerer,
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    strategy: Strategy | None = None,
    concurrency: int = 16,
    rpm: float | None = None,
    tpm: float | None = None,
    limit: int | None = None,
    errors_path: str | os.PathLike[str] | None = None,
    max_errors: int | None = None,
    progress: bool = True,
    on_problem: Callable[[str], None] | None = None,
) -> GenerateSummary:
    """Async twin of :func:`generate`."""
    if limit is not None and limit < 0:
        raise ConfigurationError(f"limit must be 0 or more, got {limit}.")
    check_concurrency(concurrency)
    check_rates(rpm, tpm)
    source, output = Path(input_path), Path(output_path)
    errors = Path(errors_path) if errors_path is not None else default_errors_path(output)
    chosen = prompter.resolve_strategy(strategy)
    retry = _check_paths(source, output, errors)
    run = _RunIdentity.of(prompter, chosen, output)
    with hold([RunLock(output, "-o"), RunLock(errors, "--errors")]):
        done_ids: set[str] = set()
        scan = _check_output(output, run, done_ids)
        if not retry:
            check_replaceable(errors, ERROR_ROWS, "--errors")
        from_errors = retry or is_ours(source, ERROR_ROWS)
        fix_tail(output, scan)
        job = _Job(prompter, source, output, errors, chosen, run, done_ids, from_errors, retry)
        return await job.run(
            concurrency=concurrency,
            rpm=rpm,
            tpm=tpm,
            limit=limit,
            max_errors=max_errors,
            progress=progress,
            on_problem=on_problem,
        )


@dataclass(frozen=True)
class _RunIdentity:
    """What an output file's rows must agree on for a run to resume into it."""

    output: Path
    model: str
    aliases: frozenset[str]
    strategy: str
    fingerprint: str

    @classmethod
    def of(cls, prompter: Answerer, strategy: str, output: Path) -> _RunIdentity:
        model = prompter.config.model
        # rows written before rows recorded the requested model name only have the model the
        # endpoint reported: for a local model the file's name, for OpenAI a dated snapshot
        aliases = prompter.session.served_names
        return cls(output, model, aliases, strategy, prompter.planner.fingerprint(strategy))

    def conflict(self, row: dict[str, Any]) -> str | None:
        """Why ``row`` was made by another kind of run, or None."""
        asked = row.get("requested_model")
        served = row.get("model")
        if asked is not None:
            same_model = asked == self.model
        else:
            same_model = served in self.aliases or (
                isinstance(served, str) and served.startswith(self.model + "-")
            )
        made_with = f"model {asked or served!r} and strategy {row.get('strategy')!r}"
        way_out = (
            "resuming would mix two runs in one file. Choose another -o, or delete "
            f"{self.output} to start over."
        )
        if not same_model or row.get("strategy") != self.strategy:
            return (
                f"{self.output} holds answers made with {made_with}, but this run uses model "
                f"{self.model!r} and strategy {self.strategy!r}; {way_out}"
            )
        found = row.get("fingerprint")
        if found is None or found == self.fingerprint:  # rows of old versions have none
            return None
        return (
            f"{self.output} holds answers made with {made_with} but other "
            f"{_fingerprint_difference(str(found), self.fingerprint)}: fingerprint {found} "
            f"there, {self.fingerprint} in this run; {way_out}"
        )


_FINGERPRINT_PARTS = (
    "templates",
    "exemplars",
    "sampling settings (temperature, top_p, seed, max tokens)",
    "planning limits (exemplars shown, prompt budget, context window)",
    "answer cleaning (clean_answers)",
)


def _fingerprint_difference(found: str, ours: str) -> str:
    """Which parts of two fingerprints (see ``Planner.fingerprint``) differ, in words."""
    a, b = found.split("-"), ours.split("-")
    if len(a) != len(b) or len(a) != len(_FINGERPRINT_PARTS):
        return "settings"
    names = [name for name, x, y in zip(_FINGERPRINT_PARTS, a, b, strict=True) if x != y]
    return " and ".join(names) if names else "settings"


def _check_paths(source: Path, output: Path, errors: Path) -> bool:
    """Refuse clashing paths before anything is opened; whether this run retries ``source``.

    It does when the errors file is the input and the input is an errors file of ours.
    """
    if source.is_dir():
        raise ConfigurationError(
            f"Cannot read the input file {source}: it is a directory; pass a JSONL or JSON file."
        )
    if not source.is_file():
        raise ConfigurationError(f"The input file {source} does not exist.")
    refuse_directory(output, "-o")
    refuse_directory(errors, "--errors")
    read = FileRole(source, "input file")
    out = FileRole(output, "output file", "-o")
    err = FileRole(errors, "errors file", "--errors")
    retry = same_file(errors, source) and is_ours(source, ERROR_ROWS)
    check_clashes([out], [read])
    check_clashes([out, err], [] if retry else [read])
    return retry


def _check_output(output: Path, run: _RunIdentity, done: set[str]) -> JsonlScan:
    """Check the output is ours and made by this kind of run; collect its ids into ``done``."""
    conflict: str | None = None

    def on_row(_: int, row: dict[str, Any]) -> None:
        nonlocal conflict
        done.add(str(row["id"]))
        if conflict is None:
            conflict = run.conflict(row)

    scan = scan_jsonl(output, OUTPUT_ROWS, on_row)
    refuse_foreign(output, scan, "-o")
    if conflict is not None:
        raise OutputRefusedError(conflict)
    return scan


def _errors_temp(errors: Path) -> Path:
    return errors.with_name(f".{errors.name}.tmp")


def _from_errors_row(value: Any, where: str, line: int) -> DatasetItem | InputProblem | None:
    """An item again from a row of an errors file (None: the row is not an item's)."""
    if not isinstance(value, dict) or value.get("kind") != "item":
        return None  # an input problem of the original file: nothing to retry
    extra = value.get("extra")
    fields = {k: value.get(k) for k in ("instruction", "input", "id")}
    try:
        return coerce_item({**(extra if isinstance(extra, dict) else {}), **fields})
    except (ValueError, RecursionError) as exc:
        return InputProblem(where, line, str(exc).splitlines()[0])


class _Job:
    """One generate run over checked, locked files."""

    def __init__(
        self,
        prompter: Answerer,
        source: Path,
        output: Path,
        errors: Path,
        strategy: Strategy,
        identity: _RunIdentity,
        done_ids: set[str],
        from_errors: bool,
        retry: bool,
    ) -> None:
        self.prompter = prompter
        self.source = source
        self.output = output
        self.errors = errors
        self.strategy = strategy
        self.identity = identity
        self.done_ids = done_ids
        self.from_errors = from_errors
        self.retry = retry
        self.written: set[str] = set()
        self.failed: set[str] = set()
        self.summary = GenerateSummary(output=str(output), errors_file=str(errors))

    def rows(self) -> Iterator[DatasetItem | InputProblem]:
        if not self.from_errors:
            yield from read_items(self.source)
            return
        where = str(self.source)
        for row in read_rows(self.source):
            if isinstance(row, InputProblem):
                yield row
                continue
            item = _from_errors_row(row.value, where, row.line)
            if item is not None:
                yield item

    async def run(
        self,
        *,
        concurrency: int,
        rpm: float | None,
        tpm: float | None,
        limit: int | None,
        max_errors: int | None,
        progress: bool,
        on_problem: Callable[[str], None] | None,
    ) -> GenerateSummary:
        summary, done_ids = self.summary, self.done_ids
        seen: set[str] = set()

        def note(problem: InputProblem) -> None:
            summary.input_problems += 1
            error_log.write({"kind": "input", "where": str(problem), "error": problem.reason})
            if on_problem is not None:
                on_problem(str(problem))

        def todo() -> Iterator[tuple[int, DatasetItem]]:
            taken = 0
            for index, row in enumerate(self.rows()):
                if isinstance(row, InputProblem):
                    note(row)
                    continue
                key = row.key
                if key in done_ids:
                    summary.already_done += 1
                    continue
                if key in seen:
                    summary.duplicates += 1
                    continue
                if limit is not None and taken >= limit:
                    return
                seen.add(key)
                taken += 1
                yield index, row

        model, fingerprint = self.identity.model, self.identity.fingerprint

        def on_result(index: int, item: DatasetItem, result: ItemResult) -> None:
            if isinstance(result, ExpertAnswer):
                writer.write(
                    output_row(item, result, requested_model=model, fingerprint=fingerprint)
                )
                self.written.add(item.key)
            else:
                error_log.write(_error_row(item, result))
                self.failed.add(item.key)

        rows = _count_rows(self.source)
        total = None if rows is None else max(rows - len(done_ids), 0)
        if total is not None and limit is not None:
            total = min(total, limit)
        temp = _errors_temp(self.errors.resolve())
        if not self.retry and is_ours(temp, ERROR_ROWS):
            temp.unlink()  # left by a retry that was killed; its rows are still in its input
        writer = ResultWriter(self.output, shape=OUTPUT_ROWS, repair=False)
        try:
            # A retry reads the errors file it will replace: this run's failures go to a
            # temporary file until the end. Otherwise earlier failures are in the input and
            # are retried, so the file starts afresh.
            error_log = ResultWriter(
                temp if self.retry else self.errors, truncate=True, shape=ERROR_ROWS
            )
        except BaseException:
            writer.close()
            raise
        bar = Progress(total, enabled=progress)
        stats = RunStats()
        try:
            async with self.prompter.session.open_run(rpm=rpm, tpm=tpm) as driver:
                await run_items(
                    driver,
                    self.prompter.planner,
                    todo(),
                    strategy=self.strategy,
                    concurrency=concurrency,
                    on_result=on_result,
                    max_errors=max_errors,
                    progress=bar,
                    stats=stats,
                    answerer=self.prompter,  # later turns of several-turn questions
                )
        except (asyncio.CancelledError, KeyboardInterrupt):
            summary.interrupted = True
            self._close(writer, error_log, temp, quietly=True)
            raise
        except TooManyErrorsError:
            summary.stopped_early = True
        except BaseException:
            self._close(writer, error_log, temp, quietly=True)
            raise
        finally:
            bar.close()
            summary.done = stats.done
            summary.failed = stats.failed
            summary.identities_cached = stats.cached
            summary.truncated = stats.truncated
            summary.usage = stats.usage
            summary.seconds = stats.seconds
        self._close(writer, error_log, temp, quietly=False)
        return summary

    def _close(
        self, writer: ResultWriter, error_log: ResultWriter, temp: Path, quietly: bool
    ) -> None:
        """Close both files; a retry then replaces the errors file it read.

        With ``quietly`` (another error is on its way out) a failure to replace it keeps the old
        errors file whole, which still lists every item this run did not answer.
        """
        writer.close()
        if not self.retry:
            error_log.close()
            return
        try:
            self._carry_over(error_log)
            error_log.close()
            with temp.open("rb") as handle:
                os.fsync(handle.fileno())
            os.replace(temp, self.errors.resolve())  # a link to it stays one
        except (OSError, ExpertPromptingError) as exc:
            error_log.close()
            with contextlib.suppress(OSError):
                temp.unlink()
            if quietly:
                return
            if isinstance(exc, OSError):
                raise os_error(self.errors, exc, "replace") from exc
            raise

    def _carry_over(self, error_log: ResultWriter) -> None:
        """Copy the rows of the old errors file that this run did not settle into the new one.

        Settled: items now in the output, and items that failed again (their new row is in).
        Kept: items not tried (``--limit``, an interruption, ``--max-errors``) and input
        problems of the original input.
        """
        settled = self.done_ids | self.written | self.failed

        def keep(_: int, row: dict[str, Any]) -> None:
            if row.get("kind") != "item" or str(row.get("id")) not in settled:
                error_log.write(row)

        scan_jsonl(self.errors, ERROR_ROWS, keep)


def _error_row(item: DatasetItem, failure: FailedItem) -> dict[str, Any]:
    row: dict[str, Any] = {
        "kind": "item",  # first: a torn row is recognised by how it starts
        "id": item.key,
        "instruction": item.instruction,
        "input": item.input or "",
        "error_type": failure.error_type,
        "error": failure.error,
    }
    if item.extra:  # a retry from this file gives the item back whole
        row["extra"] = item.extra
    return row


def generate(
    prompter: Answerer,
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    strategy: Strategy | None = None,
    concurrency: int = 16,
    rpm: float | None = None,
    tpm: float | None = None,
    limit: int | None = None,
    errors_path: str | os.PathLike[str] | None = None,
    max_errors: int | None = None,
    progress: bool = True,
    on_problem: Callable[[str], None] | None = None,
) -> GenerateSummary:
    """Answer every item of ``input_path`` into ``output_path`` (JSONL), resumably.

    On Ctrl-C the rows finished so far are already on disk; ``KeyboardInterrupt`` propagates
    after the files are closed.

    Refused with :class:`~expertprompting.ConfigurationError`, before anything is
    written: an output or errors file that is the input (or each other, also through a link),
    an existing file this library did not write, an output another live run is writing, and an
    output whose rows were made with another model, strategy or settings
    (``Planner.fingerprint``). The errors file of an earlier run may
    be the input: its failed items are retried and the file keeps those still not answered.

    :param prompter: The :class:`~expertprompting.ExpertPrompter` that answers.
    :param input_path: A JSONL (or JSON list) file of items: ``instruction``, optional
        ``input`` and ``id``.
    :param output_path: The JSONL file answers are appended to (and resumed from).
    :param strategy: The strategy of the run (default: the prompter's).
    :param concurrency: Most requests in flight at once (default 16).
    :param rpm: Cap on requests per minute of the whole run.
    :param tpm: Cap on tokens per minute of the whole run.
    :param limit: Answer at most this many new items (default: all).
    :param errors_path: Where failed items go (default ``<output>.errors.jsonl``).
    :param max_errors: Stop the run once more items than this have failed.
    :param progress: Show a progress bar (default True).
    :param on_problem: Called with ``file:line: reason`` for each input row that is not a
        usable item (such rows are skipped and counted).
    """
    return run_sync(
        agenerate(
            prompter,
            input_path,
            output_path,
            strategy=strategy,
            concurrency=concurrency,
            rpm=rpm,
            tpm=tpm,
            limit=limit,
            errors_path=errors_path,
            max_errors=max_errors,
            progress=progress,
            on_problem=on_problem,
        )
    )
