"""The command line is a package with one module per command group.

``expertprompting.cli`` wires the parser and runs a command; each command's function lives in
its group's module (``_answer``, ``_datasets``, ``_evaluation``) and what several share lives in
``_common``. These tests pin that layout and the one seam tests rely on: the check for the
bundled model is looked up through ``_common`` when called, so replacing it there is seen by
every command.
"""

from __future__ import annotations

import argparse
import inspect
import subprocess
import sys

import pytest

import expertprompting
from expertprompting import cli
from expertprompting.cli import _common

HOMES = {
    "answer": "expertprompting.cli._answer",
    "identify": "expertprompting.cli._answer",
    "prompt": "expertprompting.cli._answer",
    "generate": "expertprompting.cli._datasets",
    "batch": "expertprompting.cli._datasets",
    "judge": "expertprompting.cli._evaluation",
    "compare": "expertprompting.cli._evaluation",
    "serve": "expertprompting.cli._serve",
}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_each_command_lives_in_its_groups_module() -> None:
    commands = _subparsers(cli.build_parser())
    assert sorted(commands) == sorted(HOMES)
    for name, parser in commands.items():
        steps = _subparsers(parser)
        for command_parser in steps.values() if steps else [parser]:
            command = command_parser.get_default("command")
            assert command.__module__ == HOMES[name], name
            assert command.__name__ == f"cmd_{name}"


def test_the_package_module_holds_only_the_wiring() -> None:
    defined = {
        name
        for name, value in vars(cli).items()
        if inspect.isfunction(value) and value.__module__ == cli.__name__
    }
    assert defined == {"build_parser", "entry", "main"}
    # the public names are still importable from expertprompting.cli, defined in _common
    for name in ("DEFAULT_OPENAI_MODEL", "LOCAL_NOTE", "UsageError", "for_cli", "resolve_model"):
        assert getattr(cli, name) is getattr(_common, name)
    assert cli.__all__ == [
        "DEFAULT_OPENAI_MODEL",
        "build_parser",
        "for_cli",
        "main",
        "resolve_model",
    ]


def test_the_judge_sees_the_bundled_model_check_replaced_in_common(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # with no key, no base URL and no local model there is no model to judge with
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "EXPERTPROMPTING_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("expertprompting.cli._common.local_available", lambda: False)
    code = cli.main(["judge", "a.jsonl", "b.jsonl", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"expertprompting: error: {_common.NOWHERE}\n"


@pytest.mark.parametrize("args", [["--version"], ["judge", "--help"]], ids=" ".join)
def test_python_dash_m_runs_the_package(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "expertprompting.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    if args == ["--version"]:
        assert done.stdout.strip() == f"expertprompting {expertprompting.__version__}"
    else:
        assert done.stdout.startswith("usage: expertprompting judge ")
        assert "--judge-model MODEL" in done.stdout
