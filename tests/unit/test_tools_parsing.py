"""Tool calls in local answers: tagged, bare and fenced JSON, cut-off calls, repeated calls."""

from __future__ import annotations

import json
from typing import Any

import pytest

from confroute import ConfRouter, RoutingDecision
from confroute.tools import ParsedToolCalls, parse_tool_calls, repeated_tool_calls
from tests.fakes import ScriptedLocalModel, ScriptedProvider

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "multiply",
            "description": "Multiply two integers.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            },
        },
    },
]
SURE = (0.99,) * 3


def calls_of(parsed: ParsedToolCalls) -> list[tuple[str, dict[str, Any]]]:
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parsed.calls]


# -- parse_tool_calls ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "multiply", "arguments": {"a": 6, "b": 7}}\n</tool_call>',
        '{"name": "multiply", "arguments": {"a": 6, "b": 7}}',
        '  {"name": "multiply", "arguments": "{\\"a\\": 6, \\"b\\": 7}"}\n',
        '{"name": "multiply", "parameters": {"a": 6, "b": 7}}',
        '```json\n{"name": "multiply", "arguments": {"a": 6, "b": 7}}\n```',
        '```\n{"name": "multiply", "arguments": {"a": 6, "b": 7}}\n```',
        '[{"name": "multiply", "arguments": {"a": 6, "b": 7}}]',
    ],
    ids=["tagged", "bare", "string-arguments", "parameters", "fenced", "plain-fence", "list"],
)
def test_one_call_is_read_in_every_form(text: str) -> None:
    parsed = parse_tool_calls(text, TOOLS)
    assert calls_of(parsed) == [("multiply", {"a": 6, "b": 7})]
    assert parsed.content == ""
    assert parsed.malformed == ""
    [call] = parsed.calls
    assert call["type"] == "function"
    assert call["id"].startswith("call_") and len(call["id"]) == 29


@pytest.mark.parametrize(
    "text",
    [
        '[{"name": "multiply", "arguments": {"a": 6, "b": 7}}, '
        '{"name": "add", "arguments": {"a": 1, "b": 2}}]',
        '{"name": "multiply", "arguments": {"a": 6, "b": 7}}\n'
        '{"name": "add", "arguments": {"a": 1, "b": 2}}',
        '<tool_call>{"name": "multiply", "arguments": {"a": 6, "b": 7}}</tool_call>\n'
        '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>',
    ],
    ids=["list", "bare-lines", "tagged"],
)
def test_several_calls_are_read_in_order(text: str) -> None:
    parsed = parse_tool_calls(text, TOOLS)
    assert calls_of(parsed) == [("multiply", {"a": 6, "b": 7}), ("add", {"a": 1, "b": 2})]
    assert parsed.calls[0]["id"] != parsed.calls[1]["id"]
    assert (parsed.content, parsed.malformed) == ("", "")


def test_text_around_a_tagged_call_stays_content() -> None:
    text = 'Let me compute.\n<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'
    parsed = parse_tool_calls(text, TOOLS)
    assert calls_of(parsed) == [("add", {"a": 1, "b": 2})]
    assert parsed.content == "Let me compute."


@pytest.mark.parametrize(
    "text",
    [
        "6 times 7 is 42.",
        '{"name": "divide", "arguments": {"a": 6, "b": 7}}',  # not an offered tool
        '[{"name": "multiply", "arguments": {"a": 6}}, {"name": "divide", "arguments": {}}]',
        '{"name": "multiply", "a": 6, "b": 7}',  # data with a name, not a call shape
        '{"name": "multiply", "arguments": {"a": 6, "b": 7}}\nThe answer is 42.',
        'The call is {"name": "multiply", "arguments": {"a": 6, "b": 7}}',
        '```json\n{"name": "multiply", "arguments": {"a": 6, "b": 7}}\n```\nThat gives 42.',
        '{"name": "multiply", "arguments": [6, 7]}',
        '{"result": 42}',
        "[1, 2, 3]",
        "{not json at all",
        '```python\nprint({"name": "multiply"})\n```',
    ],
    ids=[
        "prose",
        "unknown-tool",
        "one-unknown-in-list",
        "no-arguments-key",
        "json-then-prose",
        "prose-then-json",
        "fence-then-prose",
        "list-arguments",
        "other-object",
        "number-list",
        "broken-non-call",
        "code-fence",
    ],
)
def test_anything_else_untagged_is_plain_content(text: str) -> None:
    assert parse_tool_calls(text, TOOLS) == ParsedToolCalls(content=text)


