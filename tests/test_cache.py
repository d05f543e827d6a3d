"""The identity cache: keys, memory LRU, SQLite file, tiers."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from expertprompting import Exemplar
from expertprompting._io.cache import (
    CachedIdentity,
    CacheWarning,
    IdentityCache,
    MemoryCache,
    SQLiteCache,
    TieredCache,
    identity_cache_key,
    request_cache_key,
    resolve_cache,
)
from expertprompting._method.errors import ConfigurationError
from expertprompting._method.wire import ChatRequest


def _request(**changes: object) -> ChatRequest:
    fields: dict[str, object] = {
        "step": "identity",
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "prompt_tokens": 1,
        "max_tokens": 10,
        "sampling": {"temperature": 0.2, "seed": 1},
    }
    fields.update(changes)
    return ChatRequest(**fields)  # type: ignore[arg-type]


def _value(text: str = "You are a tester.") -> CachedIdentity:
    return CachedIdentity(description=text, model="m")


def test_request_keys_depend_on_what_the_model_sees_only() -> None:
    base = request_cache_key(_request())
    assert base == request_cache_key(_request(sampling={"seed": 1, "temperature": 0.2}))
    assert base == request_cache_key(_request(prompt_tokens=99, max_tokens=5))  # planning only
    assert base != request_cache_key(_request(model="other"))
    assert base != request_cache_key(_request(messages=[{"role": "user", "content": "y"}]))
    assert base != request_cache_key(_request(sampling={"temperature": 0.3, "seed": 1}))
    assert base != request_cache_key(_request(extra={"repeat_penalty": 1.1}))
    assert len(base) == 64


def test_part_keys_change_with_every_part() -> None:
    parts: dict[str, object] = {
        "model": "m",
        "template": "T",
        "exemplars": [Exemplar(instruction="a", description="You are A.")],
        "instruction": "i",
        "input": None,
        "sampling": {"temperature": 0},
    }
    key = identity_cache_key(**parts)  # type: ignore[arg-type]
    as_dicts = {**parts, "exemplars": [{"instruction": "a", "description": "You are A."}]}
    assert key == identity_cache_key(**as_dicts)  # type: ignore[arg-type]
    for name, other in [
        ("model", "n"),
        ("template", "U"),
        ("exemplars", []),
        ("instruction", "j"),
        ("input", "k"),
        ("sampling", {"temperature": 1}),
    ]:
        assert identity_cache_key(**{**parts, name: other}) != key, name  # type: ignore[arg-type]


def test_memory_cache_is_an_lru() -> None:
    cache = MemoryCache(maxsize=2)
    cache.put("a", _value("A"))
    cache.put("b", _value("B"))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", _value("C"))
    assert cache.get("b") is None
    assert [cache.get(k) is not None for k in ("a", "c")] == [True, True]
    assert (cache.hits, cache.misses, len(cache)) == (3, 1, 2)
    with pytest.raises(ConfigurationError):
        MemoryCache(maxsize=0)


def test_sqlite_cache_persists_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "ids.sqlite"
    with SQLiteCache(path) as cache:
        cache.put("k", _value())
        assert cache._db is not None
        assert cache._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with SQLiteCache(path) as again:
        hit = again.get("k")
        assert hit is not None
        assert hit.description == "You are a tester."
        assert len(again) == 1


def test_sqlite_treats_hostile_text_as_data(tmp_path: Path) -> None:
    evil = "'); DROP TABLE identities;--"
    with SQLiteCache(tmp_path / "c.sqlite") as cache:
        cache.put(evil, _value(evil))
        hit = cache.get(evil)
        assert hit is not None
        assert hit.description == evil
        assert len(cache) == 1


def test_a_corrupt_file_is_a_clear_warning_and_no_cache(tmp_path: Path) -> None:
    # more damage (a corrupt page, mid-run errors) is in test_cache_damage.py
    path = tmp_path / "not-a-db.sqlite"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.warns(CacheWarning, match=r"not-a-db\.sqlite is not an SQLite file.*rm -f"):
        cache = SQLiteCache(path)
    cache.put("k", _value())
    assert cache.get("k") is None


def test_an_unreadable_row_is_a_miss(tmp_path: Path) -> None:
    with SQLiteCache(tmp_path / "c.sqlite") as cache:
        assert cache._db is not None
        cache._db.execute("INSERT INTO identities VALUES ('k', '{broken', 0)")
        assert cache.get("k") is None
        cache.put("k", _value())
        assert cache.get("k") is not None


def test_threads_share_one_cache(tmp_path: Path) -> None:
    cache = SQLiteCache(tmp_path / "c.sqlite")

    def worker(n: int) -> None:
        for i in range(50):
            cache.put(f"{n}-{i}", _value(f"{n}-{i}"))
            assert cache.get(f"{n}-{i}") is not None

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 400
    cache.close()


def test_another_process_sees_the_writes(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    with SQLiteCache(path) as cache:
        cache.put("from-parent", _value("parent"))
        script = (
            "import sys\n"
            "from expertprompting._io.cache import SQLiteCache, CachedIdentity\n"
            "c = SQLiteCache(sys.argv[1])\n"
            "assert c.get('from-parent').description == 'parent'\n"
            "c.put('from-child', CachedIdentity(description='child', model='m'))\n"
        )
        subprocess.run([sys.executable, "-c", script, str(path)], check=True)
        hit = cache.get("from-child")
        assert hit is not None
        assert hit.description == "child"


def test_tiered_cache_promotes_disk_hits(tmp_path: Path) -> None:
    disk = SQLiteCache(tmp_path / "c.sqlite")
    disk.put("k", _value())
    memory = MemoryCache()
    tiered = TieredCache(memory, disk)
    assert memory.get("k") is None
    assert tiered.get("k") is not None
    assert memory.get("k") is not None
    tiered.put("j", _value("J"))
    assert disk.get("j") is not None
    tiered.close()


def test_resolve_cache_forms(tmp_path: Path) -> None:
    assert isinstance(resolve_cache(True), MemoryCache)
    assert isinstance(resolve_cache(None), MemoryCache)
    assert resolve_cache(False) is None
    tiered = resolve_cache(tmp_path / "x.sqlite")
    assert isinstance(tiered, TieredCache)
    tiered.close()
    mine = MemoryCache(5)
    assert resolve_cache(mine) is mine
    assert isinstance(mine, IdentityCache)
    with pytest.raises(ConfigurationError, match="cache= takes"):
        resolve_cache(42)  # type: ignore[arg-type]
