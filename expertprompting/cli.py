"""The ``expertprompting`` command line.

Subcommands: ``answer``, ``identify``, ``prompt`` (the exact messages, no request) and
``generate`` (a whole dataset file, resumably). Every subcommand is a function taking the
parsed arguments and returning an exit code; :func:`build_parser` wires them up, so further
subcommands plug in the same way.

Exit codes: 0 success, 1 a failure while running (budget, endpoint, response), 2 a usage error
(bad options, bad settings, no way to reach a model), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from . import __version__
from .errors import (
    ConfigurationError,
    ExpertPromptingError,
    TemplateError,
)

__all__ = ["DEFAULT_OPENAI_MODEL", "build_parser", "main", "resolve_model"]

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
LOCAL_NOTE = (
    "note: no OPENAI_API_KEY or base URL set, so this runs the bundled SmolLM2-135M model, a "
    "tiny model for trying things out; for real answers set OPENAI_API_KEY or pass "
    "--base-url/--model."
)
NOWHERE = (
    "no model to run: set OPENAI_API_KEY (OpenAI), pass --base-url of an OpenAI-compatible "
    'server (vLLM, Ollama, llama.cpp), or pip install "expertprompting[local]" for the '
    "bundled local model"
)

Command = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """A problem with how the command was called (exit code 2)."""


# -- model resolution --------------------------------------------------------------------------
def resolve_model(
    model: str | None,
    base_url: str | None,
    environ: Mapping[str, str],
    local_available: Callable[[], bool],
) -> tuple[str, str | None]:
    """Which model to run, and a note for stderr (or None).

    ``--model`` wins. Otherwise an OpenAI key or base URL (option or environment) means the
    OpenAI-compatible path with ``EXPERTPROMPTING_MODEL`` or :data:`DEFAULT_OPENAI_MODEL`;
    else the bundled local model if it is installed; else a usage error naming the ways forward.
    """
    if model:
        return model, None
    if base_url or environ.get("OPENAI_API_KEY") or environ.get("OPENAI_BASE_URL"):
        return environ.get("EXPERTPROMPTING_MODEL") or DEFAULT_OPENAI_MODEL, None
    if local_available():
        return "local", LOCAL_NOTE
    raise UsageError(NOWHERE)


def _local_available() -> bool:
    from .local import local_backend_available

    return local_backend_available()


def _prompter(args: argparse.Namespace, **extra: Any) -> Any:
    from .local import is_local_model
    from .prompter import ExpertPrompter

    model, note = resolve_model(args.model, args.base_url, os.environ, _local_available)
    if note and not args.quiet:
        print(note, file=sys.stderr)
    local = is_local_model(model)
    if not local and not (
        args.base_url or os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL")
    ):
        raise UsageError(
            f"model {model!r} needs an API key: set OPENAI_API_KEY, or pass --base-url of an "
            "OpenAI-compatible server, or use --model local"
        )
    settings: dict[str, Any] = {
        k: v
        for k, v in (
            ("temperature", args.temperature),
            ("seed", args.seed),
            ("max_tokens", args.max_tokens),
            ("strategy", args.strategy),
        )
        if v is not None
    }
    if args.base_url and not local:
        settings["base_url"] = args.base_url
    settings.update(_retry_setting(args))
    custom = _strategy_templates(args.strategy_template)
    if custom:
        settings["strategies"] = custom
    settings.update(extra)
    return ExpertPrompter(model=model, **settings)


# -- shared helpers ----------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def _strategy_templates(specs: list[str]) -> dict[str, Path]:
    templates: dict[str, Path] = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep or not name.strip() or not file.strip():
            raise UsageError(
                f"--strategy-template takes NAME=FILE, e.g. socratic=socratic.jinja, not {spec!r}"
            )
        templates[name.strip()] = Path(file.strip())  # read and checked by the prompter
    return templates


def _retry_setting(args: argparse.Namespace) -> dict[str, Any]:
    from .config import RetryPolicy

    if args.max_attempts is None:
        return {}
    return {"retry": RetryPolicy(max_attempts=args.max_attempts)}


def _instruction(value: str, stdin: TextIO) -> str:
    text = stdin.read() if value == "-" else value
    if not text.strip():
        raise UsageError(
            "the instruction is empty" + (" (nothing on stdin)" if value == "-" else "")
        )
    return text.strip() if value == "-" else text


def _styled(text: str, code: str, stream: TextIO) -> str:
    if stream.isatty() and "NO_COLOR" not in os.environ:
        return f"\033[{code}m{text}\033[0m"
    return text


def _usage_line(usage: Any) -> str:
    cost = f", ${usage.cost:.6f}" if usage.cost else ""
    return (
        f"usage: {usage.requests} requests, {usage.prompt_tokens} prompt + "
        f"{usage.completion_tokens} completion tokens{cost}"
    )


# -- subcommands -------------------------------------------------------------------------------
def cmd_answer(args: argparse.Namespace) -> int:
    ep = _prompter(args)
    instruction = _instruction(args.instruction, sys.stdin)
    out = sys.stdout
    strategy = args.strategy or ep.config.strategy
    if args.stream and not args.json:
        identity = None
        if strategy == "expert":
            ident = ep.identify(instruction, args.input)
            identity = ident.description
            if args.show_identity:
                out.write(_styled("Expert identity:", "1;2", out) + "\n")
                out.write(_styled(identity, "2", out) + "\n\n")
                out.write(_styled("Answer:", "1", out) + "\n")
        stream = ep.stream(instruction, args.input, identity=identity)
        for chunk in stream:
            out.write(chunk)
            out.flush()
        out.write("\n")
        result = stream.result
    else:
        result = ep.answer(instruction, args.input)
        if args.json:
            out.write(result.model_dump_json(indent=2) + "\n")
        else:
            if args.show_identity and result.expert_identity:
                out.write(_styled("Expert identity:", "1;2", out) + "\n")
                out.write(_styled(result.expert_identity, "2", out) + "\n\n")
                out.write(_styled("Answer:", "1", out) + "\n")
            out.write(result.answer + "\n")
    if args.verbose:
        print(_usage_line(ep.usage), file=sys.stderr)
    return 0


def cmd_identify(args: argparse.Namespace) -> int:
    ep = _prompter(args)
    ident = ep.identify(_instruction(args.instruction, sys.stdin), args.input)
    if args.json:
        sys.stdout.write(ident.model_dump_json(indent=2) + "\n")
    else:
        sys.stdout.write(ident.description + "\n")
    if args.verbose:
        print(_usage_line(ep.usage), file=sys.stderr)
    return 0


def cmd_prompt(args: argparse.Namespace) -> int:
    ep = _prompter(args)
    instruction = _instruction(args.instruction, sys.stdin)
    strategy = args.strategy or ep.config.strategy
    steps: dict[str, Any] = {}
    if strategy == "expert":
        steps["identity"] = ep.identity_messages(instruction, args.input)
        identity = args.identity or "<the expert identity from step 1>"
        steps["answer"] = ep.answer_messages(instruction, identity, args.input, strategy)
    else:
        steps["answer"] = ep.answer_messages(instruction, None, args.input, strategy)
    if args.json:
        sys.stdout.write(json.dumps(steps, indent=2, ensure_ascii=False) + "\n")
        return 0
    for step, messages in steps.items():
        tokens = ep.counter.count_messages(messages)
        sys.stdout.write(_styled(f"== {step} request ({tokens} prompt tokens)", "1", sys.stdout))
        sys.stdout.write("\n")
        for message in messages:
            sys.stdout.write(_styled(f"[{message['role']}]", "2", sys.stdout) + "\n")
            sys.stdout.write(message["content"] + "\n\n")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .generate import generate

    cache: Any = True
    if args.cache is not None:
        cache = False if args.cache.lower() in ("off", "none", "false", "0") else args.cache
    ep = _prompter(args, cache=cache)

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
    return 1 if summary.failed or summary.stopped_early else 0


def _judge(args: argparse.Namespace) -> Any:
    from .judge import Judge
    from .local import is_local_model

    model = args.judge_model
    if model is None:
        model, _ = resolve_model(args.model, args.base_url, os.environ, _local_available)
    settings: dict[str, Any] = {}
    if args.base_url and not is_local_model(model):
        settings["base_url"] = args.base_url
    if args.seed is not None:
        settings["seed"] = args.seed
    settings.update(_retry_setting(args))
    cache = getattr(args, "judge_cache", None)
    if cache:
        settings["cache"] = cache
    return Judge(model=model, **settings)


def _print_report(report: Any, stream: TextIO) -> None:
    print(
        f"{report.a} vs {report.b}: {report.wins} wins, {report.ties} ties, {report.losses} "
        f"losses, {report.unparsed} unparsed of {report.pairs}; adjusted win rate "
        + ("n/a" if report.adjusted_win_rate is None else f"{report.adjusted_win_rate:.1%}")
        + "; score ratio "
        + ("n/a" if report.score_ratio is None else f"{report.score_ratio:.1%}")
        + "; position consistency "
        + ("n/a" if report.position_consistency is None else f"{report.position_consistency:.1%}"),
        file=stream,
    )


def cmd_judge(args: argparse.Namespace) -> int:
    judge = _judge(args)
    verdicts = args.output or str(Path(args.a).with_suffix("")) + ".verdicts.jsonl"
    report = judge.judge_files(
        args.a,
        args.b,
        verdicts,
        a_name=Path(args.a).stem,
        b_name=Path(args.b).stem,
        concurrency=args.concurrency,
        progress=not args.no_progress,
    )
    if args.json:
        data = report.model_dump(exclude={"verdicts"})
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        _print_report(report, sys.stdout)
    print(f"verdicts: {verdicts}", file=sys.stderr)
    if report.failed:
        from .generate import default_errors_path

        errors = default_errors_path(verdicts)
        print(
            f"{report.failed} pairs could not be judged (see {errors}); rerun to judge them",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    ep = _prompter(args)
    result = compare(
        ep,
        args.questions,
        args.output,
        strategies=strategies,
        judge=_judge(args),
        concurrency=args.concurrency,
        progress=not args.no_progress,
    )
    for report in result.reports:
        _print_report(report, sys.stderr if args.json else sys.stdout)
    print(f"report: {Path(args.output) / 'report.md'}", file=sys.stderr)
    if args.json:
        data = result.model_dump(exclude={"reports": {"__all__": {"verdicts"}}})
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    for gap in result.gaps():
        print(f"note: {gap}", file=sys.stderr)
    if result.failed:
        print("rerun the same command to retry what failed", file=sys.stderr)
        return 1
    return 0


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
    from . import batch

    action = args.action
    if action in ("identity-requests", "answer-requests", "assemble"):
        ep = _prompter(args)
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

        client = openai.AsyncOpenAI(
            base_url=args.base_url or None,
            api_key=os.environ.get("OPENAI_API_KEY") or "not-needed",
            max_retries=3,
        )
        count = batch.run_requests(
            args.requests, args.output, client=client, concurrency=args.concurrency
        )
        print(f"{count} requests run, results in {args.output}", file=sys.stderr)
        return 0
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


# -- parser ------------------------------------------------------------------------------------
def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", help="model name; 'local' or 'local:/path.gguf' for in-process")
    group.add_argument(
        "--base-url", help="an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1"
    )
    group.add_argument(
        "--strategy",
        metavar="NAME",
        help="expert (default), vanilla, static, multi-expert, or one named by --strategy-template",
    )
    group.add_argument(
        "--strategy-template",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="add a strategy: a Jinja template file seeing instruction and input (repeatable)",
    )
    group.add_argument("--temperature", type=float)
    group.add_argument("--max-tokens", type=int, help="cap on the answer's length")
    group.add_argument("--seed", type=int, help="fixed sampling seed, for reproducible runs")
    group.add_argument(
        "--max-attempts",
        type=_positive_int,
        metavar="N",
        help="attempts per request, the first included, before an item fails (3)",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the whole result as JSON")
    out.add_argument("-v", "--verbose", action="store_true", help="usage summary on stderr")
    out.add_argument("-q", "--quiet", action="store_true", help="no notes on stderr")
    out.add_argument("--debug", action="store_true", help="show tracebacks")


def _single(sub: Any, name: str, command: Command, help: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
    parser.add_argument("instruction", help="the instruction, or - to read it from stdin")
    parser.add_argument("--input", help="the instruction's input (context), if any")
    _common(parser)
    parser.set_defaults(command=command)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(
        prog="expertprompting",
        description="Answer instructions as the expert each deserves (ExpertPrompting).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")

    answer = _single(sub, "answer", cmd_answer, "answer an instruction as its expert")
    answer.add_argument("--stream", action="store_true", help="print the answer as it arrives")
    answer.add_argument(
        "--show-identity",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="print the expert identity before the answer (default: yes)",
    )
    _single(sub, "identify", cmd_identify, "write the expert identity for an instruction")
    prompt = _single(sub, "prompt", cmd_prompt, "print the exact messages, send nothing")
    prompt.add_argument("--identity", help="identity text to show in the step-2 messages")

    gen = sub.add_parser(
        "generate",
        help="answer every instruction of a JSONL/JSON file, resumably",
        description="Answer every instruction of INPUT (JSONL, or a JSON list such as Alpaca's) "
        "into OUTPUT (JSONL in the ExpertLLaMA layout). Rerun the same command to resume.",
    )
    gen.add_argument("input_file", metavar="INPUT")
    gen.add_argument("-o", "--output", required=True, metavar="OUTPUT")
    gen.add_argument("--concurrency", type=int, default=16, help="requests in flight (16)")
    gen.add_argument("--rpm", type=float, help="requests per minute, for the whole run")
    gen.add_argument("--tpm", type=float, help="tokens per minute, for the whole run")
    gen.add_argument("--limit", type=int, help="answer at most this many new items")
    gen.add_argument("--cache", help="identity cache: a SQLite file path, or 'off'")
    gen.add_argument("--errors", metavar="FILE", help="failed items (default OUTPUT.errors.jsonl)")
    gen.add_argument("--max-errors", type=int, help="stop after more than this many failures")
    gen.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    _common(gen)
    gen.set_defaults(command=cmd_generate)
    _batch_parser(sub)

    judge = sub.add_parser(
        "judge",
        help="judge two answer files pairwise, in both orders",
        description="Judge the answers of A.jsonl against B.jsonl (rows matched by id, else by "
        "instruction) with a judge model, each pair in both orders. Resumable via -o.",
    )
    judge.add_argument("a", metavar="A.jsonl")
    judge.add_argument("b", metavar="B.jsonl")
    judge.add_argument("--judge-model", help="the judge (default: as --model resolves)")
    judge.add_argument("-o", "--output", metavar="VERDICTS", help="default A.verdicts.jsonl")
    judge.add_argument("--concurrency", type=int, default=8)
    judge.add_argument("--judge-cache", metavar="PATH", help="reuse verdicts (SQLite file)")
    judge.add_argument("--no-progress", action="store_true")
    _common(judge)
    judge.set_defaults(command=cmd_judge)

    comp = sub.add_parser(
        "compare",
        help="answer questions with several strategies and judge them against the first",
        description="Answer QUESTIONS with each strategy, judge every strategy against the "
        "first (the baseline), and write report.md with a win/tie/loss chart to -o DIR.",
    )
    comp.add_argument("questions", metavar="QUESTIONS.jsonl")
    comp.add_argument(
        "--strategies", default="vanilla,expert", help="comma-separated, baseline first"
    )
    comp.add_argument("--judge-model", help="the judge (default: the answering model)")
    comp.add_argument("-o", "--output", required=True, metavar="DIR")
    comp.add_argument("--concurrency", type=int, default=8)
    comp.add_argument("--judge-cache", metavar="PATH", help="reuse verdicts (SQLite file)")
    comp.add_argument("--no-progress", action="store_true")
    _common(comp)
    comp.set_defaults(command=cmd_compare)
    return parser


def _batch_parser(sub: Any) -> None:
    batch = sub.add_parser(
        "batch",
        help="the method in two passes over OpenAI's Batch API or vLLM's run_batch",
        description="Write the identity-stage request file, run it (submit/status/download, or "
        "run against any OpenAI-compatible server), write the answer-stage file from its "
        "results, run that, and assemble the dataset from both result files.",
    )
    steps = batch.add_subparsers(dest="action", required=True, metavar="STEP")

    def step(name: str, help: str, with_model: bool = True) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = steps.add_parser(name, help=help, description=help)
        parser.set_defaults(command=cmd_batch)
        if with_model:
            _common(parser)
        else:
            parser.add_argument("--base-url", help="an OpenAI-compatible endpoint")
            parser.add_argument("--json", action="store_true", help="print the batch as JSON")
            parser.add_argument("--debug", action="store_true", help="show tracebacks")
        return parser

    ident = step("identity-requests", "write step 1's request file from INPUT")
    ident.add_argument("input_file", metavar="INPUT")
    ident.add_argument("-o", "--output", required=True, metavar="REQUESTS")
    answer = step("answer-requests", "write step 2's request file from step 1's results")
    answer.add_argument("input_file", metavar="INPUT")
    answer.add_argument("--identities", metavar="RESULTS", help="step 1's result file")
    answer.add_argument("-o", "--output", required=True, metavar="REQUESTS")
    assemble = step("assemble", "write the dataset from both result files")
    assemble.add_argument("input_file", metavar="INPUT")
    assemble.add_argument("--identities", metavar="RESULTS", help="step 1's result file")
    assemble.add_argument("--answers", required=True, metavar="RESULTS")
    assemble.add_argument("-o", "--output", required=True, metavar="OUTPUT")
    assemble.add_argument("--errors", metavar="FILE", help="default OUTPUT.errors.jsonl")
    run = step("run", "run a request file against an OpenAI-compatible server", False)
    run.add_argument("requests", metavar="REQUESTS")
    run.add_argument("-o", "--output", required=True, metavar="RESULTS")
    run.add_argument("--concurrency", type=int, default=16)
    submit = step("submit", "upload a request file and start a batch", False)
    submit.add_argument("requests", metavar="REQUESTS")
    status = step("status", "show a batch's status", False)
    status.add_argument("batch_id", metavar="BATCH_ID")
    download = step("download", "save a finished batch's results", False)
    download.add_argument("batch_id", metavar="BATCH_ID")
    download.add_argument("-o", "--output", required=True, metavar="RESULTS")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Command = args.command
    try:
        return command(args)
    except (UsageError, ConfigurationError, TemplateError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"expertprompting: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except ExpertPromptingError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"expertprompting: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("expertprompting: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into head
        return 0


def entry() -> None:
    """Console-script entry point."""
    raise SystemExit(main())


if __name__ == "__main__":
    entry()
