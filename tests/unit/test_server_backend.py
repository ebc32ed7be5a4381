"""ServerModel with a fake LiteLLM (the ``completion`` / ``acompletion`` hooks): no server runs.

The fake records every call's keyword arguments and answers with real LiteLLM
``ModelResponse`` objects, so the mapping is tested on the shape LiteLLM returns.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import litellm
import pytest

from confroute import ConfRouter
from confroute.backend import LocalBackend, MessageFollowUp
from confroute.errors import (
    ConfigurationError,
    ContextOverflowError,
    LocalBackendError,
    LogprobsUnavailableError,
)
from confroute.estimators import EstimationContext, JaccardDegree, PTrue, Verbalized2S
from confroute.estimators.prompts import P_TRUE_QUESTION, VERBALIZED_2S_QUESTION
from confroute.generation import GenerationConfig
from confroute.server_backend import NO_KEY, NO_TOKEN_ID, UNKNOWN_CONTEXT_WINDOW, ServerModel
from confroute.tools import parse_tool_calls

KEY = "sk-SECRET-KEY-123"
PASSWORD = "hunter2-PASS"
BASE = f"http://user:{PASSWORD}@127.0.0.1:8080/v1"
MASKED_BASE = "http://***@127.0.0.1:8080/v1"
QUESTION = [{"role": "user", "content": "What is 2+2?"}]
Token = tuple[str, float, Sequence[tuple[str, float]]]


def choice(
    tokens: Sequence[Token],
    *,
    text: str | None = None,
    finish: str = "stop",
    logprobs: bool = True,
    tool_calls: list[dict[str, Any]] | None = None,
    index: int = 0,
) -> dict[str, Any]:
    """One choice whose text is the tokens joined (unless ``text`` is given)."""
    content = "".join(t for t, _, _ in tokens) if text is None else text
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    entries = [
        {
            "token": token,
            "logprob": logprob,
            "bytes": None,
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in alts],
        }
        for token, logprob, alts in tokens
    ]
    return {
        "index": index,
        "message": message,
        "finish_reason": finish,
        "logprobs": {"content": entries} if logprobs else None,
    }


def response(*choices: dict[str, Any], prompt_tokens: int = 11) -> litellm.ModelResponse:
    return litellm.ModelResponse(
        choices=list(choices),
        usage={"prompt_tokens": prompt_tokens, "completion_tokens": 2, "total_tokens": 13},
    )


FOUR: list[Token] = [("4", -0.1, [("4", -0.1), ("5", -2.5)]), (".", -0.2, [(".", -0.2)])]


class FakeLiteLLM:
    """Answers each call with the next reply (the last one repeats); raises exceptions."""

    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies)
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, BaseException):
            raise reply
        return reply(kwargs) if callable(reply) else reply

    async def acall(self, **kwargs: Any) -> Any:
        await asyncio.sleep(0)
        return self(**kwargs)


def server(fake: FakeLiteLLM, **options: Any) -> ServerModel:
    options.setdefault("backoff_s", 0.0)
    return ServerModel(
        "openai/qwen-test",
        api_base=BASE,
        api_key=KEY,
        completion=fake,
        acompletion=fake.acall,
        **options,
    )


def connection_error() -> Exception:
    # a provider error that quotes the credentials it was sent: they must be masked
    return litellm.APIConnectionError(
        message=f"Connection refused to {BASE} (Authorization: Bearer {KEY})",
        llm_provider="openai",
        model="qwen-test",
    )


def test_it_is_a_local_backend_without_a_tokenizer() -> None:
    model = server(FakeLiteLLM(response(choice(FOUR))), top_logprobs=3)
    assert isinstance(model, LocalBackend) and isinstance(model, MessageFollowUp)
    caps = model.capabilities
    assert (caps.backend, caps.tokenizer, caps.logprobs, caps.top_logprobs) == (
        "server",
        False,
        True,
        3,
    )
    assert (caps.entropies, caps.samples, caps.follow_up) == (False, True, True)
    assert (caps.kept_prefix, caps.hidden_state, caps.step_monitor) == (False, False, False)
    assert model.name == "openai/qwen-test" and model.context_window == UNKNOWN_CONTEXT_WINDOW
    assert model.special_token_ids() == frozenset()
    assert model.count_tokens(QUESTION) > 0
    for call in (
        lambda: model.render(QUESTION),
        lambda: model.encode("x"),
        lambda: model.vocabulary(),
        lambda: model.generate_from_ids([[1]], GenerationConfig()),
        lambda: model.next_token_logprobs([1]),
        lambda: model.continue_greedy([1], 2),
    ):
        with pytest.raises(ConfigurationError, match="no tokenizer"):
            call()


def test_response_maps_to_a_generation_and_the_call_asks_for_logprobs() -> None:
    fake = FakeLiteLLM(response(choice(FOUR, finish="length"), prompt_tokens=11))
    model = server(fake, top_logprobs=2, timeout=9.0, name="my-slm")
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    config = GenerationConfig(max_new_tokens=5, temperature=0.7, top_p=0.9, stop=("\n",), seed=4)
    [generation] = model.generate([QUESTION], config, tools=tools)
    assert generation.text == "4."
    assert generation.tokens == ("4", ".")
    assert generation.logprobs == (-0.1, -0.2)
    assert generation.token_ids == (NO_TOKEN_ID, NO_TOKEN_ID)
    assert [(a.token, a.token_id, a.logprob) for a in generation.top_logprobs[0]] == [
        ("4", NO_TOKEN_ID, -0.1),
        ("5", NO_TOKEN_ID, -2.5),
    ]
    assert generation.entropies == ()
    assert (generation.finish_reason, generation.prompt_tokens) == ("length", 11)
    assert generation.model == "my-slm" and generation.latency_s >= 0.0
    [call] = fake.calls
    assert call["model"] == "openai/qwen-test" and call["messages"] == QUESTION
    assert (call["logprobs"], call["top_logprobs"], call["max_tokens"]) == (True, 2, 5)
    assert (call["temperature"], call["top_p"], call["stop"], call["seed"]) == (0.7, 0.9, ["\n"], 4)
    assert call["tools"] == tools and call["timeout"] == 9.0 and call["num_retries"] == 0
    assert (call["api_base"], call["api_key"]) == (BASE, KEY)  # unwrapped only for the call
    assert "n" not in call


def test_tokens_reported_past_a_stop_sequence_are_dropped() -> None:
    tokens: list[Token] = [("1", -0.1, []), (",", -0.2, []), (" 2", -0.3, []), ("\n", -0.4, [])]
    model = server(FakeLiteLLM(response(choice(tokens, text="1, 2"))))
    [generation] = model.generate([QUESTION], GenerationConfig(stop=("\n",)))
    assert generation.tokens == ("1", ",", " 2") and generation.logprobs == (-0.1, -0.2, -0.3)


def test_n_samples_in_one_call_when_the_server_honours_n() -> None:
    three = response(*(choice(FOUR, index=i) for i in range(3)))
    fake = FakeLiteLLM(three)
    generations = server(fake).generate([QUESTION, QUESTION], GenerationConfig(num_samples=3))
    assert len(generations) == 6 and all(g.text == "4." for g in generations)
    assert [c["n"] for c in fake.calls] == [3, 3]


def test_a_server_that_ignores_n_is_asked_again_with_a_new_seed_each_time() -> None:
    fake = FakeLiteLLM(response(choice(FOUR)))  # one choice whatever n is
    config = GenerationConfig(num_samples=3, temperature=1.0, seed=10)
    assert len(server(fake).generate([QUESTION], config)) == 3
    assert [(c.get("n"), c["seed"]) for c in fake.calls] == [(3, 10), (None, 11), (None, 12)]
    fake.calls.clear()
    assert len(asyncio.run(server(fake).agenerate([QUESTION], config))) == 3
    assert sorted(c["seed"] for c in fake.calls) == [10, 11, 12]


def test_agenerate_answers_every_conversation_concurrently_in_order() -> None:
    def echo(kwargs: dict[str, Any]) -> litellm.ModelResponse:
        word = kwargs["messages"][-1]["content"]
        return response(choice([(word, -0.5, [(word, -0.5)])]))

    fake = FakeLiteLLM(echo)
    conversations = [[{"role": "user", "content": f"q{i}"}] for i in range(5)]
    generations = asyncio.run(server(fake).agenerate(conversations, GenerationConfig()))
    assert [g.text for g in generations] == [f"q{i}" for i in range(5)]
    assert [g.text for g in server(fake).generate(conversations)] == [f"q{i}" for i in range(5)]


def test_concurrent_async_routes_reach_the_server_together() -> None:
    """16 callers of ``aroute`` are all in flight at once, so a batching server sees 16.

    The async route used to run the whole local call in one of the event loop's default
    worker threads (6 on a 2-core machine), which held a 16-slot llama-server to 6 at a time.
    """
    in_flight, most = 0, 0

    class Gate(FakeLiteLLM):
        async def acall(self, **kwargs: Any) -> Any:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0.05)  # the server answering the whole batch
            in_flight -= 1
            return self(**kwargs)

    fake = Gate(response(choice(FOUR)))
    router = ConfRouter(server(fake), None)

    async def callers() -> list[Any]:
        return await asyncio.gather(*(router.aroute("What is 2+2?") for _ in range(16)))

    answers = asyncio.run(callers())
    assert most == 16
    assert [a.text for a in answers] == ["4."] * 16
    assert all(a.decision.local_backend == "server" for a in answers)


def test_an_answer_without_logprobs_is_an_error_never_a_confidence() -> None:
    fake = FakeLiteLLM(response(choice(FOUR, logprobs=False)))
    with pytest.raises(LogprobsUnavailableError) as caught:
        server(fake).generate([QUESTION])
    message = str(caught.value)
    assert "openai/qwen-test at " + MASKED_BASE in message
    assert "llama.cpp" in message and "--max-logprobs" in message and "Ollama" in message
    assert len(fake.calls) == 1  # not retried: asking again cannot help
    assert isinstance(caught.value, ConfigurationError)


def test_an_empty_answer_without_logprobs_is_an_empty_generation() -> None:
    fake = FakeLiteLLM(response(choice([], text="", logprobs=False)))
    [generation] = server(fake).generate([QUESTION])
    assert (generation.text, generation.tokens, generation.logprobs) == ("", (), ())


def test_a_server_that_is_down_raises_with_the_base_url_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeLiteLLM(connection_error())
    model = server(fake, max_retries=2)
    with caplog.at_level(logging.DEBUG), pytest.raises(LocalBackendError) as caught:
        model.generate([QUESTION])
    error = caught.value
    assert len(fake.calls) == 3 and error.attempts == 3 and error.model == "openai/qwen-test"
    assert MASKED_BASE in str(error) and "server is running" in str(error)
    with caplog.at_level(logging.DEBUG), pytest.raises(LocalBackendError) as async_caught:
        asyncio.run(model.agenerate([QUESTION]))
    texts = [
        str(error),
        repr(error),
        *error.errors,
        str(async_caught.value),
        caplog.text,
        repr(model),
    ]
    for text in texts:
        assert KEY not in text and PASSWORD not in text


def test_an_error_retrying_cannot_fix_is_not_retried() -> None:
    refused = litellm.AuthenticationError(
        message=f"bad key {KEY}", llm_provider="openai", model="qwen-test"
    )
    fake = FakeLiteLLM(refused)
    with pytest.raises(LocalBackendError) as caught:
        server(fake, max_retries=3).generate([QUESTION])
    assert len(fake.calls) == 1 and KEY not in str(caught.value)


def test_a_retry_after_a_transient_failure_succeeds() -> None:
    fake = FakeLiteLLM(connection_error(), response(choice(FOUR)))
    [generation] = server(fake, max_retries=1).generate([QUESTION])
    assert generation.text == "4." and len(fake.calls) == 2


def test_a_prompt_the_server_finds_too_long_is_a_context_overflow() -> None:
    too_long = litellm.ContextWindowExceededError(
        message="maximum context length is 2048 tokens", model="qwen-test", llm_provider="openai"
    )
    with pytest.raises(ContextOverflowError) as caught:
        server(FakeLiteLLM(too_long), context_window=2048).generate([QUESTION])
    assert caught.value.context_window == 2048 and caught.value.prompt_tokens > 0


def test_the_key_appears_in_no_repr() -> None:
    model = server(FakeLiteLLM(response(choice(FOUR))))
    assert repr(model) == f"ServerModel(model='openai/qwen-test', api_base='{MASKED_BASE}')"
    assert KEY not in repr(model._endpoint) and PASSWORD not in repr(model._endpoint)
    assert KEY not in repr(vars(model)) and PASSWORD not in repr(vars(model))


def test_tool_calls_reach_the_router_as_text_it_parses_and_as_extras() -> None:
    calls = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
    ]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    tokens: list[Token] = [("<tool_call>", -0.1, []), ("{...}", -0.3, [])]
    fake = FakeLiteLLM(response(choice(tokens, text="", tool_calls=calls, finish="tool_calls")))
    [generation] = server(fake).generate([QUESTION], tools=tools)
    parsed = parse_tool_calls(generation.text, tools)
    assert not parsed.malformed
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in parsed.calls] == [
        ("get_weather", '{"city": "Paris"}')
    ]
    assert generation.extras["tool_calls"][0]["function"]["name"] == "get_weather"
    assert generation.finish_reason == "stop" and generation.logprobs == (-0.1, -0.3)


def test_tool_call_arguments_that_are_not_json_stay_malformed() -> None:
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    fake = FakeLiteLLM(response(choice([("x", -1.0, [])], text="", tool_calls=calls)))
    [generation] = server(fake).generate([QUESTION], tools=tools)
    assert parse_tool_calls(generation.text, tools).malformed


def follow_up_reply(first: Sequence[tuple[str, float]]) -> Callable[[dict[str, Any]], Any]:
    """A reply whose first token has the alternatives ``first``."""
    return lambda kwargs: response(choice([(first[0][0], first[0][1], first)]))


def test_p_true_reads_the_alternatives_of_a_one_token_follow_up() -> None:
    alternatives = [
        ("False", -0.5),
        ("True", -0.95),
        ("Yes", -7.3),
        ("false", -7.6),
        (" true", -7.7),
    ]
    fake = FakeLiteLLM(follow_up_reply(alternatives))
    model = server(fake)
    context = EstimationContext(messages=QUESTION, local_model=model)
    estimator = PTrue()
    estimator.prepare(model)  # a backend without a tokenizer has no vocabulary to read
    generation = server(FakeLiteLLM(response(choice(FOUR)))).generate([QUESTION])[0]
    value = estimator.confidence(generation, context)
    p_true = math.exp(-0.95) + math.exp(-7.7)
    p_false = math.exp(-0.5) + math.exp(-7.6)
    assert value == pytest.approx(p_true / (p_true + p_false))
    assert context.extras["p_true_mass"] == pytest.approx(p_true + p_false)
    assert "p_true_bounded" not in context.extras
    [call] = fake.calls
    assert (call["max_tokens"], call["temperature"]) == (1, 0.0)
    assert call["messages"][-2:] == [
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": P_TRUE_QUESTION},
    ]


def test_concurrent_async_routes_await_their_p_true_follow_ups_together() -> None:
    """16 ``aroute`` callers' second calls (p_true) are all in flight at once, as their answers.

    The follow-ups used to be made from the scoring thread, so at most as many as the event
    loop's default worker threads (6 on a 2-core machine) reached the server at a time.
    """
    in_flight, most = 0, 0
    answer = response(choice(FOUR))
    follow_up = follow_up_reply([("True", -0.1), ("False", -2.4)])

    class Gate(FakeLiteLLM):
        def __call__(self, **kwargs: Any) -> Any:
            self.calls.append(kwargs)
            asked = kwargs["messages"][-1]["content"] == P_TRUE_QUESTION
            return follow_up(kwargs) if asked else answer

        async def acall(self, **kwargs: Any) -> Any:
            nonlocal in_flight, most
            if kwargs["messages"][-1]["content"] == P_TRUE_QUESTION:
                in_flight += 1
                most = max(most, in_flight)
                await asyncio.sleep(0.05)  # the server answering the batch of follow-ups
                in_flight -= 1
            self.awaited = getattr(self, "awaited", 0) + 1
            return self(**kwargs)

    fake = Gate()
    router = ConfRouter(server(fake), None, estimator="p_true")

    async def callers() -> list[Any]:
        return await asyncio.gather(*(router.aroute("What is 2+2?") for _ in range(16)))

    answers = asyncio.run(callers())
    assert most == 16
    assert fake.awaited == len(fake.calls) == 32  # every call awaited, none from a thread
    expected = math.exp(-0.1) / (math.exp(-0.1) + math.exp(-2.4))
    assert all(a.decision.confidence == pytest.approx(expected) for a in answers)


def test_a_failed_async_follow_up_is_the_lowest_confidence_and_not_asked_again() -> None:
    refused = litellm.AuthenticationError(
        message=f"bad key {KEY}", llm_provider="openai", model="qwen-test"
    )

    def reply(kwargs: dict[str, Any]) -> Any:
        if kwargs["messages"][-1]["content"] == P_TRUE_QUESTION:
            raise refused
        return response(choice(FOUR))

    fake = FakeLiteLLM(reply)
    router = ConfRouter(server(fake), None, estimator="p_true")
    result = asyncio.run(router.aroute("What is 2+2?"))
    assert result.text == "4." and result.decision.confidence is None
    asked = [c for c in fake.calls if c["messages"][-1]["content"] == P_TRUE_QUESTION]
    assert len(asked) == 1  # not asked again by the scoring thread
    assert KEY not in repr(result.decision)


def test_verbalized_2s_awaits_its_follow_up_on_the_async_path() -> None:
    fake = FakeLiteLLM(response(choice([("85", -0.3, [("85", -0.3)])])))
    model = server(fake)
    context = EstimationContext(messages=QUESTION, local_model=model)
    generation = server(FakeLiteLLM(response(choice(FOUR)))).generate([QUESTION])[0]
    value = asyncio.run(Verbalized2S(max_new_tokens=6).aconfidence(generation, context))
    assert value == pytest.approx(0.85) and context.extras["verbalized_2s_reply"] == "85"
    [call] = fake.calls
    assert call["max_tokens"] == 6 and call["messages"][-1]["content"] == VERBALIZED_2S_QUESTION


def test_p_true_with_one_word_outside_the_top_k_is_bounded_not_certain() -> None:
    alternatives = [("True", -0.05), ("Yes", -3.5), ("Sure", -4.0)]
    model = server(FakeLiteLLM(follow_up_reply(alternatives)))
    context = EstimationContext(messages=QUESTION, local_model=model)
    value = PTrue().confidence(
        server(FakeLiteLLM(response(choice(FOUR)))).generate([QUESTION])[0], context
    )
    expected = math.exp(-0.05) / (math.exp(-0.05) + math.exp(-4.0))
    assert value == pytest.approx(expected) and 0.0 < value < 1.0  # type: ignore[operator]
    assert context.extras["p_true_bounded"] == "false"


def test_p_true_is_none_when_neither_word_is_among_the_alternatives() -> None:
    model = server(FakeLiteLLM(follow_up_reply([("Yes", -0.1), ("No", -2.0)])))
    context = EstimationContext(messages=QUESTION, local_model=model)
    generation = server(FakeLiteLLM(response(choice(FOUR)))).generate([QUESTION])[0]
    assert PTrue().confidence(generation, context) is None
    assert context.extras["p_true_mass"] == 0.0


def test_verbalized_2s_reads_the_greedy_reply() -> None:
    fake = FakeLiteLLM(response(choice([("85", -0.3, [("85", -0.3)])])))
    model = server(fake)
    context = EstimationContext(messages=QUESTION, local_model=model)
    generation = server(FakeLiteLLM(response(choice(FOUR)))).generate([QUESTION])[0]
    assert Verbalized2S(max_new_tokens=6).confidence(generation, context) == pytest.approx(0.85)
    assert context.extras["verbalized_2s_reply"] == "85"
    [call] = fake.calls
    assert (call["max_tokens"], call["temperature"]) == (6, 0.0)
    assert call["messages"][-1] == {"role": "user", "content": VERBALIZED_2S_QUESTION}


def test_jaccard_degree_asks_for_n_samples_by_messages() -> None:
    texts = ["four", "four", "it is four"]
    fake = FakeLiteLLM(response(*(choice([(t, -0.5, [])], index=i) for i, t in enumerate(texts))))
    model = server(fake)
    context = EstimationContext(
        messages=QUESTION, local_model=model, config=GenerationConfig(max_new_tokens=7)
    )
    estimator = JaccardDegree(num_samples=3, seed=2)
    value = estimator.confidence(model.generate([QUESTION])[0], context)
    assert context.extras["jaccard_samples"] == texts
    [_, call] = fake.calls
    assert (call["n"], call["temperature"], call["seed"], call["max_tokens"]) == (3, 1.0, 2, 7)
    assert value is not None and 0.0 < value < 1.0


def test_the_router_refuses_estimators_the_api_cannot_serve() -> None:
    model = server(FakeLiteLLM(response(choice(FOUR))))
    for name, needs in (("mean_token_entropy", "entropies"), ("trained_probe", "hidden_state")):
        with pytest.raises(ConfigurationError, match=needs):
            ConfRouter(local_model=model, strong_model=None, estimator=name)
    served = ("perplexity", "avg_token_prob", "min_token_prob", "verbalized_1s", "p_true")
    for name in (*served, "verbalized_2s", "jaccard_degree"):
        assert ConfRouter(local_model=model, strong_model=None, estimator=name).local is model


def test_hidden_states_and_step_monitors_are_refused_per_call() -> None:
    model = server(FakeLiteLLM(response(choice(FOUR))))
    with pytest.raises(ConfigurationError, match="hidden states"):
        model.generate([QUESTION], GenerationConfig(hidden_layer=-8))


def test_model_strings_litellm_cannot_route_or_that_drop_logprobs_are_refused() -> None:
    with pytest.raises(LogprobsUnavailableError, match="11434/v1") as caught:
        ServerModel("ollama_chat/qwen2.5-coder:1.5b")
    assert "openai/qwen2.5-coder:1.5b" in str(caught.value)
    with pytest.raises(ConfigurationError, match="provider"):
        ServerModel("no-such-provider-model")
    for bad in ({"top_logprobs": 0}, {"timeout": 0}, {"max_retries": -1}, {"context_window": 1}):
        with pytest.raises(ConfigurationError):
            ServerModel("openai/x", **bad)


def test_a_hosted_model_takes_its_context_window_from_litellms_map() -> None:
    assert (
        ServerModel("openai/gpt-4o-mini").context_window
        == litellm.get_model_info("openai/gpt-4o-mini")["max_input_tokens"]
    )
    assert ServerModel("openai/x", context_window=4096).context_window == 4096


def test_the_environments_openai_key_is_never_sent_to_another_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    fake = FakeLiteLLM(response(choice(FOUR)))
    model = ServerModel("openai/x", api_base="http://127.0.0.1:8080/v1", completion=fake)
    model.generate([QUESTION])
    assert fake.calls[-1]["api_key"] == NO_KEY
    hosted = ServerModel("openai/gpt-4o-mini", completion=fake)  # OpenAI itself: its own key
    hosted.generate([QUESTION])
    assert "api_key" not in fake.calls[-1] and "api_base" not in fake.calls[-1]


def test_a_server_that_refuses_n_is_asked_one_sample_per_call_from_then_on() -> None:
    # llama.cpp's llama-server answers n > 1 with 500 "Only one completion choice is allowed"
    refused = litellm.InternalServerError(
        message="Only one completion choice is allowed", model="qwen-test", llm_provider="openai"
    )

    def one_choice_unless_n(kwargs: dict[str, Any]) -> litellm.ModelResponse:
        if kwargs.get("n", 1) > 1:
            raise refused
        return response(choice(FOUR))

    fake = FakeLiteLLM(one_choice_unless_n)
    model = server(fake)
    config = GenerationConfig(num_samples=3, temperature=1.0, seed=5)
    assert len(model.generate([QUESTION], config)) == 3
    assert [(c.get("n"), c["seed"]) for c in fake.calls] == [
        (3, 5),
        (None, 5),
        (None, 6),
        (None, 7),
    ]
    fake.calls.clear()
    assert len(asyncio.run(model.agenerate([QUESTION], config))) == 3
    assert sorted((c.get("n"), c["seed"]) for c in fake.calls) == [(None, 5), (None, 6), (None, 7)]


def test_prompt_tokens_are_counted_with_tiktoken_never_a_downloaded_tokenizer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []

    def counter(model: str = "", messages: Any = None, **_: Any) -> int:
        seen.append(model)
        return 17

    monkeypatch.setattr(litellm, "token_counter", counter)
    fake = FakeLiteLLM(response(choice(FOUR)))
    model = ServerModel("hosted_vllm/meta-llama/Llama-3.2-1B-Instruct", completion=fake)
    assert model.count_tokens(QUESTION) == 17
    assert seen == [""]  # "" selects tiktoken; a Llama 3 name would fetch its tokenizer
