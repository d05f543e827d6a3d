"""A damaged cache file costs one warning and the cache, never the run.

Damage shows up either when the file is opened (not SQLite, a truncated file, a directory) or
only later, when a read or write touches a damaged page. Either way the run warns once, naming
the file and how to remove it, and goes on without the file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from expertprompting import ExpertAnswer, ExpertPrompter
from expertprompting._io.cache import CachedIdentity, CacheWarning, SQLiteCache
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

EXE = str(Path(sys.executable).with_name("expertprompting"))
PAGE = 4096  # SQLite's default page size
GOES_ON = "so this run goes on without it"


def _fill(path: Path, entries: int = 300) -> None:
    """A real cache file of many pages (closing it checkpoints the WAL into the file)."""
    with SQLiteCache(path) as cache:
        for i in range(entries):
            cache.put(f"k{i}", CachedIdentity(description="You are an expert. " * 30, model="m"))
    assert not Path(f"{path}-wal").exists()
    assert path.stat().st_size > 20 * PAGE


def _zero_table_root(path: Path) -> None:
    """Page 2 is the table's b-tree root: the schema (page 1) still opens, every row read fails."""
    with path.open("r+b") as handle:
        handle.seek(PAGE)
        handle.write(b"\0" * PAGE)


def _scribble_middle(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.seek(size // 2)
        handle.write(b"\xde\xad\xbe\xef" * (PAGE // 2))


def _items_file(folder: Path, items: list[str]) -> Path:
    source = folder / "in.jsonl"
    source.write_text("".join(json.dumps({"instruction": i}) + "\n" for i in items))
    return source


def _cache_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]


def test_a_damaged_page_found_on_reading_turns_the_cache_off_once(tmp_path: Path) -> None:
    path = tmp_path / "ids.sqlite"
    _fill(path)
    _zero_table_root(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache = SQLiteCache(path)
        assert cache.unusable is None  # the damage is not visible when the file is opened
        assert cache.get("k1") is None  # the first read meets it: a miss, not an error
        cache.put("new", CachedIdentity(description="You are new.", model="m"))
        assert cache.get("new") is None  # off for the rest of the run
        assert [cache.get(f"k{i}") for i in range(5)] == [None] * 5
        assert len(cache) == 0
        cache.close()
    (message,) = _cache_warnings(caught)
    assert message == cache.unusable
    assert f"The cache file {path} is damaged (database disk image is malformed)" in message
    assert f"rm -f {path} {path}-wal {path}-shm" in message


def _fixed(req: RecordedRequest) -> Reply:
    # not the default echo: it toggles the process's warning filters from the server's threads
    # (warnings.catch_warnings is not thread-safe), which could swallow the warning under test
    return Reply(content="You are an expert who answers plainly.")


def test_a_damaged_page_mid_run_leaves_every_item_answered(
    make_prompter: Callable[..., ExpertPrompter], server: FakeOpenAIServer, tmp_path: Path
) -> None:
    server.responder = _fixed
    path = tmp_path / "ids.sqlite"
    items = [f"Question number {i}: why?" for i in range(60)]
    first = make_prompter(cache=str(path))
    assert all(isinstance(r, ExpertAnswer) for r in first.answer_many(items, progress=False))
    assert first.cache is not None
    first.cache.close()
    _scribble_middle(path)

    again = make_prompter(cache=str(path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = again.generate(
            _items_file(tmp_path, items), tmp_path / "out.jsonl", progress=False
        )
    assert (summary.done, summary.failed) == (len(items), 0)
    (message,) = _cache_warnings(caught)
    assert str(path) in message
    assert "rm -f" in message


def _damaged(kind: str, path: Path) -> None:
    if kind == "not sqlite":
        path.write_bytes(b"my notes, not a cache\n" * 200)
    elif kind == "truncated":
        _fill(path)
        with path.open("r+b") as handle:
            handle.truncate(path.stat().st_size // 3)
    elif kind == "damaged page":
        _fill(path)
        _zero_table_root(path)
    else:
        path.mkdir()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


@pytest.mark.parametrize("kind", ["not sqlite", "truncated", "damaged page", "directory"])
def test_generate_with_an_unusable_cache_file_warns_once_and_finishes(
    server: FakeOpenAIServer, tmp_path: Path, kind: str
) -> None:
    cache = tmp_path / "ids.sqlite"
    _damaged(kind, cache)
    before = b"" if kind == "directory" else cache.read_bytes()
    source = _items_file(tmp_path, [f"Question {i}?" for i in range(6)])
    out = tmp_path / "out.jsonl"
    result = run(
        "generate", str(source), "-o", str(out), "--cache", str(cache), "--no-progress",
        "--base-url", server.base_url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(out.read_text().splitlines()) == 6
    assert result.stderr.count(GOES_ON) == 1, result.stderr
    assert f"The cache file {cache}" in result.stderr
    if kind == "directory":
        assert "give the cache a file path" in result.stderr
    else:
        assert f"rm -f {cache} " in result.stderr
        assert cache.read_bytes() == before  # warned about, never rewritten


def test_the_judges_verdict_cache_is_handled_alike(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    def verdict(req: RecordedRequest) -> Reply:
        return Reply(content="8 6\nAssistant 1 explains more.")  # always Assistant 1

    server.responder = verdict
    cache = tmp_path / "verdicts.sqlite"
    _damaged("damaged page", cache)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for path, answer in ((a, "Because."), (b, "No idea.")):
        rows = [{"id": str(i), "instruction": f"Q{i}?", "answer": answer} for i in range(4)]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    verdicts = tmp_path / "v.jsonl"
    result = run(
        "judge", str(a), str(b), "-o", str(verdicts), "--judge-cache", str(cache),
        "--no-progress", "--json", "--base-url", server.base_url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["pairs"], report["unparsed"], report["failed"]) == (4, 0, 0)
    assert result.stderr.count(GOES_ON) == 1, result.stderr
    assert f"rm -f {cache} " in result.stderr