def test_bare_json_is_not_a_call_when_no_tool_is_offered() -> None:
    text = '{"name": "multiply", "arguments": {"a": 6, "b": 7}}'
    assert parse_tool_calls(text, []) == ParsedToolCalls(content=text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('<tool_call>\n{"name": "multiply", "arguments": {"a": 6, "b"', "cut off"),
        ("<tool_call>", "cut off"),
        ('<tool_call>{"name": "multiply", "arguments": {"a": 6}</tool_call>', "not valid JSON"),
        ('<tool_call>{"name": "divide", "arguments": {}}</tool_call>', "unknown tool 'divide'"),
        ('<tool_call>["multiply"]</tool_call>', "not a JSON object"),
        ('<tool_call>{"name": "add", "arguments": "{a: 1}"}</tool_call>', "arguments are not JSON"),
        ('<tool_call>{"name": "add", "arguments": [1, 2]}</tool_call>', "not an object"),
        ('{"name": "multiply", "arguments": {"a": 6, "b": ', "bare tool call"),
        ('```json\n{"name": "multiply", "arguments": {"a": 6,', "bare tool call"),
        ('[{"name": "add", "arguments": {"a": 1}}, {"name": "multiply", "argum', "bare tool call"),
    ],
    ids=[
        "tagged-cut-off",
        "tag-only",
        "tagged-bad-json",
        "tagged-unknown-tool",
        "tagged-not-object",
        "tagged-bad-argument-string",
        "tagged-list-arguments",
        "bare-cut-off",
        "fenced-cut-off",
        "second-bare-call-cut-off",
    ],
)
def test_cut_off_or_broken_calls_are_malformed(text: str, reason: str) -> None:
    parsed = parse_tool_calls(text, TOOLS)
    assert reason in parsed.malformed
    assert parsed.calls == []
    assert parsed.content == text


# -- repeated_tool_calls ---------------------------------------------------------------------


def _call(name: str, arguments: str, call_id: str = "call_1") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


QUESTION = {"role": "user", "content": "What is 6 times 7?"}
MADE = {"role": "assistant", "content": "", "tool_calls": [_call("multiply", '{"a": 6, "b": 7}')]}
ANSWERED = {"role": "tool", "content": "42", "tool_call_id": "call_1"}


@pytest.mark.parametrize(
    "arguments", ['{"a": 6, "b": 7}', '{"b": 7, "a": 6}', '{"a":6,"b":7}'], ids=str
)
def test_same_name_and_arguments_after_the_result_repeat(arguments: str) -> None:
    new = _call("multiply", arguments, "call_new")
    assert repeated_tool_calls([new], [QUESTION, MADE, ANSWERED]) == [new]


def test_a_tool_message_without_an_id_answers_the_calls_before_it() -> None:
    new = _call("multiply", '{"a": 6, "b": 7}', "call_new")
    anonymous = {"role": "tool", "content": "42"}
    assert repeated_tool_calls([new], [QUESTION, MADE, anonymous]) == [new]


@pytest.mark.parametrize(
    ("new", "conversation"),
    [
        (_call("multiply", '{"a": 6, "b": 8}'), [QUESTION, MADE, ANSWERED]),
        (_call("add", '{"a": 6, "b": 7}'), [QUESTION, MADE, ANSWERED]),
        (_call("multiply", '{"a": 6, "b": 7}'), [QUESTION, MADE]),  # not answered yet
        (
            _call("multiply", '{"a": 6, "b": 7}'),
            [QUESTION, MADE, {"role": "tool", "content": "42", "tool_call_id": "call_other"}],
        ),
        (_call("multiply", '{"a": 6, "b": 7}'), [QUESTION]),
    ],
    ids=["other-arguments", "other-tool", "unanswered", "other-id-answered", "no-history"],
)
def test_a_new_call_is_not_a_repeat(new: dict[str, Any], conversation: list[Any]) -> None:
    assert repeated_tool_calls([new], conversation) == []


def test_dict_arguments_in_the_history_compare_as_parsed_json() -> None:
    made = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "c9", "type": "function", "function": {"name": "add", "arguments": {"a": 1}}}
        ],
    }
    answered = {"role": "tool", "content": "1", "tool_call_id": "c9"}
    new = _call("add", '{"a": 1}')
    assert repeated_tool_calls([new], [QUESTION, made, answered]) == [new]


