"""CPU-bound overhead of ``answer_many`` against a plain asyncio + AsyncOpenAI loop.

Same server (no simulated latency, its own process), same instructions, same two requests per
instruction (the baseline sends the very messages ExpertPrompter would, precomputed outside its
timing, so the baseline does strictly less work). Prints wall time and client CPU seconds per
instruction for both, and the wall-time ratio ours/plain (target <= 1.0).

    python benchmarks/many_cpu.py [--n 600] [--concurrency 64] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import openai
from _server import instructions, loopback_server

from expertprompting import ExpertPrompter


async def plain_loop(
    base_url: str, jobs: list[tuple[list[Any], str]], concurrency: int, model: str
) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
    gate = asyncio.Semaphore(concurrency)

    async def one(identity_messages: list[Any], instruction: str) -> None:
        async with gate:
            first = await client.chat.completions.create(
                model=model, messages=identity_messages, max_tokens=400
            )
            identity = first.choices[0].message.content or ""
            await client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": f"{identity}\n\n{instruction}"}],
                max_tokens=1000,
            )

    await asyncio.gather(*(one(m, i) for m, i in jobs))
    await client.close()


def measure(run: Any) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; best kept")
    args = parser.parse_args()
    items = instructions(args.n)
    with loopback_server() as base_url:
        ep = ExpertPrompter(model="gpt-4o-mini", base_url=base_url, api_key="x", cache=False)
        jobs = [(ep.identity_messages(i), i) for i in items]
        ours: list[tuple[float, float]] = []
        plain: list[tuple[float, float]] = []
        for _ in range(args.rounds):
            ours.append(
                measure(lambda: ep.answer_many(items, concurrency=args.concurrency, progress=False))
            )
            plain.append(
                measure(
                    lambda: asyncio.run(plain_loop(base_url, jobs, args.concurrency, "gpt-4o-mini"))
                )
            )
    (ow, oc), (pw, pc) = min(ours), min(plain)
    n = args.n
    print(f"items {n}, concurrency {args.concurrency}, best of {args.rounds} rounds")
    print(f"answer_many : wall {ow:.2f} s, client CPU {oc / n * 1000:.2f} ms per instruction")
    print(f"plain loop  : wall {pw:.2f} s, client CPU {pc / n * 1000:.2f} ms per instruction")
    print(f"wall ratio ours/plain {ow / pw:.3f}")


if __name__ == "__main__":
    main()
