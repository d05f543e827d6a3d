"""Which identity-prompt layout does a small local model follow better: text block or chat turns?

For each of 24 instructions (our own, across fields the exemplar pool does and does not cover),
ask the model for an expert identity with both layouts and score each description:

- ``you_are``: it starts with "You are";
- ``second_person``: it addresses the expert as "you" and never slips into first person
  ("I", "my") or a third-person portrait ("He is", "She has", "They are");
- ``names_field``: it names the instruction's field (any of a few keywords per instruction).

Usage: ``python benchmarks/identity_layout.py [--model local] [--seed 7] [--layouts text,chat]
[--repeat-penalty R] [--temperature T] [--json]``.
Prints one line per layout with the three rates and the mean identity length in tokens.
Reproducible: a fixed seed per instruction.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from expertprompting import ExpertPrompter, ExpertPromptingError

# (instruction, keywords that name its field; a description naming any of them counts)
INSTRUCTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("Explain how vaccines train the immune system.", ("immun", "vaccin", "medic", "doctor")),
    ("Write a haiku about autumn leaves.", ("poet", "poem", "haiku", "writ")),
    ("What is the derivative of x squared times sine of x?", ("mathemat", "calculus")),
    ("How do I reverse a linked list in Java?", ("software", "programm", "java", "engineer")),
    (
        "What should I consider before signing a lease for an apartment?",
        ("law", "legal", "real estate", "tenan", "lease"),
    ),
    ("Give me three tips to improve my sleep.", ("sleep", "health", "medic", "doctor")),
    ("Why is the sky blue?", ("physic", "scien", "atmospher", "optic")),
    (
        "Suggest a weekly budget plan for a college student.",
        ("financ", "budget", "money", "econom"),
    ),
    ("How do plants make food from sunlight?", ("botan", "biolog", "plant", "scien")),
    ("Summarise the causes of the First World War.", ("histor",)),
    (
        "How can a startup find its first customers?",
        ("business", "market", "entrepreneur", "startup"),
    ),
    (
        "What are good exercises for lower back pain?",
        ("physio", "therap", "fitness", "medic", "exercise"),
    ),
    (
        "Translate 'good morning, how are you?' into Spanish.",
        ("spanish", "translat", "linguist", "language"),
    ),
    ("How do I make a sourdough starter?", ("bak", "chef", "culinar", "cook", "bread")),
    (
        "What is the difference between weather and climate?",
        ("climat", "meteorolog", "weather", "scien"),
    ),
    (
        "Write a short cover letter for a junior accountant position.",
        ("career", "recruit", "writ", "account", "human resources"),
    ),
    ("How does compound interest work?", ("financ", "econom", "invest", "bank")),
    ("What is a black hole?", ("astro", "physic", "cosmolog", "scien")),
    (
        "How should I prepare for a job interview?",
        ("career", "recruit", "interview", "human resources", "coach"),
    ),
    ("Explain the rules of chess for a beginner.", ("chess",)),
    ("What causes inflation?", ("econom", "financ")),
    (
        "How can I reduce food waste at home?",
        ("sustainab", "environment", "food", "nutrition", "waste"),
    ),
    (
        "Describe the water cycle for a ten-year-old.",
        ("scien", "hydrolog", "teach", "educat", "environment"),
    ),
    (
        "Write a SQL query that finds duplicate email addresses in a users table.",
        ("sql", "database", "data", "software", "programm"),
    ),
]

FIRST_PERSON = re.compile(r"\b(I|I'm|I've|my|me)\b")
THIRD_PERSON = re.compile(r"(?:^|[.!?]\s+)(He|She|They)\s+(is|are|has|have|was|were)\b")
YOU = re.compile(r"\byou(r|rs|rself)?\b", re.IGNORECASE)


@dataclass
class Score:
    you_are: bool
    second_person: bool
    names_field: bool
    tokens: int


def score(description: str, keywords: tuple[str, ...], tokens: int) -> Score:
    text = description.strip()
    return Score(
        you_are=text.startswith("You are"),
        second_person=bool(YOU.search(text))
        and not FIRST_PERSON.search(text)
        and not THIRD_PERSON.search(text),
        names_field=any(k in text.lower() for k in keywords),
        tokens=tokens,
    )


def run(model: str, layout: str, seed: int, settings: dict[str, Any]) -> list[Score]:
    ep = ExpertPrompter(model=model, identity_layout=layout, seed=seed, **settings)
    scores: list[Score] = []
    for instruction, keywords in INSTRUCTIONS:
        try:
            ident = ep.identify(instruction)
        except ExpertPromptingError as exc:  # a failed identity scores zero everywhere
            print(f"  [{layout}] failed: {instruction[:40]!r}: {exc}")
            scores.append(Score(False, False, False, 0))
            continue
        scores.append(score(ident.description, keywords, ident.usage.completion_tokens))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="local")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--layouts", default="text,chat", help="comma-separated")
    parser.add_argument("--repeat-penalty", type=float, default=None)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = {
        k: v
        for k, v in (("repeat_penalty", args.repeat_penalty), ("temperature", args.temperature))
        if v is not None
    }
    rows = []
    for layout in args.layouts.split(","):
        started = time.monotonic()
        scores = run(args.model, layout, args.seed, settings)
        n = len(scores)
        row = {
            "layout": layout,
            "n": n,
            "you_are": sum(s.you_are for s in scores) / n,
            "second_person": sum(s.second_person for s in scores) / n,
            "names_field": sum(s.names_field for s in scores) / n,
            "all_three": sum(s.you_are and s.second_person and s.names_field for s in scores) / n,
            "mean_tokens": sum(s.tokens for s in scores) / n,
            "failed": sum(s.tokens == 0 for s in scores),
            "seconds": round(time.monotonic() - started, 1),
        }
        rows.append(row)
        if not args.json:
            print(
                f"{layout:>4}: n={n}  starts 'You are' {row['you_are']:.0%}  "
                f"second person {row['second_person']:.0%}  names the field "
                f"{row['names_field']:.0%}  all three {row['all_three']:.0%}  "
                f"mean length {row['mean_tokens']:.0f} tokens  failed {row['failed']}  "
                f"({row['seconds']} s)"
            )
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