# -- the router: repeated_tool_call ----------------------------------------------------------

CALL = '<tool_call>{"name": "multiply", "arguments": {"a": 6, "b": 7}}</tool_call>'
BARE_ECHO = '{"name": "multiply", "arguments": {"b": 7, "a": 6}}'


def _router(
    slm: ScriptedLocalModel, strong: str | None = "scripted/strong"
) -> tuple[ConfRouter, list[RoutingDecision]]:
    seen: list[RoutingDecision] = []
    router = ConfRouter(slm, strong, threshold=0.5, max_retries=0, hooks=[seen.append])
    return router, seen


def _after_result(call_id: str = "call_1") -> list[dict[str, Any]]:
    made = {
        "role": "assistant",
        "content": "",
        "tool_calls": [_call("multiply", '{"a": 6, "b": 7}', call_id)],
    }
    return [QUESTION, made, {"role": "tool", "content": "42", "tool_call_id": call_id}]


@pytest.mark.parametrize("echo", [CALL, BARE_ECHO], ids=["tagged", "bare"])
@pytest.mark.parametrize("path", ["route", "aroute", "stream", "astream"])
async def test_repeating_an_answered_call_escalates(
    provider: ScriptedProvider, echo: str, path: str
) -> None:
    slm = ScriptedLocalModel(script={QUESTION["content"]: (echo, SURE)})
    router, seen = _router(slm)
    provider.default = "6 times 7 is 42."
    conversation = _after_result()
    if path == "route":
        response = router.route(conversation, tools=TOOLS)
    elif path == "aroute":
        response = await router.aroute(conversation, tools=TOOLS)
    elif path == "stream":
        chunks = list(router.stream(conversation, tools=TOOLS))
        assert "".join(c.text for c in chunks) == "6 times 7 is 42."
        response = chunks[-1].response
    else:
        chunks = [c async for c in router.astream(conversation, tools=TOOLS)]
        assert "".join(c.text for c in chunks) == "6 times 7 is 42."
        response = chunks[-1].response
    assert response is not None
    assert response.text == "6 times 7 is 42."
    assert response.tool_calls == []
    decision = response.decision
    assert (decision.escalated, decision.reason) == (True, "repeated_tool_call")
    assert decision.answered_by == "scripted/strong"
    assert seen == [decision]
    [sent] = provider.calls
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]
    assert sent["messages"][-1]["content"] == "42"
    assert [t["function"]["name"] for t in sent["optional_params"]["tools"]] == ["multiply", "add"]


async def _answer_on(router: ConfRouter, path: str) -> tuple[str, Any]:
    """(streamed text, final response) of one routed answer to ``_after_result()``."""
    conversation = _after_result()
    if path == "route":
        response = router.route(conversation, tools=TOOLS)
        return response.text, response
    if path == "aroute":
        response = await router.aroute(conversation, tools=TOOLS)
        return response.text, response
    if path == "stream":
        chunks = list(router.stream(conversation, tools=TOOLS))
    else:
        chunks = [c async for c in router.astream(conversation, tools=TOOLS)]
    return "".join(c.text for c in chunks), chunks[-1].response


STRONG_REPEAT = {"content": "", "tool_calls": [_call("multiply", '{"b": 7, "a": 6}', "call_9")]}


@pytest.mark.parametrize("path", ["route", "aroute", "stream", "astream"])
async def test_a_strong_model_repeating_the_call_is_asked_again_without_tools(
    provider: ScriptedProvider, path: str
) -> None:
    slm = ScriptedLocalModel(script={QUESTION["content"]: (CALL, SURE)})
    router, seen = _router(slm)
    provider.answers = [STRONG_REPEAT, "6 times 7 is 42."]
    streamed, response = await _answer_on(router, path)
    assert streamed == response.text == "6 times 7 is 42."
    assert response.tool_calls == []
    decision = response.decision
    assert (decision.escalated, decision.reason, decision.attempts) == (
        True,
        "repeated_tool_call",
        2,
    )
    assert decision.error is None
    assert seen == [decision]
    first, second = provider.calls
    assert "tool_choice" not in first["optional_params"]
    assert second["optional_params"]["tool_choice"] == "none"
    assert second["messages"] == first["messages"]
    assert response.remote is not None
    assert response.remote.errors == [
        "scripted/strong: RepeatedToolCallError: the answer repeats an answered tool call "
        "(multiply); asked again with tool_choice='none'"
    ]


