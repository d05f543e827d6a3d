"""Answer a small dataset file, resumably, against a local test server: no key, no network.

needs: no key

Writes 20 Alpaca-style instructions to a temporary JSONL file, answers the first 8 with
``generate(limit=8)``, then reruns to finish the rest: the second run skips what the first
wrote. Run it with ``python examples/dataset.py``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from expertprompting import ExpertPrompter
from expertprompting.testing import FakeOpenAIServer


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="expertprompting-example-"))
    source, output = folder / "instructions.jsonl", folder / "answers.jsonl"
    topics = ["tides", "rainbows", "volcanoes", "eclipses", "seasons"]
    with source.open("w", encoding="utf-8") as handle:
        for i in range(20):
            row = {"instruction": f"Explain {topics[i % 5]} to reader {i}.", "input": ""}
            handle.write(json.dumps(row) + "\n")

    with FakeOpenAIServer() as server:  # echoes each prompt back: enough to see the plumbing
        ep = ExpertPrompter(model="gpt-4o-mini", base_url=server.base_url, cache=False)
        first = ep.generate(source, output, limit=8, concurrency=4, progress=False)
        print("first run: ", first.line())
        second = ep.generate(source, output, concurrency=4, progress=False)
        print("second run:", second.line())
        assert (first.done, second.done, second.already_done) == (8, 12, 8)

    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert len({row["id"] for row in rows}) == 20
    print(f"{len(rows)} rows in {output}; the first:")
    print(json.dumps({k: rows[0][k] for k in ("id", "instruction", "model", "usage")}, indent=2))


if __name__ == "__main__":
    main()
