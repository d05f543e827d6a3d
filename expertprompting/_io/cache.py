"""The identity cache: an identity asked for twice is generated once.

**The key** is a sha256 of the sorted JSON of the identity *request*: the model, the rendered
messages (which hold the template's text, the chosen exemplars, the instruction and the input)
and the sampling settings (temperature, top_p, seed, stop, repeat penalty), plus a schema
version. It deliberately holds nothing else: no API key, no base URL, no organisation, so a
cache file can be shared between machines and endpoints serving the same model, and never
stores a secret. :func:`identity_cache_key` builds the same kind of key from the parts, for
callers that have not rendered a request.

**Tiers**: :class:`MemoryCache` (an LRU in this process), :class:`SQLiteCache` (a file, shared
across runs and processes) and :class:`TieredCache` (memory in front of a file).

**Concurrency**: both caches are safe to use from many threads; SQLite runs in WAL mode with a
busy timeout, so several processes may read and write one file at once.

**Damage**: a cache file that turns out unusable, on opening or at any later read or write,
costs one :class:`CacheWarning` and the cache, never the run: the run goes on without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import sqlite3
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._method.errors import ConfigurationError, ExpertPromptingWarning
from .._method.exemplars import Exemplar
from .._method.results import RequestRecord, Usage
from .._method.wire import ChatRequest, Completion, Exchange

__all__ = [
    "CACHED_STEPS",
    "CacheSpec",
    "CacheWarning",
    "CachedIdentity",
    "IdentityCache",
    "MemoryCache",
    "SQLiteCache",
    "TieredCache",
    "identity_cache_key",
    "remember_identity",
    "request_cache_key",
    "resolve_cache",
    "reuse_identity",
]

SCHEMA_VERSION = 1
_T = TypeVar("_T")


class CachedIdentity(BaseModel):
    """One cached identity description."""

    model_config = ConfigDict(frozen=True)

    description: str
    model: str
    exemplars: list[str] = Field(default_factory=list)
    created: float = Field(default_factory=time.time)


@runtime_checkable
class IdentityCache(Protocol):
    """What ``cache=`` accepts besides the built-in forms."""

    def get(self, key: str) -> CachedIdentity | None: ...

    def put(self, key: str, value: CachedIdentity) -> None: ...

    def close(self) -> None: ...


CacheSpec = bool | str | os.PathLike[str] | IdentityCache | None
"""``True``/``None``: in memory; ``False``: off; a path: SQLite file (plus memory); an object."""


def _digest(payload: Mapping[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def request_cache_key(request: ChatRequest) -> str:
    """The cache key of a planned identity request (what the prompter uses)."""
    return _digest(
        {
            "v": SCHEMA_VERSION,
            "model": request.model,
            "messages": [dict(m) for m in request.messages],
            "sampling": dict(request.sampling),
            "extra": dict(request.extra),
        }
    )


def identity_cache_key(
    *,
    model: str,
    template: str,
    exemplars: Sequence[Exemplar] | Sequence[Mapping[str, Any]],
    instruction: str,
    input: str | None,
    sampling: Mapping[str, Any],
) -> str:
    """A cache key from the parts of an identity request, before it is rendered."""
    shown = [
        {"instruction": e.instruction, "description": e.description}
        if isinstance(e, Exemplar)
        else {"instruction": e["instruction"], "description": e["description"]}
        for e in exemplars
    ]
    return _digest(
        {
            "v": SCHEMA_VERSION,
            "model": model,
            "template": template,
            "exemplars": shown,
            "instruction": instruction,
            "input": input,
            "sampling": dict(sampling),
        }
    )


class MemoryCache:
    """A thread-safe LRU of at most ``maxsize`` identities."""

    def __init__(self, maxsize: int = 10_000) -> None:
        if maxsize < 1:
            raise ConfigurationError(f"MemoryCache maxsize must be at least 1, got {maxsize}.")
        self.maxsize = maxsize
        self._items: OrderedDict[str, CachedIdentity] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> CachedIdentity | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: str, value: CachedIdentity) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def close(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class CacheWarning(ExpertPromptingWarning):
    """A cache file cannot be used; the run goes on without it (the message says what to do)."""


def _unusable(path: Path, exc: BaseException) -> str:
    """One line: why the cache file ``path`` is not used, and what to do about it."""
    going_on = "so this run goes on without it"
    if path.is_dir():
        return f"The cache file {path} is a directory, {going_on}; give the cache a file path."
    if isinstance(exc, OSError):
        return f"The cache file {path} cannot be used ({exc}), {going_on}; choose another path."
    # the -wal and -shm files too: a stale WAL would be replayed into a fresh cache file
    names = " ".join(shlex.quote(f"{path}{suffix}") for suffix in ("", "-wal", "-shm"))
    remove = f"delete it with its -wal and -shm files (rm -f {names})"
    if isinstance(exc, sqlite3.OperationalError):  # locked, read-only, disk full, I/O error
        return (
            f"The cache file {path} cannot be used ({exc}), {going_on}; if it is damaged, {remove}."
        )
    if "not a database" in str(exc):  # perhaps a file of the user's, named by mistake
        return (
            f"The cache file {path} is not an SQLite file ({exc}), {going_on}; if it is an old "
            f"cache, {remove}, else choose another path."
        )
    return f"The cache file {path} is damaged ({exc}), {going_on}; {remove} to start afresh."


class SQLiteCache:
    """Identities in a SQLite file: WAL mode, parameterised queries, one locked connection.

    One connection (``check_same_thread=False``) is shared by this object's threads behind a
    lock; other processes open their own and meet in WAL mode, waiting up to ``timeout``
    seconds for a writer.

    A file that cannot be used (not SQLite, truncated, a damaged page, a directory, locked past
    the timeout) never fails the run: at the first ``sqlite3.DatabaseError``, whether on opening
    or on a later read or write, one :class:`CacheWarning` names the file and how to remove it,
    and the cache is off from then on (every ``get`` a miss, every ``put`` dropped).
    ``unusable`` holds that message.
    """

    def __init__(self, path: str | os.PathLike[str], timeout: float = 30.0) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.unusable: str | None = None
        self._db: sqlite3.Connection | None = None
        db = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=timeout, check_same_thread=False, isolation_level=None
            )
            db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS identities ("
                "key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)"
            )
        except (sqlite3.DatabaseError, OSError) as exc:
            if db is not None:
                db.close()
            self._give_up(exc)
            return
        self._db = db

    def _give_up(self, exc: BaseException) -> None:
        """Turn the cache off for good, with one warning (called once: ``_db`` is then None)."""
        self.unusable = _unusable(self.path, exc)
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        warnings.warn(self.unusable, CacheWarning, stacklevel=2)

    def _run(self, action: Callable[[sqlite3.Connection], _T]) -> _T | None:
        """``action`` on the connection, or None once the file is off (closed or unusable)."""
        with self._lock:
            if self._db is None:
                return None
            try:
                return action(self._db)
            except sqlite3.ProgrammingError:
                raise  # our bug, not the file's
            except sqlite3.DatabaseError as exc:  # a damaged page shows up on first touch
                self._give_up(exc)
                return None

    def get(self, key: str) -> CachedIdentity | None:
        row = self._run(
            lambda db: db.execute("SELECT value FROM identities WHERE key = ?", (key,)).fetchone()
        )
        value = None
        if row is not None:
            try:
                value = CachedIdentity.model_validate_json(row[0])
            except ValidationError:
                value = None  # an unreadable row is a miss; the next put overwrites it
        with self._lock:  # counted by many threads: `+=` is not atomic everywhere
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
        return value

    def put(self, key: str, value: CachedIdentity) -> None:
        self._run(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO identities (key, value, created) VALUES (?, ?, ?)",
                (key, value.model_dump_json(), value.created),
            )
        )

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __len__(self) -> int:
        count = self._run(lambda db: db.execute("SELECT COUNT(*) FROM identities").fetchone()[0])
        return int(count or 0)

    def __enter__(self) -> SQLiteCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TieredCache:
    """Memory in front of a slower cache: reads try memory first and promote hits."""

    def __init__(self, memory: IdentityCache, disk: IdentityCache) -> None:
        self.memory = memory
        self.disk = disk

    def get(self, key: str) -> CachedIdentity | None:
        value = self.memory.get(key)
        if value is None:
            value = self.disk.get(key)
            if value is not None:
                self.memory.put(key, value)
        return value

    def put(self, key: str, value: CachedIdentity) -> None:
        self.memory.put(key, value)
        self.disk.put(key, value)

    def close(self) -> None:
        self.memory.close()
        self.disk.close()


def resolve_cache(spec: CacheSpec) -> IdentityCache | None:
    """The cache ``cache=`` names (see :data:`CacheSpec`)."""
    if spec is None or spec is True:
        return MemoryCache()
    if spec is False:
        return None
    if isinstance(spec, (str, os.PathLike)):
        return TieredCache(MemoryCache(), SQLiteCache(spec))
    if isinstance(spec, IdentityCache):
        return spec
    raise ConfigurationError(
        f"cache= takes True (in memory), False (off), a file path (SQLite) or an object with "
        f"get/put/close, not {type(spec).__name__}."
    )


# -- serving requests from the cache (both drivers) ---------------------------------------------
# Only step 1 (and a judge's verdicts) are cached: an identity depends on nothing but the
# request (model, rendered messages with their template, exemplars, instruction and input, and
# the sampling settings), so the same request may reuse an earlier reply. A hit costs no
# request and no tokens, and its record says ``cached=True``.
CACHED_STEPS = frozenset({"identity", "verdict"})
"""Steps whose replies depend on nothing but the request: identities, and a judge's verdicts."""


def reuse_identity(cache: IdentityCache | None, request: ChatRequest) -> Exchange | None:
    """The cached reply to an identity request, as if it had been sent; None on a miss."""
    if cache is None or request.step not in CACHED_STEPS:
        return None
    hit = cache.get(request_cache_key(request))
    if hit is None:
        return None
    completion = Completion(
        content=hit.description,
        finish_reason="stop",
        prompt_tokens=0,
        completion_tokens=0,
        model=hit.model,
    )
    record = RequestRecord(
        step=request.step,
        model=hit.model,
        attempts=0,
        usage=Usage(),
        finish_reason="stop",
        seconds=0.0,
        cached=True,
    )
    return Exchange(completion, record)


def remember_identity(
    cache: IdentityCache | None, request: ChatRequest, exchange: Exchange
) -> None:
    """Store a fresh identity reply (never a cached one) for later identical requests."""
    if cache is None or request.step not in CACHED_STEPS or exchange.record.cached:
        return
    text = (exchange.completion.content or "").strip()
    if not text:
        return
    cache.put(
        request_cache_key(request),
        CachedIdentity(
            description=text,
            model=exchange.completion.model,
            exemplars=[],
            created=time.time(),
        ),
    )
