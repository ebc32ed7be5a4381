"""Bad input, round two (issue 19 items 5, 7 and 8): each is a named escalation or a refusal.

Item 5: tool-call text the local model writes never crashes a request; what cannot be used is a
malformed call (escalated as ``malformed_tool_call``). Item 7: messages and per-call settings
the library cannot use are an ``InvalidRequestError`` / ``ConfigurationError`` naming what to
fix, raised before any work at every entry point. Item 8: settings that would silently give a
wrong answer (``stop=[""]``, ``max_new_tokens=0``, ``max_tokens=1.5``, an absurd cap, a blank
conversation) are refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from llama_index.core.base.llms.types import ChatMessage, MessageRole

from confroute import ConfRouter, RoutingDecision
from confroute.errors import ConfigurationError, InvalidRequestError
from confroute.settings import MAX_ANSWER_TOKENS
from confroute.tools import parse_tool_calls, repeated_tool_calls
from langchain_confroute import ChatConfRoute
from llamaindex_confroute import ConfRouteLLM
from tests.fakes import ScriptedLocalModel, ScriptedProvider

SURE = (0.99, 0.98, 0.97)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "f",
            "description": "A tool.",
            "parameters": {"type": "object", "properties": {"a": {"type": "number"}}},
        },
    }
]
DEEP = "[" * 100_000

# -- item 5: the local model's tool-call text -------------------------------------------------

MALFORMED_CALLS: list[tuple[str, str, str]] = [
    ("tagged-list-name", '<tool_call>{"name": ["f"], "arguments": {}}</tool_call>', "name"),
    ("tagged-dict-name", '<tool_call>{"name": {"f": 1}, "arguments": {}}</tool_call>', "name"),
    ("bare-list-name", '{"name": ["f"], "arguments": {}}', "name"),
    ("bare-list-of-list-names", '[{"name": ["f"], "arguments": {}}]', "name"),
    ("tagged-deep-brackets", f"<tool_call>{DEEP}</tool_call>", "not valid JSON"),
    ("tagged-deep-unclosed", f"<tool_call>{DEEP}", "cut off"),
    ("tagged-deep-arguments", f'<tool_call>{{"name": "f", "arguments": {DEEP}', "cut off"),
    (
        "tagged-deep-argument-string",
        '<tool_call>{"name": "f", "arguments": "' + DEEP + '"}</tool_call>',
        "arguments are not JSON",
    ),
    ("bare-deep-arguments", f'{{"name": "f", "arguments": {DEEP}', "bare tool call"),
    ("tagged-nan", '<tool_call>{"name": "f", "arguments": {"a": NaN}}</tool_call>', "JSON"),
    ("tagged-inf", '<tool_call>{"name": "f", "arguments": {"a": -Infinity}}</tool_call>', "JSON"),
    ("tagged-overflow", '<tool_call>{"name": "f", "arguments": {"a": 1e400}}</tool_call>', "JSON"),
    (
        "tagged-huge-integer",
        '<tool_call>{"name": "f", "arguments": {"a": 1' + "0" * 5000 + "}}</tool_call>",
        "JSON",
    ),
    (
        "tagged-nan-in-string",
        '<tool_call>{"name": "f", "arguments": "{\\"a\\": NaN}"}</tool_call>',
        "arguments are not JSON",
    ),
    ("bare-nan", '{"name": "f", "arguments": {"a": NaN}}', "bare tool call"),
    ("fenced-nan", '```json\n{"name": "f", "arguments": {"a": Infinity}}\n```', "bare tool call"),
]


@pytest.mark.parametrize(
    ("text", "reason"), [c[1:] for c in MALFORMED_CALLS], ids=[c[0] for c in MALFORMED_CALLS]
)
def test_unusable_tool_call_text_is_malformed_not_a_crash(text: str, reason: str) -> None:
    parsed = parse_tool_calls(text, TOOLS)
    assert reason in parsed.malformed
    assert parsed.calls == [] and parsed.content == text


@pytest.mark.parametrize(
    "text", [DEEP, "[" * 5000 + "]" * 5000, '{"result": NaN}', '{"n": 1' + "0" * 5000 + "}"]
)
def test_json_that_is_no_call_stays_plain_text(text: str) -> None:
    parsed = parse_tool_calls(text, TOOLS)
    assert (parsed.calls, parsed.content, parsed.malformed) == ([], text, "")


def test_finite_and_moderately_nested_arguments_are_still_calls() -> None:
    nested = '{"x": ' * 200 + "1" + "}" * 200
    parsed = parse_tool_calls(
        f'<tool_call>{{"name": "f", "arguments": {nested}}}</tool_call>', TOOLS
    )
    assert parsed.malformed == "" and len(parsed.calls) == 1
    assert json.loads(parsed.calls[0]["function"]["arguments"]) == json.loads(nested)
    bare = parse_tool_calls('{"name": "f", "arguments": {"a": 1.5e300}}', TOOLS)
    assert bare.calls[0]["function"]["arguments"] == '{"a": 1.5e+300}'


def test_unusable_history_arguments_are_no_repeat() -> None:
    new = {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    for arguments in (DEEP, '{"a": 1' + "0" * 5000 + "}"):
        made = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
        conversation: list[dict[str, Any]] = [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "", "tool_calls": [made]},
            {"role": "tool", "content": "42", "tool_call_id": "c1"},
        ]
        assert repeated_tool_calls([new], conversation) == []


@pytest.fixture(scope="module")
def slm() -> ScriptedLocalModel:
    script = {f"call {label}": (text, SURE) for label, text, _ in MALFORMED_CALLS}
    return ScriptedLocalModel(script={"sure?": ("391", SURE), **script})


def make_router(
    slm: ScriptedLocalModel, strong: str | None = "scripted/strong", **kwargs: Any
) -> tuple[ConfRouter, list[RoutingDecision]]:
    seen: list[RoutingDecision] = []
    options: dict[str, Any] = {"threshold": 0.5, "max_retries": 0, **kwargs}
    return ConfRouter(slm, strong, hooks=[seen.append], **options), seen


@pytest.mark.parametrize("label", [c[0] for c in MALFORMED_CALLS])
def test_a_malformed_local_call_escalates(
    slm: ScriptedLocalModel, provider: ScriptedProvider, label: str
) -> None:
    router, seen = make_router(slm)
    response = router.route(f"call {label}", tools=TOOLS)
    assert response.decision.reason == "malformed_tool_call" and response.decision.escalated
    assert response.text == "strong answer"
    assert seen == [response.decision] and len(provider.calls) == 1


# -- item 7 and 8: refused before any work, at every entry point ------------------------------

_HISTORY = [{"role": "user", "content": "hi"}]
BAD_MESSAGES: list[tuple[str, Any, str]] = [
    ("lone-surrogate", "x \ud800", "lone surrogate"),
    ("lone-surrogate-in-list", [{"role": "user", "content": "x \udfff y"}], "lone surrogate"),
    (
        "lone-surrogate-in-part",
        [{"role": "user", "content": [{"type": "text", "text": "a\ud800"}]}],
        "lone surrogate",
    ),
    (
        "tool-calls-a-string",
        [*_HISTORY, {"role": "assistant", "content": "", "tool_calls": "zz"}, *_HISTORY],
        "tool_calls of type str",
    ),
    (
        "tool-calls-a-dict",
        [*_HISTORY, {"role": "assistant", "tool_calls": {"function": {}}}, *_HISTORY],
        "tool_calls of type dict",
    ),
    (
        "tool-calls-of-numbers",
        [*_HISTORY, {"role": "assistant", "content": "", "tool_calls": [1, 2]}, *_HISTORY],
        "tool call 0 is not a tool call",
    ),
    (
        "tool-call-without-name",
        [*_HISTORY, {"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}],
        "tool call 0 is not a tool call",
    ),
    (
        "tool-call-arguments-a-list",
        [
            *_HISTORY,
            {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": [1]}}]},
        ],
        "arguments of type list",
    ),
    (
        "tool-call-deep-arguments",
        [
            *_HISTORY,
            {
                "role": "assistant",
                "tool_calls": [
                    {"function": {"name": "f", "arguments": json.loads("[" * 900 + "]" * 900)}}
                ],
            },
        ],
        "arguments of type list",
    ),
    (
        "deep-text-part",
        [{"role": "user", "content": [{"type": "text", "text": [[["x"]]]}]}],
        "text part",
    ),
    ("nested-part-lists", [{"role": "user", "content": [[[["x"]]]]}], "type 'list'"),
    ("role-a-list", [{"role": ["user"], "content": "hi"}], "role"),
    ("name-a-number", [{"role": "user", "content": "hi", "name": 5}], "name of type int"),
    ("blank-user-content", [{"role": "user", "content": " \n\t "}], "blank"),
    (
        "blank-user-contents",
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": ""}],
        "blank",
    ),
    ("blank-text-parts", [{"role": "user", "content": [{"type": "text", "text": "  "}]}], "blank"),
    ("user-content-none", [{"role": "user", "content": None}], "blank"),
]


def _deep_dict(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


BAD_MESSAGES.append(
    (
        "tool-call-arguments-too-deep",
        [
            *_HISTORY,
            {
                "role": "assistant",
                "tool_calls": [{"function": {"name": "f", "arguments": _deep_dict(50_000)}}],
            },
        ],
        "not plain JSON",
    )
)

BAD_SETTINGS: list[tuple[str, dict[str, Any], str]] = [
    ("temperature-text", {"temperature": "hot"}, "temperature must be a finite number"),
    ("temperature-negative", {"temperature": -0.5}, "temperature must be a finite number"),
    ("temperature-nan", {"temperature": float("nan")}, "temperature must be a finite number"),
    ("temperature-bool", {"temperature": True}, "temperature must be a finite number"),
    ("stop-a-number", {"stop": 123}, "stop must be a string or a list of strings"),
    ("stop-bytes", {"stop": b"END"}, "stop must be a string or a list of strings"),
    ("stop-of-numbers", {"stop": ["a", 1]}, "stop must be a string or a list of strings"),
    ("stop-empty-string", {"stop": [""]}, "empty string"),
    ("stop-an-empty-string", {"stop": ""}, "empty string"),
    ("max-new-tokens-zero", {"max_new_tokens": 0}, "max_new_tokens must be an integer"),
    ("max-new-tokens-negative", {"max_new_tokens": -4}, "max_new_tokens must be an integer"),
    ("max-new-tokens-fraction", {"max_new_tokens": 1.5}, "max_new_tokens must be an integer"),
    ("max-new-tokens-float", {"max_new_tokens": 1e12}, "max_new_tokens must be an integer"),
    ("max-new-tokens-text", {"max_new_tokens": "64"}, "max_new_tokens must be an integer"),
    ("max-new-tokens-huge", {"max_new_tokens": 10**12}, f"at most {MAX_ANSWER_TOKENS} tokens"),
    ("tools-a-number", {"tools": 5}, "tools must be a list"),
    (
        "tools-surrogate",
        {"tools": [{"type": "function", "function": {"name": "\ud800"}}]},
        "plain JSON",
    ),
    (
        "tools-nan",
        {"tools": [{"type": "function", "function": {"name": "f", "x": float("nan")}}]},
        "plain JSON",
    ),
]


def _core_call(router: ConfRouter, mode: str) -> Callable[..., Any]:
    async def run(prompt: Any, **options: Any) -> Any:
        if mode == "route":
            return router.route(prompt, **options)
        if mode == "aroute":
            return await router.aroute(prompt, **options)
        if mode == "route_batch":
            return router.route_batch(["sure?", prompt], **options)
        if mode == "stream":
            return list(router.stream(prompt, **options))
        return [chunk async for chunk in router.astream(prompt, **options)]

    return run


CORE_MODES = ["route", "aroute", "route_batch", "stream", "astream"]


@pytest.mark.parametrize(
    ("prompt", "match"), [b[1:] for b in BAD_MESSAGES], ids=[b[0] for b in BAD_MESSAGES]
)
@pytest.mark.parametrize("mode", CORE_MODES)
async def test_bad_messages_are_refused_before_any_work(
    slm: ScriptedLocalModel, provider: ScriptedProvider, mode: str, prompt: Any, match: str
) -> None:
    router, seen = make_router(slm)
    generations = len(slm.calls)
    with pytest.raises(InvalidRequestError, match=match):
        await _core_call(router, mode)(prompt)
    assert seen == [] and provider.calls == [] and len(slm.calls) == generations


@pytest.mark.parametrize(
    ("options", "match"), [b[1:] for b in BAD_SETTINGS], ids=[b[0] for b in BAD_SETTINGS]
)
@pytest.mark.parametrize("mode", CORE_MODES)
async def test_bad_call_settings_are_refused_before_any_work(
    slm: ScriptedLocalModel,
    provider: ScriptedProvider,
    mode: str,
    options: dict[str, Any],
    match: str,
) -> None:
    router, seen = make_router(slm)
    generations = len(slm.calls)
    with pytest.raises(ConfigurationError, match=match):
        await _core_call(router, mode)("sure?", **options)
    assert seen == [] and provider.calls == [] and len(slm.calls) == generations


def test_bad_settings_are_refused_in_local_only_mode(slm: ScriptedLocalModel) -> None:
    router, seen = make_router(slm, None)
    for _, options, match in BAD_SETTINGS:
        with pytest.raises(ConfigurationError, match=match):
            router.route("sure?", **options)
    assert seen == []


def test_the_router_setting_has_the_same_cap(slm: ScriptedLocalModel) -> None:
    with pytest.raises(
        ConfigurationError,
        match=f"max_new_tokens must be an integer in \\[1, {MAX_ANSWER_TOKENS}\\]",
    ):
        ConfRouter(slm, None, max_new_tokens=MAX_ANSWER_TOKENS + 1)
    assert (
        ConfRouter(slm, None, max_new_tokens=MAX_ANSWER_TOKENS).defaults.max_new_tokens
        == MAX_ANSWER_TOKENS
    )


def test_none_keeps_the_defaults_and_valid_overrides_reach_both_models(
    slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    router, _ = make_router(slm, threshold=1.0, max_new_tokens=40, temperature=0.2)
    assert router.generation_config(None, None, None) == router.defaults
    router.route("sure?", max_new_tokens=None, temperature=None, stop=None)
    assert provider.calls[-1]["optional_params"]["max_tokens"] == 40
    router.route("sure?", max_new_tokens=1, temperature=0, stop="END")
    sent = provider.calls[-1]["optional_params"]
    assert sent["max_tokens"] == 1 and sent["stop"] == ["END"]
    config = router.generation_config(MAX_ANSWER_TOKENS, 1, ("a", "b"))
    assert (config.max_new_tokens, config.temperature, config.stop) == (
        MAX_ANSWER_TOKENS,
        1.0,
        ("a", "b"),
    )


def test_a_tool_result_is_enough_when_the_user_message_is_blank(slm: ScriptedLocalModel) -> None:
    router, seen = make_router(slm, None)
    conversation = [
        {"role": "user", "content": " "},
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
        {"role": "user", "content": "sure?"},
    ]
    assert router.route(conversation).text == "391" and len(seen) == 1


# -- the adapters ---------------------------------------------------------------------------------


@pytest.fixture
def chat(
    slm: ScriptedLocalModel, provider: ScriptedProvider
) -> Iterator[tuple[ChatConfRoute, list[Any]]]:
    router, seen = make_router(slm)
    yield ChatConfRoute(router=router), seen


LANGCHAIN_BAD: list[tuple[str, Any, dict[str, Any], type[Exception], str]] = [
    ("surrogate", "x \ud800", {}, InvalidRequestError, "lone surrogate"),
    ("blank", "   ", {}, InvalidRequestError, "blank"),
    (
        "deep-text-block",
        [HumanMessage(content=[{"type": "text", "text": [[["x"]]]}])],
        {},
        InvalidRequestError,
        "cannot be read as text",
    ),
    ("temperature-text", "sure?", {"temperature": "hot"}, ConfigurationError, "temperature"),
    ("stop-a-number", "sure?", {"stop": 123}, ConfigurationError, "stop must be"),
    ("stop-empty-string", "sure?", {"stop": [""]}, ConfigurationError, "empty string"),
    ("max-tokens-zero", "sure?", {"max_tokens": 0}, ConfigurationError, "max_new_tokens"),
    ("max-tokens-fraction", "sure?", {"max_tokens": 1.5}, ConfigurationError, "integer"),
    ("max-tokens-huge", "sure?", {"max_tokens": 10**12}, ConfigurationError, "at most"),
]


@pytest.mark.parametrize(
    ("prompt", "options", "error", "match"),
    [b[1:] for b in LANGCHAIN_BAD],
    ids=[b[0] for b in LANGCHAIN_BAD],
)
@pytest.mark.parametrize("mode", ["invoke", "stream", "ainvoke"])
async def test_chat_model_refuses_before_any_work(
    chat: tuple[ChatConfRoute, list[Any]],
    slm: ScriptedLocalModel,
    provider: ScriptedProvider,
    mode: str,
    prompt: Any,
    options: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    model, seen = chat
    generations = len(slm.calls)
    with pytest.raises(error, match=match):
        if mode == "invoke":
            model.invoke(prompt, **options)
        elif mode == "stream":
            list(model.stream(prompt, **options))
        else:
            await model.ainvoke(prompt, **options)
    assert seen == [] and provider.calls == [] and len(slm.calls) == generations


def test_chat_model_keeps_a_string_stop_whole(
    slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    model = ChatConfRoute(router=make_router(slm, threshold=1.0)[0])
    model.invoke("sure?", stop="END")  # type: ignore[arg-type]
    assert provider.calls[-1]["optional_params"]["stop"] == ["END"]


def test_chat_model_history_tool_calls_still_reach_the_models(
    chat: tuple[ChatConfRoute, list[Any]],
) -> None:
    model, seen = chat
    history = [
        HumanMessage("hi"),
        AIMessage("", tool_calls=[{"name": "f", "args": {"a": 1}, "id": "c1"}]),
        HumanMessage("sure?"),
    ]
    assert model.invoke(history).content == "391" and len(seen) == 1


@pytest.fixture
def llm(
    slm: ScriptedLocalModel, provider: ScriptedProvider
) -> Iterator[tuple[ConfRouteLLM, list[Any]]]:
    router, seen = make_router(slm)
    yield ConfRouteLLM(router=router), seen


LLAMAINDEX_BAD: list[tuple[str, str, dict[str, Any], type[Exception], str]] = [
    ("surrogate", "x \ud800", {}, InvalidRequestError, "lone surrogate"),
    ("blank", "  ", {}, InvalidRequestError, "empty"),
    ("temperature-text", "sure?", {"temperature": "hot"}, ConfigurationError, "temperature"),
    ("stop-a-number", "sure?", {"stop": 123}, ConfigurationError, "stop must be"),
    ("stop-empty-string", "sure?", {"stop": [""]}, ConfigurationError, "empty string"),
    ("max-tokens-zero", "sure?", {"max_tokens": 0}, ConfigurationError, "max_new_tokens"),
    ("max-tokens-fraction", "sure?", {"max_tokens": 1.5}, ConfigurationError, "integer"),
    ("max-tokens-huge", "sure?", {"max_tokens": 10**12}, ConfigurationError, "at most"),
]


@pytest.mark.parametrize(
    ("prompt", "options", "error", "match"),
    [b[1:] for b in LLAMAINDEX_BAD],
    ids=[b[0] for b in LLAMAINDEX_BAD],
)
@pytest.mark.parametrize("mode", ["chat", "complete", "achat"])
async def test_llamaindex_llm_refuses_before_any_work(
    llm: tuple[ConfRouteLLM, list[Any]],
    slm: ScriptedLocalModel,
    provider: ScriptedProvider,
    mode: str,
    prompt: str,
    options: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    model, seen = llm
    generations = len(slm.calls)
    with pytest.raises(error, match=match):
        if mode == "chat":
            model.chat([ChatMessage(role=MessageRole.USER, content=prompt)], **options)
        elif mode == "complete":
            model.complete(prompt, **options)
        else:
            await model.achat([ChatMessage(role=MessageRole.USER, content=prompt)], **options)
    assert seen == [] and provider.calls == [] and len(slm.calls) == generations


@pytest.mark.parametrize("calls", ["zz", {"id": "c1"}, [1]], ids=["string", "dict", "numbers"])
def test_llamaindex_tool_calls_that_are_no_list_of_calls_are_refused(
    llm: tuple[ConfRouteLLM, list[Any]], provider: ScriptedProvider, calls: Any
) -> None:
    model, seen = llm
    history = [
        ChatMessage(role=MessageRole.USER, content="hi"),
        ChatMessage(
            role=MessageRole.ASSISTANT, content="", additional_kwargs={"tool_calls": calls}
        ),
        ChatMessage(role=MessageRole.USER, content="sure?"),
    ]
    with pytest.raises(InvalidRequestError, match="tool call"):
        model.chat(history)
    assert seen == [] and provider.calls == []
