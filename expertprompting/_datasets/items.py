"""Dataset files: reading instructions, writing results, resuming where a run stopped.

Input is JSONL (one object a line) or a JSON list (Alpaca's ``instruction/input/output``
layout included), read as a stream so memory stays flat with dataset size. A line that is not
a usable item becomes an :class:`InputProblem` with its file and line number; the rest of the
file is still read.

Output is JSONL in the ExpertLLaMA layout (``id, instruction, input, expert_identity, answer``)
plus ``model``, ``strategy`` and ``usage``. Each finished row is written with one ``write`` and
flushed at once, so a run killed at any moment leaves at most a partial last line, which
:func:`repair_jsonl` removes before the next run appends (only from a file that provably is
ours: a foreign file is refused, never cut). Rows already present are skipped by
id (an item's own ``id``, else a hash of its content), so rerunning a command resumes it without
redoing or duplicating anything.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from .._method.errors import ConfigurationError
from .._method.results import ExpertAnswer
from .outputs import (
    ANY_ROWS,
    RowShape,
    check_replaceable,
    fix_tail,
    os_error,
    prepare_parent,
    refuse_directory,
    refuse_foreign,
    scan_jsonl,
)

__all__ = [
    "FIRST_TURN_ONLY",
    "LETTERS",
    "DatasetItem",
    "FailedItem",
    "InputProblem",
    "JSONRow",
    "ResultWriter",
    "choice_letter",
    "coerce_item",
    "content_id",
    "item_turns",
    "json_type",
    "output_row",
    "read_done_ids",
    "read_items",
    "read_rows",
    "reference_answer",
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

    @property
    def reference(self) -> str | None:
        """The reference answer the judge is shown, if the row gave one (see
        :func:`reference_answer`)."""
        return reference_answer(self.extra)

    @property
    def turns(self) -> list[str] | None:
        """The user turns of a question of several (MT-Bench's ``turns``), the first being the
        instruction as asked (options and all); None for a one-turn item.

        Only turns the instruction came from count: the first must be the instruction (or
        begin it, when multiple-choice options were listed under it), so an item read back
        from an errors file, which names its instruction, keeps its turns.
        """
        return item_turns(self.instruction, self.extra)


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


def json_type(value: Any) -> str:
    """A value's type as JSON names it, for messages about rows of a JSON file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    names: dict[type, str] = {dict: "an object", list: "an array", str: "a string"}
    return names.get(type(value), "a number")


def _strings(value: Any, field: str) -> list[str]:
    """A non-empty JSON array of non-empty strings (MT-Bench's ``turns``, ``choices``...)."""
    if not isinstance(value, list):
        raise ValueError(f"{field!r} must be an array of strings, not {json_type(value)}")
    if not value:
        raise ValueError(f"{field!r} is empty")
    for index, entry in enumerate(value):
        if not isinstance(entry, str):
            raise ValueError(
                f"{field!r} must be an array of strings; entry {index + 1} is {json_type(entry)}"
            )
        if not entry.strip():
            raise ValueError(f"{field!r} entry {index + 1} is empty")
    return value


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
"""The letters of multiple-choice options, in order (``choices[0]`` is A)."""

FIRST_TURN_ONLY = "two-turn question: only the first turn was answered and judged"
"""The ``note`` an answer row of a question with several ``turns`` carries in its ``extra`` when
only its first turn was answered (multi-expert, which answers single messages, and the Batch API
files), so reports can count such rows. Rows answered as conversations carry
``turns_answers`` instead."""


def _loose(text: str) -> str:
    """Lower case, spaces collapsed: how an answer given as an option's text is matched."""
    return " ".join(text.lower().split())


def choice_letter(choices: Sequence[str], answer: Any) -> str | None:
    """The letter of the right option: ``answer`` is a letter (``"B"``, any case), the option's
    text, or a 0-based index given as a JSON number (MMLU's layout). None if it is none of them.

    A single letter within the options is read as a letter, even when an option's text is that
    letter too.
    """
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int):
        return LETTERS[answer] if 0 <= answer < len(choices) else None
    if not isinstance(answer, str):
        return None
    stripped = answer.strip()
    if len(stripped) == 1 and stripped.upper() in LETTERS[: len(choices)]:
        return stripped.upper()
    found = [i for i, option in enumerate(choices) if _loose(option) == _loose(stripped)]
    return LETTERS[found[0]] if len(found) == 1 else None


