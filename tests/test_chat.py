"""ep.chat and its twins: the method on an OpenAI-style conversation."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from expertprompting import ConfigurationError, ExpertPrompter, TokenBudgetError
from expertprompting._method.conversation import read_conversation
from expertprompting.testing import FakeOpenAIServer, Reply

Make = Callable[..., ExpertPrompter]
FIRST = "Explain how vaccines train the immune system."
IDENTITY = "You are an immunologist who explains adaptive immunity to anyone."
SYSTEM = "You answer for a children's science magazine."


def conversation(*later: str, system: str | None = None) -> list[dict[str, Any]]:
    """A conversation whose first user turn is FIRST, then alternating later turns."""
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": FIRST})
    for i, text in enumerate(later):
        messages.append({"role": "assistant" if i % 2 == 0 else "user", "content": text})
    return messages


def test_one_user_message_sends_exactly_what_answer_sends(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter(cache=False, temperature=0.3)
    server.script(Reply(content=IDENTITY), Reply(content="A1"))
    ep.answer(FIRST, max_tokens=50, seed=4)
    server.script(Reply(content=IDENTITY), Reply(content="A1"))
    result = ep.chat([{"role": "user", "content": FIRST}], max_tokens=50, seed=4)
    by_answer, by_chat = server.chat_requests[:2], server.chat_requests[2:]
    assert [r.json for r in by_chat] == [r.json for r in by_answer]
    assert (result.answer, result.expert_identity, result.usage.requests) == ("A1", IDENTITY, 2)
    assert result.instruction == FIRST


def test_later_turns_reuse_the_identity_and_cost_one_request(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter(cache=False)  # remembered per conversation, cache or not
    server.script(Reply(content=IDENTITY), Reply(content="Antibodies."))
    first = ep.chat(conversation(system=SYSTEM))
    assert first.usage.requests == 2
    assert not first.identity_cached
    identity_request = server.chat_requests[0].json["messages"]
    # the identity is written for the first turn, with the system message as its input
    assert identity_request == ep.identity_messages(FIRST, SYSTEM)

    server.script(Reply(content="Memory cells."))
    later = ep.chat(conversation("Antibodies.", "And how long does it last?", system=SYSTEM))
    assert len(server.chat_requests) == 3  # one more request: the answer
    assert later.identity_cached
    assert later.expert_identity == IDENTITY
    assert later.usage.requests == 1
    assert later.instruction == "And how long does it last?"
    sent = server.chat_requests[2].json["messages"]
    assert sent[0] == {"role": "system", "content": SYSTEM}
    # the first user turn is written as step 2 writes an instruction; the rest is verbatim
    assert sent[1] == {"role": "user", "content": ep.answer_messages(FIRST, IDENTITY)[0]["content"]}
    assert sent[2:] == [
        {"role": "assistant", "content": "Antibodies."},
        {"role": "user", "content": "And how long does it last?"},
    ]


def test_another_conversation_gets_its_own_identity(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter(cache=False)
    server.script(Reply(content=IDENTITY), Reply(content="A"))
    ep.chat(conversation())
    server.script(Reply(content="You are a historian."), Reply(content="B"))
    other = ep.chat([{"role": "user", "content": "Why did Rome fall?"}])
    assert other.expert_identity == "You are a historian."
    assert other.usage.requests == 2


def test_baselines_rewrite_the_first_turn_with_their_template(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter(strategies={"terse": "Answer in one line.\n\n{{ instruction }}"})
    server.script(Reply(content="one line"))
    result = ep.chat(conversation("earlier answer", "more?"), strategy="terse")
    sent = server.chat_requests[0].json["messages"]
    assert sent[0]["content"] == f"Answer in one line.\n\n{FIRST}"
    assert sent[1:] == [
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": "more?"},
    ]
    assert result.expert_identity is None
    assert result.usage.requests == 1


def test_answer_only_settings_reach_the_answer_request_only(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter()
    server.script(Reply(content=IDENTITY), Reply(content="{}"))
    fmt = {"type": "json_object"}
    ep.chat(conversation(), top_p=0.5, stop="END", response_format=fmt, temperature=0.2)
    identity, answer = (r.json for r in server.chat_requests)
    assert answer["top_p"] == 0.5
    assert answer["stop"] == ["END"]
    assert answer["response_format"] == fmt
    assert "top_p" not in identity
    assert "stop" not in identity
    assert "response_format" not in identity
    assert identity["temperature"] == answer["temperature"] == 0.2


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([], "empty"),
        ("hello", "must be a list"),
        ([{"role": "user"}], "messages[0].content"),
        ([{"role": "tool", "content": "x"}], "messages[0].role"),
        ([{"role": "system", "content": "x"}], "no user turn"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "last message"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "only text"),
        ([{"role": "user", "content": "  "}], "first user turn) is empty"),
    ],
)
def test_malformed_conversations_are_refused_before_any_request(
    server: FakeOpenAIServer, make_prompter: Make, messages: Any, fragment: str
) -> None:
    ep = make_prompter()
    with pytest.raises(ConfigurationError, match=re.escape(fragment)):
        ep.chat(messages)
    assert server.chat_requests == []


def test_text_parts_and_developer_messages_are_read() -> None:
    conv = read_conversation(
        [
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}],
            },
        ]
    )
    assert conv.context == "Be brief."
    assert conv.instruction == "Hi there"
    assert conv.messages[0] == {"role": "system", "content": "Be brief."}


def test_an_overlong_conversation_is_refused_before_any_request(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter(context_window=1024, cache=False)
    long_turn = "word " * 1500
    with pytest.raises(TokenBudgetError, match="conversation"):
        ep.chat(conversation("ok", long_turn))
    assert server.chat_requests == []


def test_multi_expert_takes_one_user_message_only(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter()
    with pytest.raises(ConfigurationError, match="multi-expert answers a single user message"):
        ep.chat(conversation("a", "b"), strategy="multi-expert")
    assert server.chat_requests == []


def test_stream_chat_shows_the_identity_from_the_first_chunk(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter(cache=False)
    server.script(Reply(content=IDENTITY), Reply(content="Vaccines teach cells."))
    stream = ep.stream_chat(conversation())
    assert stream.identity is None
    first = next(stream)
    assert stream.identity == IDENTITY
    text = first + "".join(stream)
    assert text == "Vaccines teach cells." == stream.result.answer
    assert stream.result.usage.requests == 2
    assert server.chat_requests[1].json["stream"] is True


async def test_achat_and_astream_chat_match_the_sync_calls(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter(cache=False)
    server.script(Reply(content=IDENTITY), Reply(content="first"))
    one = await ep.achat(conversation())
    server.script(Reply(content="second"))
    stream = ep.astream_chat(conversation("first", "and then?"))
    pieces = [piece async for piece in stream]
    assert stream.identity == IDENTITY == one.expert_identity
    assert "".join(pieces) == "second"
    assert stream.result.identity_cached
    assert len(server.chat_requests) == 3


def test_stream_of_answer_also_shows_its_identity(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter(cache=False)
    server.script(Reply(content=IDENTITY), Reply(content="text"))
    stream = ep.stream(FIRST)
    assert "".join(stream) == "text"
    assert stream.identity == IDENTITY
    server.script(Reply(content="plain"))
    vanilla = ep.stream(FIRST, strategy="vanilla")
    assert "".join(vanilla) == "plain"
    assert vanilla.identity is None


def test_a_first_turn_is_answered_as_answer_is_even_when_asked_again(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    """Only later turns reuse a conversation's identity: asking the same first turn again
    follows the cache setting, exactly as ep.answer does."""
    ep = make_prompter(cache=False)
    for _ in range(2):
        server.script(Reply(content=IDENTITY), Reply(content="A"))
        again = ep.chat([{"role": "user", "content": FIRST}])
        assert again.usage.requests == 2
        assert not again.identity_cached
    assert len(server.chat_requests) == 4


def test_prompter_lists_its_strategies(make_prompter: Make) -> None:
    ep = make_prompter(strategies={"terse": "Be brief.\n\n{{ instruction }}"})
    assert ep.strategies == ["expert", "vanilla", "static", "multi-expert", "terse"]
