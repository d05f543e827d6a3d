"""Strategies: which flow answers an instruction, and which strategy names exist.

Built in: ``expert`` (the method: identity, then answer), ``vanilla`` and ``static`` (the
paper's baselines, one request each) and ``multi-expert`` (n experts and an aggregation, n + 2
requests). Users add single-request strategies by template, ``ExpertPrompter(strategies=
{"socratic": "Ask yourself three questions first.\\n\\n{{ instruction }}"})``: the template sees
``instruction`` and ``input`` and is rendered in the same sandbox as ours.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Generator
from typing import Any

from .config import CallOverrides
from .errors import ConfigurationError
from .flows import answer_flow
from .multi_expert import multi_expert_flow
from .planner import Planner
from .results import ExpertAnswer, ExpertIdentity

__all__ = ["BUILTIN_STRATEGIES", "check_strategy", "strategy_flow"]

BUILTIN_STRATEGIES = ("expert", "vanilla", "static", "multi-expert")


def check_strategy(name: str, custom: Collection[str]) -> str:
    """``name`` if it is a known strategy; else a ConfigurationError listing them."""
    if name in BUILTIN_STRATEGIES or name in custom:
        return name
    known = ", ".join(repr(s) for s in (*BUILTIN_STRATEGIES, *sorted(custom)))
    raise ConfigurationError(
        f"Unknown strategy {name!r}; use one of {known}, or add your own with "
        "ExpertPrompter(strategies={name: template})."
    )


def strategy_flow(
    planner: Planner,
    instruction: str,
    input: str | None,
    identity: str | ExpertIdentity | None,
    strategy: str,
    stream: bool = False,
    overrides: CallOverrides | None = None,
    on_identity: Callable[[str], None] | None = None,
) -> Generator[Any, Any, ExpertAnswer]:
    """The flow that answers ``instruction`` with ``strategy``; ``overrides`` holds the call's
    own settings (``CallOverrides``), None for the prompter's; ``on_identity`` gets the
    identity's text once known (see :func:`~expertprompting._method.flows.answer_flow`)."""
    if strategy == "multi-expert":
        if identity is not None:
            raise ConfigurationError(
                "identity= does not apply to multi-expert, which chooses its own experts."
            )
        return multi_expert_flow(planner, instruction, input, overrides)
    return answer_flow(
        planner, instruction, input, identity, strategy, stream, overrides, on_identity
    )
