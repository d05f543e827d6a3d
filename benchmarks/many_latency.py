"""Latency-bound throughput of ``answer_many``: does the pipeline keep the endpoint busy?

N instructions, a server that takes ``--latency`` seconds per request, ``--concurrency``
workers. With two requests per instruction the ideal wall time is 2*N*latency/concurrency;
prints ideal/actual (target >= 0.95).

    python benchmarks/many_latency.py [--n 320] [--latency 0.25] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from _server import instructions, loopback_server
from many_cpu import plain_loop

from expertprompting import ExpertAnswer, ExpertPrompter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=320)
    parser.add_argument("--latency", type=float, default=0.25)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with loopback_server(latency=args.latency) as base_url:
        ep = ExpertPrompter(model="gpt-4o-mini", base_url=base_url, api_key="x", cache=False)
        ep.answer("warm up the connection pool")
        started = time.perf_counter()
        results = ep.answer_many(instructions(args.n), concurrency=args.concurrency, progress=False)
        actual = time.perf_counter() - started
        # the same requests from a bare asyncio + AsyncOpenAI loop: the ceiling of this setup
        jobs = [(ep.identity_messages(i), i) for i in instructions(args.n)]
        started = time.perf_counter()
        asyncio.run(plain_loop(base_url, jobs, args.concurrency, "gpt-4o-mini"))
        bare = time.perf_counter() - started
    ok = sum(isinstance(r, ExpertAnswer) for r in results)
    ideal = 2 * args.n * args.latency / args.concurrency
    print(f"items {args.n} (ok {ok}), latency {args.latency} s, concurrency {args.concurrency}")
    for name, seconds in (("answer_many", actual), ("bare loop  ", bare)):
        print(f"{name}: ideal {ideal:.2f} s, actual {seconds:.2f} s, ratio {ideal / seconds:.3f}")


if __name__ == "__main__":
    main()
