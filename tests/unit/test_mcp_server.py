"""``confroute mcp``'s server, in process, through the SDK's own client (scripted models)."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import pytest
from mcp import Client
from mcp.types import CallToolResult, TextContent

from confroute import ConfRouter, LocalModel
from confroute.cli import _parser
from confroute.errors import ConfigurationError, InvalidRequestError
from confroute.hooks import ScoredAnswer
from confroute.mcp_server import AskResult, ScoreResult, build_server, mode_for
from tests.fakes import ScriptedLocalModel, ScriptedProvider

SURE = (0.99, 0.98, 0.97)
UNSURE = (0.2, 0.3, 0.4)
SECRET = "sk-mcp-SECRET-41d2e8"


class LeakyScoringRouter(ConfRouter):
    """A scripted router whose ``score`` fails with the key in its message (to test masking)."""

    def score(self, prompt: Any, answer: str, *, tools: Any = None) -> ScoredAnswer:
        raise InvalidRequestError(f"cannot score with key {SECRET}")


@pytest.fixture
def router(provider: ScriptedProvider) -> ConfRouter:
    slm = ScriptedLocalModel(script={"sure?": ("391", SURE), "unsure?": ("maybe 12", UNSURE)})
    return LeakyScoringRouter(slm, "scripted/strong", api_key=SECRET, max_retries=0)


async def call(router: ConfRouter, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    async with Client(build_server(router)) as client:
        return await client.call_tool(tool, arguments)


def text_of(result: CallToolResult) -> str:
    [block] = result.content
    assert isinstance(block, TextContent)
    return block.text


async def test_lists_ask_and_score_with_their_schemas(router: ConfRouter) -> None:
    async with Client(build_server(router)) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == {"ask", "score"}
    ask, score = tools["ask"], tools["score"]
    assert ask.input_schema["required"] == ["question"]
    assert set(ask.input_schema["properties"]) == {"question", "context", "max_escalation"}
    assert score.input_schema["required"] == ["question", "answer"]
    assert ask.output_schema is not None and score.output_schema is not None
    assert set(ask.output_schema["properties"]) == set(AskResult.model_fields)
    assert set(score.output_schema["properties"]) == set(ScoreResult.model_fields)
    assert ask.description and "escalat" in ask.description


async def test_ask_routes_and_returns_the_decision(
    router: ConfRouter, provider: ScriptedProvider
) -> None:
    sure = await call(router, "ask", {"question": "sure?"})
    assert not sure.is_error and text_of(sure) == "391"
    decision = AskResult.model_validate(sure.structured_content)
    assert (decision.answer, decision.escalated, decision.reason) == ("391", False, "confident")
    unsure = await call(router, "ask", {"question": "unsure?", "context": "numbers"})
    assert text_of(unsure) == "strong answer"
    assert unsure.structured_content is not None
    assert unsure.structured_content["escalated"] is True
    assert unsure.structured_content["answered_by"] == "scripted/strong"
    [request] = provider.calls
    assert request["messages"][0]["content"].endswith("numbers")  # the context, as system text


@pytest.mark.parametrize("max_escalation", [False, "never", "local"])
async def test_ask_kept_local_reports_that_it_would_escalate(
    router: ConfRouter, provider: ScriptedProvider, max_escalation: Any
) -> None:
    result = await call(router, "ask", {"question": "unsure?", "max_escalation": max_escalation})
    assert text_of(result) == "maybe 12"
    assert result.structured_content is not None
    assert result.structured_content["mode"] == "local"
    assert result.structured_content["would_escalate"] is True
    assert result.structured_content["escalated"] is False
    assert provider.calls == []


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"question": "   "}, "question must be a non-empty string"),
        ({"question": "sure?", "max_escalation": "sometimes"}, "max_escalation"),
        ({"context": "no question"}, "question"),
    ],
)
async def test_ask_errors_come_back_as_tool_errors(
    router: ConfRouter, arguments: dict[str, Any], expected: str
) -> None:
    result = await call(router, "ask", arguments)
    assert result.is_error
    assert expected in text_of(result)


async def test_score_gives_the_local_models_confidence(tiny_lm: LocalModel) -> None:
    """The real ConfRouter.score (teacher-forced) on the tiny real model."""
    router = ConfRouter(tiny_lm, None, max_new_tokens=8)
    result = await call(
        router, "score", {"question": "What is 2+2?", "answer": "4", "context": "x"}
    )
    assert not result.is_error, result.content
    scored = ScoreResult.model_validate(result.structured_content)
    assert scored.confidence is not None and 0.0 <= scored.confidence <= 1.0
    assert scored.estimator == "perplexity" and scored.local_model == tiny_lm.name
    assert scored.escalate is (scored.confidence < scored.threshold)
    assert json.loads(text_of(result)) == result.structured_content
    prompt = [
        {"role": "system", "content": "Answer the question using only this context:\nx"},
        {"role": "user", "content": "What is 2+2?"},
    ]
    expected = router.score(prompt, "4")
    assert scored.confidence == pytest.approx(expected.confidence)


async def test_score_on_a_backend_that_cannot_score_is_a_tool_error(
    provider: ScriptedProvider,
) -> None:
    router = ConfRouter(ScriptedLocalModel(), "scripted/strong")
    result = await call(router, "score", {"question": "q?", "answer": "a"})
    assert result.is_error and "cannot score a given answer" in text_of(result)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"question": "17*23?", "answer": " "}, "answer must be a non-empty string"),
        ({"question": "", "answer": "391"}, "question must be a non-empty string"),
    ],
)
async def test_score_refuses_blank_input(
    router: ConfRouter, arguments: dict[str, Any], expected: str
) -> None:
    result = await call(router, "score", arguments)
    assert result.is_error and expected in text_of(result)


async def test_no_result_or_log_holds_the_key(
    router: ConfRouter, provider: ScriptedProvider, caplog: pytest.LogCaptureFixture
) -> None:
    provider.answers = [RuntimeError(f"401 Unauthorized: invalid api key {SECRET}")]
    caplog.set_level(logging.DEBUG)
    failed = await call(router, "ask", {"question": "unsure?"})
    raised = await call(router, "score", {"question": "q?", "answer": "anything"})
    assert failed.structured_content is not None and failed.structured_content["error"]
    assert raised.is_error and "cannot score" in text_of(raised)
    for result in (failed, raised):
        assert SECRET not in result.model_dump_json()
    assert SECRET not in caplog.text
    assert "**********" in text_of(raised)


def test_max_escalation_values() -> None:
    assert [mode_for(v) for v in (True, "strong", False, "never", "local")] == [
        "route",
        "route",
        "local",
        "local",
        "local",
    ]
    with pytest.raises(ConfigurationError, match="max_escalation"):
        mode_for("cloud")  # type: ignore[arg-type]


def test_cli_parses_the_mcp_command() -> None:
    args = _parser().parse_args(["mcp", "--slm", "qwen2.5-coder-0.5b-instruct", "--strong", "none"])
    assert (args.command, args.transport, args.llm, args.host) == (
        "mcp",
        "stdio",
        "none",
        "127.0.0.1",
    )
    http = _parser().parse_args(
        ["mcp", "--transport", "streamable-http", "--port", "9123", "--slm-backend", "llama.cpp"]
    )
    assert (http.transport, http.port, http.slm_backend) == ("streamable-http", 9123, "llama.cpp")


def test_without_the_sdk_the_error_says_what_to_install(
    router: ConfRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mcp.server.mcpserver", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'confroute\[mcp\]'"):
        build_server(router)
