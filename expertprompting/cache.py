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
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .core import ChatRequest
from .errors import ConfigurationError
from .exemplars import Exemplar

__all__ = [
    "CacheSpec",
    "CachedIdentity",
    "IdentityCache",
    "MemoryCache",
    "SQLiteCache",
    "TieredCache",
    "identity_cache_key",
    "request_cache_key",
    "resolve_cache",
]

SCHEMA_VERSION = 1


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


class SQLiteCache:
    """Identities in a SQLite file: WAL mode, parameterised queries, one locked connection.

    One connection (``check_same_thread=False``) is shared by this object's threads behind a
    lock; other processes open their own and meet in WAL mode, waiting up to ``timeout``
    seconds for a writer.
    """

    def __init__(self, path: str | os.PathLike[str], timeout: float = 30.0) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        try:
            self._db = sqlite3.connect(
                self.path, timeout=timeout, check_same_thread=False, isolation_level=None
            )
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS identities ("
                "key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)"
            )
        except sqlite3.DatabaseError as exc:
            raise ConfigurationError(
                f"The identity cache {self.path} is not a usable SQLite file ({exc}). "
                "Delete it, or pass another path as cache=."
            ) from exc

    def get(self, key: str) -> CachedIdentity | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM identities WHERE key = ?", (key,)).fetchone()
        value = None
        if row is not None:
            try:
                value = CachedIdentity.model_validate_json(row[0])
            except ValidationError:
                value = None  # an unreadable row is a miss; the next put overwrites it
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: str, value: CachedIdentity) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO identities (key, value, created) VALUES (?, ?, ?)",
                (key, value.model_dump_json(), value.created),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM identities").fetchone()
        return int(count)

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
