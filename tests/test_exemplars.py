"""Exemplar pool, relevance ranking and budget-aware selection."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from expertprompting import Exemplar, default_exemplars, load_exemplars
from expertprompting._method.errors import ConfigurationError
from expertprompting._method.exemplars import ExemplarIndex, select_exemplars


def test_default_pool_is_ours_and_varied() -> None:
    pool = default_exemplars()
    assert len(pool) >= 12
    domains = {e.domain for e in pool}
    assert len(domains) == len(pool)
    assert {
        "science",
        "medicine",
        "law",
        "software",
        "mathematics",
        "writing",
        "business",
    } <= domains
    for e in pool:
        assert e.description.startswith("You are ")
        assert 100 <= len(e.description.split()) <= 200
        assert "\n" not in e.description


def test_ranking_prefers_the_matching_domain() -> None:
    index = ExemplarIndex(default_exemplars())
    top = index.ranked("What legal rights does a tenant have when a landlord keeps the deposit?")
    assert top[0].domain == "law"
    top = index.ranked("Write a Python function that removes duplicates from a list.")
    assert top[0].domain == "software"


def test_ranking_is_deterministic_and_total() -> None:
    pool = default_exemplars()
    index = ExemplarIndex(pool)
    a = index.ranked("zzz qqq")
    assert a == index.ranked("zzz qqq")
    assert sorted(e.instruction for e in a) == sorted(e.instruction for e in pool)
    assert a == pool  # no overlap at all: pool order


def _ex(name: str, words: int) -> Exemplar:
    return Exemplar(instruction=name, description="You are " + "x " * words)


def test_selection_skips_what_does_not_fit_instead_of_stopping() -> None:
    ranked = [_ex("a", 10), _ex("big", 500), _ex("c", 10), _ex("d", 10)]

    def cost(exs: Sequence[Exemplar]) -> int:
        return 20 + sum(len(e.description.split()) for e in exs)

    chosen = select_exemplars(ranked, 3, cost, budget=100)
    assert [e.instruction for e in chosen] == ["d", "c", "a"]  # most relevant last
    assert cost(chosen) <= 100


def test_selection_respects_k_and_zero() -> None:
    ranked = [_ex(str(i), 1) for i in range(5)]
    assert len(select_exemplars(ranked, 2, lambda exs: len(exs), 100)) == 2
    assert select_exemplars(ranked, 0, lambda exs: len(exs), 100) == []


def test_load_exemplars_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "ex.jsonl"
    rows = [
        {"instruction": "A?", "description": "You are A."},
        {"instruction": "B?", "description": "You are B.", "domain": "b"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    pool = load_exemplars(path)
    assert [e.instruction for e in pool] == ["A?", "B?"]
    assert pool[1].domain == "b"


def test_load_exemplars_reports_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "ex.jsonl"
    path.write_text('{"instruction": "A?", "description": "You are A."}\n{"instruction": "B?"}\n')
    with pytest.raises(ConfigurationError, match=r"ex\.jsonl:2"):
        load_exemplars(path)
    path.write_text("not json\n")
    with pytest.raises(ConfigurationError, match=r"ex\.jsonl:1"):
        load_exemplars(path)


def test_blank_exemplar_rejected() -> None:
    with pytest.raises(ValueError, match="blank"):
        Exemplar(instruction="  ", description="You are.")
