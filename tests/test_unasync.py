"""The sync driver is generated from the async one by tools/unasync.py; stale copies are caught."""

from __future__ import annotations

import importlib.util
import io
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "unasync.py"
SOURCE_REL = "expertprompting/_io/async_driver.py"  # as tools/unasync.py's SOURCE_AND_TARGET
TARGET_REL = "expertprompting/_io/sync_driver.py"
SOURCE = ROOT / SOURCE_REL
TARGET = ROOT / TARGET_REL


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unasync_tool", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=60
    )


def _copy_of_the_tree(tmp_path: Path) -> Path:
    """The script, the async source and the generated file, laid out as in the repository."""
    (tmp_path / "tools").mkdir()
    (tmp_path / SOURCE_REL).parent.mkdir(parents=True)
    shutil.copy(SCRIPT, tmp_path / "tools" / "unasync.py")
    shutil.copy(SOURCE, tmp_path / SOURCE_REL)
    shutil.copy(TARGET, tmp_path / TARGET_REL)
    return tmp_path / "tools" / "unasync.py"


def test_the_check_passes_on_the_tree() -> None:
    # Run as CI runs it: as a script, whose own name would hide the unasync package.
    done = _run(SCRIPT, "--check")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_the_sync_file_is_the_generated_one() -> None:
    assert _tool().generate(SOURCE) == TARGET.read_text(encoding="utf-8")
    assert TARGET.read_text(encoding="utf-8").startswith(
        "# generated from async_driver.py by tools/unasync.py; do not edit\n"
    )


def test_no_async_name_is_left_in_the_sync_file() -> None:
    tokens = tokenize.generate_tokens(io.StringIO(TARGET.read_text(encoding="utf-8")).readline)
    names = {t.string for t in tokens if t.type == tokenize.NAME}
    left = names & {"async", "await", "asyncio", "aiter", "Awaitable", "AsyncTransport"}
    assert not left
    assert {"SyncDriver", "Transport", "sync_retrying", "acquire_sync", "iter"} <= names


def test_a_stale_copy_is_detected_and_regenerated(tmp_path: Path) -> None:
    script = _copy_of_the_tree(tmp_path)
    target = tmp_path / TARGET_REL
    edited = target.read_text(encoding="utf-8").replace(
        "return [fetch(r) for r in requests]", "return [fetch(r) for r in reversed(requests)]"
    )
    assert edited != target.read_text(encoding="utf-8")
    target.write_text(edited, encoding="utf-8")

    done = _run(script, "--check")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1  # one line
    assert "expertprompting/_io/sync_driver.py is stale" in done.stderr
    assert "python tools/unasync.py" in done.stderr
    assert target.read_text(encoding="utf-8") == edited  # --check writes nothing

    done = _run(script)
    assert done.returncode == 0
    assert target.read_text(encoding="utf-8") == TARGET.read_text(encoding="utf-8")
    assert _run(script, "--check").returncode == 0


def test_a_missing_generated_file_is_stale(tmp_path: Path) -> None:
    _copy_of_the_tree(tmp_path)
    target = tmp_path / TARGET_REL
    target.unlink()
    message = _tool().check(tmp_path / SOURCE_REL, target)
    assert message is not None
    assert "sync_driver.py is stale" in message


def test_an_edit_that_moves_a_rewrite_fails_loudly(tmp_path: Path) -> None:
    # A rewrite that no longer matches would generate a wrong sync file: stop instead.
    script = _copy_of_the_tree(tmp_path)
    source = tmp_path / SOURCE_REL
    text = source.read_text(encoding="utf-8")
    source.write_text(
        text.replace("        yield tracker.exchange()\n", "        yield (tracker.exchange())\n"),
        encoding="utf-8",
    )
    before = (tmp_path / TARGET_REL).read_text(encoding="utf-8")

    done = _run(script)
    assert done.returncode == 2
    assert "'yield tracker.exchange()'" in done.stderr
    assert "update REWRITES in tools/unasync.py" in done.stderr
    assert (tmp_path / TARGET_REL).read_text(encoding="utf-8") == before


def test_the_paths_here_are_the_scripts() -> None:
    assert _tool().SOURCE_AND_TARGET == (SOURCE_REL, TARGET_REL)
