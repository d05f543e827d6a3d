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

import os
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import openai
from pydantic import BaseModel, Field

from .._io.async_driver import AsyncDriver
from .._io.budget import BudgetLedger
from .._io.ratelimit import RateLimiter
from .._io.retry import RetrySpec
from .._io.transport import AsyncOpenAITransport
from .._method.config import RetryPolicy, RunBudget
from .._method.errors import (
    ConfigurationError,
    ExpertPromptingError,
    RequestError,
    ResponseError,
    RetryError,
)
from .._method.flows import assemble_answer
from .._method.planner import fold_input
from .._method.results import RequestRecord, Usage
from .._method.tokens import TiktokenCounter, TokenCounter
from .._method.wire import ChatRequest, Completion, check_completion, parse_completion
from .answerer import Answerer
from .items import DatasetItem, InputProblem, JSONRow, ResultWriter, read_items, read_rows
from .outputs import (
    BATCH_REQUEST_ROWS,
    BATCH_RESULT_ROWS,
    ERROR_ROWS,
    OUTPUT_ROWS,
    FileRole,
    check_outputs,
)
from .pool import check_concurrency, run_pool, run_sync

__all__ = [
    "BATCH_ENDPOINT",
    "BATCH_PRICE_FACTOR",
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


BATCH_PRICE_FACTOR = 0.5
"""What a request run by OpenAI's Batch API costs, as a fraction of the model's price.

The Batch API bills half the list price. Result lines it wrote are recognised by their ``id``,
which it starts with ``batch_req_``; rows :func:`assemble` builds from them are priced at this
fraction. Lines from :func:`run_requests` or another engine (vLLM's ``run_batch``) were sent as
ordinary requests and are priced in full.
"""


@dataclass(frozen=True)
class BatchResult:
    """One line of a batch result file, read."""

    custom_id: str
    response: Any | None
    error: str | None
    batch_api: bool = False
    """Whether OpenAI's Batch API wrote the line (so it is billed at the batch price)."""


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


def _read_roles(
    input_path: str | os.PathLike[str],
    *,
    identities: str | os.PathLike[str] | None = None,
    answers: str | os.PathLike[str] | None = None,
) -> list[FileRole]:
    """The files a batch step reads, as its clash checks name them."""
    roles = [FileRole(Path(input_path), "input file")]
    if identities is not None:
        roles.append(FileRole(Path(identities), "identity results file", "--identities"))
    if answers is not None:
        roles.append(FileRole(Path(answers), "answer results file", "--answers"))
    return roles


def write_identity_requests(
    prompter: Answerer,
    input_path: str | os.PathLike[str],
    requests_path: str | os.PathLike[str],
) -> BatchFileSummary:
    """Step 1's requests for every item of ``input_path``, as a batch request file.

    With a baseline strategy (``vanilla``/``static``) there is no step 1: write the answer
    requests directly with :func:`write_answer_requests`.
    """
    check_outputs(
        [(FileRole(Path(requests_path), "request file", "-o"), BATCH_REQUEST_ROWS)],
        [FileRole(Path(input_path), "input file")],
    )
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


def _file_rows(path: str | os.PathLike[str], what: str, expected: str) -> Iterator[JSONRow]:
    """The rows of a batch file, read by the one JSONL reader; the first bad line is an error."""
    for row in read_rows(path, what=what):
        if isinstance(row, InputProblem):
            raise ConfigurationError(f"{row.path}:{row.line} is not a {expected} ({row.reason}).")
        yield row


def read_results(path: str | os.PathLike[str]) -> dict[str, BatchResult]:
    """A batch result file by ``custom_id`` (a line that is not JSON is an error naming it)."""
    results: dict[str, BatchResult] = {}
    for number, row in _file_rows(path, "batch result file", "batch result line"):
        if not isinstance(row, dict) or "custom_id" not in row:
            raise ConfigurationError(
                f"{path}:{number} is not a batch result line (no custom_id); expected "
                '{"custom_id": ..., "response": {"status_code": ..., "body": ...}}.'
            )
        custom_id = str(row["custom_id"])
        response = row.get("response")
        response = response if isinstance(response, dict) else {}
        error = row.get("error")
        status_code = response.get("status_code")
        batch_api = str(row.get("id") or "").startswith("batch_req_")
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
            results[custom_id] = BatchResult(custom_id, response.get("body"), None, batch_api)
    return results


def _completion(
    prompter: Answerer, result: BatchResult | None, step: str, planned: Any
) -> Completion | str:
    """The usable completion of a result, or the reason there is none."""
    if result is None:
        return f"no {step} result for this item"
    if result.error is not None:
        return result.error
    try:
        completion = parse_completion(result.response, planned, prompter.session.counter)
        check_completion(planned, completion)
    except ExpertPromptingError as exc:
        return " ".join(str(exc).split())
    return completion


def write_answer_requests(
    prompter: Answerer,
    input_path: str | os.PathLike[str],
    requests_path: str | os.PathLike[str],
    identity_results: str | os.PathLike[str] | None = None,
) -> BatchFileSummary:
    """Step 2's requests: one per item whose identity is in ``identity_results``.

    Items whose identity failed are left out and listed in ``errors``. For the ``vanilla`` and
    ``static`` strategies pass no identity results.
    """
    check_outputs(
        [(FileRole(Path(requests_path), "request file", "-o"), BATCH_REQUEST_ROWS)],
        _read_roles(input_path, identities=identity_results),
    )
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


def _cost(
    prompter: Answerer, planned: Any, completion: Completion, result: BatchResult | None
) -> float | None:
    """What one result cost: priced as a direct run prices it (by the model asked for, else the
    model that answered), at :data:`BATCH_PRICE_FACTOR` when the Batch API ran it."""
    tokens = (completion.prompt_tokens, completion.completion_tokens)
    cost = prompter.session.ledger.cost(planned.model, *tokens)
    if cost is None:
        cost = prompter.session.ledger.cost(completion.model, *tokens)
    if cost is None:
        return None
    return cost * BATCH_PRICE_FACTOR if result is not None and result.batch_api else cost


def _record(step: Any, completion: Completion, cost: float | None) -> RequestRecord:
    return RequestRecord(
        step=step,
        model=completion.model,
        attempts=1,
        usage=Usage(
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            total_tokens=completion.prompt_tokens + completion.completion_tokens,
            requests=1,
            cost=cost,
        ),
        finish_reason=completion.finish_reason,
        seconds=0.0,
    )


def assemble(
    prompter: Answerer,
    input_path: str | os.PathLike[str],
    answer_results: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    identity_results: str | os.PathLike[str] | None = None,
    errors_path: str | os.PathLike[str] | None = None,
) -> BatchFileSummary:
    """The final dataset (the ``generate`` layout) from the result files of both passes."""
    from .generate import default_errors_path
    from .items import output_row

    check_outputs(
        [
            (FileRole(Path(output_path), "output file", "-o"), OUTPUT_ROWS),
            (
                FileRole(
                    Path(errors_path) if errors_path else default_errors_path(output_path),
                    "errors file",
                    "--errors",
                ),
                ERROR_ROWS,
            ),
        ],
        _read_roles(input_path, identities=identity_results, answers=answer_results),
    )
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
                found = identities.get(item.key)
                got = _completion(prompter, found, "identity", planned)
                if isinstance(got, str):
                    summary.errors.append(f"{item.key}: {got}")
                    bad.write({"kind": "item", "id": item.key, "step": "identity", "error": got})
                    continue
                identity = (got.content or "").strip()
                records.append(_record("identity", got, _cost(prompter, planned, got, found)))
            planned_answer = prompter.planner.answer_request(instruction, input, identity, strategy)
            answered = answers.get(item.key)
            done = _completion(prompter, answered, "answer", planned_answer)
            if isinstance(done, str):
                summary.errors.append(f"{item.key}: {done}")
                bad.write({"kind": "item", "id": item.key, "step": "answer", "error": done})
                continue
            records.append(_record("answer", done, _cost(prompter, planned_answer, done, answered)))
            result = assemble_answer(
                prompter.planner, instruction, input, identity, strategy, done, records, id=item.key
            )
            out.write(output_row(item, result))
            summary.written += 1
    summary.skipped = len(summary.errors)
    return summary


# -- engines ------------------------------------------------------------------------------------
def _request_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, row in _file_rows(path, "request file", "batch request line"):
        problem = None
        if not isinstance(row, dict) or not {"custom_id", "url", "body"} <= set(row):
            problem = "missing custom_id, url or body"
        elif not isinstance(row["body"], dict):
            problem = "its body is not a JSON object"
        elif str(row["url"]) != BATCH_ENDPOINT:
            problem = f"url {row['url']!r}: only {BATCH_ENDPOINT} is run"
        if problem is not None:
            raise ConfigurationError(f"{path}:{number} is not a batch request line ({problem}).")
        rows.append(row)
    return rows


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or " ".join(str(exc).split()) or type(exc).__name__


@dataclass(frozen=True)
class _LineRequest(ChatRequest):
    """A request file's line as a request the driver can send: sizes for the budget and rate
    limiter, and the body sent exactly as written (a fixed seed varies on retries, as every
    request's does, so a retry does not repeat the reply it retries)."""

    line: Mapping[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        body = dict(self.line)
        if "seed" in self.sampling:
            body["seed"] = self.sampling["seed"]
        return body


def _line_request(body: dict[str, Any], counter: TokenCounter) -> _LineRequest:
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    try:
        prompt = counter.count_messages(messages)
    except (TypeError, AttributeError, ValueError):  # content parts or other shapes: not counted
        prompt = 0
    param = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    cap = body.get(param)
    seed = body.get("seed")
    return _LineRequest(
        step="answer",  # an empty reply is retried; what a reply must be is assemble's to say
        model=str(body.get("model") or ""),
        messages=messages,
        prompt_tokens=prompt,
        max_tokens=cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else 0,
        max_tokens_param=param,
        sampling={"seed": seed} if isinstance(seed, int) and not isinstance(seed, bool) else {},
        line=body,
    )


class _Keep:
    """A transport that keeps the last reply as it came, for the result file."""

    def __init__(self, inner: AsyncOpenAITransport) -> None:
        self.inner = inner
        self.reply: Any = None

    async def complete(self, request: ChatRequest) -> Any:
        self.reply = None
        self.reply = await self.inner.complete(request)
        return self.reply

    async def open_stream(self, request: ChatRequest) -> AsyncIterator[Any]:
        return await self.inner.open_stream(request)


def _status_error(exc: BaseException) -> openai.APIStatusError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, openai.APIStatusError):
            return seen
        seen = seen.__cause__
    return None


def _failed_line(exc: Exception, reply: Any) -> tuple[dict[str, Any] | None, Any]:
    """The ``response`` and ``error`` of a result line whose request failed for good."""
    refused = _status_error(exc)
    if refused is not None:
        # the SDK hands over the inner error object; results carry {"error": {...}}
        detail = refused.body
        if not (isinstance(detail, dict) and "error" in detail):
            detail = {"error": detail}
        return {"status_code": refused.status_code, "body": detail}, None
    if isinstance(exc, ResponseError) and reply is not None:
        # the endpoint answered, unusably (empty...): the reply is the result, as an engine
        # would write it; answer-requests and assemble say what is wrong with it
        return {"status_code": 200, "body": reply}, None
    return None, {"code": type(exc).__name__, "message": " ".join(str(exc).split())}


async def _run_requests(
    client: openai.AsyncOpenAI,
    lines: list[dict[str, Any]],
    results_path: Path,
    *,
    concurrency: int,
    retry: RetrySpec,
    limiter: RateLimiter,
    timeout: float,
) -> int:
    transport = AsyncOpenAITransport(client, timeout)  # the SDK's own retries off
    ledger = BudgetLedger(RunBudget(), lambda model: None)  # counts attempts; no limits
    counters: dict[str, TokenCounter] = {}

    def counter(model: str) -> TokenCounter:
        if model not in counters:
            with warnings.catch_warnings():  # an unknown name is counted as o200k, silently
                warnings.simplefilter("ignore")
                counters[model] = TiktokenCounter(model or "gpt-4o")
        return counters[model]

    async def one(row: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = row["body"]
        model = str(body.get("model") or "")
        request = _line_request(body, counter(model))
        keep = _Keep(transport)  # one per line: its reply is that line's result
        driver = AsyncDriver(keep, ledger, retry, counter(model), limiter=limiter)
        try:
            await driver.execute(request)
            response: dict[str, Any] | None = {"status_code": 200, "body": keep.reply}
            error = None
        except Exception as exc:  # the line's failure is its result; the others go on
            response, error = _failed_line(exc, keep.reply)
        return {
            "id": f"req_{row['custom_id']}",
            "custom_id": row["custom_id"],
            "response": response,
            "error": error,
        }

    with ResultWriter(results_path, truncate=True) as out:
        await run_pool(
            lines,
            lambda _, row: one(row),
            concurrency=concurrency,
            on_result=lambda _, __, line: out.write(line),
        )
    return len(lines)


def run_requests(
    requests_path: str | os.PathLike[str],
    results_path: str | os.PathLike[str],
    *,
    client: openai.AsyncOpenAI,
    concurrency: int = 16,
    retry: RetrySpec | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    timeout: float = 60.0,
) -> int:
    """Run a batch request file against any OpenAI-compatible server; write the result file.

    A stand-in for a batch engine where there is none (e.g. a self-hosted server): same input
    and output formats. Requests go out as direct calls do: through ``retry`` (a
    :class:`~expertprompting.RetryPolicy`, by default the usual one; the client's own
    retries are turned off, so attempts are never multiplied), the ``rpm``/``tpm`` rate limits
    (a 429 pauses every worker), and ``timeout`` seconds per attempt. Results are written as
    they finish; a request that failed for good gets its error in its line. Returns the number
    of requests run.
    """
    check_outputs(
        [(FileRole(Path(results_path), "result file", "-o"), BATCH_RESULT_ROWS)],
        [FileRole(Path(requests_path), "request file")],
    )
    check_concurrency(concurrency)
    limiter = RateLimiter(rpm=rpm, tpm=tpm)
    rows = _request_rows(Path(requests_path))
    return run_sync(
        _run_requests(
            client,
            rows,
            Path(results_path),
            concurrency=concurrency,
            retry=retry if retry is not None else RetryPolicy(),
            limiter=limiter,
            timeout=timeout,
        )
    )


_API_ADVICE = {
    401: "Check the API key (OPENAI_API_KEY).",
    403: "The key has no access to the Batch API here; check its permissions.",
    404: "Check the batch id, and that the endpoint has a Batch API.",
}


def _api_error(exc: openai.APIError, what: str, *, once: bool = False) -> ExpertPromptingError:
    """A one-line error for a failed Batch API call (the SDK's error as its cause)."""
    if isinstance(exc, openai.APIStatusError):
        body = exc.body
        detail = body.get("message") if isinstance(body, dict) else None
        detail = " ".join(str(detail or exc.message).split())
        advice = _API_ADVICE.get(exc.status_code, "Check the request and try again.")
        return RequestError(
            f"{what} failed with HTTP {exc.status_code}: {detail}. {advice}",
            status_code=exc.status_code,
        )
    if isinstance(exc, openai.APIConnectionError):
        late = "timed out" if isinstance(exc, openai.APITimeoutError) else "could not connect"
        note = (
            " The batch may have been created even so: list your batches before submitting "
            "again, or it may run (and be billed) twice."
            if once
            else " Check the endpoint's address and the network, then try again."
        )
        return RetryError(f"{what} failed: {late} ({exc}).{note}", attempts=1)
    return RequestError(f"{what} failed: {' '.join(str(exc).split())}.", status_code=None)


def submit(
    client: openai.OpenAI, requests_path: str | os.PathLike[str], completion_window: str = "24h"
) -> Any:
    """Upload a request file and start a batch on OpenAI's Batch API; the batch object.

    Starting the batch is not retried: a retry after a lost reply could start it twice.
    """
    try:
        with Path(requests_path).open("rb") as handle:
            uploaded = client.files.create(file=handle, purpose="batch")
    except OSError as exc:
        raise ConfigurationError(
            f"Cannot read the request file {requests_path}: {_reason(exc)}."
        ) from exc
    except openai.APIError as exc:
        raise _api_error(exc, f"Uploading {requests_path}") from exc
    try:
        return client.with_options(max_retries=0).batches.create(
            input_file_id=uploaded.id,
            endpoint=BATCH_ENDPOINT,
            completion_window=completion_window,  # type: ignore[arg-type]  # "24h" only, today
        )
    except openai.APIError as exc:
        raise _api_error(exc, "Starting the batch", once=True) from exc


def status(client: openai.OpenAI, batch_id: str) -> Any:
    """The batch object: ``status``, ``request_counts``, output and error file ids."""
    try:
        return client.batches.retrieve(batch_id)
    except openai.APIError as exc:
        raise _api_error(exc, f"Reading batch {batch_id}") from exc


def download(client: openai.OpenAI, batch_id: str, results_path: str | os.PathLike[str]) -> Any:
    """Save a finished batch's results (and failures, merged into the same file)."""
    check_outputs([(FileRole(Path(results_path), "result file", "-o"), BATCH_RESULT_ROWS)], [])
    batch = status(client, batch_id)
    if batch.status != "completed":
        raise ConfigurationError(
            f"Batch {batch_id} is {batch.status!r}, not completed; check again later "
            "(expertprompting batch status)."
        )
    parts = [file_id for file_id in (batch.output_file_id, batch.error_file_id) if file_id]
    try:
        texts = [client.files.content(file_id).text for file_id in parts]
    except openai.APIError as exc:
        raise _api_error(exc, f"Downloading the results of batch {batch_id}") from exc
    try:
        with Path(results_path).open("w", encoding="utf-8") as out:
            for text in texts:
                out.write(text if text.endswith("\n") or not text else text + "\n")
    except OSError as exc:
        raise ConfigurationError(f"Cannot write {results_path}: {_reason(exc)}.") from exc
    return batch
