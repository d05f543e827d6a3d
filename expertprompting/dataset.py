"""Dataset files: reading instructions, writing results, resuming where a run stopped.

Input is JSONL (one object a line) or a JSON list (Alpaca's ``instruction/input/output``
layout included), read as a stream so memory stays flat with dataset size. A line that is not
a usable item becomes an :class:`InputProblem` with its file and line number; the rest of the
file is still read.

Output is JSONL in the ExpertLLaMA layout (``id, instruction, input, expert_identity, answer``)
plus ``model``, ``strategy`` and ``usage``. Each finished row is written with one ``write`` and
flushed at once, so a run killed at any moment leaves at most a partial last line, which
:func:`repair_jsonl` removes before the next run appends. Rows already present are skipped by
id (an item's own ``id``, else a hash of its content), so rerunning a command resumes it without
redoing or duplicating anything.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field

from .errors import ConfigurationError
from .results import ExpertAnswer

__all__ = [
    "DatasetItem",
    "FailedItem",
    "InputProblem",
    "ResultWriter",
    "coerce_item",
    "content_id",
    "output_row",
    "read_done_ids",
    "read_items",
    "repair_jsonl",
]

_CHUNK = 1 << 16


class DatasetItem(BaseModel):
    """One instruction to answer, with its optional input and id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    instruction: str = Field(min_length=1)
    input: str | None = None
    id: str | None = None
    extra: dict[str, Any] = Field(
        default_factory=dict, description="Other fields of the input row (e.g. a category)."
    )

    @property
    def key(self) -> str:
        """The id results are matched by: the item's own, else a hash of its content."""
        return self.id if self.id is not None else content_id(self.instruction, self.input)


class FailedItem(BaseModel):
    """An item that could not be answered, and why. ``answer_many`` returns it in its place."""

    model_config = ConfigDict(frozen=True)

    ok: bool = False
    index: int
    id: str
    instruction: str
    input: str | None = None
    error_type: str
    error: str


