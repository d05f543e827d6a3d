"""The whole API against a local OpenAI-compatible test server: no key, no network.

needs: no key

Starts :class:`expertprompting.testing.FakeOpenAIServer` on 127.0.0.1 with a responder that plays
the model, then walks through identify, answer, stream, the async twin, the run budget and the
exact token counts. Run it with ``python examples/test_server.py``.
"""

from __future__ import annotations

import asyncio

from expertprompting import BudgetExceededError, ExpertPrompter, count_tokens
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

INSTRUCTION = "Explain how vaccines train the immune system."


def play_the_model(request: RecordedRequest) -> Reply:
    """Step 1 prompts end with "[Agent Description]:"; everything else is an answer."""
    prompt = request.messages[-1]["content"]
    if prompt.rstrip().endswith("[Agent Description]:"):
        return Reply(
            content="You are an immunologist who has spent twenty years studying how the "
            "adaptive immune system remembers pathogens, and who explains it plainly."
        )
    return Reply(
        content="A vaccine shows your immune system a harmless piece or copy of a germ, so "
        "B cells and T cells learn to recognise it and leave memory cells behind."
    )


def main() -> None:
    with FakeOpenAIServer() as server:
        server.responder = play_the_model
        ep = ExpertPrompter(model="gpt-4o-mini", base_url=server.base_url, api_key="not-needed")

        print("== the exact messages of step 1 (no request sent)")
        messages = ep.identity_messages(INSTRUCTION)
        print(f"{len(messages)} message(s), {count_tokens(messages, model='gpt-4o-mini')} tokens")

        print("\n== answer: identity, then answer (two requests)")
        r = ep.answer(INSTRUCTION)
        print("identity:", r.expert_identity)
        print("answer:  ", r.answer)
        print(f"usage:    {r.usage.requests} requests, {r.usage.total_tokens} tokens")
        assert r.usage.requests == 2 == len(server.chat_requests)

        print("\n== stream the answer with a given identity (one request)")
        for chunk in ep.stream(INSTRUCTION, identity=r.expert_identity):
            print(chunk, end="", flush=True)
        print()

        print("\n== the async twin")
        r2 = asyncio.run(ep.aanswer(INSTRUCTION, strategy="vanilla"))
        print(f"vanilla baseline: {r2.answer[:60]}... ({r2.usage.requests} request)")

        print("\n== a run budget refuses before sending")
        capped = ExpertPrompter(
            model="gpt-4o-mini", base_url=server.base_url, api_key="x", max_requests=1
        )
        sent = len(server.chat_requests)
        try:
            capped.answer(INSTRUCTION)
        except BudgetExceededError as exc:
            print("refused:", exc)
        assert len(server.chat_requests) == sent + 1  # the identity went, the answer did not

        print(f"\nrunning totals of the first prompter: {ep.usage}")


if __name__ == "__main__":
    main()
