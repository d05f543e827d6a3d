"""Multi-expert prompting and user-defined strategies, over HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from expertprompting import ConfigurationError, ExpertPrompter, ResponseError, count_tokens
from expertprompting._method.multi_expert import parse_aggregation, parse_experts
from expertprompting.testing import FakeOpenAIServer, RecordedRequest, Reply

Make = Callable[..., ExpertPrompter]
EXPERTS = ["You are a physicist.", "You are a sailor.", "You are a poet."]
AGGREGATION = """### Agreed viewpoints
The Moon pulls the sea.
### Conflicting viewpoints
None worth resolving.
### Unique viewpoints
The poet adds imagery.
### Combined answer
Tides come from the Moon's pull, felt most where the sea is deep.
### Best response
4"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (json.dumps(EXPERTS), EXPERTS),
        ("Sure! Here they are:\n" + json.dumps(EXPERTS) + "\nHope this helps.", EXPERTS),
        (json.dumps([{"description": e} for e in EXPERTS]), EXPERTS),
        (json.dumps([{"expert": e, "field": "x"} for e in EXPERTS]), EXPERTS),
        ("1. You are a physicist.\n2) You are a sailor.\n- You are a poet.", EXPERTS),
        ('1. "You are a physicist."\n2. "You are a sailor."\n3. "You are a poet."', EXPERTS),
        (json.dumps(EXPERTS[:2]), None),  # too few
        ("__import__('os').system('echo hacked')", None),  # never evaluated
        ("", None),
        ("[not json at all", None),
    ],
)
def test_parse_experts(text: str, expected: list[str] | None) -> None:
    assert parse_experts(text, 3) == expected


def test_parse_aggregation() -> None:
    combined, best = parse_aggregation(AGGREGATION, 3)
    assert combined == "Tides come from the Moon's pull, felt most where the sea is deep."
    assert best == 4
    assert parse_aggregation("**Combined answer:**\nX\n**Best response:** 2", 3) == ("X", 2)
    assert parse_aggregation("### Best response\n9", 3) == (None, None)  # out of range
    assert parse_aggregation("Just an answer.", 3) == (None, None)


def multi_world(aggregation: str = AGGREGATION, experts_reply: list[str] | None = None):  # type: ignore[no-untyped-def]
    replies = list(experts_reply or [json.dumps(EXPERTS)])

    def respond(req: RecordedRequest) -> Reply:
        text = req.messages[-1]["content"]
        if text.startswith("Name the "):
            return Reply(content=replies.pop(0) if len(replies) > 1 else replies[0])
        if text.startswith("Several experts answered"):
            return Reply(content=aggregation)
        who = text.split(".")[0]
        return Reply(content=f"{who} says: the Moon.")

    return respond


def test_multi_expert_sends_n_plus_2_requests_and_keeps_every_answer(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    server.responder = multi_world()
    ep = make_prompter()
    r = ep.answer("Why are there tides?", strategy="multi-expert")
    assert len(server.chat_requests) == 3 + 2
    assert r.strategy == "multi-expert"
    assert r.experts is not None
    assert [v.expert for v in r.experts] == EXPERTS
    assert [v.answer for v in r.experts] == [f"{e[:-1]} says: the Moon." for e in EXPERTS]
    assert r.chosen == 4  # the combined answer
    assert r.answer == "Tides come from the Moon's pull, felt most where the sea is deep."
    assert r.aggregation == AGGREGATION
    assert r.usage.requests == 5
    assert r.expert_identity == "\n".join(f"{i}. {e}" for i, e in enumerate(EXPERTS, 1))
    # every expert answer carried its expert as the identity, exactly as the expert strategy
    bodies = [req.json for req in server.chat_requests[1:4]]
    for body, expert in zip(bodies, EXPERTS, strict=True):
        assert body["messages"] == ep.answer_messages("Why are there tides?", expert)
    aggregate = server.chat_requests[4].json["messages"]
    assert aggregate[0]["content"].count("[Response ") == 3
    assert server.chat_requests[4].json["max_tokens"] == min(
        2048, 128_000 - count_tokens(aggregate, model="gpt-4o-mini") - 16
    )


def test_multi_expert_picks_an_expert_answer_when_it_is_best(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    server.responder = multi_world(aggregation=AGGREGATION.replace("\n4", "\n2"))
    r = make_prompter().answer("Why are there tides?", strategy="multi-expert")
    assert r.chosen == 2
    assert r.answer == "You are a sailor says: the Moon."


def test_a_malformed_experts_list_is_asked_for_once_more(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    server.responder = multi_world(experts_reply=["I think a scientist.", json.dumps(EXPERTS)])
    r = make_prompter().answer("Why are there tides?", strategy="multi-expert")
    assert r.experts is not None
    assert len(server.chat_requests) == 6  # experts twice, 3 answers, aggregation
    server.reset()
    server.responder = multi_world(experts_reply=["Nope."])
    with pytest.raises(ResponseError, match="experts list could not be read"):
        make_prompter().answer("Why are there tides?", strategy="multi-expert")
    assert len(server.chat_requests) == 2


async def test_multi_expert_async_sends_the_answers_together(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    server.responder = multi_world()
    r = await make_prompter().aanswer("Why are there tides?", strategy="multi-expert")
    assert r.experts is not None
    assert len(r.experts) == 3
    stream = make_prompter().stream("Why are there tides?", strategy="multi-expert")
    assert "".join(stream) == stream.result.answer  # no token stream: the answer, whole


def test_n_experts_is_configurable(server: FakeOpenAIServer, make_prompter: Make) -> None:
    server.responder = multi_world()
    ep = make_prompter(n_experts=2)
    ep.answer("Why are there tides?", strategy="multi-expert")
    assert server.chat_requests[0].messages[0]["content"].startswith("Name the 2 experts")
    assert len(server.chat_requests) == 2 + 2
    with pytest.raises(ConfigurationError, match="n_experts"):
        make_prompter(n_experts=1)


def test_user_strategies_are_templates(server: FakeOpenAIServer, make_prompter: Make) -> None:
    ep = make_prompter(
        strategies={"socratic": "Ask yourself three questions first.\n\n{{ instruction }}"}
    )
    r = ep.answer("Why are there tides?", strategy="socratic")
    (req,) = server.chat_requests
    assert (
        req.messages[0]["content"] == "Ask yourself three questions first.\n\nWhy are there tides?"
    )
    assert r.strategy == "socratic"
    with pytest.raises(ConfigurationError, match="Unknown strategy 'wizard'"):
        ep.answer("x", strategy="wizard")
    with pytest.raises(ConfigurationError, match="built in"):
        make_prompter(strategies={"expert": "{{ instruction }}"})
    with pytest.raises(Exception, match="instruction"):
        make_prompter(strategies={"bad": "no variables here"})
    # the default strategy is checked when the prompter is built, not at its first call
    with pytest.raises(ConfigurationError, match="Unknown strategy 'wizard'"):
        make_prompter(strategy="wizard")
    custom_default = make_prompter(
        strategy="socratic", strategies={"socratic": "{{ instruction }}"}
    )
    assert custom_default.answer("Tides?").strategy == "socratic"