@dataclass(frozen=True)
class InputProblem:
    """A row of an input file that is not a usable item."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


def content_id(instruction: str, input: str | None) -> str:
    """A stable id for an item without one: a hash of its instruction and input."""
    payload = json.dumps([instruction, input or ""], ensure_ascii=False)
    return "sha256:" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:24]


def _text(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    raise ValueError(f"{field!r} must be a string, not {type(value).__name__}")


def coerce_item(value: Any) -> DatasetItem:
    """An item from what users pass: a string, a mapping, or a pydantic model.

    Mappings need ``instruction``; ``input`` and ``id`` are optional (a numeric id becomes a
    string); other fields (Alpaca's ``output``, a ``category``...) are kept in ``extra``.
    Raises ``ValueError`` saying what is wrong.
    """
    if isinstance(value, DatasetItem):
        return value
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("the instruction is empty")
        return DatasetItem(instruction=value)
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if not isinstance(value, Mapping):
        raise ValueError(
            f"an item must be a string, a mapping or a pydantic model, not {type(value).__name__}"
        )
    instruction = _text(value.get("instruction"), "instruction")
    if instruction is None or not instruction.strip():
        raise ValueError("no instruction (a non-empty 'instruction' field is required)")
    raw_id = value.get("id")
    if raw_id is not None and not isinstance(raw_id, (str, int)):
        raise ValueError(f"'id' must be a string or an integer, not {type(raw_id).__name__}")
    input_text = _text(value.get("input"), "input")
    extra = {k: v for k, v in value.items() if k not in ("instruction", "input", "id")}
    return DatasetItem(
        instruction=instruction,
        input=input_text if input_text and input_text.strip() else None,
        id=None if raw_id is None else str(raw_id),
        extra=extra,
    )


# -- reading ----------------------------------------------------------------------------------
def _first_significant_char(handle: IO[str]) -> str:
    while True:
        ch = handle.read(1)
        if not ch or not ch.isspace():
            return ch


def read_items(path: str | os.PathLike[str]) -> Iterator[DatasetItem | InputProblem]:
    """Stream the items of a JSONL file or a JSON list; unusable rows come as problems."""
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"Cannot read the input file {path}: {exc}.") from exc
    with handle:
        first = _first_significant_char(handle)
        handle.seek(0)
        if first == "[":
            yield from _read_json_list(handle, str(path))
        else:
            yield from _read_jsonl(handle, str(path))


def _item_or_problem(value: Any, where: str, line: int) -> DatasetItem | InputProblem:
    try:
        return coerce_item(value)
    except ValueError as exc:
        return InputProblem(where, line, str(exc).splitlines()[0])


def _read_jsonl(handle: IO[str], where: str) -> Iterator[DatasetItem | InputProblem]:
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield InputProblem(where, number, f"not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        yield _item_or_problem(value, where, number)


def _read_json_list(handle: IO[str], where: str) -> Iterator[DatasetItem | InputProblem]:
    """Decode ``[ {...}, {...} ]`` one element at a time, reading the file in chunks."""
    decoder = json.JSONDecoder()
    buffer = ""
    line = 1  # line number at buffer[0]
    pos = 0
    eof = False

    def fill() -> bool:
        nonlocal buffer, pos, line, eof
        line += buffer.count("\n", 0, pos)
        buffer = buffer[pos:]
        pos = 0
        chunk = handle.read(_CHUNK)
        if not chunk:
            eof = True
            return False
        buffer += chunk
        return True

    def skip_space() -> None:
        nonlocal pos
        while True:
            while pos < len(buffer) and buffer[pos].isspace():
                pos += 1
            if pos < len(buffer) or not fill():
                return

    skip_space()
    if buffer[pos : pos + 1] != "[":
        yield InputProblem(where, line, "a JSON list must start with '['")
        return
    pos += 1
    expect_item = True
    while True:
        skip_space()
        if pos >= len(buffer):
            yield InputProblem(where, line + buffer.count("\n", 0, pos), "the list never ends")
            return
        if buffer[pos] == "]":
            return
        if not expect_item:
            if buffer[pos] != ",":
                here = line + buffer.count("\n", 0, pos)
                yield InputProblem(
                    where, here, f"expected ',' between items, found {buffer[pos]!r}"
                )
                return
            pos += 1
            expect_item = True
            continue
        while True:
            try:
                value, end = decoder.raw_decode(buffer, pos)
                break
            except json.JSONDecodeError as exc:
                if not eof and fill():
                    continue
                here = line + buffer.count("\n", 0, pos)
                yield InputProblem(where, here, f"not valid JSON ({exc.msg}); reading stopped")
                return
        here = line + buffer.count("\n", 0, pos)
        yield _item_or_problem(value, where, here)
        pos = end
        expect_item = False


# -- writing and resuming -----------------------------------------------------------------------
def repair_jsonl(path: str | os.PathLike[str]) -> int:
    """Cut a partial last line (a run killed mid-write) off a JSONL file; bytes removed.

    Also removes a last line that is complete but not valid JSON (a write that was cut
    exactly at its end before the newline can be neither).
    """
    path = Path(path)
    if not path.exists():
        return 0
    with path.open("rb+") as handle:
        size = handle.seek(0, io.SEEK_END)
        if size == 0:
            return 0
        # find the start of the last line
        end = size
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        start = _last_newline(handle, end) + 1
        handle.truncate(start)
        return size - start


def _last_newline(handle: IO[bytes], end: int) -> int:
    position = end
    while position > 0:
        step = min(_CHUNK, position)
        position -= step
        handle.seek(position)
        block = handle.read(step)
        found = block.rfind(b"\n")
        if found != -1:
            return position + found
    return -1


def read_done_ids(path: str | os.PathLike[str]) -> set[str]:
    """Ids of the rows already in an output file (streamed; bad lines ignored)."""
    path = Path(path)
    done: set[str] = set()
    if not path.exists():
        return done
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("id"), str):
                done.add(row["id"])
    return done


def output_row(item: DatasetItem, result: ExpertAnswer) -> dict[str, Any]:
    """The JSONL row for a finished item: the ExpertLLaMA layout plus model, strategy, usage."""
    row: dict[str, Any] = {
        "id": item.key,
        "instruction": result.instruction,
        "input": result.input or "",
        "expert_identity": result.expert_identity,
        "answer": result.answer,
        "model": result.model,
        "strategy": result.strategy,
        "usage": result.usage.model_dump(),
        "identity_cached": result.identity_cached,
        "truncated": result.truncated,
    }
    if item.extra:
        row["extra"] = item.extra
    return row


class ResultWriter:
    """Appends JSONL rows, each flushed as soon as it is written (optionally fsynced)."""

    def __init__(
        self, path: str | os.PathLike[str], *, truncate: bool = False, fsync: bool = False
    ):
        self.path = Path(path)
        self.fsync = fsync
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if not truncate:
            repair_jsonl(self.path)
        self._handle = self.path.open("w" if truncate else "a", encoding="utf-8")
        self.written = 0

    def write(self, row: Mapping[str, Any]) -> None:
        self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._handle.flush()
        if self.fsync:
            os.fsync(self._handle.fileno())
        self.written += 1

    def write_all(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.write(row)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
