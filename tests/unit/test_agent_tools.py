"""The agent tools (LangChain ConfRouteTool, LlamaIndex confroute_tool) on a scripted router."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult
from llama_index.core.tools import ToolOutput
from pydantic import ValidationError

from confroute import ConfRouter
from confroute.agent import CONTEXT_INSTRUCTION, aask, ask, local_only, tool_messages
from confroute.errors import ConfigurationError, ContextOverflowError, InvalidRequestError
from langchain_confroute import ConfRouteTool, ToolInputError
from llamaindex_confroute import ConfRouteLLM, ConfRouteQueryTool, confroute_tool
from tests.fakes import ScriptedLocalModel, ScriptedProvider

SURE = (0.99, 0.98, 0.97)
UNSURE = (0.2, 0.3, 0.4)
SECRET = "sk-agent-SECRET-7f3a9c"
DECISION_KEYS = {
    "mode",
    "confidence",
    "threshold",
    "escalated",
    "would_escalate",
    "answered_by",
    "reason",
    "estimator",
    "cost",
    "local_model",
    "remote_model",
    "error",
    "decision_id",
}


@dataclass
class RecordingSLM(ScriptedLocalModel):
    """Scripted answers by the last user message; records every conversation it renders."""

    seen: list[list[dict[str, Any]]] = field(default_factory=list)

    def answer_for(self, messages: Sequence[Mapping[str, Any]]) -> tuple[str, Sequence[float]]:
        self.seen.append([dict(m) for m in messages])
        return super().answer_for(messages)


@dataclass
class LastMessageSLM(ScriptedLocalModel):
    """Scripted answers keyed on the last message of any role (a tool result included)."""

    def answer_for(self, messages: Sequence[Mapping[str, Any]]) -> tuple[str, Sequence[float]]:
        return self.script.get(str(messages[-1]["content"]), self.default)


@pytest.fixture
def slm() -> RecordingSLM:
    return RecordingSLM(
        script={
            "sure?": ("391", SURE),
            "unsure?": ("maybe 12", UNSURE),
            "echo?": (f"the key is {SECRET}", SURE),
        }
    )


@pytest.fixture
def router(slm: RecordingSLM, provider: ScriptedProvider) -> ConfRouter:
    return ConfRouter(slm, "scripted/strong", api_key=SECRET, max_new_tokens=16, max_retries=0)


def call(tool: ConfRouteTool, **args: Any) -> ToolMessage:
    message = tool.invoke({"type": "tool_call", "id": "call-1", "name": tool.name, "args": args})
    assert isinstance(message, ToolMessage)
    return message


# -- the shared core ---------------------------------------------------------------------


def test_context_goes_in_a_system_message_before_the_question() -> None:
    messages = tool_messages("How long does it last?", "  The battery lasts 14 hours.  ")
    assert messages == [
        {
            "role": "system",
            "content": CONTEXT_INSTRUCTION.format(context="The battery lasts 14 hours."),
        },
        {"role": "user", "content": "How long does it last?"},
    ]
    assert (
        tool_messages("Q?", None)
        == tool_messages("Q?", "   ")
        == [{"role": "user", "content": "Q?"}]
    )


@pytest.mark.parametrize("question", ["", "   ", None, 3])
def test_a_blank_or_missing_question_is_refused(router: ConfRouter, question: Any) -> None:
    with pytest.raises(InvalidRequestError, match="question must be a non-empty string"):
        ask(router, question)


def test_a_context_that_is_not_text_is_refused(router: ConfRouter) -> None:
    with pytest.raises(InvalidRequestError, match="context must be a string"):
        ask(router, "sure?", ["a", "list"])  # type: ignore[arg-type]


def test_an_unknown_mode_is_refused(router: ConfRouter) -> None:
    with pytest.raises(ConfigurationError, match="mode must be 'route'"):
        ask(router, "sure?", mode="remote")


def test_local_only_copy_never_escalates_and_leaves_the_router_alone(
    router: ConfRouter, provider: ScriptedProvider
) -> None:
    local = local_only(router)
    assert local.escalation is None and router.escalation is not None
    assert local.local is router.local and local.policy is router.policy
    assert local.route("unsure?").decision.reason == "local_only"
    assert provider.calls == []
    assert router.route("unsure?").decision.escalated


async def test_async_ask_matches_the_sync_one(router: ConfRouter) -> None:
    text, decision = await aask(router, "sure?")
    sync_text, sync_decision = ask(router, "sure?")
    assert (text, decision.reason, decision.confidence) == (
        sync_text,
        sync_decision.reason,
        sync_decision.confidence,
    )


# -- LangChain ---------------------------------------------------------------------------


def test_langchain_schema_has_question_required_and_context_optional(router: ConfRouter) -> None:
    tool = ConfRouteTool(router=router)
    function = convert_to_openai_tool(tool)["function"]
    assert function["name"] == "confroute"
    assert function["parameters"]["required"] == ["question"]
    assert set(function["parameters"]["properties"]) == {"question", "context"}
    assert "escalates" in function["description"]
    assert tool.response_format == "content_and_artifact"
    local = ConfRouteTool(router=router, mode="local", name="ask_local")
    assert "only" in local.description and local.name == "ask_local"


def test_langchain_confident_answer_stays_local(router: ConfRouter) -> None:
    message = call(ConfRouteTool(router=router), question="sure?")
    assert message.content == "391"
    assert set(message.artifact) == DECISION_KEYS
    assert message.artifact["escalated"] is message.artifact["would_escalate"] is False
    assert (message.artifact["answered_by"], message.artifact["reason"]) == (
        "scripted-slm",
        "confident",
    )
    assert message.artifact["confidence"] == pytest.approx(0.98, abs=0.01)
    json.dumps(message.artifact)  # JSON-ready


def test_langchain_unsure_answer_escalates(router: ConfRouter, provider: ScriptedProvider) -> None:
    message = call(ConfRouteTool(router=router), question="unsure?")
    assert message.content == "strong answer"
    assert message.artifact["escalated"] is True
    assert message.artifact["answered_by"] == message.artifact["remote_model"] == "scripted/strong"
    assert message.artifact["reason"] == "low_confidence"
    assert len(provider.calls) == 1


def test_langchain_local_mode_reports_and_keeps_the_unsure_answer(
    router: ConfRouter, provider: ScriptedProvider
) -> None:
    message = call(ConfRouteTool(router=router, mode="local"), question="unsure?")
    assert message.content == "maybe 12"
    assert message.artifact["mode"] == "local"
    assert message.artifact["escalated"] is False
    assert message.artifact["would_escalate"] is True
    assert message.artifact["reason"] == "local_only"
    assert message.artifact["confidence"] < message.artifact["threshold"]
    assert provider.calls == []


def test_langchain_context_reaches_the_model(router: ConfRouter, slm: RecordingSLM) -> None:
    call(ConfRouteTool(router=router), question="sure?", context="17*23 is 391.")
    system, user = slm.seen[-1]
    assert system["role"] == "system" and system["content"].endswith("17*23 is 391.")
    assert user == {"role": "user", "content": "sure?"}


async def test_langchain_async_call(router: ConfRouter) -> None:
    tool = ConfRouteTool(router=router, mode="local")
    message = await tool.ainvoke(
        {"type": "tool_call", "id": "a", "name": tool.name, "args": {"question": "unsure?"}}
    )
    assert (message.content, message.artifact["reason"]) == ("maybe 12", "local_only")
    content, artifact = await tool._arun("sure?")
    assert (content, artifact["reason"]) == ("391", "confident")


@pytest.mark.parametrize("args", [{"question": ""}, {"question": "   "}, {"context": "only"}])
def test_langchain_blank_question_fails_validation(router: ConfRouter, args: Any) -> None:
    with pytest.raises(ValidationError, match="question"):
        call(ConfRouteTool(router=router), **args)
    handled = ConfRouteTool(router=router, handle_validation_error=True)
    assert "error" in str(call(handled, **args).content).lower()


def test_langchain_unanswerable_call_is_a_tool_error(router: ConfRouter) -> None:
    huge = "word " * 3000  # longer than the scripted model's 1024-token window
    tool = ConfRouteTool(router=router, mode="local")
    with pytest.raises(ToolInputError, match="context window") as raised:
        call(tool, question="sure?", context=huge)
    assert isinstance(raised.value, InvalidRequestError)
    assert isinstance(raised.value.__cause__, ContextOverflowError)
    handled = ConfRouteTool(router=router, mode="local", handle_tool_error=True)
    assert "context window" in str(call(handled, question="sure?", context=huge).content)


def test_langchain_bad_mode_is_refused(router: ConfRouter) -> None:
    with pytest.raises(ValueError, match="mode"):
        ConfRouteTool(router=router, mode="remote")  # type: ignore[arg-type]


def test_langchain_results_never_hold_the_key(
    router: ConfRouter, provider: ScriptedProvider
) -> None:
    provider.answers = [RuntimeError(f"401 Unauthorized: invalid api key {SECRET}")]
    failed = call(ConfRouteTool(router=router), question="unsure?")
    assert failed.artifact["error"] and "escalat" in failed.artifact["error"].lower()
    echoed = call(ConfRouteTool(router=router), question="echo?")
    tool = ConfRouteTool(router=router)
    for text in (failed.model_dump_json(), echoed.model_dump_json(), repr(tool), str(tool)):
        assert SECRET not in text
    assert "**********" in echoed.content


# -- LlamaIndex --------------------------------------------------------------------------


def test_llamaindex_schema_and_metadata(router: ConfRouter) -> None:
    tool = confroute_tool(router)
    assert isinstance(tool, ConfRouteQueryTool)
    parameters = tool.metadata.get_parameters_dict()
    assert parameters["required"] == ["question"]
    assert set(parameters["properties"]) == {"question", "context"}
    assert tool.metadata.get_name() == "confroute"
    assert "only" in confroute_tool(router, mode="local").metadata.description


def test_llamaindex_output_content_is_the_answer_raw_output_the_decision(
    router: ConfRouter,
) -> None:
    output = confroute_tool(router).call(question="unsure?", context="some text")
    assert isinstance(output, ToolOutput)
    assert output.content == "strong answer"
    assert set(output.raw_output) == DECISION_KEYS
    assert output.raw_output["escalated"] is True
    assert output.raw_input == {"question": "unsure?", "context": "some text"}
    assert confroute_tool(router).call("sure?").content == "391"  # the question positionally


async def test_llamaindex_async_local_mode(router: ConfRouter, provider: ScriptedProvider) -> None:
    output = await confroute_tool(router, mode="local").acall(question="unsure?")
    assert output.content == "maybe 12"
    assert (output.raw_output["would_escalate"], output.raw_output["escalated"]) == (True, False)
    assert provider.calls == []


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {"question": "  "}, "blank"),
        ((), {}, "question"),
        ((), {"question": "sure?", "colour": "red"}, "colour"),
        (("a", "b"), {}, "positional"),
    ],
)
def test_llamaindex_bad_arguments(
    router: ConfRouter, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        confroute_tool(router).call(*args, **kwargs)


def test_llamaindex_bad_mode_is_refused(router: ConfRouter) -> None:
    with pytest.raises(ConfigurationError, match="mode"):
        confroute_tool(router, mode="remote")


def test_llamaindex_results_never_hold_the_key(
    router: ConfRouter, provider: ScriptedProvider
) -> None:
    provider.answers = [RuntimeError(f"401 Unauthorized: invalid api key {SECRET}")]
    failed = confroute_tool(router).call(question="unsure?")
    echoed = confroute_tool(router).call(question="echo?")
    assert failed.raw_output["error"]
    for output in (failed, echoed):
        assert SECRET not in output.model_dump_json()
        assert SECRET not in json.dumps(output.raw_output)


async def test_function_agent_calls_the_tool_and_gets_the_decision(
    router: ConfRouter, slm: RecordingSLM
) -> None:
    """A FunctionAgent on a scripted ConfRouteLLM calls the tool; its event has the decision."""
    agent_slm = LastMessageSLM(
        script={
            "What is 17*23?": (
                '<tool_call>{"name": "confroute", "arguments": {"question": "sure?"}}</tool_call>',
                SURE,
            )
        },
        default=("The answer is 391.", SURE),
    )
    llm = ConfRouteLLM(local_model=agent_slm, strong_model=None, max_tokens=48)
    agent = FunctionAgent(tools=[confroute_tool(router)], llm=llm)
    handler = agent.run(user_msg="What is 17*23?", max_iterations=3)
    results = [e async for e in handler.stream_events() if isinstance(e, ToolCallResult)]
    answer = await handler
    [result] = results
    assert result.tool_name == "confroute" and result.tool_kwargs == {"question": "sure?"}
    assert result.tool_output.content == "391"
    assert result.tool_output.raw_output["reason"] == "confident"
    assert "391" in str(answer)
