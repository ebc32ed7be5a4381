"""Property test (issue 19, "Done when"): whatever goes in, one decision or a ConfRouteError.

Random message lists (odd roles, content strings with lone surrogates, blanks, huge text,
content parts, ``tool_calls`` of odd shapes), tool lists, per-call settings and local answers
(tool-call text among them) go through :meth:`ConfRouter.route` and
:meth:`ChatConfRoute.invoke`. Each call either answers with exactly one decision reported to a
hook, or raises a :class:`~confroute.errors.ConfRouteError`: a refusal
(``InvalidRequestError`` / ``ConfigurationError``) before any decision, any other one (an
``EscalationError``, a local-only ``ContextOverflowError``) with the decision of the work it
did. Never another exception type, never a hang (the deadline).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from confroute import ConfRouter, RoutingDecision
from confroute.errors import (
    ConfigurationError,
    ConfRouteError,
    ContextOverflowError,
    InvalidRequestError,
)
from langchain_confroute import ChatConfRoute
from tests.fakes import ScriptedLocalModel, ScriptedProvider, install_scripted_provider

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

PROPERTY = settings(
    max_examples=60,
    deadline=timedelta(seconds=20),
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- strategies --------------------------------------------------------------------------------

_odd_text = st.sampled_from(
    [
        "",
        "   ",
        "\n\t ",
        "sure?",
        "x \ud800",
        "\udfff",
        "a\x00b",
        "yes no maybe " * 400,  # longer than the scripted model's context window
        "\u202e\ufeff\U0001f600",
    ]
)
_text = st.one_of(st.text(max_size=20), _odd_text)
_deep = st.integers(min_value=1, max_value=3).map(lambda n: "[" * (10**n))
_part = st.one_of(
    _text,
    st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(_text, st.integers())}),
    st.fixed_dictionaries({"type": st.just("text"), "text": st.lists(_text, max_size=2)}),
    st.fixed_dictionaries({"type": st.just("text")}),
    st.just({"type": "image_url", "image_url": {"url": "x"}}),
    st.lists(_text, max_size=2),
    st.none(),
)
_content = st.one_of(_text, st.none(), st.integers(), st.lists(_part, max_size=3))
_arguments = st.one_of(
    st.just('{"a": 1}'),
    st.just('{"a": NaN}'),
    _deep,
    st.just({"a": 1}),
    st.just({"a": float("nan")}),
    st.just([1, 2]),
    st.integers(),
    st.none(),
)
_call = st.one_of(
    st.fixed_dictionaries(
        {
            "id": st.one_of(st.just("c1"), st.none(), st.integers()),
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {"name": st.one_of(st.just("f"), _text, st.none()), "arguments": _arguments}
            ),
        }
    ),
    st.fixed_dictionaries({"function": st.one_of(_text, st.integers(), st.none())}),
    _text,
    st.integers(),
)
_tool_calls = st.one_of(
    st.none(), st.lists(_call, max_size=2), _text, st.integers(), st.just({"function": {}})
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "user", "system", "assistant", "tool", "wizard", None, 3])},
    optional={
        "content": _content,
        "tool_calls": _tool_calls,
        "tool_call_id": st.one_of(st.just("c1"), _text, st.integers(), st.none()),
        "name": st.one_of(_text, st.integers(), st.none()),
    },
)
_plain_message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "user", "system", "assistant"]),
        "content": st.one_of(st.text(min_size=1, max_size=20), st.just("sure?")),
    }
)
_history_call = st.fixed_dictionaries(
    {
        "id": st.just("c1"),
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": st.just("f"), "arguments": _arguments}),
    }
)
_agent_turns = st.tuples(_history_call, _text).map(
    lambda turn: [
        {"role": "user", "content": "use f"},
        {"role": "assistant", "content": "", "tool_calls": [turn[0]]},
        {"role": "tool", "content": turn[1], "tool_call_id": "c1"},
    ]
)
_good_prompt = st.one_of(
    st.text(min_size=1, max_size=20),
    st.lists(_plain_message, max_size=3).map(lambda ms: [*ms, {"role": "user", "content": "q"}]),
    _agent_turns,
)
_odd_prompt = st.one_of(
    _text,
    st.lists(_message, min_size=1, max_size=4),
    st.lists(_message, max_size=4).map(lambda ms: [*ms, {"role": "user", "content": "sure?"}]),
    st.none(),
    st.integers(),
)
_prompt = st.one_of(_good_prompt, _good_prompt, _odd_prompt)
_tools = st.one_of(
    st.none(),
    st.just(TOOLS),
    st.sampled_from(
        [[], "f", 5, [1], [{"type": "function", "function": {"name": "\ud800"}}], TOOLS]
    ),
)
_odd_settings = st.fixed_dictionaries(
    {},
    optional={
        "max_new_tokens": st.one_of(
            st.none(),
            st.integers(min_value=-2, max_value=64),
            st.sampled_from([1.5, 10**12, 1e12, "64", True]),
        ),
        "temperature": st.one_of(
            st.none(),
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from(["hot", -1, 0, 0.7, False]),
        ),
        "stop": st.one_of(
            st.none(), st.sampled_from(["", [""], ["END"], "END", 123, [1], b"END", [], ["x", ""]])
        ),
    },
)
_valid_settings = st.fixed_dictionaries(
    {},
    optional={
        "max_new_tokens": st.one_of(st.none(), st.integers(min_value=1, max_value=64)),
        "temperature": st.one_of(st.none(), st.floats(min_value=0, max_value=2)),
        "stop": st.sampled_from([None, ["END"], "END", ()]),
    },
)
_call_settings = st.one_of(_valid_settings, _valid_settings, _odd_settings)
_answer = st.one_of(
    st.sampled_from(
        [
            "391",
            "",
            '<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>',
            '<tool_call>{"name": ["f"], "arguments": {}}</tool_call>',
            '{"name": ["f"], "arguments": {}}',
            '<tool_call>{"name": "f", "arguments": {"a": NaN}}</tool_call>',
            '{"name": "f", "arguments": {"a": Infinity}}',
            "<tool_call>" + "[" * 50_000,
            '{"name": "f", "arguments": ' + "[" * 50_000,
            '<tool_call>{"name": "f", "arguments": {"a": 1' + "0" * 5000 + "}}</tool_call>",
            '<tool_call>{"name": "g", "arguments": {}}</tool_call>',
        ]
    ),
    st.text(max_size=20),
)
_confidence = st.sampled_from([(0.99, 0.98, 0.97), (0.2, 0.3, 0.4)])


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slm() -> ScriptedLocalModel:
    return ScriptedLocalModel()


@pytest.fixture(scope="module")
def provider() -> Iterator[ScriptedProvider]:
    behaviour = ScriptedProvider()
    remove = install_scripted_provider(behaviour)
    yield behaviour
    remove()


def _router(
    slm: ScriptedLocalModel, local_only: bool, on_error: str
) -> tuple[ConfRouter, list[RoutingDecision]]:
    seen: list[RoutingDecision] = []
    router = ConfRouter(
        slm,
        None if local_only else "scripted/strong",
        threshold=0.5,
        max_retries=0,
        on_escalation_error=on_error,
        hooks=[seen.append],
    )
    return router, seen


def _script(
    slm: ScriptedLocalModel,
    provider: ScriptedProvider,
    answer: str,
    confidence: Any,
    strong_fails: bool,
) -> None:
    slm.default = (answer, confidence)
    provider.answers = [RuntimeError("strong model down")] if strong_fails else []


def _check_refusal_or_failure(error: ConfRouteError, seen: list[RoutingDecision]) -> None:
    event(f"raised {type(error).__name__}: {str(error)[:40]}")
    if isinstance(error, ContextOverflowError):  # local only: the decision, then the error
        assert [d.reason for d in seen] == ["context_overflow"]
    elif isinstance(error, (InvalidRequestError, ConfigurationError)):
        assert seen == [], f"refused with {error!r} after deciding {seen}"
    else:
        assert len(seen) == 1, f"{error!r} reported {len(seen)} decisions"


# -- the properties ----------------------------------------------------------------------------


@PROPERTY
@given(
    prompt=_prompt,
    tools=_tools,
    options=_call_settings,
    answer=_answer,
    confidence=_confidence,
    local_only=st.booleans(),
    on_error=st.sampled_from(["return_local", "raise"]),
    strong_fails=st.booleans(),
)
def test_route_answers_with_one_decision_or_raises_a_confroute_error(
    slm: ScriptedLocalModel,
    provider: ScriptedProvider,
    prompt: Any,
    tools: Any,
    options: dict[str, Any],
    answer: str,
    confidence: Any,
    local_only: bool,
    on_error: str,
    strong_fails: bool,
) -> None:
    _script(slm, provider, answer, confidence, strong_fails)
    router, seen = _router(slm, local_only, on_error)
    try:
        response = router.route(prompt, tools=tools, **options)
    except ConfRouteError as error:
        _check_refusal_or_failure(error, seen)
        return
    event(f"answered: {response.decision.reason}")
    assert seen == [response.decision]
    assert isinstance(response.text, str)
    if local_only:
        assert not response.decision.escalated


_LANGCHAIN_ROLES = {
    "user": HumanMessage,
    "system": SystemMessage,
    "assistant": AIMessage,
}


def _langchain_message(role: str, content: Any, call_arguments: Any) -> BaseMessage:
    if role == "tool":
        return ToolMessage(content=content, tool_call_id="c1")
    if role == "assistant" and call_arguments is not None:
        call = {"name": "f", "args": call_arguments, "id": "c1"}
        return AIMessage(content=content, tool_calls=[call])
    message: BaseMessage = _LANGCHAIN_ROLES[role](content=content)
    return message


_lc_content = st.one_of(
    _text,
    st.lists(
        st.one_of(
            _text,
            st.fixed_dictionaries({"type": st.just("text"), "text": _text}),
            st.fixed_dictionaries({"type": st.just("text"), "text": st.lists(_text, max_size=2)}),
            st.just({"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/x.png"}}),
        ),
        max_size=3,
    ),
)
_lc_message = st.builds(
    _langchain_message,
    role=st.sampled_from(["user", "user", "system", "assistant", "tool"]),
    content=_lc_content,
    call_arguments=st.one_of(
        st.none(), st.just({"a": 1}), st.just({"a": float("nan")}), st.just({"a": [[["x"]]]})
    ),
)
_lc_input = st.one_of(
    _text,
    st.just("sure?"),
    st.lists(_lc_message, min_size=1, max_size=4),
    st.lists(_lc_message, max_size=3).map(lambda ms: [*ms, HumanMessage("q")]),
)
_lc_odd_options = st.fixed_dictionaries(
    {},
    optional={
        "max_tokens": st.one_of(
            st.integers(min_value=-1, max_value=64), st.sampled_from([1.5, 10**12])
        ),
        "temperature": st.one_of(st.floats(allow_nan=True), st.sampled_from(["hot", 0.3])),
        "stop": st.sampled_from([None, "", [""], ["END"], "END", 123]),
    },
)
_lc_options: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.just({}),
    st.fixed_dictionaries({}, optional={"max_tokens": st.integers(1, 64)}),
    _lc_odd_options,
)


@PROPERTY
@given(
    messages=_lc_input,
    options=_lc_options,
    bind_tools=st.booleans(),
    answer=_answer,
    confidence=_confidence,
    local_only=st.booleans(),
    on_error=st.sampled_from(["return_local", "raise"]),
    strong_fails=st.booleans(),
)
def test_chat_model_invoke_answers_with_one_decision_or_raises_a_confroute_error(
    slm: ScriptedLocalModel,
    provider: ScriptedProvider,
    messages: Any,
    options: dict[str, Any],
    bind_tools: bool,
    answer: str,
    confidence: Any,
    local_only: bool,
    on_error: str,
    strong_fails: bool,
) -> None:
    _script(slm, provider, answer, confidence, strong_fails)
    router, seen = _router(slm, local_only, on_error)
    model: Any = ChatConfRoute(router=router)
    if bind_tools:
        model = model.bind_tools(TOOLS)
    try:
        message = model.invoke(messages, **options)
    except ConfRouteError as error:
        _check_refusal_or_failure(error, seen)
        return
    assert len(seen) == 1
    event(f"answered: {seen[0].reason}")
    assert message.response_metadata["confroute"] == seen[0].model_dump(mode="json")
