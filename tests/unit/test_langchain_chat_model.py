"""ChatConfRoute on a scripted local model and the scripted LiteLLM provider (no weights)."""

from __future__ import annotations

import math

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from confroute import ConfRouter
from confroute.errors import ConfigurationError, InvalidRequestError
from langchain_confroute import ChatConfRoute
from tests.fakes import ScriptedLocalModel, ScriptedProvider

WEATHER_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
SURE = (0.99, 0.98, 0.97)
UNSURE = (0.2, 0.3, 0.4)


def get_weather(city: str) -> str:
    """Return the weather in a city."""
    return f"sunny in {city}"


def get_time(zone: str) -> str:
    """Return the time in a time zone."""
    return f"noon in {zone}"


class Person(BaseModel):
    """A person."""

    name: str = Field(description="The name.")
    age: int = Field(description="The age in years.")


@pytest.fixture
def llm(scripted_slm: ScriptedLocalModel, provider: ScriptedProvider) -> ChatConfRoute:
    scripted_slm.script.update(
        {
            "weather?": (WEATHER_CALL, SURE),
            "broken?": ("<tool_call>{not json</tool_call>", SURE),
            "person?": (
                '<tool_call>{"name": "Person", "arguments": {"name": "Ada", "age": 36}}'
                "</tool_call>",
                SURE,
            ),
        }
    )
    return ChatConfRoute(local_model=scripted_slm, strong_model="scripted/strong", max_tokens=16)


def test_confident_answer_stays_local(llm: ChatConfRoute, provider: ScriptedProvider) -> None:
    message = llm.invoke("sure?")
    decision = message.response_metadata["confroute"]
    assert message.content == "391"
    assert (decision["escalated"], decision["reason"]) == (False, "confident")
    assert decision["confidence"] == pytest.approx(math.exp(sum(map(math.log, SURE)) / 3))
    assert message.response_metadata["model_name"] == "scripted-slm"
    assert message.usage_metadata is not None
    assert message.usage_metadata["output_tokens"] == 3
    assert message.usage_metadata["total_tokens"] == message.usage_metadata["input_tokens"] + 3
    logprobs = message.response_metadata["logprobs"]["content"]
    assert [round(t["logprob"], 6) for t in logprobs] == [round(math.log(p), 6) for p in SURE]
    assert provider.calls == []


def test_unsure_answer_escalates_with_the_call_options(
    llm: ChatConfRoute, provider: ScriptedProvider
) -> None:
    message = llm.invoke("unsure?", temperature=0.5, stop=["END"])
    decision = message.response_metadata["confroute"]
    assert message.content == "strong answer"
    assert (decision["escalated"], decision["reason"]) == (True, "low_confidence")
    assert decision["answered_by"] == "scripted/strong"
    assert message.response_metadata["model_name"] == "scripted/strong"
    assert message.usage_metadata == {"input_tokens": 11, "output_tokens": 3, "total_tokens": 14}
    options = provider.calls[0]["optional_params"]
    assert (options["max_tokens"], options["temperature"], options["stop"]) == (16, 0.5, ["END"])


