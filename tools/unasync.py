"""Generate the sync driver from the async one with unasync, the way httpcore does.

    python tools/unasync.py           # (re)write the generated file
    python tools/unasync.py --check   # exit 1, writing nothing, when it is stale (CI runs this)

unasync renames tokens: ``async`` and ``await`` go, ``AsyncX`` becomes ``SyncX``, and RENAMES
below adds this project's names. The few places where the sync code has another shape than the
async code are REWRITES, applied to the async source before unasync runs. Each must match as
often as it says, so an edit of the source that moves one fails here, loudly, instead of
generating a wrong sync file.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

# The one source and the file generated from it, relative to the repository root.
SOURCE_AND_TARGET = ("expertprompting/_io/async_driver.py", "expertprompting/_io/sync_driver.py")

ROOT = Path(__file__).resolve().parent.parent

# unasync's replacement table, beyond its own (AsyncIterator -> Iterator, AsyncGenerator ->
# Generator, AsyncX -> SyncX). It renames every such name in the source, so each key must mean
# only this there.
RENAMES = {
    "AsyncTransport": "Transport",
    "async_retrying": "sync_retrying",  # both in retry.py
    "acquire": "acquire_sync",  # RateLimiter's twins
    "aiter": "iter",
}


class Rewrite(NamedTuple):
    """Where the sync code has another shape: ``async_text`` (as in the source) becomes
    ``sync_text`` (written with the sync names, which unasync leaves alone)."""

    why: str
    async_text: str
    sync_text: str
    times: int = 1


_IN_TURN = "a flow's list of requests is sent at once by the async driver, in turn by the sync one"
_FINAL = "an async generator cannot return a value: it yields its final value last"

REWRITES = [
    Rewrite(_IN_TURN, "import asyncio\n", ""),
    Rewrite(
        _IN_TURN,
        "    return list(await asyncio.gather(*(fetch(r) for r in requests)))\n",
        "    return [fetch(r) for r in requests]\n",
    ),
    Rewrite("a sync fetch returns its Exchange", "Awaitable[Exchange]", "Exchange", times=2),
    Rewrite(
        "the names the sync file uses, sorted",
        "from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable,"
        " Generator\n",
        "from collections.abc import Callable, Generator, Iterator\n",
    ),
    Rewrite(
        _FINAL, "-> AsyncGenerator[str | Exchange, None]:", "-> Generator[str, None, Exchange]:"
    ),
    Rewrite(_FINAL, "        yield tracker.exchange()\n", "        return tracker.exchange()\n"),
    Rewrite(_FINAL, "-> AsyncGenerator[str | T, None]:", "-> Generator[str, None, T]:"),
    Rewrite(_FINAL, "        yield result\n", "        return result\n"),
    Rewrite(
        _FINAL,
        "                exchange = None\n"
        "                async for item in self.stream(request):\n"
        "                    if isinstance(item, Exchange):\n"
        "                        exchange = item\n"
        "                    else:\n"
        "                        yield item\n"
        "                assert exchange is not None\n",
        "                exchange = yield from self.stream(request)\n",
    ),
]


class SourceChanged(Exception):
    """A rewrite no longer matches the async source: REWRITES needs updating."""


def _unasync() -> ModuleType:
    """The unasync package.

    Python puts this script's folder first on sys.path, where this file's own name hides the
    package: import it with that folder left out.
    """
    here = Path(__file__).resolve().parent
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    try:
        return importlib.import_module("unasync")
    except ModuleNotFoundError as exc:
        raise SystemExit(
            "tools/unasync.py needs the unasync package: pip install -e '.[lint]'"
        ) from exc
    finally:
        sys.path[:] = saved


def generate(source: Path) -> str:
    """The sync file's text, generated from the async ``source``."""
    text = source.read_text(encoding="utf-8")
    for rewrite in REWRITES:
        found = text.count(rewrite.async_text)
        if found != rewrite.times:
            first_line = rewrite.async_text.strip().splitlines()[0]
            raise SourceChanged(
                f"{source.name} has {found} of {first_line!r}, not {rewrite.times}: "
                f"update REWRITES in tools/unasync.py ({rewrite.why})"
            )
        text = text.replace(rewrite.async_text, rewrite.sync_text)
    unasync = _unasync()
    with tempfile.TemporaryDirectory() as tmp:
        staged, out = Path(tmp, "async"), Path(tmp, "sync")
        staged.mkdir()
        (staged / source.name).write_text(text, encoding="utf-8")
        rule = unasync.Rule(str(staged), str(out), additional_replacements=RENAMES)
        unasync.unasync_files([str(staged / source.name)], rules=[rule])
        generated = (out / source.name).read_text(encoding="utf-8")
    header = f"# generated from {source.name} by tools/unasync.py; do not edit\n"
    return header + generated


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def check(source: Path, target: Path) -> str | None:
    """None when ``target`` is what ``source`` generates, else a one-line message saying so."""
    current = target.read_text(encoding="utf-8") if target.exists() else None
    if current == generate(source):
        return None
    return (
        f"{_shown(target)} is stale (it differs from what tools/unasync.py generates from "
        f"{_shown(source)}): run python tools/unasync.py"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the generated file is stale; write nothing"
    )
    args = parser.parse_args(argv)
    source, target = (ROOT / name for name in SOURCE_AND_TARGET)
    try:
        if args.check:
            message = check(source, target)
            if message:
                print(message, file=sys.stderr)
                return 1
            return 0
        text = generate(source)
    except SourceChanged as exc:
        print(exc, file=sys.stderr)
        return 2
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8", newline="\n")
        print(f"wrote {_shown(target)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
