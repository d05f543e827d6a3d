"""``expertprompting --version`` and ``--help`` start fast: they do not import the heavy modules.

Loading the OpenAI SDK (with httpx and pydantic), tiktoken, jinja2 and tenacity takes about half
a second; a command that only prints text must not pay it. Each test runs a fresh interpreter,
since this test session has long imported all of them.
"""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

# Top-level packages the light commands must leave alone.
HEAVY = frozenset(
    {
        "anyio",
        "httpcore",
        "httpx",
        "jinja2",
        "llama_cpp",
        "openai",
        "pydantic",
        "pydantic_core",
        "tenacity",
        "tiktoken",
        "tqdm",
    }
)

# Runs the CLI's main() as the console script does, then lists the heavy modules it loaded.
PROBE = """
import sys
from expertprompting.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
print("HEAVY:", sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r}), file=sys.stderr)
sys.exit(code or 0)
"""


def _probe(*args: str) -> tuple[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=set(HEAVY)), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("HEAVY: "), done.stderr
    return done.stdout, ast.literal_eval(line.removeprefix("HEAVY: "))


def test_version_loads_no_heavy_module() -> None:
    out, heavy = _probe("--version")
    assert out.strip() == f"expertprompting {_version()}"
    assert heavy == []


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["answer"],
        ["identify"],
        ["prompt"],
        ["generate"],
        ["judge"],
        ["compare"],
        ["batch"],
        ["batch", "run"],
    ],
    ids=lambda c: " ".join(c) or "top",
)
def test_help_loads_no_heavy_module(command: list[str]) -> None:
    out, heavy = _probe(*command, "--help")
    assert out.startswith(f"usage: expertprompting {' '.join(command)}".rstrip())
    assert heavy == []


def test_python_dash_m_cli_loads_no_heavy_module() -> None:
    # -X importtime lists every module the process imports, whatever the entry point.
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "expertprompting.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"expertprompting {_version()}"
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "expertprompting._method.errors" in imported  # the listing is real
    assert sorted(m for m in imported if m.split(".")[0] in HEAVY) == []


def test_import_expertprompting_loads_no_heavy_module() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, expertprompting; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {set(HEAVY)!r}))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _version() -> str:
    import expertprompting

    return expertprompting.__version__
