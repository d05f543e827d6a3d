"""Answer a whole input file into an output file, resumably: ``expertprompting generate``.

Rows already in the output are skipped by id, each new row is appended and flushed the moment
it is done, failed items go to an errors file (and are tried again by the next run), and input
rows that are not usable items are reported with file and line and skipped. Killing the run at
any point loses nothing that had finished; rerunning the same command picks up the rest.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from .dataset import (
    DatasetItem,
    FailedItem,
    InputProblem,
    ResultWriter,
    output_row,
    read_done_ids,
    read_items,
    repair_jsonl,
)
from .errors import ConfigurationError
from .progress import Progress
from .results import ExpertAnswer, Strategy, Usage
from .runner import ItemResult, RunStats, TooManyErrorsError, run_items, run_sync

if TYPE_CHECKING:
    from .prompter import ExpertPrompter

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
        parts += [
            f"{self.identities_cached} identities from cache",
            f"{self.usage.requests} requests",
            f"{self.usage.total_tokens} tokens",
            f"{self.seconds:.1f} s",
        ]
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
        head = handle.read(64).lstrip()
        if head.startswith(b"["):
            return None
        handle.seek(0)
        return sum(1 for line in handle if line.strip())


async def agenerate(
    prompter: ExpertPrompter,
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
    source, output = _check_paths(Path(input_path), Path(output_path))
    if limit is not None and limit < 0:
        raise ConfigurationError(f"limit must be 0 or more, got {limit}.")
    errors = Path(errors_path) if errors_path is not None else default_errors_path(output)
    chosen = prompter._strategy(strategy)
    repair_jsonl(output)
    done_ids = read_done_ids(output)
    summary = GenerateSummary(output=str(output), errors_file=str(errors))
    seen: set[str] = set()

    def note(problem: InputProblem) -> None:
        summary.input_problems += 1
        error_log.write({"kind": "input", "where": str(problem), "error": problem.reason})
        if on_problem is not None:
            on_problem(str(problem))

    def todo() -> Iterator[tuple[int, DatasetItem]]:
        taken = 0
        for index, row in enumerate(read_items(source)):
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

    def on_result(index: int, item: DatasetItem, result: ItemResult) -> None:
        if isinstance(result, ExpertAnswer):
            writer.write(output_row(item, result))
        else:
            error_log.write(_error_row(item, result))

    rows = _count_rows(source)
    total = None if rows is None else max(rows - len(done_ids), 0)
    if total is not None and limit is not None:
        total = min(total, limit)
    bar = Progress(total, enabled=progress)
    stats = RunStats()
    writer = ResultWriter(output)
    error_log = ResultWriter(errors, truncate=True)  # this run's failures; old ones are retried
    try:
        async with prompter._run_driver(rpm=rpm, tpm=tpm) as driver:
            await run_items(
                driver,
                prompter.planner,
                todo(),
                strategy=chosen,
                concurrency=concurrency,
                on_result=on_result,
                max_errors=max_errors,
                progress=bar,
                stats=stats,
            )
    except (asyncio.CancelledError, KeyboardInterrupt):
        summary.interrupted = True
        raise
    except TooManyErrorsError:
        summary.stopped_early = True
    finally:
        bar.close()
        writer.close()
        error_log.close()
        summary.done = stats.done
        summary.failed = stats.failed
        summary.identities_cached = stats.cached
        summary.usage = stats.usage
        summary.seconds = stats.seconds
    return summary


def _check_paths(source: Path, output: Path) -> tuple[Path, Path]:
    if not source.is_file():
        raise ConfigurationError(f"The input file {source} does not exist.")
    if source.resolve() == output.resolve():
        raise ConfigurationError("The output file must not be the input file; choose another -o.")
    return source, output


def _error_row(item: DatasetItem, failure: FailedItem) -> dict[str, Any]:
    return {
        "kind": "item",
        "id": item.key,
        "instruction": item.instruction,
        "input": item.input or "",
        "error_type": failure.error_type,
        "error": failure.error,
    }


def generate(
    prompter: ExpertPrompter,
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    **options: Any,
) -> GenerateSummary:
    """Answer every item of ``input_path`` into ``output_path`` (JSONL), resumably.

    Options are those of :func:`agenerate`: ``strategy``, ``concurrency``, ``rpm``, ``tpm``,
    ``limit``, ``errors_path``, ``max_errors``, ``progress``, ``on_problem``. On Ctrl-C the
    rows finished so far are already on disk; ``KeyboardInterrupt`` propagates after the files
    are closed.
    """
    return run_sync(agenerate(prompter, input_path, output_path, **options))


def read_summary_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All rows of a JSONL output (for tests and small files)."""
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
