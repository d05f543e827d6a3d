"""Batch files: the method in two passes over OpenAI's Batch API (or vLLM's ``run_batch``).

When the provider's rate limit or price binds rather than one client, the work can go through
a batch engine, which reads a JSONL file of requests and writes a JSONL file of results:

1. :func:`write_identity_requests` -- one step-1 request per input item;
2. the engine runs them (OpenAI: :func:`submit`, :func:`status`, :func:`download`; any
   OpenAI-compatible server: :func:`run_requests`);
3. :func:`write_answer_requests` -- one step-2 request per item whose identity came back;
4. the engine runs those;
5. :func:`assemble` -- the final dataset from both result files, in the same ExpertLLaMA layout
   as ``generate``, with failed items in an errors file.

Every request is planned by the same core as direct calls (exemplar choice, exact token
budgeting, templates), so a batch run and a direct run send the same prompts. Request lines
follow the documented format ``{"custom_id", "method": "POST", "url": "/v1/chat/completions",
"body"}``; ``custom_id`` is the item's id (its own, else a content hash).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import openai
from pydantic import BaseModel, Field

from .core import Completion, check_completion, clean_answer, fold_input, parse_completion
from .dataset import DatasetItem, InputProblem, ResultWriter, read_items
from .errors import ConfigurationError, ExpertPromptingError
from .results import ExpertAnswer, RequestRecord, Usage

if TYPE_CHECKING:
    from .prompter import ExpertPrompter

__all__ = [
    "BATCH_ENDPOINT",
    "BatchFileSummary",
    "BatchResult",
    "assemble",
    "download",
    "read_results",
    "run_requests",
    "status",
    "submit",
    "write_answer_requests",
    "write_identity_requests",
]

BATCH_ENDPOINT: Literal["/v1/chat/completions"] = "/v1/chat/completions"


class BatchFileSummary(BaseModel):
    """What writing a request file or assembling a dataset did."""

    path: str
    written: int = 0
    skipped: int = Field(default=0, description="Items left out, with a reason in the errors.")
    problems: list[str] = Field(default_factory=list, description="Bad input rows, file:line.")
    errors: list[str] = Field(default_factory=list, description="Items left out: id and reason.")


@dataclass(frozen=True)
class BatchResult:
    """One line of a batch result file, read."""

    custom_id: str
    response: Any | None
    error: str | None


def _request_line(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": BATCH_ENDPOINT, "body": body}


def _unique_items(
    input_path: str | os.PathLike[str], summary: BatchFileSummary
) -> Iterator[DatasetItem]:
    seen: set[str] = set()
    for row in read_items(input_path):
        if isinstance(row, InputProblem):
            summary.problems.append(str(row))
            continue
        if row.key in seen:
            continue
        seen.add(row.key)
        yield row


def write_identity_requests(
    prompter: ExpertPrompter,
    input_path: str | os.PathLike[str],
    requests_path: str | os.PathLike[str],
) -> BatchFileSummary:
    """Step 1's requests for every item of ``input_path``, as a batch request file.

    With a baseline strategy (``vanilla``/``static``) there is no step 1: write the answer
    requests directly with :func:`write_answer_requests`.
    """
    if prompter.config.strategy != "expert":
        raise ConfigurationError(
            f"strategy={prompter.config.strategy!r} has no identity step; "
            "use write_answer_requests() (CLI: batch answer-requests) directly."
        )
    summary = BatchFileSummary(path=str(requests_path))
    with ResultWriter(requests_path, truncate=True) as out:
        for item in _unique_items(input_path, summary):
            try:
                instruction, input = fold_input(item.instruction, item.input)
                prompter.planner.preflight(instruction, input)
                request, _ = prompter.planner.identity_request(instruction, input)
            except ExpertPromptingError as exc:
                summary.skipped += 1
                summary.errors.append(f"{item.key}: {' '.join(str(exc).split())}")
                continue
            out.write(_request_line(item.key, request.body()))
            summary.written += 1
    return summary


def read_results(path: str | os.PathLike[str]) -> dict[str, BatchResult]:
    """A batch result file by ``custom_id`` (a line that is not JSON is an error naming it)."""
    results: dict[str, BatchResult] = {}
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                custom_id = str(row["custom_id"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ConfigurationError(
                    f"{path}:{number} is not a batch result line ({exc}); expected "
                    '{"custom_id": ..., "response": {"status_code": ..., "body": ...}}.'
                ) from exc
            response = row.get("response") or {}
            error = row.get("error")
            status_code = response.get("status_code")
            if error:
                message = error.get("message") if isinstance(error, dict) else str(error)
                results[custom_id] = BatchResult(custom_id, None, f"batch error: {message}")
            elif status_code != 200:
                body = response.get("body")
                detail = body.get("error", {}).get("message") if isinstance(body, dict) else body
                results[custom_id] = BatchResult(
                    custom_id, None, f"HTTP {status_code}: {detail or 'no detail'}"
                )
            else:
                results[custom_id] = BatchResult(custom_id, response.get("body"), None)
    return results


def _completion(
    prompter: ExpertPrompter, result: BatchResult | None, step: str, planned: Any
) -> Completion | str:
    """The usable completion of a result, or the reason there is none."""
    if result is None:
        return f"no {step} result for this item"
    if result.error is not None:
        return result.error
    try:
        completion = parse_completion(result.response, planned, prompter.counter)
        check_completion(planned, completion)
    except ExpertPromptingError as exc:
        return " ".join(str(exc).split())
    return completion


def write_answer_requests(
    prompter: ExpertPrompter,
    input_path: str | os.PathLike[str],
    requests_path: str | os.PathLike[str],
    identity_results: str | os.PathLike[str] | None = None,
) -> BatchFileSummary:
    """Step 2's requests: one per item whose identity is in ``identity_results``.

    Items whose identity failed are left out and listed in ``errors``. For the ``vanilla`` and
    ``static`` strategies pass no identity results.
    """
    strategy = prompter.config.strategy
    if strategy == "expert" and identity_results is None:
        raise ConfigurationError("The expert strategy needs the identity results file.")
    identities = read_results(identity_results) if identity_results is not None else {}
    summary = BatchFileSummary(path=str(requests_path))
    with ResultWriter(requests_path, truncate=True) as out:
        for item in _unique_items(input_path, summary):
            try:
                instruction, input = fold_input(item.instruction, item.input)
                identity = None
                if strategy == "expert":
                    planned, _ = prompter.planner.identity_request(instruction, input)
                    got = _completion(prompter, identities.get(item.key), "identity", planned)
                    if isinstance(got, str):
                        raise ConfigurationError(got)
                    identity = (got.content or "").strip()
                request = prompter.planner.answer_request(instruction, input, identity, strategy)
            except ExpertPromptingError as exc:
                summary.skipped += 1
                summary.errors.append(f"{item.key}: {' '.join(str(exc).split())}")
                continue
            out.write(_request_line(item.key, request.body()))
            summary.written += 1
    return summary


def _record(step: Any, completion: Completion) -> RequestRecord:
    return RequestRecord(
        step=step,
        model=completion.model,
        attempts=1,
        usage=Usage(
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            total_tokens=completion.prompt_tokens + completion.completion_tokens,
            requests=1,
        ),
        finish_reason=completion.finish_reason,
        seconds=0.0,
    )


def assemble(
    prompter: ExpertPrompter,
    input_path: str | os.PathLike[str],
    answer_results: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    identity_results: str | os.PathLike[str] | None = None,
    errors_path: str | os.PathLike[str] | None = None,
) -> BatchFileSummary:
    """The final dataset (the ``generate`` layout) from the result files of both passes."""
    from .dataset import output_row
    from .generate import default_errors_path

    strategy = prompter.config.strategy
    identities = read_results(identity_results) if identity_results is not None else {}
    answers = read_results(answer_results)
    summary = BatchFileSummary(path=str(output_path))
    errors = Path(errors_path) if errors_path is not None else default_errors_path(output_path)
    with (
        ResultWriter(output_path, truncate=True) as out,
        ResultWriter(errors, truncate=True) as bad,
    ):
        for item in _unique_items(input_path, summary):
            instruction, input = fold_input(item.instruction, item.input)
            records: list[RequestRecord] = []
            identity: str | None = None
            if strategy == "expert":
                planned, _ = prompter.planner.identity_request(instruction, input)
                got = _completion(prompter, identities.get(item.key), "identity", planned)
                if isinstance(got, str):
                    summary.errors.append(f"{item.key}: {got}")
                    bad.write({"kind": "item", "id": item.key, "step": "identity", "error": got})
                    continue
                identity = (got.content or "").strip()
                records.append(_record("identity", got))
            planned_answer = prompter.planner.answer_request(instruction, input, identity, strategy)
            done = _completion(prompter, answers.get(item.key), "answer", planned_answer)
            if isinstance(done, str):
                summary.errors.append(f"{item.key}: {done}")
                bad.write({"kind": "item", "id": item.key, "step": "answer", "error": done})
                continue
            records.append(_record("answer", done))
            raw = (done.content or "").strip()
            cleaned = clean_answer(raw) if prompter.config.clean_answers else raw
            usage = Usage()
            for record in records:
                usage = usage + record.usage
            result = ExpertAnswer(
                instruction=instruction,
                input=input,
                expert_identity=identity,
                answer=cleaned,
                raw_answer=raw if cleaned != raw else None,
                model=done.model,
                strategy=strategy,
                truncated=done.finish_reason == "length",
                usage=usage,
                requests=records,
                id=item.key,
            )
            out.write(output_row(item, result))
            summary.written += 1
    summary.skipped = len(summary.errors)
    return summary


# -- engines ------------------------------------------------------------------------------------
def _request_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not {"custom_id", "url", "body"} <= set(row):
                raise ValueError("missing custom_id, url or body")
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(
                f"{path}:{number} is not a batch request line ({exc})."
            ) from exc
        rows.append(row)
    return rows


async def _run_requests(
    client: openai.AsyncOpenAI, lines: list[dict[str, Any]], results_path: Path, concurrency: int
) -> int:
    gate = asyncio.Semaphore(concurrency)

    async def one(row: dict[str, Any]) -> dict[str, Any]:
        path = str(row["url"]).removeprefix("/v1")
        async with gate:
            try:
                body = await client.post(path, body=row["body"], cast_to=object)
                response: dict[str, Any] | None = {"status_code": 200, "body": body}
                error = None
            except openai.APIStatusError as exc:
                # the SDK hands over the inner error object; results carry {"error": {...}}
                detail = exc.body
                if not (isinstance(detail, dict) and "error" in detail):
                    detail = {"error": detail}
                response = {"status_code": exc.status_code, "body": detail}
                error = None
            except (openai.APIError, ValueError) as exc:
                response, error = None, {"code": type(exc).__name__, "message": str(exc)}
        return {
            "id": f"req_{row['custom_id']}",
            "custom_id": row["custom_id"],
            "response": response,
            "error": error,
        }

    with ResultWriter(results_path, truncate=True) as out:
        for finished in asyncio.as_completed([one(row) for row in lines]):
            out.write(await finished)
    return len(lines)


def run_requests(
    requests_path: str | os.PathLike[str],
    results_path: str | os.PathLike[str],
    *,
    client: openai.AsyncOpenAI,
    concurrency: int = 16,
) -> int:
    """Run a batch request file against any OpenAI-compatible server; write the result file.

    A stand-in for a batch engine where there is none (e.g. a self-hosted server): same input
    and output formats. Returns the number of requests run.
    """
    from .runner import run_sync

    rows = _request_rows(Path(requests_path))
    return run_sync(_run_requests(client, rows, Path(results_path), concurrency))


def submit(
    client: openai.OpenAI, requests_path: str | os.PathLike[str], completion_window: str = "24h"
) -> Any:
    """Upload a request file and start a batch on OpenAI's Batch API; the batch object."""
    with Path(requests_path).open("rb") as handle:
        uploaded = client.files.create(file=handle, purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id,
        endpoint=BATCH_ENDPOINT,
        completion_window=completion_window,  # type: ignore[arg-type]  # "24h" only, today
    )


def status(client: openai.OpenAI, batch_id: str) -> Any:
    """The batch object: ``status``, ``request_counts``, output and error file ids."""
    return client.batches.retrieve(batch_id)


def download(client: openai.OpenAI, batch_id: str, results_path: str | os.PathLike[str]) -> Any:
    """Save a finished batch's results (and failures, merged into the same file)."""
    batch = client.batches.retrieve(batch_id)
    if batch.status != "completed":
        raise ConfigurationError(
            f"Batch {batch_id} is {batch.status!r}, not completed; check again later "
            "(expertprompting batch status)."
        )
    parts = [file_id for file_id in (batch.output_file_id, batch.error_file_id) if file_id]
    with Path(results_path).open("w", encoding="utf-8") as out:
        for file_id in parts:
            text = client.files.content(file_id).text
            out.write(text if text.endswith("\n") or not text else text + "\n")
    return batch