def test_a_strong_model_that_repeats_again_is_answered_as_is(provider: ScriptedProvider) -> None:
    slm = ScriptedLocalModel(script={QUESTION["content"]: (CALL, SURE)})
    router, _seen = _router(slm)
    provider.answers = [STRONG_REPEAT, STRONG_REPEAT, "never asked"]
    response = router.route(_after_result(), tools=TOOLS)
    assert [c["function"]["name"] for c in response.tool_calls] == ["multiply"]
    assert response.decision.attempts == 2
    assert len(provider.calls) == 2


@pytest.mark.parametrize("names", [["add"], ["multiply", "add"]], ids=["new", "repeat+new"])
def test_a_new_call_from_the_strong_model_is_kept(
    provider: ScriptedProvider, names: list[str]
) -> None:
    slm = ScriptedLocalModel(script={QUESTION["content"]: (CALL, SURE)})
    router, _seen = _router(slm)
    arguments = {"multiply": '{"a": 6, "b": 7}', "add": '{"a": 42, "b": 1}'}
    calls = [_call(name, arguments[name], f"c{i}") for i, name in enumerate(names)]
    provider.answers = [{"content": "", "tool_calls": calls}]
    response = router.route(_after_result(), tools=TOOLS)
    assert [c["function"]["name"] for c in response.tool_calls] == names
    assert response.decision.attempts == 1
    assert len(provider.calls) == 1


@pytest.mark.parametrize("path", ["route", "stream"])
def test_a_new_call_after_a_result_stays_local(provider: ScriptedProvider, path: str) -> None:
    follow_up = '<tool_call>{"name": "add", "arguments": {"a": 42, "b": 1}}</tool_call>'
    slm = ScriptedLocalModel(script={QUESTION["content"]: (follow_up, SURE)})
    router, seen = _router(slm)
    conversation = _after_result()
    if path == "route":
        response = router.route(conversation, tools=TOOLS)
    else:
        response = list(router.stream(conversation, tools=TOOLS))[-1].response
        assert response is not None
    assert (response.decision.escalated, response.decision.reason) == (False, "confident")
    assert [c["function"]["name"] for c in response.tool_calls] == ["add"]
    assert json.loads(response.tool_calls[0]["function"]["arguments"]) == {"a": 42, "b": 1}
    assert seen == [response.decision]
    assert provider.calls == []


def test_the_first_call_of_a_conversation_stays_local(provider: ScriptedProvider) -> None:
    slm = ScriptedLocalModel(script={QUESTION["content"]: (BARE_ECHO, SURE)})
    router, _seen = _router(slm)
    response = router.route([QUESTION], tools=TOOLS)
    assert (response.decision.escalated, response.decision.reason) == (False, "confident")
    assert [c["function"]["name"] for c in response.tool_calls] == ["multiply"]
    assert response.text == ""
    assert provider.calls == []


def test_a_repeat_without_a_strong_model_is_reported_local_only() -> None:
    slm = ScriptedLocalModel(script={QUESTION["content"]: (CALL, SURE)})
    router, seen = _router(slm, strong=None)
    response = router.route(_after_result(), tools=TOOLS)
    assert (response.decision.escalated, response.decision.reason) == (False, "local_only")
    assert [c["function"]["name"] for c in response.tool_calls] == ["multiply"]
    assert seen == [response.decision]


def test_a_cut_off_call_escalates_as_malformed(provider: ScriptedProvider) -> None:
    cut = '<tool_call>\n{"name": "multiply", "arguments": {"a": 6, "b'
    slm = ScriptedLocalModel(script={QUESTION["content"]: (cut, SURE)})
    router, seen = _router(slm)
    response = router.route([QUESTION], tools=TOOLS)
    assert (response.decision.escalated, response.decision.reason) == (
        True,
        "malformed_tool_call",
    )
    assert response.text == "strong answer"
    assert seen == [response.decision]


def test_unusable_history_entries_are_ignored() -> None:
    odd = {
        "role": "assistant",
        "content": "",
        "tool_calls": ["call", {"function": "multiply"}, _call("multiply", "{broken")],
    }
    new = _call("multiply", '{"a": 6, "b": 7}')
    assert repeated_tool_calls([new], [QUESTION, odd, {"role": "tool", "content": "42"}]) == []
    assert repeated_tool_calls([new], [QUESTION, {**MADE, "tool_calls": "x"}, ANSWERED]) == []
