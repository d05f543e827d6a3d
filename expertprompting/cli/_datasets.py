"""The dataset commands: ``generate`` and ``batch`` (with the ``batch`` sub-parser and its steps).

Each takes the parsed arguments and returns an exit code; the library (and the OpenAI SDK that
``batch`` drives) is imported inside them, so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ._common import (
    ABSENT,
    NOTES,
    UsageError,
    add_model_options,
    cache_setting,
    positive_int,
    positive_number,
    prompter_from_args,
    retry_setting,
)


def cmd_generate(args: argparse.Namespace) -> int:
    from .._datasets.generate import generate

    cache = cache_setting(args.cache)
    if isinstance(cache, str):  # before the prompter opens it: SQLite would write in the file
        from .._datasets.generate import default_errors_path
        from .._datasets.outputs import FileRole, check_clashes

        errors = Path(args.errors) if args.errors else default_errors_path(args.output)
        check_clashes(
            [FileRole(Path(cache), "identity cache", "--cache")],
            [
                FileRole(Path(args.input_file), "input file"),
                FileRole(Path(args.output), "output file", "-o"),
                FileRole(errors, "errors file", "--errors"),
            ],
        )
    ep = prompter_from_args(args, cache=cache)

    def problem(text: str) -> None:
        print(f"expertprompting: skipped input row: {text}", file=sys.stderr)

    summary = None
    try:
        summary = generate(
            ep,
            args.input_file,
            args.output,
            concurrency=args.concurrency,
            rpm=args.rpm,
            tpm=args.tpm,
            limit=args.limit,
            errors_path=args.errors,
            max_errors=args.max_errors,
            progress=not args.no_progress,
            on_problem=problem,
        )
    except KeyboardInterrupt:
        print(
            "expertprompting: interrupted; finished rows are saved in "
            f"{args.output}. Rerun the same command to resume.",
            file=sys.stderr,
        )
        return 130
    if args.json:
        sys.stdout.write(summary.model_dump_json(indent=2) + "\n")
    else:
        print(summary.line(), file=sys.stderr)
    if summary.truncated:
        # a resumed run must keep its cap (the fingerprint holds it): a new output file
        NOTES.add(
            f"{summary.truncated} answer{'' if summary.truncated == 1 else 's'} cut off at the "
            f"answer cap of {ep.planner.answer_cap()} tokens; a larger --max-tokens (with "
            "another -o) lets them finish"
        )
    return 1 if summary.failed or summary.stopped_early else 0


def _openai_client(args: argparse.Namespace) -> Any:
    import openai

    if not (args.base_url or os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL")):
        raise UsageError(
            "the Batch API needs OPENAI_API_KEY (or --base-url of a compatible server)"
        )
    return openai.OpenAI(
        base_url=args.base_url or None, api_key=os.environ.get("OPENAI_API_KEY") or "not-needed"
    )


def _report(summary: Any, what: str) -> None:
    for problem in summary.problems:
        print(f"expertprompting: skipped input row: {problem}", file=sys.stderr)
    for error in summary.errors:
        print(f"expertprompting: left out: {error}", file=sys.stderr)
    print(f"{summary.written} {what} written to {summary.path}", file=sys.stderr)


def cmd_batch(args: argparse.Namespace) -> int:
    from .._datasets import batch as batch

    action = args.action
    if action in ("identity-requests", "answer-requests", "assemble"):
        ep = prompter_from_args(args, sends=False)  # these only write or read files
        if action == "identity-requests":
            summary = batch.write_identity_requests(ep, args.input_file, args.output)
            _report(summary, "identity requests")
        elif action == "answer-requests":
            summary = batch.write_answer_requests(ep, args.input_file, args.output, args.identities)
            _report(summary, "answer requests")
        else:
            summary = batch.assemble(
                ep, args.input_file, args.answers, args.output, args.identities, args.errors
            )
            _report(summary, "rows")
        return 1 if summary.errors else 0
    if action == "run":
        import openai

        if not (
            args.base_url or os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL")
        ):
            raise UsageError(
                "batch run needs --base-url of an OpenAI-compatible server (or OPENAI_API_KEY "
                "to run against OpenAI)"
            )
        # our retry policy and rate limiter send every request; the SDK's retries stay off
        client = openai.AsyncOpenAI(
            base_url=args.base_url or None,
            api_key=os.environ.get("OPENAI_API_KEY") or "not-needed",
            max_retries=0,
        )
        count = batch.run_requests(
            args.requests,
            args.output,
            client=client,
            concurrency=args.concurrency,
            retry=retry_setting(args).get("retry"),
            rpm=args.rpm,
            tpm=args.tpm,
            **({"timeout": args.timeout} if args.timeout is not None else {}),
        )
        failed = sum(r.error is not None for r in batch.read_results(args.output).values())
        print(f"{count} requests run ({failed} failed), results in {args.output}", file=sys.stderr)
        return 1 if failed else 0
    client = _openai_client(args)
    if action == "submit":
        job = batch.submit(client, args.requests)
    elif action == "status":
        job = batch.status(client, args.batch_id)
    else:
        job = batch.download(client, args.batch_id, args.output)
    if args.json or action != "download":
        sys.stdout.write(job.model_dump_json(indent=2) + "\n")
    return 0


def add_batch_parser(sub: Any) -> None:
    """The ``batch`` command and its steps, each offering only the options it uses."""
    batch = sub.add_parser(
        "batch",
        help="the method in two passes over OpenAI's Batch API or vLLM's run_batch",
        description="Write the identity-stage request file, run it (submit/status/download, or "
        "run against any OpenAI-compatible server), write the answer-stage file from its "
        "results, run that, and assemble the dataset from both result files.",
    )
    steps = batch.add_subparsers(
        dest="action", required=True, metavar="STEP", help="the step to take"
    )

    def step(name: str, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = steps.add_parser(name, help=help, description=help)
        # first, so that no option added later has its default replaced
        parser.set_defaults(command=cmd_batch, **ABSENT)
        return parser

    def endpoint(parser: argparse.ArgumentParser, json_help: str | None = None) -> None:
        parser.add_argument(
            "--base-url",
            metavar="URL",
            help="an OpenAI-compatible endpoint (default: OpenAI, or $OPENAI_BASE_URL)",
        )
        if json_help:
            parser.add_argument("--json", action="store_true", help=json_help)
        parser.add_argument("--debug", action="store_true", help="show the traceback of an error")

    # the file-writing steps send nothing: no key, no endpoint, no retries
    ident = step("identity-requests", "write step 1's request file from INPUT")
    ident.add_argument("input_file", metavar="INPUT", help="the instructions: JSONL or a JSON list")
    ident.add_argument(
        "-o", "--output", required=True, metavar="REQUESTS", help="the request file to write"
    )
    add_model_options(
        ident, sends=False, strategy=False, templates=False, max_tokens=False, json_help=None
    )
    answer = step("answer-requests", "write step 2's request file from step 1's results")
    answer.add_argument("input_file", metavar="INPUT", help="the same INPUT as step 1")
    answer.add_argument("--identities", metavar="RESULTS", help="step 1's result file")
    answer.add_argument(
        "-o", "--output", required=True, metavar="REQUESTS", help="the request file to write"
    )
    add_model_options(answer, sends=False, json_help=None)
    assemble = step("assemble", "write the dataset from both result files")
    assemble.add_argument("input_file", metavar="INPUT", help="the same INPUT as step 1")
    assemble.add_argument("--identities", metavar="RESULTS", help="step 1's result file")
    assemble.add_argument(
        "--answers", required=True, metavar="RESULTS", help="step 2's result file"
    )
    assemble.add_argument(
        "-o", "--output", required=True, metavar="OUTPUT", help="the dataset file to write"
    )
    assemble.add_argument("--errors", metavar="FILE", help="default OUTPUT.errors.jsonl")
    add_model_options(
        assemble, sends=False, temperature=False, seed=False, max_tokens=False, json_help=None
    )
    run = step("run", "run a request file against an OpenAI-compatible server")
    run.add_argument("requests", metavar="REQUESTS", help="a request file from an earlier step")
    run.add_argument(
        "-o", "--output", required=True, metavar="RESULTS", help="the result file to write"
    )
    run.add_argument(
        "--concurrency",
        type=positive_int,
        default=16,
        metavar="N",
        help="requests in flight (16)",
    )
    run.add_argument(
        "--rpm", type=positive_number, metavar="N", help="requests per minute, whole run"
    )
    run.add_argument(
        "--tpm", type=positive_number, metavar="N", help="tokens per minute, whole run"
    )
    run.add_argument(
        "--max-attempts",
        type=positive_int,
        metavar="N",
        help="attempts per request, the first included, before its line records the error (3)",
    )
    run.add_argument(
        "--timeout",
        type=positive_number,
        metavar="SECONDS",
        help="most time one attempt may take to bring a whole reply (60)",
    )
    endpoint(run)
    submit = step("submit", "upload a request file and start a batch")
    submit.add_argument("requests", metavar="REQUESTS", help="a request file from an earlier step")
    endpoint(submit)
    status = step("status", "show a batch's status")
    status.add_argument("batch_id", metavar="BATCH_ID", help="the id that submit printed")
    endpoint(status)
    download = step("download", "save a finished batch's results")
    download.add_argument("batch_id", metavar="BATCH_ID", help="the id that submit printed")
    download.add_argument(
        "-o", "--output", required=True, metavar="RESULTS", help="the result file to write"
    )
    endpoint(download, json_help="also print the batch as JSON")
