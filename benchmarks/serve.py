"""What ``expertprompting serve`` adds: latency, throughput, many streams, memory over time.

An upstream (the test server, in its own process) answers every request after ``--latency``
seconds; ``expertprompting serve`` runs in front of it (its own process, default settings,
identity cache off so every answer costs its two upstream requests); the clients are the
openai SDK's ``AsyncOpenAI`` in this process. Four figures:

1. **Added latency** at ``--clients`` (32) concurrent clients: each client's latency through
   the server minus the latency of the same two requests sent straight upstream by the same
   client (p50 and p99 of each; target: added p50 <= 10 ms).
2. **Throughput** at ``--throughput-clients`` (64) concurrent clients, as a share of the ideal
   ``clients / (2 * latency)`` answers per second (target >= 0.85).
3. **Streams**: ``--stream-clients`` (256) streaming requests at once (``include_usage``);
   every one must end with its usage chunk and the answer text (target: 0 errors).
4. **Memory**: the server's resident memory (``VmRSS``) after every tenth of
   ``--memory-requests`` (10,000) answers at 64 concurrent clients (target: flat).

    python benchmarks/serve.py [--latency 0.25] [--memory-requests 10000] [--skip-memory]

Needs the serve extra (``pip install -e ".[serve]"``). Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
from _server import instructions, loopback_server

MODEL = "gpt-4o-mini"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def served(upstream: str) -> Iterator[tuple[str, int]]:
    """``expertprompting serve`` in front of ``upstream``: yields its base URL and its pid."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "expertprompting.cli",
        "serve",
        "--model",
        MODEL,
        "--base-url",
        upstream,
        "--port",
        str(port),
        "--cache",
        "off",
        "-q",
    ]
    env = {**os.environ, "OPENAI_API_KEY": "upstream-key"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1", process.pid
    finally:
        process.terminate()
        process.wait(timeout=60)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def clients(n: int, jobs: int, one: Callable[[int], Awaitable[float]]) -> list[float]:
    """``n`` concurrent clients running ``jobs`` calls of ``one(index)`` in all; their times."""
    queue = iter(range(jobs))
    times: list[float] = []

    async def client() -> None:
        for index in queue:
            times.append(await one(index))

    await asyncio.gather(*(client() for _ in range(n)))
    return times


async def measure(args: argparse.Namespace, upstream: str, base_url: str, pid: int) -> None:
    direct = openai.AsyncOpenAI(base_url=upstream, api_key="x", max_retries=0)
    server = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=120)
    texts = instructions(100_000)

    async def straight(index: int) -> float:
        started = time.perf_counter()
        for _ in range(2):  # the identity, then the answer: what the server sends upstream
            await direct.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": texts[index]}], max_tokens=64
            )
        return time.perf_counter() - started

    async def through(index: int) -> float:
        started = time.perf_counter()
        reply = await server.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": texts[index]}], max_tokens=64
        )
        extra = reply.usage.model_extra if reply.usage is not None else None
        assert extra is not None, "no usage"
        assert extra.get("requests") == 2, reply.usage
        return time.perf_counter() - started

    # warm both paths (connection pools, the server's first-request work)
    await clients(8, 16, through)
    await clients(8, 16, straight)

    n, jobs = args.clients, args.clients * args.rounds
    base = await clients(n, jobs, straight)
    served_times = await clients(n, jobs, lambda i: through(i + jobs))
    p50 = (percentile(served_times, 0.5) - percentile(base, 0.5)) * 1000
    p99 = (percentile(served_times, 0.99) - percentile(base, 0.99)) * 1000
    print(
        f"added latency at {n} clients ({jobs} answers): p50 {p50:.1f} ms, p99 {p99:.1f} ms "
        f"(straight p50 {percentile(base, 0.5) * 1000:.0f} ms, through the server "
        f"{percentile(served_times, 0.5) * 1000:.0f} ms; target p50 <= 10 ms)"
    )

    n = args.throughput_clients
    jobs = n * args.rounds
    ideal = n / (2 * args.latency)
    started = time.perf_counter()
    await clients(n, jobs, lambda i: through(i + 10_000))
    rate = jobs / (time.perf_counter() - started)
    # the same two requests per answer sent straight upstream: the ceiling of this machine
    started = time.perf_counter()
    await clients(n, jobs, lambda i: straight(i + 10_000))
    ceiling = jobs / (time.perf_counter() - started)
    print(
        f"throughput at {n} clients: {rate:.1f} answers/s of an ideal {ideal:.1f}: "
        f"{rate / ideal:.3f} (target >= 0.85); straight upstream {ceiling / ideal:.3f}"
    )

    errors: list[str] = []

    async def streamed(index: int) -> float:
        started = time.perf_counter()
        try:
            stream = await server.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": texts[20_000 + index]}],
                max_tokens=64,
                stream=True,
                stream_options={"include_usage": True},
            )
            text, usage = [], None
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    text.append(chunk.choices[0].delta.content)
                usage = chunk.usage or usage
            if not text or usage is None:
                errors.append(f"stream {index}: text {bool(text)}, usage {usage is not None}")
        except Exception as exc:  # counted: the figure is how many failed
            errors.append(f"stream {index}: {type(exc).__name__}: {exc}")
        return time.perf_counter() - started

    n = args.stream_clients
    started = time.perf_counter()
    await clients(n, n, streamed)
    print(
        f"{n} concurrent streams: {len(errors)} errors in {time.perf_counter() - started:.1f} s"
        " (target 0)"
    )
    for line in errors[:5]:
        print("  ", line)

    if args.skip_memory:
        return
    total, step = args.memory_requests, max(1, args.memory_requests // 10)
    samples = [rss_mib(pid)]
    for done in range(0, total, step):
        offset = 30_000 + done

        async def fresh(i: int, offset: int = offset) -> float:
            return await through(offset + i)  # a new instruction every time: no cache hits

        await clients(64, step, fresh)
        samples.append(rss_mib(pid))
    series = ", ".join(f"{s:.0f}" for s in samples)
    print(
        f"server memory (MiB) from the start, then after every {step} answers: {series}; "
        f"growth over the last 90%: {samples[-1] - samples[1]:+.1f} MiB (target: flat)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.25)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--throughput-clients", type=int, default=64)
    parser.add_argument("--stream-clients", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=10, help="answers per client")
    parser.add_argument("--memory-requests", type=int, default=10_000)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    with loopback_server(latency=args.latency) as upstream, served(upstream) as (url, pid):
        asyncio.run(measure(args, upstream, url, pid))


if __name__ == "__main__":
    main()
