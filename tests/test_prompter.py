"""ExpertPrompter end to end over real HTTP, against the local fake server."""

from __future__ import annotations

import json
from collections.abc import Callable

import openai
import pytest

from expertprompting import (
    BudgetExceededError,
    ConfigurationError,
    ExpertAnswer,
    ExpertIdentity,
    ExpertPrompter,
    RateLimitError,
    RequestError,
    ResponseError,
    RetryError,
    RetryPolicy,
    TokenBudgetError,
    count_tokens,
)
from expertprompting.testing import FakeOpenAIServer, Reply

Make = Callable[..., ExpertPrompter]
INSTRUCTION = "Explain how vaccines train the immune system."
IDENTITY = (
    "You are an immunologist with twenty years of vaccine research, able to explain "
    "adaptive immunity to anyone."
)
ANSWER = "Vaccines show the immune system a harmless version of a pathogen..."


def test_answer_sends_exactly_two_requests_and_reports_server_usage(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter()
    server.script(
        Reply(
            content=IDENTITY,
            usage={"prompt_tokens": 700, "completion_tokens": 40, "total_tokens": 740},
        ),
        Reply(
            content=ANSWER, usage={"prompt_tokens": 60, "completion_tokens": 20, "total_tokens": 80}
        ),
    )
    r = ep.answer(INSTRUCTION)
    assert len(server.chat_requests) == 2
    first, second = (req.json for req in server.chat_requests)
    assert first["messages"] == ep.identity_messages(INSTRUCTION)
    assert second["messages"] == ep.answer_messages(INSTRUCTION, IDENTITY)
    assert first["model"] == second["model"] == "gpt-4o-mini"
    assert first["max_tokens"] == 400
    prompt2 = count_tokens(second["messages"], model="gpt-4o-mini")
    assert second["max_tokens"] == min(2048, 128_000 - prompt2 - 16)  # the default answer cap
    assert (r.instruction, r.input, r.expert_identity, r.answer) == (
        INSTRUCTION,
        None,
        IDENTITY,
        ANSWER,
    )
    assert (r.model, r.strategy, r.truncated) == ("gpt-4o-mini", "expert", False)
    assert r.usage.prompt_tokens == 760
    assert r.usage.completion_tokens == 60
    assert r.usage.total_tokens == 820
    assert r.usage.requests == 2
    assert [rec.step for rec in r.requests] == ["identity", "answer"]
    assert [rec.attempts for rec in r.requests] == [1, 1]
    assert ep.usage == r.usage
    assert r.usage.cost == pytest.approx((760 * 0.15 + 60 * 0.60) / 1e6)


def test_identity_prompt_shows_three_relevant_exemplars(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter()
    ident = ep.identify("What are a tenant's rights if the landlord keeps the security deposit?")
    assert isinstance(ident, ExpertIdentity)
    assert len(ident.exemplars) == 3
    text = server.chat_requests[0].json["messages"][0]["content"]
    assert text.count("[Agent Description]:") == 4
    assert text.rstrip().endswith("[Agent Description]:")
    # The most relevant exemplar (law) sits right above the new instruction.
    last = ident.exemplars[-1]
    assert text.index(last) > text.index(ident.exemplars[0])
    assert ident.description.startswith("Echo:")
    assert ident.usage.requests == 1


def test_counts_match_what_the_server_counted(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter()
    r = ep.answer(INSTRUCTION)
    # The fake server reports exact tiktoken counts of what it received.
    for rec, req in zip(r.requests, server.chat_requests, strict=True):
        assert rec.usage.prompt_tokens == count_tokens(req.json["messages"], model="gpt-4o-mini")


def test_given_identity_means_one_request(server: FakeOpenAIServer, make_prompter: Make) -> None:
    ep = make_prompter()
    r = ep.answer(INSTRUCTION, identity=IDENTITY)
    assert len(server.chat_requests) == 1
    assert server.chat_requests[0].json["messages"][0]["content"].startswith(IDENTITY + "\n\n")
    assert r.usage.requests == 1
    ident = ExpertIdentity(instruction=INSTRUCTION, description=IDENTITY, model="hand")
    assert ep.answer(INSTRUCTION, identity=ident).expert_identity == IDENTITY


@pytest.mark.parametrize("strategy", ["vanilla", "static"])
def test_baselines_are_one_argument_away(
    server: FakeOpenAIServer, make_prompter: Make, strategy: str
) -> None:
    ep = make_prompter()
    r = ep.answer(INSTRUCTION, input="for a ten-year-old", strategy=strategy)
    assert len(server.chat_requests) == 1
    sent = server.chat_requests[0].json["messages"][0]["content"]
    assert r.expert_identity is None
    assert r.strategy == strategy
    if strategy == "vanilla":
        assert sent == INSTRUCTION + "\n\nfor a ten-year-old"
    else:
        assert sent.startswith("Imagine you are an expert")
        assert sent.endswith("for a ten-year-old")
    with pytest.raises(ConfigurationError, match="does not use one"):
        ep.answer(INSTRUCTION, identity=IDENTITY, strategy=strategy)


def test_prompter_level_strategy(server: FakeOpenAIServer, make_prompter: Make) -> None:
    ep = make_prompter(strategy="vanilla")
    assert ep.answer(INSTRUCTION).strategy == "vanilla"
    assert len(server.chat_requests) == 1
    with pytest.raises(ConfigurationError, match="Unknown strategy"):
        ep.answer(INSTRUCTION, strategy="guru")


def test_template_syntax_in_user_text_reaches_the_model_verbatim(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter()
    weird = "Compute {{ 7*7 }} and explain {% if x %}this{% endif %} {# not a comment #}"
    ep.answer(weird, input="{{ input }}")
    for req in server.chat_requests:
        content = req.json["messages"][0]["content"]
        assert weird in content
        assert "{{ input }}" in content
        assert "49" not in content


def test_retry_after_is_honoured_and_failed_attempts_counted(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter()
    server.script(
        Reply(status=429, headers={"retry-after": "0.4"}),
        Reply(content=IDENTITY),
        Reply(content=ANSWER),
    )
    r = ep.answer(INSTRUCTION)
    times = [req.time for req in server.chat_requests]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.4
    assert r.requests[0].attempts == 2
    assert r.usage.requests == 3


def test_retry_after_ms_is_honoured(server: FakeOpenAIServer, make_prompter: Make) -> None:
    ep = make_prompter()
    server.script(Reply(status=503, headers={"retry-after-ms": "300"}))
    ep.identify(INSTRUCTION)
    t = [req.time for req in server.chat_requests]
    assert len(t) == 2
    assert t[1] - t[0] >= 0.3


def test_sdk_retries_are_off_even_on_user_clients(server: FakeOpenAIServer) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=5)
    ep = ExpertPrompter(
        model="gpt-4o-mini", client=client, retry=RetryPolicy(max_attempts=3, initial_delay=0.01)
    )
    server.script(*[Reply(status=500)] * 10)
    with pytest.raises(RetryError, match="HTTP 500 after 3 attempts") as info:
        ep.identify(INSTRUCTION)
    assert info.value.attempts == 3
    assert len(server.chat_requests) == 3  # not 3 x 6
    assert ep.usage.requests == 3
    assert ep.usage.total_tokens == 0


def test_async_calls_keep_a_sync_clients_headers_and_query(server: FakeOpenAIServer) -> None:
    client = openai.OpenAI(
        base_url=server.base_url,
        api_key="team-key",
        default_headers={"X-Team": "search"},
        default_query={"tenant": "t1"},
    )
    ep = ExpertPrompter(model="gpt-4o-mini", client=client)
    results = ep.answer_many(["Why is the sky blue?"], progress=False)  # runs async inside
    assert isinstance(results[0], ExpertAnswer)
    assert len(server.chat_requests) == 2
    for req in server.chat_requests:
        assert req.headers["x-team"] == "search"
        assert req.headers["authorization"] == "Bearer team-key"
        assert req.query == "tenant=t1"


def test_rate_limit_exhausted(server: FakeOpenAIServer, make_prompter: Make) -> None:
    ep = make_prompter(retry=RetryPolicy(max_attempts=2, initial_delay=0.01))
    server.script(*[Reply(status=429, headers={"retry-after": "0.01"})] * 2)
    with pytest.raises(RateLimitError) as info:
        ep.identify(INSTRUCTION)
    assert info.value.attempts == 2
    assert isinstance(info.value.__cause__, openai.RateLimitError)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_never_retried(
    server: FakeOpenAIServer, make_prompter: Make, status: int
) -> None:
    ep = make_prompter()
    server.script(Reply(status=status))
    with pytest.raises(RequestError) as info:
        ep.answer(INSTRUCTION)
    assert info.value.status_code == status
    assert len(server.chat_requests) == 1


def test_timeouts_are_retried_then_raised(server: FakeOpenAIServer, make_prompter: Make) -> None:
    ep = make_prompter(timeout=0.2, retry=RetryPolicy(max_attempts=2, initial_delay=0.01))
    server.script(Reply(content="slow", delay=1.0), Reply(content="slow", delay=1.0))
    with pytest.raises(RetryError, match="timed out after 2 attempts"):
        ep.identify(INSTRUCTION)
    assert len(server.chat_requests) == 2


def test_dropped_connection_is_retried(server: FakeOpenAIServer, make_prompter: Make) -> None:
    ep = make_prompter()
    server.script(Reply(fault="drop"), Reply(content=IDENTITY))
    ident = ep.identify(INSTRUCTION)
    assert ident.description == IDENTITY
    assert ident.requests[0].attempts == 2


def test_malformed_json_is_retried(server: FakeOpenAIServer, make_prompter: Make) -> None:
    ep = make_prompter()
    server.script(Reply(body="{not json"), Reply(content=IDENTITY))
    assert ep.identify(INSTRUCTION).requests[0].attempts == 2


def test_malformed_json_every_time_is_a_response_error(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter()
    server.script(*[Reply(body="{not json")] * 3)
    with pytest.raises(ResponseError) as info:
        ep.identify(INSTRUCTION)
    assert info.value.reason == "unparseable"
    assert info.value.attempts == 3


def test_empty_completion_is_retried_then_raised_with_usage_counted(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter()
    usage = {"prompt_tokens": 100, "completion_tokens": 0, "total_tokens": 100}
    server.script(
        Reply(content=None, usage=usage),
        Reply(content="  ", usage=usage),
        Reply(content="", usage=usage),
    )
    with pytest.raises(ResponseError, match="empty identity") as info:
        ep.identify(INSTRUCTION)
    assert info.value.reason == "empty"
    assert info.value.attempts == 3
    assert ep.usage.requests == 3
    assert ep.usage.prompt_tokens == 300


def test_identity_cut_off_is_retried(server: FakeOpenAIServer, make_prompter: Make) -> None:
    ep = make_prompter()
    server.script(Reply(content="You are a half", finish_reason="length"), Reply(content=IDENTITY))
    ident = ep.identify(INSTRUCTION)
    assert ident.description == IDENTITY
    assert ident.requests[0].attempts == 2


def test_identity_always_cut_off_raises(server: FakeOpenAIServer, make_prompter: Make) -> None:
    ep = make_prompter(identity_max_tokens=16)
    server.script(*[Reply(content="You are a half", finish_reason="length")] * 3)
    with pytest.raises(ResponseError, match="identity_max_tokens=16") as info:
        ep.answer(INSTRUCTION)
    assert info.value.reason == "length"
    assert len(server.chat_requests) == 3  # never reached step 2


def test_answer_cut_off_is_kept_and_flagged(server: FakeOpenAIServer, make_prompter: Make) -> None:
    ep = make_prompter(max_tokens=5)
    r = ep.answer(INSTRUCTION, identity=IDENTITY)
    assert r.truncated
    assert server.chat_requests[0].json["max_tokens"] == 5
    assert r.usage.completion_tokens == 5


def test_instruction_too_long_fails_before_any_request(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter(context_window=1000)
    with pytest.raises(TokenBudgetError) as info:
        ep.answer("word " * 2000)
    assert info.value.needed > info.value.available
    assert "1000" in str(info.value)
    assert server.requests == []


def test_answer_stage_is_checked_before_the_identity_request(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    # A terse identity template: the identity prompt fits, the answer stage with an identity
    # of the longest allowed length (identity_max_tokens) does not.
    terse = (
        "{% for e in exemplars %}{{ e.instruction }}{% endfor %}"
        "Expert for: {{ instruction }}{{ input or '' }}"
    )
    ep = make_prompter(
        context_window=1200, identity_max_tokens=400, k_exemplars=0, identity_template=terse
    )
    instruction = "word " * 760
    assert count_tokens(ep.identity_messages(instruction), model="gpt-4o-mini") <= 1200 - 400 - 16
    with pytest.raises(TokenBudgetError, match="longest allowed identity"):
        ep.answer(instruction)
    assert server.requests == []


def test_exemplars_that_do_not_fit_are_skipped(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter(identity_prompt_budget=400)
    ident = ep.identify(INSTRUCTION)
    assert len(ident.exemplars) < 3
    assert server.chat_requests[0].json["messages"] == ep.identity_messages(INSTRUCTION)
    assert count_tokens(server.chat_requests[0].json["messages"], model="gpt-4o-mini") <= 400


def test_run_budget_refuses_before_sending(server: FakeOpenAIServer, make_prompter: Make) -> None:
    ep = make_prompter(max_requests=1)
    with pytest.raises(BudgetExceededError, match="max_requests=1"):
        ep.answer(INSTRUCTION)
    assert len(server.chat_requests) == 1  # the identity went, the answer was refused
    ep2 = make_prompter(max_total_tokens=500)
    with pytest.raises(BudgetExceededError, match="max_total_tokens=500"):
        ep2.answer(INSTRUCTION)
    assert len(server.chat_requests) == 1  # nothing more was sent


def test_cost_budget_needs_a_price(make_prompter: Make) -> None:
    with pytest.raises(ConfigurationError, match="prices="):
        make_prompter(model="my-llama", max_cost=1.0, context_window=4096)


def test_empty_instruction_is_refused_without_a_request(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter()
    for bad in ["", "   \n"]:
        with pytest.raises(ConfigurationError, match="instruction is empty"):
            ep.answer(bad)
    assert server.requests == []


def test_bad_settings_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="k_exemplars"):
        ExpertPrompter(k_exemplars=-1)
    with pytest.raises(ConfigurationError, match="temperature"):
        ExpertPrompter(temperature=9)
    with pytest.raises(ConfigurationError, match="retry="):
        ExpertPrompter(retry=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="unexpected keyword"):
        ExpertPrompter(temprature=0.2)  # type: ignore[arg-type]


def test_no_key_is_a_clear_error_but_prompts_still_work() -> None:
    ep = ExpertPrompter(model="gpt-4o-mini")
    assert ep.identity_messages(INSTRUCTION)[0]["role"] == "user"
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        ep.answer(INSTRUCTION)


def test_sampling_settings_are_sent(server: FakeOpenAIServer, make_prompter: Make) -> None:
    ep = make_prompter(temperature=0.3, top_p=0.9, seed=7)
    ep.identify(INSTRUCTION)
    body = server.chat_requests[0].json
    assert (body["temperature"], body["top_p"], body["seed"]) == (0.3, 0.9, 7)


def test_reasoning_models_get_max_completion_tokens(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    make_prompter(model="o4-mini").identify(INSTRUCTION)
    body = server.chat_requests[0].json
    assert body["max_completion_tokens"] == 400
    assert "max_tokens" not in body


def test_clean_answers_removes_the_restatement(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter(clean_answers=True)
    server.script(Reply(content="As an experienced immunologist, vaccines teach memory cells."))
    r = ep.answer(INSTRUCTION, identity=IDENTITY)
    assert r.answer == "Vaccines teach memory cells."
    assert r.raw_answer == "As an experienced immunologist, vaccines teach memory cells."
    server.script(Reply(content="As an experienced immunologist, vaccines teach memory cells."))
    assert make_prompter().answer(INSTRUCTION, identity=IDENTITY).raw_answer is None


def test_result_round_trips_and_renders(make_prompter: Make) -> None:
    r = make_prompter().answer(INSTRUCTION, input="Keep it short.")
    again = ExpertAnswer.model_validate_json(r.model_dump_json())
    assert again == r
    assert json.loads(r.model_dump_json())["usage"]["requests"] == 2
    md = r._repr_markdown_()
    assert "**Expert identity**" in md
    assert r.answer in md
    assert "Keep it short." in md


def test_stream_yields_the_answer_as_it_arrives(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter()
    server.script(Reply(content=IDENTITY), Reply(content=ANSWER))
    stream = ep.stream(INSTRUCTION)
    with pytest.raises(Exception, match="Read the stream"):
        _ = stream.result
    chunks = list(stream)
    assert len(chunks) > 3
    assert "".join(chunks) == ANSWER
    r = stream.result
    assert r.answer == ANSWER
    assert r.expert_identity == IDENTITY
    assert server.chat_requests[1].json["stream"] is True
    assert (
        r.usage.completion_tokens
        == count_tokens(ANSWER, model="gpt-4o-mini") + r.requests[0].usage.completion_tokens
    )
    assert r.usage.requests == 2


def test_stream_retries_before_the_first_chunk(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter()
    server.script(Reply(status=502), Reply(content=ANSWER))
    stream = ep.stream(INSTRUCTION, identity=IDENTITY)
    assert "".join(stream) == ANSWER
    assert stream.result.requests[0].attempts == 2


async def test_astream(server: FakeOpenAIServer, make_prompter: Make) -> None:
    ep = make_prompter()
    server.script(Reply(content=IDENTITY), Reply(content=ANSWER))
    stream = ep.astream(INSTRUCTION)
    chunks = [c async for c in stream]
    assert "".join(chunks) == ANSWER
    assert len(chunks) > 3
    assert stream.result.answer == ANSWER
    assert stream.result.usage.requests == 2


def test_sampling_stop_and_extra_body_reach_the_server(
    server: FakeOpenAIServer, make_prompter: Make
) -> None:
    ep = make_prompter(temperature=0.3, seed=4, repeat_penalty=1.2, identity_stop=("\n\n",))
    ep.answer(INSTRUCTION)
    identity, answer = (req.json for req in server.chat_requests)
    assert identity["stop"] == ["\n\n"]
    assert "stop" not in answer
    for body in (identity, answer):
        assert body["temperature"] == 0.3
        assert body["seed"] == 4
        assert body["repeat_penalty"] == 1.2  # extra_body is merged into the JSON body


def test_retries_use_the_next_seed(server: FakeOpenAIServer, make_prompter: Make) -> None:
    ep = make_prompter(seed=9)
    server.script(Reply(status=500), Reply(status=503), Reply(content=IDENTITY))
    ep.identify(INSTRUCTION)
    assert [req.json["seed"] for req in server.chat_requests] == [9, 10, 11]


def test_chat_layout_over_http(server: FakeOpenAIServer, make_prompter: Make) -> None:
    ep = make_prompter(identity_layout="chat", k_exemplars=2)
    ident = ep.identify(INSTRUCTION)
    sent = server.chat_requests[0].json["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert sent == ep.identity_messages(INSTRUCTION)
    assert ident.exemplars == [
        sent[1]["content"].removeprefix("[Instruction]: "),
        sent[3]["content"].removeprefix("[Instruction]: "),
    ]
    assert ident.usage.prompt_tokens == count_tokens(sent, model="gpt-4o-mini")


def test_exemplar_choice_stays_within_budget_when_the_estimate_is_wrong(
    server: FakeOpenAIServer, make_prompter: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    from expertprompting._method import planner

    monkeypatch.setattr(planner, "_SEAM_SLACK", -150)  # a badly optimistic estimate
    ep = make_prompter(identity_prompt_budget=500)
    messages = ep.identity_messages(INSTRUCTION)
    assert count_tokens(messages, model="gpt-4o-mini") <= 500
    assert messages[0]["content"].count("[Agent Description]:") >= 2  # at least one exemplar
