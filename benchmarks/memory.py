"""Peak resident memory of ``generate`` over a large synthetic dataset (Alpaca-sized by default).

Writes N synthetic items as JSONL, starts the test server in its own process, runs generate in
a child process, and prints the child's peak RSS (target: under 200 MB for 52k items).

    python benchmarks/memory.py [--n 52000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _server import instructions, loopback_server

RUN = """
import sys
from expertprompting import ExpertPrompter
ep = ExpertPrompter(model="gpt-4o-mini", base_url=sys.argv[1], api_key="x", cache=False)
s = ep.generate(sys.argv[2], sys.argv[3], concurrency=int(sys.argv[4]), progress=False)
print(s.line())
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=52_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="ep-mem-"))
    source, output = folder / "in.jsonl", folder / "out.jsonl"
    with source.open("w", encoding="utf-8") as handle:
        for text in instructions(args.n):
            handle.write(json.dumps({"instruction": text, "input": "", "output": ""}) + "\n")
    with loopback_server() as base_url:
        started = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-c", RUN, base_url, str(source), str(output), str(args.concurrency)],
            capture_output=True,
            text=True,
            check=True,
        )
        seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    print(run.stdout.strip())
    print(
        f"items {args.n}: {seconds:.0f} s, "
        f"peak RSS of the generate process {peak_kb / 1024:.0f} MiB"
    )


if __name__ == "__main__":
    main()
