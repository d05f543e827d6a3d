"""What the commands share: model resolution, command-line words, notes, options, errors.

- Constants (:data:`DEFAULT_OPENAI_MODEL`, the notes and errors about finding a model) and
  :class:`UsageError` (exit code 2).
- :func:`for_cli` says a library message in command-line words, and :data:`NOTES` turns the
  library's warnings into one ``note:`` line each.
- :func:`resolve_model`, :func:`local_available` and :func:`prompter_from_args`: which model a
  command runs, and the prompter built from its options.
- Argument types (:func:`positive_int`...) and the option groups every command parser adds
  (:func:`add_model_options`, :func:`add_run_options`...).
- :func:`run_command`: a command's exceptions as one ``expertprompting: error:`` line and an exit
  code.

Nothing here imports the library's heavy parts at module level (the OpenAI SDK, pydantic,
jinja2...): ``--version`` and ``--help`` must start fast, so helpers import inside their bodies.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from .._method.errors import (
    ConfigurationError,
    ExpertPromptingError,
    ExpertPromptingWarning,
    TemplateError,
    UnknownModelWarning,
)

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


class Notes:
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


NOTES = Notes()


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


def local_available() -> bool:
    """Whether the bundled local model can run (its optional dependencies are installed)."""
    from .._io.local import local_backend_available

    return local_backend_available()


def prompter_from_args(args: argparse.Namespace, *, sends: bool = True, **extra: Any) -> Any:
    """The prompter a command runs; ``sends=False`` for commands that only build requests."""
    from .._io.local import is_local_model
    from .._prompter import ExpertPrompter

    model, note = resolve_model(args.model, args.base_url, os.environ, local_available, sends=sends)
    if note:
        NOTES.add(note)
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
        settings.update(retry_setting(args))
        settings.update(timeout_settings(args))
    custom = _strategy_templates(args.strategy_template)
    if custom:
        settings["strategies"] = custom
    settings.update(extra)
    prompter = ExpertPrompter(model=model, **settings)
    NOTES.flush()
    return prompter


# -- shared helpers ----------------------------------------------------------------------------
def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def cache_setting(value: str | None) -> bool | str:
    """``--cache``: None (not given) is the in-memory cache, ``off`` (or none, false, 0) no
    cache, anything else a SQLite file path."""
    if value is None:
        return True
    return False if value.lower() in ("off", "none", "false", "0") else value


def non_negative_int(text: str) -> int:
    """A whole number of 0 or more (for limits where 0 means none)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of 0 or more, not {text!r}")
    return value


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):  # rejects NaN as well
        raise argparse.ArgumentTypeError(f"must be a number above 0, not {text!r}")
    return value


def temperature_value(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 2:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 2, not {text!r}")
    return value


MIN_CONTEXT_WINDOW = 64  # PrompterConfig's own floor


def context_window_value(text: str) -> int:
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


def retry_setting(args: argparse.Namespace) -> dict[str, Any]:
    from .._method.config import RetryPolicy

    if args.max_attempts is None:
        return {}
    return {"retry": RetryPolicy(max_attempts=args.max_attempts)}


def timeout_settings(args: argparse.Namespace) -> dict[str, Any]:
    """--timeout, --first-token-timeout and --idle-timeout, as the prompter's settings."""
    names = ("timeout", "first_token_timeout", "idle_timeout")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


# -- parser ------------------------------------------------------------------------------------
# Options a command does not offer still exist on its namespace (as None/False), so shared
# helpers can read them; offering an option that a command would ignore is what is avoided.
ABSENT: dict[str, Any] = {
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


def add_model_options(
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
    parser.set_defaults(**{k: v for k, v in ABSENT.items() if k not in parser._defaults})
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
            type=temperature_value,
            metavar="T",
            help="sampling temperature, 0 to 2 (default: the model's own; local: 0.2)",
        )
    if max_tokens:
        group.add_argument(
            "--max-tokens",
            type=positive_int,
            metavar="N",
            help="cap on the answer's length, in tokens (default 2048; 512 for the bundled model)",
        )
    if seed:
        group.add_argument(
            "--seed", type=int, metavar="N", help="fixed sampling seed, for reproducible runs"
        )
    group.add_argument(
        "--context-window",
        type=context_window_value,
        metavar="N",
        help="the model's context window in tokens; needed for models outside the built-in "
        "table (else 8192 is assumed)",
    )
    if sends:
        group.add_argument(
            "--max-attempts",
            type=positive_int,
            metavar="N",
            help="attempts per request, the first included, before an item fails (3)",
        )
        group.add_argument(
            "--timeout",
            type=positive_number,
            metavar="SECONDS",
            help="most time one attempt may take to bring a whole reply, however slowly the "
            "server sends it (60)",
        )
    if sends and streams:  # only `answer --stream` streams; elsewhere these would be ignored
        group.add_argument(
            "--first-token-timeout",
            type=positive_number,
            metavar="SECONDS",
            help="streams: most time from sending to the first text (default: --timeout)",
        )
        group.add_argument(
            "--idle-timeout",
            type=positive_number,
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


def add_instruction_command(
    sub: Any, name: str, command: Command, help: str
) -> argparse.ArgumentParser:
    """A command on one instruction (``answer``, ``identify``, ``prompt``): its arguments."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
    parser.add_argument("instruction", help="the instruction, or - to read it from stdin")
    parser.add_argument("--input", metavar="TEXT", help="the instruction's input (context), if any")
    parser.set_defaults(command=command)
    return parser


def add_run_options(parser: argparse.ArgumentParser, concurrency: int) -> None:
    """The options of a command working through a file: --concurrency and --no-progress."""
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=concurrency,
        metavar="N",
        help=f"requests in flight ({concurrency})",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (for logs; -q implies it)"
    )


def exact_options_only(parser: argparse.ArgumentParser) -> None:
    """No abbreviated options: ``compare --strategy`` must not pass as ``--strategy-template``."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                exact_options_only(child)


# -- errors as one line -----------------------------------------------------------------------
def one_line(exc: BaseException) -> str:
    """An exception's message on one line, in command-line words."""
    return for_cli(" ".join(str(exc).split()) or type(exc).__name__)


def file_error(exc: OSError) -> str:
    """An OS error about a file, as one line: what happened, and to which file."""
    what = exc.strerror or type(exc).__name__
    name = exc.filename if exc.filename is not None else ""
    return f"{what}: {name}" if name else what


def run_command(command: Command, args: argparse.Namespace) -> int:
    """Run one command: its errors become one ``expertprompting: error:`` line and an exit code."""

    def error(message: str, code: int) -> int:
        if args.debug:
            traceback.print_exc()
        NOTES.flush()  # notes held back belong before the error
        print(f"expertprompting: error: {message}", file=sys.stderr)
        return code

    try:
        return command(args)
    except (UsageError, ConfigurationError, TemplateError) as exc:
        return error(one_line(exc), 2)
    except ExpertPromptingError as exc:
        return error(one_line(exc), 1)
    except KeyboardInterrupt:
        print("expertprompting: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into head
        return 0
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        return error(file_error(exc), 2)  # a path given wrongly
    except OSError as exc:  # e.g. disk full or no permission, while running
        return error(file_error(exc), 1)