def test_threshold_field_controls_the_route(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    keep_all = ChatConfRoute(local_model=scripted_slm, strong_model="scripted/s", threshold=0.0)
    assert keep_all.invoke("unsure?").content == "maybe 12"
    send_all = ChatConfRoute(local_model=scripted_slm, strong_model="scripted/s", threshold=1.0)
    assert send_all.invoke("sure?").content == "strong answer"


def test_failed_escalation_returns_the_local_answer(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    provider.answers = [RuntimeError("down")]
    llm = ChatConfRoute(local_model=scripted_slm, strong_model="scripted/s", max_retries=0)
    message = llm.invoke("unsure?")
    assert message.content == "maybe 12"
    assert "down" in message.response_metadata["confroute"]["error"]


def test_stream_releases_the_local_answer_once_scored(llm: ChatConfRoute) -> None:
    chunks = list(llm.stream("sure?"))
    assert [c.content for c in chunks] == ["391", ""]
    assert chunks[-1].chunk_position == "last"
    assert [c.usage_metadata is not None for c in chunks] == [False, True]
    full = chunks[0] + chunks[1]
    assert isinstance(full, AIMessageChunk)
    assert full.response_metadata["confroute"]["escalated"] is False


def test_stream_of_an_escalation_yields_the_strong_tokens(llm: ChatConfRoute) -> None:
    chunks = list(llm.stream("unsure?"))
    assert [c.content for c in chunks] == ["strong ", "answer", ""]
    assert chunks[-1].response_metadata["confroute"]["escalated"] is True


async def test_async_paths_match_the_sync_ones(llm: ChatConfRoute) -> None:
    assert (await llm.ainvoke("sure?")).content == "391"
    assert (await llm.ainvoke("unsure?")).content == "strong answer"
    chunks = [c async for c in llm.astream("unsure?")]
    assert [c.content for c in chunks] == ["strong ", "answer", ""]


def test_batch_runs_one_batched_local_generation(
    llm: ChatConfRoute, scripted_slm: ScriptedLocalModel
) -> None:
    scripted_slm.calls.clear()
    messages = llm.batch(["sure?", "unsure?", "sure?"])
    assert [m.content for m in messages] == ["391", "strong answer", "391"]
    assert scripted_slm.calls == [3]


async def test_abatch_runs_one_batched_local_generation(
    llm: ChatConfRoute, scripted_slm: ScriptedLocalModel
) -> None:
    scripted_slm.calls.clear()
    messages = await llm.abatch(["unsure?", "sure?"])
    assert [m.content for m in messages] == ["strong answer", "391"]
    assert scripted_slm.calls == [2]


def test_confident_tool_call_stays_local(llm: ChatConfRoute, provider: ScriptedProvider) -> None:
    message = llm.bind_tools([get_weather, get_time]).invoke("weather?")
    assert message.content == ""
    assert [(c["name"], c["args"], c["type"]) for c in message.tool_calls] == [
        ("get_weather", {"city": "Paris"}, "tool_call")
    ]
    assert message.tool_calls[0]["id"]
    assert message.response_metadata["finish_reason"] == "tool_calls"
    assert provider.calls == []


def test_streamed_tool_call_adds_up_to_the_standard_shape(llm: ChatConfRoute) -> None:
    full = None
    for chunk in llm.bind_tools([get_weather]).stream("weather?"):
        full = chunk if full is None else full + chunk
    assert full is not None
    assert [(c["name"], c["args"]) for c in full.tool_calls] == [("get_weather", {"city": "Paris"})]


def test_malformed_tool_call_escalates_with_the_tools(
    llm: ChatConfRoute, provider: ScriptedProvider
) -> None:
    message = llm.bind_tools([get_weather]).invoke("broken?")
    assert message.response_metadata["confroute"]["reason"] == "malformed_tool_call"
    [tool] = provider.calls[0]["optional_params"]["tools"]
    assert tool["function"]["name"] == "get_weather"


def test_named_tool_choice_offers_only_that_tool_and_asks_for_it(
    llm: ChatConfRoute, provider: ScriptedProvider
) -> None:
    llm.bind_tools([get_weather, get_time], tool_choice="get_time").invoke("unsure?")
    [tool] = provider.calls[0]["optional_params"]["tools"]
    assert tool["function"]["name"] == "get_time"
    system = provider.calls[0]["messages"][0]
    assert system["role"] == "system"
    assert "`get_time`" in system["content"]


def test_tool_choice_any_keeps_the_system_prompt(
    llm: ChatConfRoute, provider: ScriptedProvider
) -> None:
    bound = llm.bind_tools([get_weather], tool_choice="any")
    bound.invoke([SystemMessage("Be brief."), HumanMessage("unsure?")])
    system = provider.calls[0]["messages"][0]["content"]
    assert system.startswith("Be brief.")
    assert "calling one of the provided tools" in system


def test_tool_choice_none_offers_no_tools(llm: ChatConfRoute, provider: ScriptedProvider) -> None:
    llm.bind_tools([get_weather], tool_choice="none").invoke("unsure?")
    assert "tools" not in provider.calls[0]["optional_params"]


def test_unknown_tool_choice_is_refused(llm: ChatConfRoute) -> None:
    with pytest.raises(ConfigurationError, match="not among the bound tools"):
        llm.bind_tools([get_weather], tool_choice="get_time")


def test_structured_output_through_a_local_tool_call(llm: ChatConfRoute) -> None:
    person = llm.with_structured_output(Person).invoke("person?")
    assert person == Person(name="Ada", age=36)


def test_unknown_call_option_is_refused(llm: ChatConfRoute) -> None:
    with pytest.raises(InvalidRequestError, match="top_q"):
        llm.invoke("sure?", top_q=0.3)


def test_settings_that_conflict_are_refused(scripted_slm: ScriptedLocalModel) -> None:
    router = ConfRouter(scripted_slm, None)
    # pydantic reports a validator's ConfigurationError as a ValidationError (a ValueError)
    with pytest.raises(ValueError, match=r"do not also set threshold\. Configure"):
        ChatConfRoute(router=router, threshold=0.5)
    with pytest.raises(ValueError, match="threshold and escalation_rate"):
        ChatConfRoute(threshold=0.5, escalation_rate=0.3)
    with pytest.raises(ValueError, match="less than or equal to 1"):
        ChatConfRoute(threshold=1.5)
    with pytest.raises(ValueError, match="extra"):
        ChatConfRoute(thresold=0.5)  # type: ignore[call-arg]


def test_escalation_rate_goes_through_a_profile(scripted_slm: ScriptedLocalModel) -> None:
    from confroute.calibration import CalibrationProfile, PoolItem, ProfileFingerprint
    from confroute.policies import StreamingQuantile

    fingerprint = ProfileFingerprint(
        model_name="scripted-slm", model_fingerprint="scripted-sha", estimator="perplexity"
    )
    items = [PoolItem(dataset="d", item_id=str(i), confidence=i / 10) for i in range(11)]
    profile = CalibrationProfile.from_pool(items, fingerprint)
    llm = ChatConfRoute(
        local_model=scripted_slm,
        strong_model=None,
        escalation_rate=0.5,
        calibration_profile=profile,
    )
    message = llm.invoke("unsure?")
    assert isinstance(llm.get_router().policy, StreamingQuantile)
    assert message.response_metadata["confroute"]["threshold"] == pytest.approx(0.55)
    assert message.response_metadata["confroute"]["reason"] == "local_only"
    with pytest.raises(ConfigurationError, match="none ships for model 'scripted-slm'"):
        ChatConfRoute(local_model=scripted_slm, escalation_rate=0.3).invoke("sure?")


def test_ready_router_is_used_as_is(scripted_slm: ScriptedLocalModel) -> None:
    router = ConfRouter(scripted_slm, None, threshold=0.99)
    llm = ChatConfRoute(router=router, max_tokens=8)
    assert llm.get_router() is router
    message = llm.invoke("unsure?")
    assert message.response_metadata["confroute"]["reason"] == "local_only"
    assert llm._identifying_params["strong_model"] is None


def test_api_key_stays_secret(scripted_slm: ScriptedLocalModel) -> None:
    llm = ChatConfRoute(local_model=scripted_slm, api_key="sk-secret-123")
    assert "sk-secret-123" not in repr(llm)
    assert "sk-secret-123" not in str(llm._identifying_params)
    assert "sk-secret-123" not in repr(llm.get_router())


@pytest.mark.parametrize(
    "answer",
    [
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',
        '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
    ],
)
def test_tool_call_written_as_bare_json_is_read_as_a_call(
    llm: ChatConfRoute, scripted_slm: ScriptedLocalModel, answer: str
) -> None:
    scripted_slm.script["json weather?"] = (answer, SURE)
    bound = llm.bind_tools([get_weather])
    message = bound.invoke("json weather?")
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert message.content == ""
    chunks = list(bound.stream("json weather?"))
    assert [c.content for c in chunks] == [""]
    assert [c["name"] for c in chunks[-1].tool_calls] == ["get_weather"]


def test_several_json_calls_are_read_as_several_calls(
    llm: ChatConfRoute, scripted_slm: ScriptedLocalModel
) -> None:
    answer = (
        '{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
        '{"name": "get_time", "arguments": {"zone": "CET"}}'
    )
    scripted_slm.script["two?"] = (answer, SURE)
    message = llm.bind_tools([get_weather, get_time]).invoke("two?")
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [
        ("get_weather", {"city": "Oslo"}),
        ("get_time", {"zone": "CET"}),
    ]


def test_json_naming_an_unknown_tool_stays_text(
    llm: ChatConfRoute, scripted_slm: ScriptedLocalModel
) -> None:
    scripted_slm.script["other?"] = ('{"name": "hello", "arguments": {}}', SURE)
    message = llm.bind_tools([get_weather]).invoke("other?")
    assert message.tool_calls == []
    assert message.content == '{"name": "hello", "arguments": {}}'


def test_tool_call_content_blocks_are_not_sent_as_content() -> None:
    from langchain_core.messages import AIMessage, ToolMessage

    from langchain_confroute.messages import to_openai_messages

    call = {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1", "type": "tool_call"}
    history = [
        HumanMessage("Weather in Paris?"),
        AIMessage(content=[{"type": "text", "text": "Let me look."}, call], tool_calls=[call]),
        ToolMessage("sunny", tool_call_id="call_1"),
    ]
    converted = to_openai_messages(history)
    assistant = converted[1]
    assert assistant["content"] == [{"type": "text", "text": "Let me look."}]
    assert assistant["tool_calls"][0]["function"]["name"] == "get_weather"
    assert converted[2] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}
