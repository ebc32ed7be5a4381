"""The tool-call estimator on scripted generations: parts located by token, combined, fallback."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from confroute import ConfRouter
from confroute.errors import ConfigurationError
from confroute.estimators import EstimationContext, Perplexity, ToolCallConfidence, get
from confroute.estimators.tool_call import call_spans
from confroute.generation import Generation, TokenAlternative
from tests.fakes import ScriptedLocalModel, ScriptedProvider

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            },
        },
    }
]
CALL_TOKENS = [
    ("<tool_call>", 0.9),
    ('\n{"name": "', 1.0),
    ("get", 0.8),
    ("_weather", 0.5),
    ('", "arguments": {"city": "', 1.0),
    ("Par", 0.6),
    ("is", 0.9),
    ('", "days": ', 1.0),
    ("3", 0.3),
    ("}}\n", 1.0),
    ("</tool_call>", 1.0),
]


def _generation(
    pieces: Sequence[tuple[str, float]], first_alternatives: Sequence[tuple[str, float]] = ()
) -> Generation:
    tops = []
    for index, (token, prob) in enumerate(pieces):
        step = [TokenAlternative(token, index, math.log(prob))]
        if index == 0:
            step += [
                TokenAlternative(t, 1000 + i, math.log(p))
                for i, (t, p) in enumerate(first_alternatives)
            ]
        tops.append(tuple(step))
    return Generation(
        text="".join(t for t, _ in pieces),
        token_ids=tuple(range(len(pieces))),
        tokens=tuple(t for t, _ in pieces),
        logprobs=tuple(math.log(p) for _, p in pieces),
        top_logprobs=tuple(tops),
        entropies=(),
        finish_reason="stop",
        prompt_tokens=5,
    )


def _context() -> EstimationContext:
    return EstimationContext(
        [{"role": "user", "content": "Weather in Paris for 3 days?"}], tools=TOOLS
    )


def test_each_part_is_the_joint_probability_of_its_tokens() -> None:
    generation = _generation(CALL_TOKENS, [("I", 0.05), ("{", 0.03)])
    context = _context()
    confidence = ToolCallConfidence("min").confidence(generation, context)
    parts = context.extras["tool_call_parts"]
    assert parts["called"] is True
    assert parts["decision"] == pytest.approx(0.9 + 0.03)  # "<tool_call>" and "{" open a call
    assert parts["name"] == pytest.approx(0.8 * 0.5)
    # a value's span takes its quotes, so the structural tokens around it (p = 1) count too
    assert parts["arguments"] == pytest.approx({"city": 0.6 * 0.9, "days": 0.3})
    assert parts["arguments_min"] == pytest.approx(0.3)
    assert confidence == pytest.approx(0.3)


def test_the_product_rule_multiplies_the_parts_and_is_the_default() -> None:
    generation = _generation(CALL_TOKENS)
    confidence = ToolCallConfidence("product").confidence(generation, _context())
    assert confidence == pytest.approx(0.9 * 0.4 * 0.54 * 0.3)
    assert ToolCallConfidence().combine == "product"  # the BFCL development split's choice
    assert ToolCallConfidence().confidence(generation, _context()) == pytest.approx(confidence)


def test_a_bare_json_call_is_scored_from_its_first_token() -> None:
    pieces = [
        ('{"', 0.7),
        ('name": "get_weather", "arguments": {"city": "', 0.95),
        ("Rome", 0.4),
        ('"}}', 1.0),
    ]
    generation = _generation(pieces, [("The", 0.2), ("```", 0.05)])
    context = _context()
    # the value's opening quote is in the token before it, which is part of the value's span
    assert ToolCallConfidence("min").confidence(generation, context) == pytest.approx(0.95 * 0.4)
    parts = context.extras["tool_call_parts"]
    assert parts["decision"] == pytest.approx(0.75)
    assert parts["name"] == pytest.approx(0.95)
    assert parts["arguments"] == pytest.approx({"city": 0.95 * 0.4})


def test_a_plain_answer_falls_back_to_perplexity_and_records_the_no_call_decision() -> None:
    generation = _generation([("It", 0.6), (" is", 0.9), (" sunny", 0.5)], [("<tool_call>", 0.3)])
    context = _context()
    confidence = ToolCallConfidence().confidence(generation, context)
    assert confidence == pytest.approx(Perplexity().confidence(generation, context))
    assert context.extras["tool_call_parts"]["called"] is False
    assert context.extras["tool_call_parts"]["decision"] == pytest.approx(0.7)


def test_without_tools_or_with_a_malformed_call_it_is_perplexity() -> None:
    generation = _generation(CALL_TOKENS)
    no_tools = EstimationContext([{"role": "user", "content": "hi"}])
    expected = Perplexity().confidence(generation, no_tools)
    assert ToolCallConfidence().confidence(generation, no_tools) == pytest.approx(expected)
    cut = _generation(CALL_TOKENS[:6])
    assert ToolCallConfidence().confidence(cut, _context()) == pytest.approx(
        Perplexity().confidence(cut, _context())
    )


def test_spans_of_several_calls_and_nested_values() -> None:
    text = (
        '<tool_call>{"name": "a", "arguments": {"x": [1, 2], "y": {"z": "q"}}}</tool_call>\n'
        '<tool_call>{"name": "b", "arguments": {}}</tool_call>'
    )
    first, second = call_spans(text)
    assert text[first.name[0] : first.name[1]] == "a"
    assert {k: text[s:e] for k, s_e in first.arguments.items() for s, e in [s_e]} == {
        "x": "[1, 2]",
        "y": '{"z": "q"}',
    }
    assert first.marker == 0 and text[second.name[0] : second.name[1]] == "b"
    assert second.marker == text.index("<tool_call>", 1) and second.arguments == {}


def test_registered_by_name_with_its_rule_in_the_repr() -> None:
    assert isinstance(get("tool_call"), ToolCallConfidence)
    assert repr(ToolCallConfidence("product")) == "ToolCallConfidence(combine='product')"
    with pytest.raises(ConfigurationError, match="combine"):
        ToolCallConfidence("mean")  # type: ignore[arg-type]


ADD = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]


def test_the_router_escalates_a_call_with_one_unsure_value_that_perplexity_keeps(
    provider: ScriptedProvider,
) -> None:
    call = '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'
    probs = [0.05 if i == call.index("2") else 0.99 for i in range(len(call))]  # one per char
    slm = ScriptedLocalModel(script={"add 1 2": (call, probs), "hi": ("hello", (0.9,) * 5)})
    by_perplexity = ConfRouter(
        slm, "scripted/strong", threshold=0.5, max_retries=0, tool_estimator=None
    )
    assert not by_perplexity.route("add 1 2", tools=ADD).decision.escalated
    router = ConfRouter(slm, "scripted/strong", estimator="tool_call", threshold=0.5, max_retries=0)
    routed = router.route("add 1 2", tools=ADD)
    assert routed.decision.escalated and routed.decision.confidence < 0.05
    plain = router.route("hi", tools=ADD)  # not a call: perplexity
    assert not plain.decision.escalated and plain.decision.confidence == pytest.approx(0.9)
