"""Planning max_tokens and the shared run budget."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from expertprompting import BudgetExceededError, ModelPrice, RunBudget, TokenBudgetError
from expertprompting._io.budget import BudgetLedger
from expertprompting._method.model_table import ModelInfo, lookup_model
from expertprompting._method.planner import plan_max_tokens


def test_plan_is_min_of_cap_and_room() -> None:
    assert (
        plan_max_tokens(prompt_tokens=100, context_window=1000, cap=None, margin=10, what="x")
        == 890
    )
    assert (
        plan_max_tokens(prompt_tokens=100, context_window=1000, cap=50, margin=10, what="x") == 50
    )


def test_plan_refuses_with_numbers() -> None:
    with pytest.raises(TokenBudgetError, match=r"needs 995 tokens.*1000-token") as info:
        plan_max_tokens(prompt_tokens=995, context_window=1000, cap=None, margin=10, what="answer")
    assert info.value.needed == 1006
    assert info.value.available == 1000


def test_model_table_prefix_lookup() -> None:
    def info(name: str) -> ModelInfo:
        found = lookup_model(name)
        assert found is not None, name
        return found

    assert info("gpt-4o-mini-2024-07-18").context_window == 128_000
    assert info("gpt-4o-mini").price == ModelPrice(input=0.15, output=0.60)
    assert info("gpt-4.1-nano").max_output_tokens == 32_768
    assert info("o3-mini").uses_max_completion_tokens
    assert lookup_model("llama-3") is None


def _ledger(**limits: Any) -> BudgetLedger:
    return BudgetLedger(RunBudget(**limits), lambda m: ModelPrice(input=1.0, output=2.0))


def test_reserve_then_settle_with_real_usage() -> None:
    ledger = _ledger(max_total_tokens=1000)
    r = ledger.reserve("m", 100, 400)
    spent = ledger.settle(r, 100, 50)
    assert (spent.total_tokens, spent.requests) == (150, 1)
    assert spent.cost == pytest.approx((100 * 1 + 50 * 2) / 1e6)
    assert ledger.usage.total_tokens == 150
    ledger.reserve("m", 100, 700)  # 150 + 800 <= 1000
    with pytest.raises(BudgetExceededError, match="max_total_tokens=1000") as info:
        ledger.reserve("m", 1, 100)  # in-flight reservations count
    assert info.value.limit == "max_total_tokens"


def test_request_limit() -> None:
    ledger = _ledger(max_requests=2)
    ledger.settle(ledger.reserve("m", 1, 1), 1, 1)
    ledger.reserve("m", 1, 1)
    with pytest.raises(BudgetExceededError, match="max_requests=2"):
        ledger.reserve("m", 1, 1)


def test_cost_limit_uses_worst_case() -> None:
    ledger = _ledger(max_cost=0.001)
    with pytest.raises(BudgetExceededError, match="max_cost"):
        ledger.reserve("m", 100, 1000)  # 100*1 + 1000*2 = 2100e-6 > 1e-3
    ledger.reserve("m", 100, 100)


def test_ledger_is_thread_safe() -> None:
    ledger = _ledger(max_requests=100)
    errors: list[Exception] = []

    def work() -> None:
        for _ in range(20):
            try:
                ledger.settle(ledger.reserve("m", 1, 1), 1, 1)
            except BudgetExceededError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ledger.usage.requests == 100
    assert len(errors) == 60
