"""Output-file safety: what a command may write, and what it must leave alone.

Every command that writes files (``generate``, ``judge``, ``compare``, ``batch``) goes through
these checks before it opens anything for writing:

- **No clashes**: a file it writes is never a file it reads (the input, an answers file), nor
  another file it writes, also not through a symlink or a hard link.
- **Only files of ours**: an existing file it appends to or replaces must be one this library
  wrote. A JSONL file is ours when every complete line is a row of the expected shape (a JSON
  object whose first key and required keys are those our writer puts there). Its last line may
  lack its newline: it is then either a whole row of ours (kept, the newline is added) or a row
  torn by a kill mid-write, recognised by starting exactly as our rows start (``{"id": ``...);
  only such a torn row is ever cut. Anything else (a ``json.dump`` document, notes, a file whose
  last line is foreign) is refused with one line and left byte for byte as it was.
- **One run per output**: a run holds an OS lock (``flock``) on ``<output>.lock`` for as long
  as it writes; a second run on the same output is refused at once, naming the holder's pid and
  command line. The lock dies with its holder, SIGKILL included. Not on Windows (no ``fcntl``):
  there the check is skipped.
- **Write failures are one line**: a full disk, a file-size limit or an unwritable path raise
  :class:`OutputWriteError` / :class:`OutputRefusedError`, never an ``OSError`` traceback.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from .._method.errors import ConfigurationError, ExpertPromptingError

try:  # POSIX only; Windows runs without the one-run-per-output lock
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "ANY_ROWS",
    "BATCH_REQUEST_ROWS",
    "BATCH_RESULT_ROWS",
    "ERROR_ROWS",
    "OUTPUT_ROWS",
    "VERDICT_ROWS",
    "FileRole",
    "JsonlScan",
    "OutputRefusedError",
    "OutputWriteError",
    "RowShape",
    "RunLock",
    "check_clashes",
    "check_outputs",
    "check_replaceable",
    "fix_tail",
    "hold",
    "is_ours",
    "os_error",
    "prepare_parent",
    "refuse_directory",
    "refuse_foreign",
    "same_file",
    "scan_jsonl",
    "write_text_atomic",
]


class OutputRefusedError(ConfigurationError):
    """A file cannot be written safely (a clash, a file we did not write, a run holding it).

    Nothing was changed; the command line exits 2.
    """


class OutputWriteError(ExpertPromptingError):
    """Writing failed midway (disk full, file-size limit, I/O error).

    What was written before stays valid (a row that failed to be written is cut back to the row
    boundary), so rerunning the same command resumes. The command line exits 1.
    """


# errors of the medium, not of the path: the same command works once space or limits allow
_MEDIUM_ERRORS = {
    errno.ENOSPC: "The disk is full: free some space",
    errno.EFBIG: "The file reached the size limit for files (ulimit -f): raise it",
    errno.EDQUOT: "The disk quota is used up: free some space",
    errno.EIO: "The disk reported an I/O error: check it",
}


def os_error(path: Path, exc: OSError, doing: str) -> ExpertPromptingError:
    """The one-line error for ``exc``, raised while ``doing`` (e.g. "write to") ``path``."""
    reason = exc.strerror or type(exc).__name__
    hint = _MEDIUM_ERRORS.get(exc.errno or 0)
    if hint is not None:
        return OutputWriteError(
            f"Cannot {doing} {path}: {reason}. {hint}, then rerun the same command to resume; "
            "what was written so far is kept."
        )
    return OutputRefusedError(f"Cannot {doing} {path}: {reason}. Choose another path.")


# -- what our rows look like --------------------------------------------------------------------
@dataclass(frozen=True)
class RowShape:
    """The rows one kind of file of ours holds: a JSON object a line.

    ``first_key`` is the key every row starts with (``json.dumps`` keeps insertion order), so a
    torn row is recognised by its first bytes; ``required`` are keys every row has.
    """

    name: str
    first_key: str | None = None
    required: frozenset[str] = frozenset()

    @property
    def prefix(self) -> bytes:
        """How every row of this shape starts, byte for byte."""
        if self.first_key is None:
            return b'{"'
        return b"{" + json.dumps(self.first_key).encode("utf-8") + b": "

    def matches(self, row: Any) -> bool:
        if not isinstance(row, dict):
            return False
        if self.first_key is not None and next(iter(row), None) != self.first_key:
            return False
        return self.required <= row.keys()


ANY_ROWS = RowShape("JSONL")
OUTPUT_ROWS = RowShape(
    "answer", "id", frozenset({"id", "instruction", "answer", "model", "strategy"})
)
ERROR_ROWS = RowShape("errors", "kind", frozenset({"kind", "error"}))
VERDICT_ROWS = RowShape("verdict", "id", frozenset({"id", "question", "verdicts"}))
BATCH_REQUEST_ROWS = RowShape(
    "batch request", "custom_id", frozenset({"custom_id", "method", "url", "body"})
)
BATCH_RESULT_ROWS = RowShape("batch result", None, frozenset({"custom_id"}))


@dataclass
class JsonlScan:
    """What :func:`scan_jsonl` found in a file."""

    size: int = 0
    end: int = 0
    """Offset after the last complete line (where a torn row starts)."""
    tail: Literal["none", "row", "torn"] = "none"
    """After ``end``: nothing, a whole row missing its newline, or a torn row of ours."""
    rows: int = 0
    foreign: str | None = None
    """Why this is not a file of ours (None: it is, or it does not exist)."""


_HEAD = 1 << 16


def _parse(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:  # not JSON, or not UTF-8 (UnicodeDecodeError is a ValueError)
        return _NOT_JSON


_NOT_JSON = object()


def scan_jsonl(
    path: Path, shape: RowShape, on_row: Callable[[int, dict[str, Any]], None] | None = None
) -> JsonlScan:
    """Check that ``path`` is a JSONL file of ``shape`` rows, streaming; nothing is changed.

    ``on_row(line_number, row)`` sees every row (also a last one missing its newline). The scan
    stops at the first foreign line. A missing file scans as empty.
    """
    scan = JsonlScan()
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return scan
    except OSError as exc:
        raise os_error(path, exc, "read") from exc
    with handle:
        # A file that does not even start like our rows is foreign at once, without reading a
        # huge first line (a minified JSON list, say) into memory.
        head = handle.read(_HEAD)
        first = head.lstrip()
        if first and not (first.startswith(shape.prefix) or shape.prefix.startswith(first)):
            at = head[: len(head) - len(first)].count(b"\n") + 1
            scan.foreign = f"line {at} is not {_a(shape.name)} row of expertprompting"
            return scan
        handle.seek(0)
        number = 0
        for line in handle:
            number += 1
            if not line.endswith(b"\n"):  # the last line, missing its newline
                _scan_tail(scan, line, number, shape, on_row)
                scan.size = scan.end + len(line)
                return scan
            scan.end += len(line)
            if not line.strip():
                continue
            row = _parse(line)
            if row is _NOT_JSON:
                scan.foreign = f"line {number} is not JSON"
                return scan
            if not shape.matches(row):
                scan.foreign = f"line {number} is not {_a(shape.name)} row of expertprompting"
                return scan
            scan.rows += 1
            if on_row is not None:
                on_row(number, row)
        scan.size = scan.end
    return scan


def _a(name: str) -> str:
    return ("an " if name[:1] in "aeiou" else "a ") + name


def _scan_tail(
    scan: JsonlScan,
    tail: bytes,
    number: int,
    shape: RowShape,
    on_row: Callable[[int, dict[str, Any]], None] | None,
) -> None:
    if not tail.strip():
        return
    row = _parse(tail)
    if row is not _NOT_JSON:
        # A whole JSON value: a row of ours whose newline was never written, or not ours.
        # (A torn row never parses: its closing brace is the last byte written.)
        if shape.first_key is None and scan.rows == 0:
            # with no shape to prove it ours, a lone JSON value is what json.dump writes
            scan.foreign = "it is one JSON document, not JSONL rows"
        elif shape.matches(row):
            scan.tail = "row"
            scan.rows += 1
            if on_row is not None:
                on_row(number, row)
        else:
            scan.foreign = f"line {number} is not {_a(shape.name)} row of expertprompting"
        return
    if tail.startswith(shape.prefix):
        scan.tail = "torn"
    else:
        scan.foreign = f"its last line (line {number}) is neither JSON nor a row cut short"


def refuse_foreign(path: Path, scan: JsonlScan, flag: str) -> None:
    """Raise :class:`OutputRefusedError` when the scan found a file that is not ours."""
    if scan.foreign is not None:
        raise OutputRefusedError(
            f"{path} was not written by expertprompting ({scan.foreign}), so it is left as it "
            f"is. Choose another {flag}, or move the file away."
        )


def is_ours(path: Path, shape: RowShape) -> bool:
    """Whether ``path`` is an existing, non-empty JSONL file of ``shape`` rows."""
    if not path.is_file():
        return False
    scan = scan_jsonl(path, shape)
    return scan.foreign is None and scan.rows > 0


def fix_tail(path: Path, scan: JsonlScan) -> int:
    """Cut a torn last row, or complete a whole one with its newline; bytes removed.

    Only call it on a file :func:`scan_jsonl` found to be ours.
    """
    if scan.foreign is not None:
        raise ValueError("fix_tail() on a file that is not ours")
    if scan.tail == "none":
        return 0
    try:
        with path.open("r+b") as handle:
            if scan.tail == "torn":
                handle.truncate(scan.end)
                return scan.size - scan.end
            handle.seek(0, os.SEEK_END)
            handle.write(b"\n")
            return 0
    except OSError as exc:
        raise os_error(path, exc, "repair") from exc


def check_replaceable(path: Path, shape: RowShape, flag: str) -> None:
    """Refuse to replace ``path`` unless it is absent, empty, or a file of ``shape`` rows."""
    refuse_directory(path, flag)
    refuse_foreign(path, scan_jsonl(path, shape), flag)


# -- paths --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileRole:
    """A file a command reads or writes, as its messages name it."""

    path: Path
    what: str
    """e.g. "output file", "errors file", "input file"."""
    flag: str = ""
    """The option that names it, e.g. "-o", "--errors" ("" for a positional argument)."""

    def label(self) -> str:
        return f"{self.what} {self.path}" + (f" ({self.flag})" if self.flag else "")


def _resolved(path: Path) -> str:
    return os.path.normcase(str(path.resolve()))


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are (or would be) one file: same inode, or same resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet): where would it be created?
        return _resolved(a) == _resolved(b)


def check_clashes(writes: Sequence[FileRole], reads: Sequence[FileRole]) -> None:
    """Refuse when a file to write is a file to read, or another file to write."""
    for index, target in enumerate(writes):
        for other in [*reads, *writes[:index]]:
            if same_file(target.path, other.path):
                via = ""
                if _resolved(target.path) != _resolved(other.path):
                    via = " (through a hard link)"
                elif os.path.abspath(target.path) != os.path.abspath(other.path):
                    via = " (through a symlink)"
                flag = target.flag or "path"
                raise OutputRefusedError(
                    f"The {target.label()} is the {other.label()}{via}; writing one would "
                    f"destroy the other. Choose another {flag}."
                )


def check_outputs(writes: Sequence[tuple[FileRole, RowShape]], reads: Sequence[FileRole]) -> None:
    """Before a command replaces ``writes``: refuse folders, clashes, and files not ours."""
    for role, _ in writes:
        refuse_directory(role.path, role.flag or "the path")
    check_clashes([role for role, _ in writes], reads)
    for role, shape in writes:
        check_replaceable(role.path, shape, role.flag or "path")


def refuse_directory(path: Path, flag: str) -> None:
    if path.is_dir():
        raise OutputRefusedError(f"{path} is a directory; {flag} takes a file path.")


def prepare_parent(path: Path) -> None:
    """Create the folder ``path`` goes in; a one-line error if it cannot be."""
    parent = path.parent
    if parent.is_dir():
        return
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if isinstance(exc, (FileExistsError, NotADirectoryError)):
            raise OutputRefusedError(
                f"Cannot create {path}: {parent} (or a folder above it) is a file, not a "
                "folder. Choose another path."
            ) from exc
        raise os_error(parent, exc, "create the folder") from exc


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` all at once: on failure the old file is still whole."""
    temp = path.with_name(f".{path.name}.tmp")
    try:
        with temp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise os_error(path, exc, "write") from exc


