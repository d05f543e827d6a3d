"""What dataset runs need of an :class:`~expertprompting.ExpertPrompter`, as a protocol.

``generate`` and the Batch API files take the prompter a user made, but the datasets layer sits
below the facade (the facade's ``ep.generate`` calls down into it), so they name only what they
use: its settings, its planner, its model session, its strategy names, and its chat call (the
later turns of a question of several turns are answered as a conversation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .._io.session import ModelSession
from .._method.config import PrompterConfig
from .._method.planner import Planner
from .._method.results import ExpertAnswer, ExpertIdentity, Strategy

__all__ = ["Answerer"]


class Answerer(Protocol):
    """An :class:`~expertprompting.ExpertPrompter`, as far as dataset runs use one."""

    @property
    def config(self) -> PrompterConfig:
        """The prompter's settings."""

    @property
    def planner(self) -> Planner:
        """Plans every request of the method."""

    @property
    def session(self) -> ModelSession:
        """Sends the requests: transports, retry, budget, cache, token counter."""

    def resolve_strategy(self, strategy: Strategy | None = None) -> Strategy:
        """The strategy a call given ``strategy`` uses, checked."""

    async def achat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        identity: str | ExpertIdentity | None = None,
        strategy: Strategy | None = None,
    ) -> ExpertAnswer:
        """Answer the last user turn of a conversation (``ExpertPrompter.achat``)."""
