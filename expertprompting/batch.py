"""The method in two passes over a batch engine: OpenAI's Batch API or vLLM's ``run_batch``.

The public face of :mod:`expertprompting._datasets.batch`, which says how the passes go:
:func:`write_identity_requests`, then the engine (:func:`submit`, :func:`status`,
:func:`download`, or :func:`run_requests` against any OpenAI-compatible server), then
:func:`write_answer_requests`, the engine again, and :func:`assemble`.
"""

from __future__ import annotations

from ._datasets.batch import (
    BATCH_ENDPOINT,
    BATCH_PRICE_FACTOR,
    BatchFileSummary,
    BatchResult,
    assemble,
    download,
    read_results,
    run_requests,
    status,
    submit,
    write_answer_requests,
    write_identity_requests,
)

__all__ = [
    "BATCH_ENDPOINT",
    "BATCH_PRICE_FACTOR",
    "BatchFileSummary",
    "BatchResult",
    "assemble",
    "download",
    "read_results",
    "run_requests",
    "status",
    "submit",
    "write_answer_requests",
    "write_identity_requests",
]