def _check_gold(choices: list[str] | None, answer: Any) -> None:
    """Refuse a multiple-choice row whose gold ``answer`` names none of its ``choices`` (see
    :func:`choice_letter`): the row contradicts itself. Any other ``answer`` (a list, an
    object: another dataset's layout) is kept as it is and simply not scored."""
    if choices is None or answer is None or isinstance(answer, bool):
        return
    if not isinstance(answer, (str, int)):
        return
    if choice_letter(choices, answer) is None:
        raise ValueError(
            f"'answer' {answer!r} is none of the {len(choices)} choices: give its letter "
            f"(A to {LETTERS[len(choices) - 1]}), its text, or its 0-based index"
        )


def _with_options(instruction: str, choices: Sequence[str]) -> str:
    """The instruction with its options lettered below it, unless it lists them already.

    Listing them is what lets a model answer with a letter, and lets ``extract_choice`` read
    it. The check makes this idempotent: an item read back from an errors file (whose
    instruction holds the options) is not given them twice.
    """
    listed = all(
        re.search(
            rf"^[ \t]*\(?{LETTERS[i]}[.):][ \t]*{re.escape(option.strip())}[ \t]*$",
            instruction,
            re.MULTILINE,
        )
        for i, option in enumerate(choices)
    )
    options = "\n".join(f"{LETTERS[i]}. {option.strip()}" for i, option in enumerate(choices))
    block = f"\n\n{options}\n\nAnswer with the letter of the correct option."
    # the block itself ends an instruction already given it (options spanning lines included)
    if listed or instruction.endswith(block):
        return instruction
    return instruction.rstrip() + block


def reference_answer(fields: Mapping[str, Any]) -> str | None:
    """The reference answer a question's fields carry, or None.

    ``fields`` are a question row's (an item's ``extra``, or ``extra`` of an answer row written
    by ``generate``). In order: ``reference`` (a string, or MT-Bench's list: its first element),
    Alpaca's ``output``, then the gold ``answer`` (for multiple choice, the right option as
    ``"B. Paris"``). Empty text counts as none.
    """
    reference = fields.get("reference")
    if isinstance(reference, list):
        reference = reference[0] if reference else None
    for text in (reference, fields.get("output")):
        if isinstance(text, str) and text.strip():
            return text
    answer = fields.get("answer")
    if answer is None or isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        return None
    choices = fields.get("choices")
    if isinstance(choices, list) and all(isinstance(c, str) for c in choices):
        letter = choice_letter(choices, answer)
        return None if letter is None else f"{letter}. {choices[LETTERS.index(letter)]}"
    text = str(answer)
    return text if text.strip() else None


def item_turns(instruction: str, fields: Mapping[str, Any]) -> list[str] | None:
    """The user turns of a question whose ``fields`` (an item's ``extra``, or an answer row's)
    hold MT-Bench's ``turns``: ``instruction`` (as asked), then the later turns. None unless
    there are several turns of text and the first is the instruction (or begins it, with
    multiple-choice options listed under it)."""
    turns = fields.get("turns")
    if not isinstance(turns, list) or len(turns) < 2:
        return None
    if not all(isinstance(t, str) and t.strip() for t in turns):
        return None
    first = turns[0]
    if instruction != first and not instruction.startswith(first.rstrip() + "\n\n"):
        return None
    return [instruction, *turns[1:]]


