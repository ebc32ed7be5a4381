"""The OpenAI-compatible server, driven by the OpenAI SDK and LiteLLM, on a scripted local model."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import litellm
import openai
import pytest

from confroute.router import ConfRouter
from confroute.serving.batcher import MicroBatcher
from confroute.serving.openai_format import parse_chat_request
from confroute.serving.server import BackgroundServer, create_app
from tests.fakes import ScriptedLocalModel, ScriptedProvider, install_scripted_provider

TOOL_ANSWER = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def scripted() -> Iterator[tuple[ScriptedLocalModel, ScriptedProvider]]:
    slm = ScriptedLocalModel(
        script={
            "sure?": ("391", (0.99, 0.98, 0.97)),
            "unsure?": ("maybe 12", (0.2, 0.3, 0.4)),
            "weather?": (TOOL_ANSWER, (0.99,) * 4),
        }
    )
    behaviour = ScriptedProvider(default="strong answer here")
    remove = install_scripted_provider(behaviour)
    yield slm, behaviour
    remove()


@pytest.fixture(scope="module")
def server(scripted) -> Iterator[BackgroundServer]:  # type: ignore[no-untyped-def]
    slm, _ = scripted
    batcher = MicroBatcher(slm, window_ms=150)
    router = ConfRouter(batcher, "scripted/strong", threshold=0.8, max_new_tokens=16)
    with BackgroundServer(router) as running:
        yield running
    batcher.close()


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def _ask(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def test_listens_on_loopback_with_a_free_port(server: BackgroundServer) -> None:
    assert server.host == "127.0.0.1"
    assert server.port > 0
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"


def test_health_and_models(server: BackgroundServer, client: openai.OpenAI) -> None:
    with urllib.request.urlopen(server.base_url.removesuffix("/v1") + "/health") as reply:
        health = json.load(reply)
    assert health["status"] == "ok"
    assert health["local_model"] == "scripted-slm"
    assert health["strong_model"] == "scripted/strong"
    assert health["batching"]["max_batch"] == 8
    assert [m.id for m in client.models.list().data] == ["confroute"]
    assert client.models.retrieve("confroute").owned_by == "confroute"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_a_confident_answer_is_kept_local(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="confroute", messages=_ask("sure?")
    )
    completion = raw.parse()
    decision = completion.model_extra["confroute"]
    assert completion.choices[0].message.content == "391"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "confroute"
    assert completion.id == f"chatcmpl-{decision['id']}"
    assert (decision["escalated"], decision["reason"]) == (False, "confident")
    assert decision["answered_by"] == "scripted-slm"
    assert decision["confidence"] == pytest.approx((0.99 * 0.98 * 0.97) ** (1 / 3))
    assert completion.usage.completion_tokens == 3
    assert raw.headers["x-confroute-escalated"] == "false"
    assert raw.headers["x-confroute-reason"] == "confident"
    assert raw.headers["x-confroute-answered-by"] == "scripted-slm"
    assert raw.headers["x-confroute-decision-id"] == decision["id"]
    assert float(raw.headers["x-confroute-confidence"]) == pytest.approx(decision["confidence"])
    assert float(raw.headers["x-confroute-threshold"]) == 0.8


def test_an_unsure_answer_is_escalated(client: openai.OpenAI, scripted) -> None:  # type: ignore[no-untyped-def]
    _, provider = scripted
    before = len(provider.calls)
    raw = client.chat.completions.with_raw_response.create(
        model="confroute", messages=_ask("unsure?"), max_tokens=7, temperature=0
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "strong answer here"
    assert completion.model_extra["confroute"]["escalated"] is True
    assert completion.model_extra["confroute"]["answered_by"] == "scripted/strong"
    assert raw.headers["x-confroute-escalated"] == "true"
    assert raw.headers["x-confroute-reason"] == "low_confidence"
    assert len(provider.calls) == before + 1
    assert provider.calls[-1]["optional_params"]["max_tokens"] == 7


def test_logprobs_are_returned_and_trimmed(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="confroute", messages=_ask("sure?"), logprobs=True, top_logprobs=0
    )
    content = completion.choices[0].logprobs.content
    assert [t.token for t in content] == ["3", "9", "1"]
    assert content[0].logprob == pytest.approx(-0.01005, abs=1e-4)
    assert [t.top_logprobs for t in content] == [[], [], []]
    one = client.chat.completions.create(
        model="confroute", messages=_ask("sure?"), logprobs=True, top_logprobs=1
    )
    assert [[a.token for a in t.top_logprobs] for t in one.choices[0].logprobs.content] == [
        ["3"],
        ["9"],
        ["1"],
    ]
    bare = client.chat.completions.create(model="confroute", messages=_ask("sure?"), logprobs=True)
    assert [t.top_logprobs for t in bare.choices[0].logprobs.content] == [[], [], []]
    plain = client.chat.completions.create(model="confroute", messages=_ask("sure?"))
    assert plain.choices[0].logprobs is None


def test_streaming_a_local_answer_carries_the_decision(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="confroute",
        messages=_ask("sure?"),
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-confroute-escalated"] == "false"
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "391"
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    assert final.choices[0].finish_reason == "stop"
    assert final.model_extra["confroute"]["id"] == raw.headers["x-confroute-decision-id"]
    assert chunks[-1].usage.completion_tokens == 3
    assert len({c.id for c in chunks}) == 1


def test_streaming_an_escalated_answer_streams_the_strong_model(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="confroute", messages=_ask("unsure?"), stream=True
    )
    assert raw.headers["x-confroute-escalated"] == "true"
    chunks = list(raw.parse())
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert pieces == ["strong ", "answer ", "here"]
    final = chunks[-1]
    assert final.model_extra["confroute"]["escalated"] is True
    assert final.model_extra["confroute"]["answered_by"] == "scripted/strong"


def test_local_tool_calls_come_back_in_openai_shape(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="confroute", messages=_ask("weather?"), tools=[WEATHER_TOOL]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    streamed = list(
        client.chat.completions.create(
            model="confroute", messages=_ask("weather?"), tools=[WEATHER_TOOL], stream=True
        )
    )
    calls = [tc for c in streamed for tc in (c.choices[0].delta.tool_calls or [])]
    assert [tc.function.name for tc in calls] == ["get_weather"]


def test_bad_requests_get_openai_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4o", messages=_ask("sure?"))
    with pytest.raises(openai.BadRequestError, match="n=1"):
        client.chat.completions.create(model="confroute", messages=_ask("sure?"), n=2)
    with pytest.raises(openai.BadRequestError, match="no user message"):
        client.chat.completions.create(
            model="confroute", messages=[{"role": "system", "content": "hi"}]
        )
    with pytest.raises(openai.BadRequestError, match="Unsupported field"):
        client.chat.completions.create(
            model="confroute", messages=_ask("sure?"), extra_body={"best_of": 3}
        )


def test_invalid_json_is_a_400(server: BackgroundServer) -> None:
    request = urllib.request.Request(
        server.base_url + "/chat/completions",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request)
    assert caught.value.code == 400
    assert json.load(caught.value)["error"]["type"] == "invalid_request_error"


def test_concurrent_requests_share_a_batch(
    server: BackgroundServer,
    client: openai.OpenAI,
    scripted,  # type: ignore[no-untyped-def]
) -> None:
    slm, _ = scripted
    before = len(slm.calls)
    answers: dict[int, str] = {}
    barrier = threading.Barrier(4)

    def ask(index: int) -> None:
        barrier.wait()
        reply = client.chat.completions.create(model="confroute", messages=_ask("sure?"))
        answers[index] = reply.choices[0].message.content or ""

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert answers == {0: "391", 1: "391", 2: "391", 3: "391"}
    new_calls = slm.calls[before:]
    assert sum(new_calls) == 4
    assert len(new_calls) < 4  # at least two requests met in one generation


def test_litellm_works_against_the_server(server: BackgroundServer) -> None:
    reply = litellm.completion(
        model="openai/confroute",
        api_base=server.base_url,
        api_key="unused",
        messages=_ask("sure?"),
    )
    assert reply.choices[0].message.content == "391"
    headers = reply._hidden_params["additional_headers"]
    assert headers["llm_provider-x-confroute-escalated"] == "false"
    streamed = litellm.completion(
        model="openai/confroute",
        api_base=server.base_url,
        api_key="unused",
        messages=_ask("unsure?"),
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed)
    assert text == "strong answer here"


def test_an_api_key_is_enforced_when_set(scripted) -> None:  # type: ignore[no-untyped-def]
    slm, _ = scripted
    router = ConfRouter(slm, None, threshold=0.8)
    with BackgroundServer(router, api_key="s3cret", model_name="local") as running:
        good = openai.OpenAI(base_url=running.base_url, api_key="s3cret", max_retries=0)
        bad = openai.OpenAI(base_url=running.base_url, api_key="wrong", max_retries=0)
        reply = good.chat.completions.create(model="local", messages=_ask("unsure?"))
        assert reply.choices[0].message.content == "maybe 12"
        assert reply.model_extra["confroute"]["reason"] == "local_only"
        with pytest.raises(openai.AuthenticationError, match="API key"):
            bad.chat.completions.create(model="local", messages=_ask("sure?"))
        with urllib.request.urlopen(running.base_url.removesuffix("/v1") + "/health") as r:
            assert json.load(r)["status"] == "ok"  # health needs no key


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "'model' is required"),
        ({"model": "m", "messages": []}, "non-empty list"),
        ({"model": "m", "messages": _ask("x"), "top_p": 0.5}, "top_p=1"),
        ({"model": "m", "messages": _ask("x"), "presence_penalty": 1}, "presence_penalty"),
        ({"model": "m", "messages": _ask("x"), "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "messages": _ask("x"), "max_tokens": 1.5}, "integer"),
        ({"model": "m", "messages": _ask("x"), "temperature": "hot"}, "number"),
        ({"model": "m", "messages": _ask("x"), "stop": [1]}, "'stop'"),
        ({"model": "m", "messages": _ask("x"), "tool_choice": "required"}, "tool_choice"),
        (
            {"model": "m", "messages": _ask("x"), "response_format": {"type": "json_object"}},
            "response_format",
        ),
        ([1, 2], "JSON object"),
    ],
)
def test_request_parsing_rejects_what_it_cannot_honour(body: Any, message: str) -> None:
    from confroute.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match=message):
        parse_chat_request(body)


def test_request_parsing_reads_the_supported_fields() -> None:
    chat = parse_chat_request(
        {
            "model": "confroute",
            "messages": _ask("x"),
            "max_completion_tokens": 9,
            "temperature": 0.5,
            "stop": "END",
            "tool_choice": "none",
            "tools": [WEATHER_TOOL],
            "top_logprobs": 2,
            "user": "someone",
            "seed": 1,
        }
    )
    assert (chat.max_tokens, chat.temperature, chat.stop) == (9, 0.5, ("END",))
    assert chat.tools is None  # tool_choice "none" offers no tools
    assert (chat.logprobs, chat.top_logprobs) == (True, 2)
    assert chat.ignored == ("seed",)
    assert chat.conversation_id == "someone"  # the OpenAI user field keys the conversation


def test_create_app_checks_its_settings(scripted) -> None:  # type: ignore[no-untyped-def]
    from confroute.errors import ConfigurationError

    router = ConfRouter(scripted[0], None)
    with pytest.raises(ConfigurationError, match="model_name"):
        create_app(router, model_name="")
    with pytest.raises(ConfigurationError, match="worker_threads"):
        create_app(router, worker_threads=0)
