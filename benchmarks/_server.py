"""Start the loopback test server in its own process, so it does not share the client's GIL."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


@contextmanager
def loopback_server(
    latency: float = 0.0, faults: float = 0.0, seed: int = 1, extra: Sequence[str] = ()
) -> Iterator[str]:
    """Yield the base URL of ``python -m expertprompting.testing`` running in a subprocess.

    ``extra`` are more of its flags, e.g. ``["--rpm", "3000"]`` for provider-style limits.
    """
    command = [sys.executable, "-m", "expertprompting.testing", "--latency", str(latency)]
    if faults:
        command += ["--faults", str(faults), "--seed", str(seed)]
    command += list(extra)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(timeout=10)


def limit_stats(base_url: str) -> dict[str, int]:
    """The server's counts under its limits: accepted, refused, tokens (GET /fake/limit-stats)."""
    url = base_url.removesuffix("/v1") + "/fake/limit-stats"
    with urllib.request.urlopen(url, timeout=10) as reply:  # loopback only
        stats: dict[str, int] = json.load(reply)
    return stats


def instructions(n: int) -> list[str]:
    """``n`` distinct, realistic-looking instructions."""
    topics = [
        "photosynthesis",
        "compound interest",
        "the French Revolution",
        "binary search",
        "plate tectonics",
        "the immune system",
        "supply and demand",
        "sonnets",
    ]
    verbs = ["Explain", "Summarise", "Give three facts about", "Write a short quiz on"]
    return [f"{verbs[i % 4]} {topics[i % 8]} for reader number {i}." for i in range(n)]
