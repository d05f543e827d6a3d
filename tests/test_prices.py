"""Prices: a dated snapshot is priced as its model, a variant is not guessed, Batch API is half."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from expertprompting import ConfigurationError, ExpertPrompter, ModelPrice
from expertprompting._datasets.batch import (
    BATCH_PRICE_FACTOR,
    assemble,
    download,
    run_requests,
    submit,
    write_answer_requests,
    write_identity_requests,
)
from expertprompting._method.model_table import lookup_model
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

Make = Callable[..., ExpertPrompter]
MINI = ModelPrice(input=0.15, output=0.60)
DATED = "gpt-4o-mini-2024-07-18"


def _info(model: str) -> Any:
    found = lookup_model(model)
    assert found is not None, model
    return found


def test_a_dated_snapshot_is_priced_as_its_model() -> None:
    assert _info(DATED).price == MINI
    assert _info("gpt-4o-2024-08-06").price == _info("gpt-4o").price
    assert _info("o3-mini-2025-01-31") == _info("o3-mini")


def test_a_variant_keeps_its_familys_limits_but_gets_no_price() -> None:
    """o3-pro costs ten times o3: a family's price is never lent to its variants."""
    for variant, family in (("o3-pro", "o3"), ("gpt-4o-audio-preview", "gpt-4o")):
        info = _info(variant)
        assert info.price is None
        assert info.context_window == _info(family).context_window
        assert info.uses_max_completion_tokens == _info(family).uses_max_completion_tokens
    assert _info("o3-pro-2025-06-10").price is None  # a dated variant: still a variant
    assert lookup_model("llama-3.1-8b") is None


def test_max_cost_refuses_a_variant_whose_price_is_unknown() -> None:
    with pytest.raises(ConfigurationError, match="price of 'o3-pro' is unknown"):
        ExpertPrompter(model="o3-pro", api_key="k", max_cost=1.0)
    priced = ExpertPrompter(
        model="o3-pro",
        api_key="k",
        max_cost=1.0,
        prices={"o3-pro": ModelPrice(input=20, output=80)},
    )
    assert priced.config.budget.max_cost == 1.0


def test_a_reply_from_a_dated_snapshot_has_a_cost(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    server.responder = lambda req: Reply(content="You are a tide expert.", model=DATED)
    answer = make_prompter(model=DATED, cache=False).answer("Why are there tides?")
    assert answer.model == DATED
    u = answer.usage
    assert u.cost == pytest.approx(MINI.cost(u.prompt_tokens, u.completion_tokens))


# -- rows assembled from result files -------------------------------------------------------------
def _model(req: RecordedRequest) -> Reply:
    last = req.messages[-1]["content"]
    if "[Agent Description]:" in last:
        return Reply(content="You are the expert for tides.", model=DATED)
    return Reply(content="The Moon pulls the sea.", model=DATED)


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _full_price(row: dict[str, Any]) -> float:
    u = row["usage"]
    return MINI.cost(u["prompt_tokens"], u["completion_tokens"])


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "t", "instruction": "Why are there tides?"}\n', encoding="utf-8")
    return path


def test_rows_from_the_batch_api_carry_the_batch_price(
    server: FakeOpenAIServer, make_prompter: Make, dataset: Path, tmp_path: Path
) -> None:
    server.responder = _model
    ep = make_prompter(cache=False)
    client = openai.OpenAI(base_url=server.base_url, api_key="k")
    write_identity_requests(ep, dataset, tmp_path / "req1.jsonl")
    download(client, submit(client, tmp_path / "req1.jsonl").id, tmp_path / "res1.jsonl")
    write_answer_requests(ep, dataset, tmp_path / "req2.jsonl", tmp_path / "res1.jsonl")
    download(client, submit(client, tmp_path / "req2.jsonl").id, tmp_path / "res2.jsonl")
    out = tmp_path / "out.jsonl"
    assemble(ep, dataset, tmp_path / "res2.jsonl", out, tmp_path / "res1.jsonl")
    (row,) = _rows(out)
    assert row["model"] == DATED
    assert BATCH_PRICE_FACTOR == 0.5
    assert row["usage"]["cost"] == pytest.approx(_full_price(row) * 0.5)


def test_rows_from_direct_requests_carry_the_full_price(
    server: FakeOpenAIServer, make_prompter: Make, dataset: Path, tmp_path: Path
) -> None:
    server.responder = _model
    ep = make_prompter(cache=False)

    def client() -> openai.AsyncOpenAI:  # one per run: each run has its own event loop
        return openai.AsyncOpenAI(base_url=server.base_url, api_key="k")

    write_identity_requests(ep, dataset, tmp_path / "req1.jsonl")
    run_requests(tmp_path / "req1.jsonl", tmp_path / "res1.jsonl", client=client())
    write_answer_requests(ep, dataset, tmp_path / "req2.jsonl", tmp_path / "res1.jsonl")
    run_requests(tmp_path / "req2.jsonl", tmp_path / "res2.jsonl", client=client())
    out = tmp_path / "out.jsonl"
    assemble(ep, dataset, tmp_path / "res2.jsonl", out, tmp_path / "res1.jsonl")
    (row,) = _rows(out)
    assert row["usage"]["cost"] == pytest.approx(_full_price(row))


def test_assembled_rows_use_the_prompters_own_prices(
    server: FakeOpenAIServer, make_prompter: Make, dataset: Path, tmp_path: Path
) -> None:
    server.responder = _model
    price = ModelPrice(input=1.0, output=2.0)
    ep = make_prompter(cache=False, prices={"gpt-4o-mini": price})
    client = openai.OpenAI(base_url=server.base_url, api_key="k")
    write_identity_requests(ep, dataset, tmp_path / "req1.jsonl")
    download(client, submit(client, tmp_path / "req1.jsonl").id, tmp_path / "res1.jsonl")
    write_answer_requests(ep, dataset, tmp_path / "req2.jsonl", tmp_path / "res1.jsonl")
    download(client, submit(client, tmp_path / "req2.jsonl").id, tmp_path / "res2.jsonl")
    out = tmp_path / "out.jsonl"
    assemble(ep, dataset, tmp_path / "res2.jsonl", out, tmp_path / "res1.jsonl")
    (row,) = _rows(out)
    u = row["usage"]
    assert u["cost"] == pytest.approx(price.cost(u["prompt_tokens"], u["completion_tokens"]) / 2)