def coerce_item(value: Any) -> DatasetItem:
    """An item from what users pass: a string, a mapping, or a pydantic model.

    Mappings are read in any of these layouts (a numeric id becomes a string):

    - ours and Alpaca's: ``instruction``, optional ``input`` and ``id``; Alpaca's ``output`` is
      kept (and serves as the reference answer);
    - Vicuna's: ``question_id`` (the id), ``text`` (the instruction), ``category``;
    - MT-Bench's: ``question_id``, ``category``, ``turns`` (a list of strings: the first is the
      instruction), optional ``reference`` (a list: the first is the first turn's reference).

    ``instruction`` wins over ``text``, which wins over ``turns``; ``id`` over ``question_id``.
    Other fields (``category``, ``reference``, ``choices``, ``answer``, ``turns``...) are
    kept in ``extra`` as given. ``choices`` that are a list of 2 to 26 option texts make a
    multiple-choice row: they are lettered A, B... and listed under the instruction (unless it
    lists them already), and its ``answer``, if any, must name one of them. Fields of other
    layouts (an ``answer`` object, a non-text ``reference``) are kept and simply not used for
    evaluation. Raises ``ValueError`` saying what is wrong.
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
    used = {"instruction", "input", "id"}  # fields that become the item, not its extra
    turns: list[str] | None = None
    instruction = _text(value.get("instruction"), "instruction")
    if instruction is None and value.get("text") is not None:
        instruction = _text(value["text"], "text")  # Vicuna
        used.add("text")
    if instruction is None and value.get("turns") is not None:
        turns = _strings(value["turns"], "turns")
        instruction = turns[0]  # MT-Bench; the turns stay in extra
    if instruction is None or not instruction.strip():
        raise ValueError(
            "no instruction (a non-empty 'instruction' field is required, or Vicuna's 'text', "
            "or MT-Bench's 'turns')"
        )
    raw_id = value.get("id")
    if raw_id is None and value.get("question_id") is not None:
        raw_id = value["question_id"]
        used.add("question_id")
    if raw_id is not None and (isinstance(raw_id, bool) or not isinstance(raw_id, (str, int))):
        name = "question_id" if "question_id" in used else "id"
        raise ValueError(f"{name!r} must be a string or an integer, not {json_type(raw_id)}")
    input_text = _text(value.get("input"), "input")
    # The fields below only matter to evaluation; a row of another layout (an 'answer' object,
    # 'choices' that are not option texts) is answered all the same, its fields kept as given.
    choices: list[str] | None = None
    raw_choices = value.get("choices")
    if (
        isinstance(raw_choices, list)
        and 2 <= len(raw_choices) <= len(LETTERS)
        and all(isinstance(c, str) and c.strip() for c in raw_choices)
    ):
        choices = raw_choices
        instruction = _with_options(instruction, choices)
    _check_gold(choices, value.get("answer"))
    extra = {k: v for k, v in value.items() if k not in used}
    return DatasetItem(
        instruction=instruction,
        input=input_text if input_text and input_text.strip() else None,
        id=None if raw_id is None else str(raw_id),
        extra=extra,
    )


# -- reading ----------------------------------------------------------------------------------
_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# Bytes that are not UTF-8 are decoded with surrogateescape (0x80-0xff -> U+DC80-U+DCFF): valid
# UTF-8 text never holds a lone surrogate, so finding one in the raw text locates a bad byte.
_RAW_BYTE = re.compile("[\udc80-\udcff]")
_TOO_DEEP = "JSON nested too deeply to read"


class JSONRow(NamedTuple):
    """One JSON value of an input file, and the line it starts on."""

    line: int
    value: Any


def _open_input(path: Path, what: str) -> IO[bytes]:
    """The file opened for reading in binary, or a one-line ConfigurationError saying why not."""
    if path.is_dir():
        raise ConfigurationError(
            f"Cannot read the {what} {path}: it is a directory; pass a JSONL or JSON file."
        )
    try:
        return path.open("rb", buffering=_CHUNK)
    except OSError as exc:
        raise ConfigurationError(f"Cannot read the {what} {path}: {exc.strerror or exc}.") from exc


def _head(handle: IO[bytes]) -> bytes:
    """The file's first bytes (up to 64 KiB), without consuming them: a peek, not a read and a
    seek, so the file need not be seekable."""
    peek = getattr(handle, "peek", None)
    return bytes(peek(_CHUNK)) if peek is not None else b""


def _first_significant_char(handle: IO[bytes]) -> bytes:
    """The first byte after a BOM and white space (b"" if none), without consuming anything.

    A file whose first 64 KiB are all white space is read as JSONL.
    """
    return _head(handle).removeprefix(_BOM).lstrip()[:1]


def read_rows(
    path: str | os.PathLike[str], *, what: str = "input file"
) -> Iterator[JSONRow | InputProblem]:
    """Stream the JSON values of a JSONL file or a JSON list, each with its line number.

    The one reader of JSON input files: ``read_items`` and the judge's answer files use it. The
    file is read in binary and each line (or list element) decoded on its own, so a line that
    is not UTF-8, not JSON or nested too deeply becomes an :class:`InputProblem` (file and line)
    and the rest is still read. A UTF-8 byte order mark is skipped. A file that cannot be
    opened, a directory, or a UTF-16 file is a :class:`ConfigurationError` (``what`` names the
    file in that message).
    """
    path = Path(path)
    handle = _open_input(path, what)
    with handle:
        if _head(handle)[:2] in _UTF16_BOMS:  # else every line would be "not valid UTF-8"
            raise ConfigurationError(
                f"Cannot read the {what} {path}: it is UTF-16 text; save it as UTF-8."
            )
        if _first_significant_char(handle) == b"[":
            yield from _read_json_list(handle, str(path))
        else:
            yield from _read_jsonl(handle, str(path))


def read_items(path: str | os.PathLike[str]) -> Iterator[DatasetItem | InputProblem]:
    """Stream the items of a JSONL file or a JSON list; unusable rows come as problems."""
    where = str(path)
    for row in read_rows(path):
        yield row if isinstance(row, InputProblem) else _item_or_problem(row.value, where, row.line)


def _item_or_problem(value: Any, where: str, line: int) -> DatasetItem | InputProblem:
    try:
        return coerce_item(value)
    except ValueError as exc:
        return InputProblem(where, line, str(exc).splitlines()[0])
    except RecursionError:  # a value json could read but pydantic cannot walk
        return InputProblem(where, line, _TOO_DEEP)


def _bad_byte(raw: bytes, exc: UnicodeDecodeError) -> str:
    return f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line)"


def _read_jsonl(handle: IO[bytes], where: str) -> Iterator[JSONRow | InputProblem]:
    for number, raw in enumerate(handle, start=1):
        if number == 1:
            raw = raw.removeprefix(_BOM)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield InputProblem(where, number, _bad_byte(raw, exc))
            continue
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield InputProblem(where, number, f"not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        except RecursionError:
            yield InputProblem(where, number, _TOO_DEEP)
            continue
        yield JSONRow(number, value)


def _raw_byte(char: str) -> str:
    return f"byte 0x{ord(char) - 0xDC00:02x}"


def _read_json_list(handle: IO[bytes], where: str) -> Iterator[JSONRow | InputProblem]:
    """Decode ``[ {...}, {...} ]`` one element at a time, reading the file in chunks.

    An element holding bytes that are not UTF-8, or nested too deeply, is reported and skipped;
    the list goes on. Anything that breaks the list itself (invalid JSON, a bad byte between
    elements) is reported where it is, and reading stops there.
    """
    decoder = json.JSONDecoder()
    text = codecs.getincrementaldecoder("utf-8-sig")(errors="surrogateescape")
    buffer = ""
    line = 1  # line number at buffer[0]
    pos = 0
    eof = False

    def fill() -> bool:
        nonlocal buffer, pos, line, eof
        if eof:
            return False
        line += buffer.count("\n", 0, pos)
        buffer = buffer[pos:]
        pos = 0
        chunk = handle.read(_CHUNK)
        if not chunk:
            eof = True
            tail = text.decode(b"", final=True)  # an incomplete sequence at the very end
            buffer += tail
            return bool(tail)
        buffer += text.decode(chunk)
        return True

    def skip_space() -> None:
        nonlocal pos
        while True:
            while pos < len(buffer) and buffer[pos].isspace():
                pos += 1
            if pos < len(buffer) or not fill():
                return

    def line_at(index: int) -> int:
        return line + buffer.count("\n", 0, index)

    def stop(index: int, reason: str, culprit: int | None = None) -> InputProblem:
        """The problem that ends the reading, on the line of ``index``; the character that
        broke the JSON (``culprit``, default ``index``) is named if it is a bad byte."""
        culprit = index if culprit is None else culprit
        if culprit < len(buffer) and _RAW_BYTE.match(buffer, culprit):
            char = buffer[culprit]
            reason = f"not valid UTF-8 ({_raw_byte(char)} on line {line_at(culprit)})"
        return InputProblem(where, line_at(index), f"{reason}; reading stopped")

    def value_end() -> int | None:
        """The end of the array or object at ``pos``, found by matching brackets (for a value
        too deep to decode); None if the file ends first."""
        depth, in_string, escaped, offset = 0, False, False, 0
        while True:
            index = pos + offset
            while index < len(buffer):
                char = buffer[index]
                index += 1
                if in_string:
                    if escaped:
                        escaped = False
                    elif char == "\\":
                        escaped = True
                    elif char == '"':
                        in_string = False
                elif char == '"':
                    in_string = True
                elif char in "[{":
                    depth += 1
                elif char in "]}":
                    depth -= 1
                    if depth <= 0:
                        return index
            offset = index - pos  # fill() moves the buffer's start to pos
            if not fill():
                return None

    skip_space()
    if buffer[pos : pos + 1] != "[":
        yield stop(pos, "a JSON list must start with '['")
        return
    pos += 1
    expect_item = True
    while True:
        skip_space()
        if pos >= len(buffer):
            yield InputProblem(where, line_at(pos), "the list never ends")
            return
        if buffer[pos] == "]":
            return
        if not expect_item:
            if buffer[pos] != ",":
                yield stop(pos, f"expected ',' between items, found {buffer[pos]!r}")
                return
            pos += 1
            expect_item = True
            continue
        too_deep = False
        while True:
            try:
                value, end = decoder.raw_decode(buffer, pos)
                break
            except json.JSONDecodeError as exc:
                offset = exc.pos - pos  # fill() moves the buffer's start to pos
                if fill():
                    continue
                yield stop(pos, f"not valid JSON ({exc.msg})", pos + offset)
                return
            except RecursionError:
                found = value_end()
                if found is None:
                    yield InputProblem(where, line_at(pos), f"{_TOO_DEEP}; reading stopped")
                    return
                value, end, too_deep = None, found, True
                break
        here = line_at(pos)
        bad = _RAW_BYTE.search(buffer, pos, end)
        if bad is not None:
            reason = f"not valid UTF-8 ({_raw_byte(bad.group())} on line {line_at(bad.start())})"
            yield InputProblem(where, here, reason)
        elif too_deep:
            yield InputProblem(where, here, _TOO_DEEP)
        else:
            yield JSONRow(here, value)
        pos = end
        expect_item = False


# -- writing and resuming -----------------------------------------------------------------------
def repair_jsonl(path: str | os.PathLike[str], shape: RowShape = ANY_ROWS) -> int:
    """Cut a row torn by a kill mid-write off the end of a JSONL file of ours; bytes removed.

    Only a last line that provably is such a row is cut: every complete line must be a row of
    ``shape`` (by default any JSON object) and the torn line must start as those rows start
    (``{"``, or ``{"id": `` and the like for a specific shape). A last row that is whole but
    lacks its newline is kept, and the newline added. Any other file (a ``json.dump`` document,
    notes, a foreign last line) raises :class:`~expertprompting.ConfigurationError` and
    is left as it was.
    """
    path = Path(path)
    refuse_directory(path, "the output")
    scan = scan_jsonl(path, shape)
    refuse_foreign(path, scan, "output file")
    return fix_tail(path, scan)


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


def output_row(
    item: DatasetItem,
    result: ExpertAnswer,
    *,
    requested_model: str | None = None,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """The JSONL row for a finished item: the ExpertLLaMA layout plus model, strategy, usage.

    ``model`` is the model the endpoint said answered; ``requested_model`` (the name the run
    asked for) and ``fingerprint`` (``Planner.fingerprint``), when
    given, let a resumed run check that it continues the same kind of run.

    A question of several turns answered as a conversation gets ``turns_answers`` (``answer``
    stays the first turn's, as old readers expect); one answered on its first turn only gets
    ``extra["note"] = FIRST_TURN_ONLY``.
    """
    row: dict[str, Any] = {
        "id": item.key,  # first: a torn row is recognised by how it starts
        "instruction": result.instruction,
        "input": result.input or "",
        "expert_identity": result.expert_identity,
        "answer": result.answer,
        **({} if result.turns_answers is None else {"turns_answers": result.turns_answers}),
        "model": result.model,
        "strategy": result.strategy,
        "usage": result.usage.model_dump(),
        "identity_cached": result.identity_cached,
        "truncated": result.truncated,
    }
    if requested_model is not None:
        row["requested_model"] = requested_model
    if fingerprint is not None:
        row["fingerprint"] = fingerprint
    extra = dict(item.extra)
    if result.turns_answers is not None:
        if extra.get("note") == FIRST_TURN_ONLY:  # an older run's row retried: not true now
            del extra["note"]
    elif item.turns is not None:
        extra["note"] = FIRST_TURN_ONLY
    if extra:
        row["extra"] = extra
    return row


class ResultWriter:
    """Appends JSONL rows, each written whole and flushed at once (optionally fsynced).

    Before appending, a row torn by an earlier kill is cut (:func:`repair_jsonl`; pass
    ``repair=False`` when the caller has just checked and repaired the file); with
    ``truncate=True`` the file is replaced, but only when it is absent, empty, or a file of
    ``shape`` rows. A row that fails to be written (disk full, file-size limit) is cut back to
    the row boundary, so the file stays valid, and the failure raises a one-line
    :class:`~expertprompting.ExpertPromptingError`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        truncate: bool = False,
        fsync: bool = False,
        shape: RowShape = ANY_ROWS,
        repair: bool = True,
    ):
        self.path = Path(path)
        self.fsync = fsync
        prepare_parent(self.path)
        if truncate:
            check_replaceable(self.path, shape, "output file")
        elif repair:
            repair_jsonl(self.path, shape)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else os.O_APPEND)
        try:
            self._fd: int | None = os.open(self.path, flags | getattr(os, "O_BINARY", 0), 0o666)
        except OSError as exc:
            raise os_error(self.path, exc, "write to") from exc
        self.written = 0

    def write(self, row: Mapping[str, Any]) -> None:
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        data = memoryview((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
        start = os.fstat(self._fd).st_size
        try:
            while data:  # os.write may write part of it (a file-size limit, a full disk)
                data = data[os.write(self._fd, data) :]
            if self.fsync:
                os.fsync(self._fd)
        except OSError as exc:
            with contextlib.suppress(OSError):  # else the next run's repair cuts the torn row
                os.ftruncate(self._fd, start)
            raise os_error(self.path, exc, "write to") from exc
        self.written += 1

    def write_all(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.write(row)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
