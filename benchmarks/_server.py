"""Start the loopback test server in its own process, so it does not share the client's GIL."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def loopback_server(latency: float = 0.0, faults: float = 0.0, seed: int = 1) -> Iterator[str]:
    """Yield the base URL of ``python -m expertprompting.testing`` running in a subprocess."""
    command = [sys.executable, "-m", "expertprompting.testing", "--latency", str(latency)]
    if faults:
        command += ["--faults", str(faults), "--seed", str(seed)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(timeout=10)


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
