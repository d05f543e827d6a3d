"""The commands on one instruction: ``answer``, ``identify`` and ``prompt``.

Each takes the parsed arguments and returns an exit code; the library is imported inside them,
so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, TextIO

from ._common import NOTES, UsageError, prompter_from_args


def _instruction(value: str, stdin: TextIO) -> str:
    if value == "-":
        text = _read_stdin(stdin)
    else:
        text = value
        try:  # an argument with bytes that are not UTF-8 arrives with surrogate escapes
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise UsageError(
                f"the instruction is not valid UTF-8 text (a bad byte at character "
                f"{exc.start + 1}); pass UTF-8 text"
            ) from None
    if not text.strip():
        raise UsageError(
            "the instruction is empty" + (" (nothing on stdin)" if value == "-" else "")
        )
    return text.strip() if value == "-" else text


def _read_stdin(stdin: TextIO) -> str:
    """Standard input as UTF-8 text whatever the locale (a leading BOM is dropped)."""
    raw = getattr(stdin, "buffer", None)
    try:
        if raw is None:  # a text-only stream (tests, embedding): its own decoding applies
            return stdin.read()
        data: bytes = raw.read()
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        where = f" (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})" if raw else ""
        raise UsageError(
            f"standard input is not valid UTF-8 text{where}; convert it first, "
            "e.g. with iconv -f LATIN1 -t UTF-8"
        ) from None


def _styled(text: str, code: str, stream: TextIO) -> str:
    if stream.isatty() and "NO_COLOR" not in os.environ:
        return f"\033[{code}m{text}\033[0m"
    return text


def _usage_line(usage: Any) -> str:
    from .._method.results import format_cost

    requests = f"{usage.requests} request{'' if usage.requests == 1 else 's'}"
    cost = "" if usage.cost is None else f", {format_cost(usage.cost)}"
    return (
        f"usage: {requests}, {usage.prompt_tokens} prompt + "
        f"{usage.completion_tokens} completion tokens{cost}"
    )


# strategies whose answer carries an expert identity (multi-expert: its list of experts)
_WITH_IDENTITY = ("expert", "multi-expert")


def cmd_answer(args: argparse.Namespace) -> int:
    # every check that needs no model comes first: nothing loads or prints before a usage error
    if args.stream and args.json:
        raise UsageError(
            "--stream and --json do not go together: --json prints the whole result once it "
            "is complete; drop one of them"
        )
    if args.json and args.show_identity is not None:
        flag = "--show-identity" if args.show_identity else "--no-show-identity"
        raise UsageError(f"{flag} does not apply to --json, which always holds the identity")
    if not args.stream and (args.first_token_timeout or args.idle_timeout):
        raise UsageError("--first-token-timeout and --idle-timeout apply to --stream only")
    strategy = args.strategy or "expert"
    if args.show_identity and strategy not in _WITH_IDENTITY:
        raise UsageError(
            f"--show-identity: strategy {strategy!r} writes no expert identity; "
            "drop --show-identity or use --strategy expert"
        )
    instruction = _instruction(args.instruction, sys.stdin)
    ep = prompter_from_args(args)
    out = sys.stdout
    show = args.show_identity is not False
    if args.stream:
        identity = None
        if ep.config.strategy == "expert":
            ident = ep.identify(instruction, args.input)
            identity = ident.description
            if show:
                out.write(_styled("Expert identity:", "1;2", out) + "\n")
                out.write(_styled(identity, "2", out) + "\n\n")
                out.write(_styled("Answer:", "1", out) + "\n")
        stream = ep.stream(instruction, args.input, identity=identity)
        for chunk in stream:
            out.write(chunk)
            out.flush()
        out.write("\n")
        result = stream.result
    else:
        result = ep.answer(instruction, args.input)
        if args.json:
            out.write(result.model_dump_json(indent=2) + "\n")
        else:
            if show and result.expert_identity:
                out.write(_styled("Expert identity:", "1;2", out) + "\n")
                out.write(_styled(result.expert_identity, "2", out) + "\n\n")
                out.write(_styled("Answer:", "1", out) + "\n")
            out.write(result.answer + "\n")
    if result.truncated:
        # the cap before the context window clamps it; the note says how to lift it
        NOTES.add(
            f"the answer was cut off at the answer cap of {ep.planner.answer_cap()} tokens; "
            "pass a larger --max-tokens to let it finish"
        )
    if args.verbose:
        print(_usage_line(ep.usage), file=sys.stderr)
    return 0


def cmd_identify(args: argparse.Namespace) -> int:
    instruction = _instruction(args.instruction, sys.stdin)
    ep = prompter_from_args(args)
    ident = ep.identify(instruction, args.input)
    if args.json:
        sys.stdout.write(ident.model_dump_json(indent=2) + "\n")
    else:
        sys.stdout.write(ident.description + "\n")
    if args.verbose:
        print(_usage_line(ep.usage), file=sys.stderr)
    return 0


def cmd_prompt(args: argparse.Namespace) -> int:
    from .._method.strategies import strategy_flow

    strategy = args.strategy or "expert"
    if args.identity is not None and strategy != "expert":
        raise UsageError(
            f"--identity only applies to --strategy expert; {strategy!r} uses no identity"
        )
    instruction = _instruction(args.instruction, sys.stdin)
    ep = prompter_from_args(args, sends=False)
    steps: dict[str, Any] = {}
    later = None
    if strategy == "expert":
        steps["identity"] = ep.identity_messages(instruction, args.input)
        identity = args.identity or "<the expert identity from step 1>"
        steps["answer"] = ep.answer_messages(instruction, identity, args.input, strategy)
    else:
        # the strategy's own flow gives its first request exactly as it would be sent
        flow = strategy_flow(ep.planner, instruction, args.input, None, strategy)
        first = next(flow)
        flow.close()
        steps[first.step] = list(first.messages)
        if strategy == "multi-expert":
            later = (
                f"{ep.config.n_experts} expert answers and an aggregation request follow; they "
                "are built from the model's replies, so they cannot be shown before anything "
                "is sent"
            )
    if args.json:
        sys.stdout.write(json.dumps(steps, indent=2, ensure_ascii=False) + "\n")
        if later:
            NOTES.add(later)
        return 0
    for step, messages in steps.items():
        tokens = ep.counter.count_messages(messages)
        sys.stdout.write(_styled(f"== {step} request ({tokens} prompt tokens)", "1", sys.stdout))
        sys.stdout.write("\n")
        for message in messages:
            sys.stdout.write(_styled(f"[{message['role']}]", "2", sys.stdout) + "\n")
            sys.stdout.write(message["content"] + "\n\n")
    if later:
        sys.stdout.write(_styled(f"== {later}", "1", sys.stdout) + "\n")
    return 0
