"""Runs a provider's rate limit bounds: share of the limit reached, share of requests refused.

Against the test server enforcing provider-style limits (``python -m expertprompting.testing
--rpm/--tpm``: per-minute limits applied over 1 s windows, refused requests counted, max_tokens
reserved, x-ratelimit-* headers), ``answer_many`` over ``--n`` instructions (two requests each):

- requests-bound, told the limit (``rpm=``);          target >= 0.95 of the limit, <= 1% refused
- requests-bound, not told, headers sent (learned);   target >= 0.90, <= 3% refused
- requests-bound, not told, no headers (adapting);    target >= 0.80, <= 5% refused
- tokens-bound, default settings, against a plain asyncio loop over the SDK sending the same two
  requests with no max_tokens to the same server: items per second (target: at least the loop's)

    python benchmarks/rate_limits.py [--n 300] [--rpm 3000] [--tpm 2000000] [--token-items 40]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import openai
from _server import instructions, limit_stats, loopback_server

from expertprompting import ExpertAnswer, ExpertPrompter

CONCURRENCY = 64


def requests_bound(
    n: int, rpm: int, *, told: bool, headers: bool, latency: float
) -> tuple[float, float, int, int]:
    """(share of the limit reached, share refused, answers, refused) for one run."""
    extra = ["--rpm", str(rpm)] + ([] if headers else ["--no-rate-headers"])
    with loopback_server(latency=latency, extra=extra) as base_url:
        ep = ExpertPrompter(model="gpt-4o-mini", base_url=base_url, api_key="x", cache=False)
        started = time.perf_counter()
        results = ep.answer_many(
            instructions(n),
            concurrency=CONCURRENCY,
            rpm=rpm if told else None,
            progress=False,
            max_errors=n,
        )
        seconds = time.perf_counter() - started
        stats = limit_stats(base_url)
    accepted, refused = stats["accepted"], stats["refused"]
    reached = (accepted / seconds) / (rpm / 60)
    ok = sum(isinstance(r, ExpertAnswer) for r in results)
    return reached, refused / max(accepted + refused, 1), ok, refused


async def _plain_loop(base_url: str, ep: ExpertPrompter, items: list[str]) -> int:
    """The same two requests per item from a bare AsyncOpenAI loop, no max_tokens; answers."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(instruction: str) -> bool:
        async with gate:
            try:
                first: Any = await client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=ep.identity_messages(instruction),  # type: ignore[arg-type]
                )
                identity = first.choices[0].message.content or ""
                await client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=ep.answer_messages(instruction, identity),  # type: ignore[arg-type]
                )
            except openai.APIStatusError:
                return False
            return True

    done = await asyncio.gather(*(one(i) for i in items))
    await client.close()
    return sum(done)


def tokens_bound(items: int, tpm: int, latency: float) -> tuple[float, int, float, int]:
    """(items/s and answers of answer_many, items/s and answers of the plain loop)."""
    with loopback_server(latency=latency, extra=["--tpm", str(tpm)]) as base_url:
        ep = ExpertPrompter(model="gpt-4o-mini", base_url=base_url, api_key="x", cache=False)
        started = time.perf_counter()
        results = ep.answer_many(
            instructions(items), concurrency=CONCURRENCY, progress=False, max_errors=items
        )
        ours = time.perf_counter() - started
        ok = sum(isinstance(r, ExpertAnswer) for r in results)
    with loopback_server(latency=latency, extra=["--tpm", str(tpm)]) as base_url:
        ep = ExpertPrompter(model="gpt-4o-mini", base_url=base_url, api_key="x", cache=False)
        started = time.perf_counter()
        plain_ok = asyncio.run(_plain_loop(base_url, ep, instructions(items)))
        plain = time.perf_counter() - started
    return ok / ours, ok, plain_ok / plain, plain_ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--rpm", type=int, default=3000)
    parser.add_argument("--tpm", type=int, default=2_000_000)
    parser.add_argument("--token-items", type=int, default=40)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    print(f"requests-bound: {args.n} items, {2 * args.n} requests, limit {args.rpm} RPM")
    for name, told, headers in (
        ("told the limit      ", True, True),
        ("learned from headers", False, True),
        ("no headers (adapts) ", False, False),
    ):
        reached, refused, ok, count = requests_bound(
            args.n, args.rpm, told=told, headers=headers, latency=args.latency
        )
        print(
            f"  {name}: {reached:.3f} of the limit, {refused:.1%} refused ({count}), "
            f"{ok}/{args.n} answered"
        )
    ours, ok, plain, plain_ok = tokens_bound(args.token_items, args.tpm, args.latency)
    print(f"tokens-bound: {args.token_items} items, limit {args.tpm} TPM")
    print(f"  answer_many (defaults): {ours:.2f} items/s, {ok}/{args.token_items} answered")
    print(f"  plain loop, no max_tokens: {plain:.2f} items/s, {plain_ok} answered")


if __name__ == "__main__":
    main()
