"""One answer assembly (``core.assemble_answer``) and one usage sum (``Usage.total``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from expertprompting import ExpertPrompter
from expertprompting._datasets import items as dataset_module
from expertprompting._datasets.batch import BATCH_PRICE_FACTOR, assemble
from expertprompting._datasets.items import DatasetItem
from expertprompting._method.flows import answer_flow, assemble_answer
from expertprompting._method.results import ExpertAnswer, ExpertIdentity, RequestRecord, Usage
from expertprompting._method.wire import Exchange, parse_completion

Make = Callable[..., ExpertPrompter]

IDENTITY = "  You are an oceanographer who explains the sea to children.  "
ANSWER = "As an oceanographer, tides come from the pull of the moon"


def _body(content: str, finish: str, prompt: int, completion: int) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"message": {"content": content}, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
    }


def _result_file(path: Path, body: dict[str, Any], *, batch_api: bool) -> Path:
    line = {
        "id": "batch_req_1" if batch_api else "req_t",  # who ran it sets the price
        "custom_id": "t",
        "response": {"status_code": 200, "body": body},
        "error": None,
    }
    path.write_text(json.dumps(line) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("strategy", "clean"), [("expert", True), ("expert", False), ("vanilla", True)]
)
def test_batch_assemble_and_answer_flow_build_the_same_answer(
    make_prompter: Make,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    strategy: str,
    clean: bool,
) -> None:
    ep = make_prompter(strategy=strategy, clean_answers=clean)
    source = tmp_path / "in.jsonl"
    row = {"id": "t", "instruction": "Explain tides.", "input": "for a child"}
    source.write_text(json.dumps(row) + "\n", encoding="utf-8")
    identity_body = _body(IDENTITY, "stop", 300, 25)
    answer_body = _body(ANSWER, "length", 80, 12)  # cut off: truncated
    identities = _result_file(tmp_path / "res1.jsonl", identity_body, batch_api=True)
    answers = _result_file(tmp_path / "res2.jsonl", answer_body, batch_api=False)

    built: list[ExpertAnswer] = []
    output_row = dataset_module.output_row

    def keep(item: DatasetItem, result: ExpertAnswer, **kwargs: Any) -> dict[str, Any]:
        built.append(result)
        return output_row(item, result, **kwargs)

    monkeypatch.setattr(dataset_module, "output_row", keep)
    summary = assemble(
        ep,
        source,
        answers,
        tmp_path / "out.jsonl",
        identities if strategy == "expert" else None,
    )
    assert summary.written == 1
    (batch,) = built

    # the same replies, sent to the flow by hand with the records batch made of them
    flow = answer_flow(ep.planner, "Explain tides.", "for a child", None, strategy)
    request = next(flow)
    replies = [identity_body, answer_body] if strategy == "expert" else [answer_body]
    assert len(batch.requests) == len(replies)
    direct: ExpertAnswer | None = None
    for body, record in zip(replies, batch.requests, strict=True):
        completion = parse_completion(body, request, ep.counter)
        try:
            request = flow.send(Exchange(completion, record))
        except StopIteration as stop:
            direct = stop.value
    assert direct is not None
    assert batch == direct.model_copy(update={"id": "t"})

    # and what that answer says
    assert batch.truncated is True
    if clean:
        assert (batch.answer, batch.raw_answer) == ("Tides come from the pull of the moon", ANSWER)
    else:
        assert (batch.answer, batch.raw_answer) == (ANSWER, None)
    price = ep.ledger.cost
    answer_cost = price("gpt-4o-mini", 80, 12)
    assert answer_cost is not None
    if strategy == "expert":
        assert batch.expert_identity == IDENTITY.strip()
        identity_cost = price("gpt-4o-mini", 300, 25)
        assert identity_cost is not None
        assert batch.usage.model_dump() == {
            "prompt_tokens": 380,
            "completion_tokens": 37,
            "total_tokens": 417,
            "requests": 2,
            "cost": pytest.approx(identity_cost * BATCH_PRICE_FACTOR + answer_cost),
        }
    else:
        assert batch.expert_identity is None
        assert batch.usage.total_tokens == 92
        assert batch.usage.cost == pytest.approx(answer_cost)


def _usage(prompt: int, completion: int, requests: int = 1, cost: float | None = None) -> Usage:
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        requests=requests,
        cost=cost,
    )


def _record(usage: Usage, *, cached: bool = False) -> RequestRecord:
    return RequestRecord(
        step="answer", model="m", attempts=1, usage=usage, seconds=0.0, cached=cached
    )


def test_usage_total_sums_usages_records_and_results_alike() -> None:
    a, b = _usage(10, 5, cost=0.25), _usage(7, 3, requests=2, cost=0.5)
    expected = _usage(17, 8, requests=3, cost=0.75)
    assert Usage.total([a, b]) == expected == a + b
    assert Usage.total([_record(a), _record(b)]) == expected
    identity = ExpertIdentity(instruction="q", description="d", model="m", usage=a)
    answer = ExpertAnswer(
        instruction="q", expert_identity=None, answer="x", model="m", strategy="vanilla", usage=b
    )
    assert Usage.total([identity, answer]) == expected
    mixed: list[Usage | RequestRecord] = [a, _record(b)]
    assert Usage.total(iter(mixed)) == expected  # any iterable, read once


def test_usage_total_keeps_the_rules_of_an_unknown_price() -> None:
    assert Usage.total([]) == Usage()
    priced, unpriced = _usage(10, 5, cost=0.25), _usage(1, 1)
    assert Usage.total([priced, unpriced]).cost is None  # never a silent partial sum
    cache_hit = _record(Usage(), cached=True)  # nothing spent: nothing to price
    assert Usage.total([_record(priced), cache_hit]).cost == 0.25


def test_assemble_answer_is_what_the_flows_return(make_prompter: Make) -> None:
    ep = make_prompter(strategy="vanilla")
    records = [_record(_usage(40, 6, cost=0.001)), _record(_usage(2, 0, requests=1, cost=0.0))]
    flow = answer_flow(ep.planner, "Say hi.", None, None, "vanilla")
    request = next(flow)
    completion = parse_completion(_body("Hi there.", "stop", 40, 6), request, ep.counter)
    built = assemble_answer(
        ep.planner, "Say hi.", None, None, "vanilla", completion, records, True, "x"
    )
    assert built.usage == Usage.total(records)
    assert built.requests == records
    assert (built.identity_cached, built.id, built.truncated) == (True, "x", False)
    with pytest.raises(StopIteration) as stop:
        flow.send(Exchange(completion, records[0]))
    direct = stop.value.value
    assert direct == assemble_answer(
        ep.planner, "Say hi.", None, None, "vanilla", completion, records[:1]
    )
    assert direct.usage == records[0].usage
