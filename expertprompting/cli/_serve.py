"""The ``serve`` command: the OpenAI-compatible server and its playground page.

The library (and FastAPI and uvicorn) is imported inside the command, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._common import (
    Command,
    UsageError,
    add_model_options,
    cache_setting,
    non_negative_int,
    positive_int,
    positive_number,
    prompter_from_args,
)

KEYS_ENV = "EXPERTPROMPTING_API_KEYS"
INSTALL = 'pip install "expertprompting[serve]"'


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number, 0 to 65535, not {text!r}")
    return value


def _body_bytes(text: str) -> int:
    value = positive_int(text)
    if value < 1024:
        raise argparse.ArgumentTypeError(f"must be at least 1024 bytes, not {text!r}")
    return value


def _grace(text: str) -> float:
    if text.strip() in ("0", "0.0"):
        return 0.0
    return positive_number(text)


def add_serve_parser(sub: Any, command: Command) -> None:
    """The ``serve`` command and its options."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="serve expert answers over the OpenAI API, with a playground page",
        description="Serve an OpenAI-compatible API (POST /v1/chat/completions, GET "
        "/v1/models, GET /health) and a playground page at /. Point any OpenAI client at "
        "http://HOST:PORT/v1; the request's model picks the strategy: <strategy>/<model>, or "
        "the bare model for --strategy.",
        conflict_handler="resolve",  # its --model is repeatable, unlike the other commands'
    )
    add_model_options(parser, json_help=None, streams=True)
    parser.add_argument(
        "--model",
        action="append",
        metavar="MODEL",
        help="a model to serve (repeatable): an upstream model name, or 'local' for the bundled "
        "one (default: as the other commands choose)",
    )
    net = parser.add_argument_group("server")
    net.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)"
    )
    net.add_argument("--port", type=_port, default=8000, help="port to listen on (8000)")
    net.add_argument(
        "--concurrency",
        type=positive_int,
        default=64,
        metavar="N",
        help="requests answered at once (64)",
    )
    net.add_argument(
        "--max-queue",
        type=non_negative_int,
        metavar="N",
        help="requests waiting beyond those; past it, 429 (default 4 x --concurrency)",
    )
    net.add_argument(
        "--rpm", type=positive_number, metavar="N", help="upstream requests per minute, per model"
    )
    net.add_argument(
        "--tpm", type=positive_number, metavar="N", help="upstream tokens per minute, per model"
    )
    net.add_argument(
        "--cache",
        metavar="PATH",
        help="identity cache: a SQLite file path, or 'off' (default: in memory)",
    )
    net.add_argument(
        "--api-keys-file",
        metavar="PATH",
        help=f"client keys, one per line; also ${KEYS_ENV} (comma-separated). With keys, "
        "every route but /health needs 'Authorization: Bearer KEY'",
    )
    net.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let pages from ORIGIN call the API (repeatable; default: no CORS)",
    )
    net.add_argument(
        "--max-body-bytes",
        type=_body_bytes,
        default=1024 * 1024,
        metavar="N",
        help="largest request body; larger ones get 413 (1048576)",
    )
    net.add_argument(
        "--grace-seconds",
        type=_grace,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, how long requests in flight may take to finish (30)",
    )
    parser.set_defaults(command=command)


def client_keys(path: str | None, environ: Mapping[str, str]) -> list[str]:
    """The client keys of ``--api-keys-file`` (one per line; blank and ``#`` lines skipped)
    and of ``$EXPERTPROMPTING_API_KEYS`` (comma-separated)."""
    keys = [k.strip() for k in environ.get(KEYS_ENV, "").split(",") if k.strip()]
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(
                f"--api-keys-file: cannot read {path}: {exc.strerror or exc}"
            ) from None
        except UnicodeDecodeError:
            raise UsageError(f"--api-keys-file: {path} is not UTF-8 text") from None
        found = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        if not found:
            raise UsageError(f"--api-keys-file: {path} holds no key (one per line)")
        keys += found
    return list(dict.fromkeys(keys))


def cmd_serve(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise UsageError(f"the server needs FastAPI and uvicorn: {INSTALL}")
    from .._serve.settings import is_loopback

    keys = client_keys(args.api_keys_file, os.environ)
    if not keys and not is_loopback(args.host):
        raise UsageError(
            f"--host {args.host} lets other machines in, and there are no client keys: give "
            f"--api-keys-file or ${KEYS_ENV}, or listen on --host 127.0.0.1"
        )
    cache = cache_setting(args.cache)
    prompters = {}
    for model in args.model or [None]:
        # each prompter as the other commands build theirs: same model choice, notes and checks
        ep = prompter_from_args(argparse.Namespace(**{**vars(args), "model": model}), cache=cache)
        if ep.config.model in prompters:
            raise UsageError(f"--model {ep.config.model} is given twice")
        prompters[ep.config.model] = ep

    from ..server import ServerSettings, serve

    settings = ServerSettings(
        models=list(prompters),
        base_url=args.base_url,
        host=args.host,
        port=args.port,
        strategy=args.strategy or "expert",
        concurrency=args.concurrency,
        max_queue=args.max_queue,
        rpm=args.rpm,
        tpm=args.tpm,
        cache=cache,
        api_keys=keys,
        cors_origins=args.cors_origin,
        max_body_bytes=args.max_body_bytes,
        grace_seconds=args.grace_seconds,
    )
    names = ", ".join(prompters)

    def ready(url: str) -> None:
        print(f"serving {names} at {url} (playground: {url}/)", flush=True)

    serve(settings, prompters=prompters, on_ready=ready)
    return 0
