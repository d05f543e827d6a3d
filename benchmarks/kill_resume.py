"""Kill a ``generate`` run with SIGKILL at a random moment, rerun it, and count the damage.

2,000 items against a test server that fails 10% of requests (429 with Retry-After, 500, 503,
dropped connections). The first run is killed at a random point; the same command is run again
to completion. Prints items lost (target 0), rows duplicated (target 0), and the requests the
second run redid for items that were in flight when the first died.

    python benchmarks/kill_resume.py [--n 2000] [--faults 0.1] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _server import instructions

from expertprompting.testing import FakeOpenAIServer, faulty_responder

RUN = """
import sys
from expertprompting import ExpertPrompter, RetryPolicy
ep = ExpertPrompter(model="gpt-4o-mini", base_url=sys.argv[1], api_key="x", cache=False,
                    retry=RetryPolicy(max_attempts=6, initial_delay=0.05, max_delay=0.5))
summary = ep.generate(sys.argv[2], sys.argv[3], concurrency=32, progress=False)
print(summary.model_dump_json())
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--faults", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="ep-kill-"))
    source, output = folder / "in.jsonl", folder / "out.jsonl"
    items = [
        {"id": f"item-{i}", "instruction": text} for i, text in enumerate(instructions(args.n))
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    with FakeOpenAIServer() as server:
        server.responder = faulty_responder(server.default_responder, args.faults, args.seed)
        command = [sys.executable, "-c", RUN, server.base_url, str(source), str(output)]
        first = subprocess.Popen(command, stdout=subprocess.PIPE)
        kill_after = rng.uniform(3.0, 8.0)
        time.sleep(kill_after)
        first.send_signal(signal.SIGKILL)
        first.wait()
        sent_first = len(server.chat_requests)
        partial = output.read_bytes()
        complete_lines = partial.count(b"\n")
        torn = not partial.endswith(b"\n") and len(partial) > 0
        done_first = {json.loads(line)["id"] for line in partial.splitlines()[:complete_lines]}
        asked_first = Counter(r.messages[-1]["content"] for r in server.chat_requests[:sent_first])
        second = subprocess.run(command, capture_output=True, check=True)
        sent_second = len(server.chat_requests) - sent_first
        summary = json.loads(second.stdout.decode().strip().splitlines()[-1])
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    ids = Counter(row["id"] for row in rows)
    lost = args.n - len(ids)
    duplicated = sum(count - 1 for count in ids.values() if count > 1)
    in_flight = {
        item["id"]
        for item in items
        if item["id"] not in done_first
        and any(item["instruction"] in prompt for prompt in asked_first)
    }
    redone = sum(
        count
        for prompt, count in asked_first.items()
        if any(item["instruction"] in prompt for item in items if item["id"] in in_flight)
    )
    print(f"items {args.n}, faults {args.faults:.0%}, killed after {kill_after:.1f} s")
    print(
        f"first run: {len(done_first)} rows written, last line torn: {torn}, {sent_first} requests"
    )
    print(
        f"second run: {summary['done']} rows, {summary['already_done']} already done, "
        f"{sent_second} requests, {summary['failed']} failed"
    )
    print(
        f"lost {lost}, duplicated {duplicated}, in flight at the kill {len(in_flight)} items, "
        f"requests redone for them {redone}"
    )


if __name__ == "__main__":
    main()
