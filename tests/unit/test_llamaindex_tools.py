"""Tool calling through ConfRouteLLM: the core's local-or-escalate rule, agents, streaming."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent, ReActAgent, ToolCallResult
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.tools import FunctionTool

from confroute.errors import InvalidRequestError
from llamaindex_confroute import ConfRouteLLM, routing_decision
from tests.fakes import ScriptedLocalModel, ScriptedProvider

SURE = (0.99,) * 8
UNSURE = (0.2,) * 8
PARIS_CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


def get_weather(city: str) -> str:
    """Current weather in a city."""
    return f"Sunny, 21 C in {city}"


WEATHER = FunctionTool.from_defaults(fn=get_weather)


@dataclass
class LastMessageScripted(ScriptedLocalModel):
    """Scripted answers keyed on the last message of any role (tool results included)."""

    conversations: list[list[dict[str, Any]]] = field(default_factory=list)

    def answer_for(self, messages: Any) -> tuple[str, Any]:
        self.conversations.append(list(messages))
        return self.script.get(messages[-1]["content"], self.default)


@dataclass
class ToolCallingProvider:
    """A ``scriptedtools/`` LiteLLM provider that answers with scripted tool calls."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    tool_call: dict[str, Any] = field(
        default_factory=lambda: {
            "id": "call_remote",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'},
        }
    )


@pytest.fixture
def tool_provider() -> Iterator[ToolCallingProvider]:
    import litellm
    from litellm import CustomLLM, ModelResponse

    behaviour = ToolCallingProvider()

    def respond(model: str, messages: list[Any], kwargs: dict[str, Any]) -> Any:
        behaviour.calls.append({"messages": messages, **(kwargs.get("optional_params") or {})})
        return ModelResponse(
            model=model,
            choices=[
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [behaviour.tool_call],
                    },
                }
            ],
            usage={"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29},
        )

    class Handler(CustomLLM):  # type: ignore[misc]
        def completion(self, model: str, messages: list[Any], *args: Any, **kwargs: Any) -> Any:
            return respond(model, messages, kwargs)

        async def acompletion(
            self, model: str, messages: list[Any], *args: Any, **kwargs: Any
        ) -> Any:
            return respond(model, messages, kwargs)

    entry = {"provider": "scriptedtools", "custom_handler": Handler()}
    litellm.custom_provider_map.append(entry)
    litellm.utils.custom_llm_setup()
    yield behaviour
    litellm.custom_provider_map.remove(entry)


def make_llm(script: dict[str, tuple[str, tuple[float, ...]]]) -> ConfRouteLLM:
    slm = LastMessageScripted(script=script)
    return ConfRouteLLM(slm, "scriptedtools/strong", max_retries=0, max_tokens=32)


def test_prepare_chat_with_tools_offers_openai_tools() -> None:
    llm = make_llm({})
    history = [ChatMessage(role=MessageRole.SYSTEM, content="You help.")]
    kwargs = llm._prepare_chat_with_tools([WEATHER], user_msg="hi", chat_history=history)
    assert [m.content for m in kwargs["messages"]] == ["You help.", "hi"]
    [tool] = kwargs["tools"]
    assert tool["type"] == "function"
    assert tool["function"]["name"] == "get_weather"
    assert tool["function"]["parameters"]["properties"]["city"]["type"] == "string"
    none = llm._prepare_chat_with_tools([WEATHER], user_msg="hi", tool_choice="none")
    assert none["tools"] is None


