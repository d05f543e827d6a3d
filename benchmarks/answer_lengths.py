"""How long are answers, and what share would each answer cap cut?

Answers example questions (``examples/questions.jsonl`` by default) with the expert strategy and
a generous answer cap, then prints the distribution of the answers' lengths in completion tokens
and, for each candidate cap, the share of answers it would have cut (answers longer than the
cap, plus those already cut at the generous cap). No assertions: it prints figures.

Usage: ``python benchmarks/answer_lengths.py [--model local] [--cap 4096] [--limit N]
[--time-limit SECONDS] [--seed 7] [--json] [FILE ...]``.

The bundled model (SmolLM2-135M) runs at a few dozen tokens a second on 2 cores, so a full run
of the 30 example questions takes long; ``--limit``, ``--time-limit`` and Ctrl-C stop early (the
figures then cover the questions answered, and say so). The bundled model is not representative
of the models a dataset is made with: docs/performance.md reads these figures next to the
paper's data.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from expertprompting import ExpertPrompter, ExpertPromptingError

CANDIDATE_CAPS = (256, 512, 1024, 2048, 4096)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def questions(paths: list[Path]) -> list[tuple[str, str]]:
    """(id, instruction) of every row of the given JSONL files, in order."""
    found: list[tuple[str, str]] = []
    for path in paths:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                row = json.loads(line)
                text = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
                found.append((str(row.get("id", f"{path.stem}:{n}")), text))
    return found


def percentile(values: list[int], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation; ``values`` sorted."""
    if len(values) == 1:
        return float(values[0])
    pos = q * (len(values) - 1)
    low = int(pos)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (pos - low)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="question files (JSONL)")
    parser.add_argument("--model", default="local")
    parser.add_argument("--cap", type=int, default=4096, help="the generous answer cap")
    parser.add_argument("--limit", type=int, default=None, help="answer at most N questions")
    parser.add_argument(
        "--time-limit", type=float, default=None, help="start no question after SECONDS"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    paths = args.files or sorted(EXAMPLES.glob("*.jsonl"))
    todo = questions(paths)
    total = len(todo)
    if args.limit is not None:
        todo = todo[: args.limit]
    ep = ExpertPrompter(model=args.model, max_tokens=args.cap, seed=args.seed)
    lengths: list[int] = []
    cut = 0
    failed = 0
    started = time.monotonic()
    for qid, text in todo:
        if args.time_limit is not None and time.monotonic() - started > args.time_limit:
            break
        try:
            result = ep.answer(text)
        except KeyboardInterrupt:  # Ctrl-C: the figures of the questions answered so far
            print(f"{qid}: interrupted")
            break
        except ExpertPromptingError as exc:
            failed += 1
            print(f"{qid}: failed: {exc}")
            continue
        answer = [r for r in result.requests if r.step == "answer"][-1]
        lengths.append(answer.usage.completion_tokens)
        cut += int(result.truncated)
        if not args.json:
            mark = " (cut)" if result.truncated else ""
            print(f"{qid}: {answer.usage.completion_tokens} tokens{mark}", flush=True)
    seconds = time.monotonic() - started

    ordered = sorted(lengths)
    figures: dict[str, Any] = {
        "model": args.model,
        "cap": args.cap,
        "questions": total,
        "answered": len(lengths),
        "failed": failed,
        "cut_at_cap": cut,
        "seconds": round(seconds, 1),
    }
    if ordered:
        figures.update(
            mean=round(statistics.fmean(ordered), 1),
            median=percentile(ordered, 0.5),
            p90=round(percentile(ordered, 0.9), 1),
            max=ordered[-1],
            # an answer of exactly `cap` tokens fits a cap of `cap`; one cut at the generous
            # cap would be cut by every smaller one too
            share_cut={
                c: round(sum(n > c for n in ordered) / len(ordered), 3) for c in CANDIDATE_CAPS
            },
        )
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(
        f"\n{args.model}, answer cap {args.cap}: {len(lengths)} of {total} questions answered "
        f"in {seconds:.0f} s ({failed} failed, {cut} cut at the cap)"
    )
    if not ordered:
        return
    if len(lengths) < total:
        print(f"note: {total - len(lengths)} questions not run (--limit / --time-limit)")
    print(
        f"completion tokens: mean {figures['mean']}, median {figures['median']}, "
        f"p90 {figures['p90']}, max {figures['max']}"
    )
    print("share of answers each cap would cut:")
    for c, share in figures["share_cut"].items():
        print(f"  {c:>5}: {share:.1%}")


if __name__ == "__main__":
    main()
