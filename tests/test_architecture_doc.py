"""docs/architecture.md matches the tree: every module is placed in its layer, the names it
gives as ``Class.member`` exist, and its hand-driven flow example runs as written."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import expertprompting

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(expertprompting.__file__).parent
PAGE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def _sections() -> dict[str, str]:
    """Each ``### `` section of the page, by its heading."""
    parts = re.split(r"^### ", PAGE, flags=re.MULTILINE)
    return {part.splitlines()[0]: part for part in parts[1:]}


def _modules() -> list[Path]:
    return sorted(p.relative_to(PACKAGE) for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("module", _modules(), ids=str)
def test_every_module_is_in_its_layers_table(module: Path) -> None:
    if module.name == "__init__.py" and len(module.parts) == 2 and module.parts[0] != "cli":
        return  # a layer's own __init__ holds only its docstring
    folder = module.parts[0] if len(module.parts) > 1 else None
    if folder is None or folder == "cli":
        assert f"`{module.as_posix()}`" in PAGE, module
        return
    homes = [text for heading, text in _sections().items() if f"`{folder}/`" in heading]
    assert homes, f"no section for {folder}/"
    assert f"`{module.name}`" in homes[0], f"{module} is not in the {folder}/ table"


def _objects() -> list[object]:
    found: list[object] = []
    for path in _modules():
        if path.name == "__main__.py":
            continue
        parts = path.with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(("expertprompting", *parts))
        found.append(importlib.import_module(name))
    return found


def test_the_names_it_gives_exist() -> None:
    prose = re.sub(r"```.*?```", "", PAGE, flags=re.DOTALL)
    modules = _objects()
    missing = []
    for owner, member in sorted(set(re.findall(r"`[^`]*?\b([A-Z]\w+)\.([a-z_]\w*)", prose))):
        homes = [getattr(m, owner) for m in modules if hasattr(m, owner)]
        if not any(hasattr(h, member) or member in getattr(h, "model_fields", {}) for h in homes):
            missing.append(f"{owner}.{member}")
    assert missing == []


def test_the_hand_driven_flow_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    section = PAGE.split("## A sans-I/O core", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert code is not None
    scope: dict[str, object] = {}
    exec(compile(code.group(1), "docs/architecture.md", "exec"), scope)
    result = scope["result"]
    assert isinstance(result, expertprompting.ExpertAnswer)
    assert result.expert_identity == "You are an oceanographer ..."
    assert result.answer == "Tides are caused by ..."
    assert result.usage.requests == 2