# -- one run per output ---------------------------------------------------------------------------
def _command_line() -> str:
    argv = list(sys.argv) or ["python"]
    argv[0] = Path(argv[0]).name
    return shlex.join(argv)


class RunLock:
    """Hold ``<target>.lock`` (or ``lock_path``) with ``flock`` while a run writes ``target``.

    The lock file sits beside the file ``target`` resolves to, so every name of it (through
    symlinks) shares one lock.

    A second holder is refused at once with :class:`OutputRefusedError` naming the first one's
    pid and command line (written into the lock file). The kernel drops the lock when its holder
    dies, however it dies; the file is removed on a clean release.
    """

    def __init__(self, target: Path, flag: str, lock_path: Path | None = None) -> None:
        self.target = target
        self.flag = flag
        if lock_path is None:  # beside the real file, so a symlinked name shares the lock
            real = target.resolve()
            lock_path = real.with_name(real.name + ".lock")
        self.path = lock_path
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        if fcntl is None:  # pragma: no cover - Windows: documented limitation
            return self
        prepare_parent(self.path)
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputRefusedError(
                    f"Cannot create the lock file {self.path} ({exc.strerror}); the folder of "
                    f"{self.target} must be writable. Choose another {self.flag}."
                ) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_holder(fd)
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise os_error(self.path, exc, "lock") from exc
                raise OutputRefusedError(
                    f"{self.target} is being written by another run ({holder}); wait for it to "
                    f"finish, or choose another {self.flag}."
                ) from None
            # A holder releasing just now removes the file it locked: make sure ours is the
            # file at the path, or lock the new one.
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                os.close(fd)
                continue
            mine = os.fstat(fd)
            if (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino):
                os.close(fd)
                continue
            self._fd = fd
            with contextlib.suppress(OSError):  # a full disk must not stop the lock itself
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n{_command_line()}\n".encode())
            return self

    def release(self) -> None:
        if self._fd is None:
            return
        # remove the file while still holding it, so no one locks a file about to vanish
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        text = ""
    pid, _, command = text.partition("\n")
    if not pid.strip().isdigit():
        return "another process"
    command = command.strip()
    return f"pid {pid.strip()}" + (f": {command}" if command else "")


@contextlib.contextmanager
def hold(locks: Sequence[RunLock]) -> Iterator[None]:
    """Acquire every lock (in order), release them all at the end."""
    with contextlib.ExitStack() as stack:
        for lock in locks:
            stack.enter_context(lock)
        yield
