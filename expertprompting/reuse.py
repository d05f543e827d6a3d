"""Serving identity requests from the identity cache; shared by the sync and async drivers.

Only step 1 (and a judge's verdicts) are cached: an identity depends on nothing but the request
(model, rendered messages with their template, exemplars, instruction and input, and the
sampling settings), so the same request may reuse an earlier reply. A hit costs no request and
no tokens, and its record says ``cached=True``.
"""

from __future__ import annotations

import time

from .cache import CachedIdentity, IdentityCache, request_cache_key
from .core import ChatRequest, Completion, Exchange
from .results import RequestRecord, Usage

__all__ = ["CACHED_STEPS", "remember_identity", "reuse_identity"]

CACHED_STEPS = frozenset({"identity", "verdict"})
"""Steps whose replies depend on nothing but the request: identities, and a judge's verdicts."""


def reuse_identity(cache: IdentityCache | None, request: ChatRequest) -> Exchange | None:
    """The cached reply to an identity request, as if it had been sent; None on a miss."""
    if cache is None or request.step not in CACHED_STEPS:
        return None
    hit = cache.get(request_cache_key(request))
    if hit is None:
        return None
    completion = Completion(
        content=hit.description,
        finish_reason="stop",
        prompt_tokens=0,
        completion_tokens=0,
        model=hit.model,
    )
    record = RequestRecord(
        step=request.step,
        model=hit.model,
        attempts=0,
        usage=Usage(),
        finish_reason="stop",
        seconds=0.0,
        cached=True,
    )
    return Exchange(completion, record)


def remember_identity(
    cache: IdentityCache | None, request: ChatRequest, exchange: Exchange
) -> None:
    """Store a fresh identity reply (never a cached one) for later identical requests."""
    if cache is None or request.step not in CACHED_STEPS or exchange.record.cached:
        return
    text = (exchange.completion.content or "").strip()
    if not text:
        return
    cache.put(
        request_cache_key(request),
        CachedIdentity(
            description=text,
            model=exchange.completion.model,
            exemplars=[],
            created=time.time(),
        ),
    )