def test_confident_wellformed_local_tool_call_stays_local(
    tool_provider: ToolCallingProvider,
) -> None:
    llm = make_llm({"weather in Paris?": (PARIS_CALL, SURE)})
    response = llm.chat_with_tools([WEATHER], user_msg="weather in Paris?")
    decision = routing_decision(response)
    assert decision.escalated is False
    assert decision.reason == "confident"
    [call] = response.message.additional_kwargs["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    [selection] = llm.get_tool_calls_from_response(response)
    assert (selection.tool_name, selection.tool_kwargs) == ("get_weather", {"city": "Paris"})
    assert selection.tool_id == call["id"]
    assert response.message.content == ""
    assert tool_provider.calls == []


def test_malformed_local_tool_call_escalates_with_the_tools(
    tool_provider: ToolCallingProvider,
) -> None:
    malformed = '<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>'
    llm = make_llm({"weather in Lyon?": (malformed, SURE)})
    response = llm.chat_with_tools([WEATHER], user_msg="weather in Lyon?")
    decision = routing_decision(response)
    assert decision.escalated is True
    assert decision.reason == "malformed_tool_call"
    [selection] = llm.get_tool_calls_from_response(response)
    assert (selection.tool_id, selection.tool_kwargs) == ("call_remote", {"city": "Lyon"})
    [call] = tool_provider.calls
    assert [t["function"]["name"] for t in call["tools"]] == ["get_weather"]


def test_unconfident_local_tool_call_escalates(tool_provider: ToolCallingProvider) -> None:
    llm = make_llm({"weather in Paris?": (PARIS_CALL, UNSURE)})
    response = llm.chat_with_tools([WEATHER], user_msg="weather in Paris?")
    assert routing_decision(response).reason == "low_confidence"
    [selection] = llm.get_tool_calls_from_response(response)
    assert selection.tool_kwargs == {"city": "Lyon"}
    assert len(tool_provider.calls) == 1


def test_unknown_tool_name_is_malformed_and_escalates(
    tool_provider: ToolCallingProvider,
) -> None:
    unknown = '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    llm = make_llm({"weather in Paris?": (unknown, SURE)})
    response = llm.chat_with_tools([WEATHER], user_msg="weather in Paris?")
    assert routing_decision(response).reason == "malformed_tool_call"


def test_plain_answer_has_no_tool_call() -> None:
    llm = make_llm({"hello": ("Hi there!", SURE)})
    response = llm.chat_with_tools([WEATHER], user_msg="hello")
    assert response.message.content == "Hi there!"
    assert llm.get_tool_calls_from_response(response, error_on_no_tool_call=False) == []
    with pytest.raises(InvalidRequestError, match="has none"):
        llm.get_tool_calls_from_response(response)


def test_only_first_tool_call_kept_unless_parallel_allowed() -> None:
    rome = '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>'
    two = PARIS_CALL + "\n" + rome
    llm = make_llm({"weather in Paris and Rome?": (two, SURE)})
    single = llm.chat_with_tools([WEATHER], user_msg="weather in Paris and Rome?")
    both = llm.chat_with_tools(
        [WEATHER], user_msg="weather in Paris and Rome?", allow_parallel_tool_calls=True
    )
    assert [s.tool_kwargs["city"] for s in llm.get_tool_calls_from_response(single)] == ["Paris"]
    assert len(single.message.additional_kwargs["tool_calls"]) == 1
    assert [s.tool_kwargs["city"] for s in llm.get_tool_calls_from_response(both)] == [
        "Paris",
        "Rome",
    ]


def test_predict_and_call_runs_the_local_tool_call() -> None:
    llm = make_llm({"weather in Paris?": (PARIS_CALL, SURE)})
    result = llm.predict_and_call([WEATHER], user_msg="weather in Paris?")
    assert result.response == "Sunny, 21 C in Paris"
    assert result.sources[0].tool_name == "get_weather"


def test_stream_with_tools_carries_the_call_in_the_last_chunk() -> None:
    llm = make_llm({"weather in Paris?": (PARIS_CALL, SURE)})
    chunks = list(llm.stream_chat_with_tools([WEATHER], user_msg="weather in Paris?"))
    assert routing_decision(chunks[-1]).escalated is False
    [selection] = llm.get_tool_calls_from_response(chunks[-1])
    assert selection.tool_kwargs == {"city": "Paris"}


async def test_async_tool_paths_match_sync(tool_provider: ToolCallingProvider) -> None:
    llm = make_llm(
        {"weather in Paris?": (PARIS_CALL, SURE), "weather, unsure?": (PARIS_CALL, UNSURE)}
    )
    for question in ("weather in Paris?", "weather, unsure?"):
        sync = llm.chat_with_tools([WEATHER], user_msg=question)
        achat = await llm.achat_with_tools([WEATHER], user_msg=question)
        assert routing_decision(achat).reason == routing_decision(sync).reason
        assert [s.tool_kwargs for s in llm.get_tool_calls_from_response(achat)] == [
            s.tool_kwargs for s in llm.get_tool_calls_from_response(sync)
        ]
    chunks = [
        c async for c in await llm.astream_chat_with_tools([WEATHER], user_msg="weather in Paris?")
    ]
    assert llm.get_tool_calls_from_response(chunks[-1])[0].tool_kwargs == {"city": "Paris"}


@pytest.mark.parametrize("streaming", [False, True])
async def test_function_agent_calls_the_tool_and_uses_its_result(streaming: bool) -> None:
    llm = make_llm(
        {
            "What is the weather in Paris?": (PARIS_CALL, SURE),
            "Sunny, 21 C in Paris": ("It is sunny and 21 C in Paris.", SURE),
        }
    )
    agent = FunctionAgent(tools=[WEATHER], llm=llm, streaming=streaming)
    handler = agent.run(user_msg="What is the weather in Paris?")
    tool_results = []
    async for event in handler.stream_events():
        if type(event).__name__ == "ToolCallResult":
            tool_results.append(event)
    result = await handler
    assert [r.tool_kwargs for r in tool_results] == [{"city": "Paris"}]
    assert tool_results[0].tool_output.content == "Sunny, 21 C in Paris"
    assert str(result) == "It is sunny and 21 C in Paris."
    # the second turn showed the model its tool call and the tool's result, OpenAI-shaped
    second = llm.router.local.conversations[-1]  # type: ignore[attr-defined]
    call, result_message = second[-2], second[-1]
    assert call["role"] == "assistant"
    assert call["tool_calls"][0]["function"]["name"] == "get_weather"
    assert json.loads(call["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert result_message == {
        "role": "tool",
        "content": "Sunny, 21 C in Paris",
        "tool_call_id": call["tool_calls"][0]["id"],
    }


@pytest.mark.parametrize(
    "answer",
    [
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',
        '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
    ],
)
def test_bare_json_local_tool_call_is_read_as_a_tool_call(answer: str) -> None:
    llm = make_llm({"weather in Paris?": (answer, SURE)})
    response = llm.chat_with_tools([WEATHER], user_msg="weather in Paris?")
    [selection] = llm.get_tool_calls_from_response(response)
    assert (selection.tool_name, selection.tool_kwargs) == ("get_weather", {"city": "Paris"})
    assert response.message.content == ""
    assert routing_decision(response).escalated is False
    chunks = list(llm.stream_chat_with_tools([WEATHER], user_msg="weather in Paris?"))
    assert [c.delta for c in chunks] == [""]
    assert llm.get_tool_calls_from_response(chunks[-1])[0].tool_kwargs == {"city": "Paris"}


def test_bare_json_naming_an_unknown_tool_stays_text() -> None:
    answer = '{"name": "get_time", "arguments": {}}'
    llm = make_llm({"what time is it?": (answer, SURE)})
    response = llm.chat_with_tools([WEATHER], user_msg="what time is it?")
    assert response.message.content == answer
    assert llm.get_tool_calls_from_response(response, error_on_no_tool_call=False) == []
    plain = llm.chat([ChatMessage(role=MessageRole.USER, content="what time is it?")])
    assert plain.message.content == answer  # without tools nothing is read as a call


@pytest.mark.parametrize(
    "echo", [PARIS_CALL, '{"arguments": {"city": "Paris"}, "name": "get_weather"}']
)
def test_repeating_an_answered_call_escalates(provider: ScriptedProvider, echo: str) -> None:
    slm = LastMessageScripted(
        script={"weather in Paris?": (PARIS_CALL, SURE), "Sunny, 21 C in Paris": (echo, SURE)}
    )
    llm = ConfRouteLLM(slm, "scripted/strong", max_retries=0, max_tokens=32)
    provider.default = "It is sunny and 21 C in Paris."
    first = llm.chat_with_tools([WEATHER], user_msg="weather in Paris?")
    [call] = first.message.additional_kwargs["tool_calls"]
    result = ChatMessage(
        role=MessageRole.TOOL,
        content="Sunny, 21 C in Paris",
        additional_kwargs={"tool_call_id": call["id"]},
    )
    history = [ChatMessage(role=MessageRole.USER, content="weather in Paris?"), first.message]
    again = llm.chat_with_tools([WEATHER], chat_history=[*history, result])
    decision = routing_decision(again)
    assert (decision.escalated, decision.reason) == (True, "repeated_tool_call")
    assert llm.get_tool_calls_from_response(again, error_on_no_tool_call=False) == []
    assert again.message.content == "It is sunny and 21 C in Paris."
    # the strong model saw the call and its result, with the tools still offered
    sent = provider.calls[-1]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]
    assert sent["messages"][-1]["content"] == "Sunny, 21 C in Paris"
    assert [t["function"]["name"] for t in sent["optional_params"]["tools"]] == ["get_weather"]
    streamed = list(llm.stream_chat_with_tools([WEATHER], chat_history=[*history, result]))
    assert routing_decision(streamed[-1]).reason == "repeated_tool_call"
    assert streamed[-1].message.content == "It is sunny and 21 C in Paris."


async def test_function_agent_answers_through_the_strong_model_when_the_call_repeats(
    provider: ScriptedProvider,
) -> None:
    slm = LastMessageScripted(
        script={
            "What is the weather in Paris?": (PARIS_CALL, SURE),
            "Sunny, 21 C in Paris": (PARIS_CALL, SURE),  # the 0.5B's echo
        }
    )
    llm = ConfRouteLLM(slm, "scripted/strong", max_retries=0, max_tokens=32)
    provider.default = "It is sunny and 21 C in Paris."
    agent = FunctionAgent(tools=[WEATHER], llm=llm)
    handler = agent.run(user_msg="What is the weather in Paris?")
    results = [e async for e in handler.stream_events() if isinstance(e, ToolCallResult)]
    assert str(await handler) == "It is sunny and 21 C in Paris."
    assert [r.tool_kwargs for r in results] == [{"city": "Paris"}]
    assert len(provider.calls) == 1


async def test_react_agent_runs_on_plain_chat() -> None:
    llm = make_llm(
        {
            "What is the weather in Paris?": (
                'Thought: I need the weather tool.\nAction: get_weather\nAction Input: {"city": '
                '"Paris"}',
                SURE,
            ),
            "Observation: Sunny, 21 C in Paris": (
                "Thought: I can answer without using any more tools.\nAnswer: Sunny, 21 C.",
                SURE,
            ),
        }
    )
    llm.router.local.context_window = 16384  # the ReAct prompt is long in the tiny tokenizer
    agent = ReActAgent(tools=[WEATHER], llm=llm, streaming=False)
    handler = agent.run(user_msg="What is the weather in Paris?")
    results = [e async for e in handler.stream_events() if isinstance(e, ToolCallResult)]
    assert str(await handler) == "Sunny, 21 C."
    assert [(r.tool_name, r.tool_kwargs) for r in results] == [("get_weather", {"city": "Paris"})]


def test_structured_predict_uses_a_local_tool_call() -> None:
    from llama_index.core.prompts import PromptTemplate
    from pydantic import BaseModel

    class Weather(BaseModel):
        city: str
        celsius: int

    answer = (
        '<tool_call>{"name": "Weather", "arguments": {"city": "Paris", "celsius": 21}}</tool_call>'
    )
    llm = make_llm({"Paris is at 21 C.": (answer, SURE)})
    result = llm.structured_predict(Weather, PromptTemplate("{text}"), text="Paris is at 21 C.")
    assert result == Weather(city="Paris", celsius=21)
