"""Confidence in a tool call, from the log-probs of its parts.

A tool call is structured output: most of its tokens (the tags, the JSON punctuation, the key
``"arguments"``) are certain and tell nothing, while a few carry the decisions that make the
call right or wrong. :class:`ToolCallConfidence` scores those decisions separately, from the
log-probabilities the backend already recorded for the answer:

- **decision**: whether to call at all: at the token where the call opens (``<tool_call>``, or
  the ``{`` / ``[`` / ```` ``` ```` of a bare JSON call), the probability mass of the top-k
  alternatives that would also open a call (the chosen token included);
- **name**: the joint probability of the tokens that write the function name;
- **each argument**: the joint probability of the tokens that write its value.

The parts are found by walking the answer's JSON (each token's character span is its place
in the concatenated token texts), and combined into one confidence by ``combine``:
``"product"`` (the default: all decisions right at once) or ``"min"`` (a call is as weak as its
weakest decision). ``benchmarks/tool_confidence.py`` chose ``"product"`` on BFCL's development
split (40 items, bundled 0.5B: dev AUROC 0.677 against 0.673); on the report split (120 items)
it reached AUROC 0.82 [0.72, 0.92] against 0.77 for ``"min"`` and 0.60 for perplexity (see
``docs/estimators.md``). ``context.extras["tool_call_parts"]`` holds every part.

The router uses this estimator for answers that are well-formed calls
(``RouterSettings.tool_estimator``, against its own ``tool_threshold``). An answer that is not
a well-formed call (plain text, or no tools offered) falls back to the perplexity confidence,
so the estimator can also serve mixed traffic as the primary one; a malformed call is escalated
by the router whatever its confidence.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from confroute.errors import ConfigurationError
from confroute.estimators.base import EstimationContext, Estimator
from confroute.estimators.single_pass import Perplexity
from confroute.generation import Generation, TokenAlternative
from confroute.tools import parse_tool_calls

__all__ = ["CallSpans", "ToolCallConfidence", "call_spans", "token_offsets"]

Combine = Literal["min", "product"]

_NAME_KEY = re.compile(r'\{\s*"name"\s*:\s*"')
_ARGUMENTS_KEY = re.compile(r'\s*,\s*"(?:arguments|parameters)"\s*:\s*')
_OPENERS = ("<tool_call>", "{", "[", "```")
_DECODER = json.JSONDecoder()
_SPACE = " \t\r\n"


@dataclass(frozen=True)
class CallSpans:
    """Where one call's parts are in the answer text (``[start, end)`` character spans).

    Attributes:
        marker: Where the call opens (the ``<tool_call>`` tag, or the JSON's first character).
        name: The function name, inside its quotes.
        arguments: Each argument's value, quotes included, in the order written.
    """

    marker: int
    name: tuple[int, int]
    arguments: dict[str, tuple[int, int]] = field(default_factory=dict)


def token_offsets(tokens: tuple[str, ...] | list[str]) -> list[int]:
    """Start offset of each token in the concatenated token texts, plus the total length."""
    offsets = [0]
    for token in tokens:
        offsets.append(offsets[-1] + len(token))
    return offsets


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in _SPACE:
        position += 1
    return position


def _argument_spans(text: str, position: int) -> dict[str, tuple[int, int]]:
    """Value spans of the JSON object opening at ``text[position]`` (``{``), as far as it parses.

    Hand-written: ``json`` decodes values but reports no positions for an object's members, so
    the walk reads each key and each value with ``raw_decode`` and keeps their positions.
    """
    spans: dict[str, tuple[int, int]] = {}
    if not text.startswith("{", position):
        return spans
    position += 1
    while True:
        position = _skip_space(text, position)
        if not text.startswith('"', position):
            return spans
        try:
            key, position = _DECODER.raw_decode(text, position)  # a JSON string: the key
            position = _skip_space(text, position)
            if not text.startswith(":", position):
                return spans
            start = _skip_space(text, position + 1)
            _, position = _DECODER.raw_decode(text, start)
        except ValueError:
            return spans
        spans[str(key)] = (start, position)
        position = _skip_space(text, position)
        if not text.startswith(",", position):
            return spans
        position += 1


def call_spans(text: str) -> list[CallSpans]:
    """The parts of every ``{"name": ..., "arguments": {...}}`` call written in ``text``."""
    calls: list[CallSpans] = []
    for match in _NAME_KEY.finditer(text):
        try:
            _, after = _DECODER.raw_decode(text, match.end() - 1)  # the name, a JSON string
        except ValueError:
            continue
        tag = text.rfind("<tool_call>", 0, match.start())
        between = text[tag + len("<tool_call>") : match.start()] if tag >= 0 else "x"
        if between.strip() == "":
            marker = tag
        else:  # a bare call: it opens at the first character of the answer's JSON
            marker = len(text) - len(text.lstrip()) if not calls else match.start()
        arguments: dict[str, tuple[int, int]] = {}
        key = _ARGUMENTS_KEY.match(text, after)
        if key is not None:
            arguments = _argument_spans(text, key.end())
        calls.append(CallSpans(marker, (match.end(), after - 1), arguments))
    return calls


def _covering(offsets: list[int], span: tuple[int, int]) -> range:
    """Indices of the tokens whose text overlaps ``span`` (empty span: the token holding it)."""
    start, end = span
    first = bisect.bisect_right(offsets, start) - 1
    last = bisect.bisect_left(offsets, max(end, start + 1)) - 1
    return range(max(first, 0), min(last + 1, len(offsets) - 1))


def _joint(generation: Generation, tokens: range) -> float | None:
    if not tokens:
        return None
    return math.exp(math.fsum(generation.logprobs[i] for i in tokens))


def _opens_call(token: str) -> bool:
    text = token.lstrip()
    return bool(text) and (text.startswith(_OPENERS) or "<tool_call>".startswith(text))


def call_mass(generation: Generation, step: int) -> float:
    """Probability, at ``step``, of the top-k tokens that open a call (the chosen one included)."""
    alternatives: tuple[TokenAlternative, ...] = generation.top_logprobs[step]
    chosen = generation.token_ids[step]
    mass = math.fsum(math.exp(a.logprob) for a in alternatives if _opens_call(a.token))
    if all(a.token_id != chosen for a in alternatives) and _opens_call(generation.tokens[step]):
        mass += math.exp(generation.logprobs[step])
    return min(1.0, mass)


class ToolCallConfidence(Estimator):
    """Confidence of a tool call: the product of its parts (decision, name, argument values).

    Falls back to :class:`~confroute.estimators.Perplexity` when the answer is not a
    well-formed call to an offered tool.

    Args:
        combine: ``"product"`` (default, the BFCL development split's choice) or ``"min"`` of
            the part probabilities.
    """

    name: ClassVar[str] = "tool_call"

    def __init__(self, combine: Combine = "product") -> None:
        """Choose how the parts combine."""
        if combine not in ("min", "product"):
            raise ConfigurationError(f"combine must be 'min' or 'product', got {combine!r}.")
        self.combine: Combine = combine
        self._fallback = Perplexity()

    def params(self) -> dict[str, Any]:
        """The combination rule."""
        return {"combine": self.combine}

    def parts(self, generation: Generation, context: EstimationContext) -> dict[str, Any]:
        """The part probabilities of the answer's calls (``{"called": False}`` when none).

        Returns:
            ``called``; ``decision``; ``name`` (the least likely name when there are several
            calls); ``arguments`` (value probability by argument, ``#2.key`` for the second
            call's); ``arguments_min`` (None without arguments). A part that cannot be located
            in the tokens is left out.
        """
        tools = context.tools or []
        parsed = parse_tool_calls(generation.text, tools) if tools else None
        joined = "".join(generation.tokens)
        offsets = token_offsets(generation.tokens)
        if parsed is None or not parsed.calls or not generation.logprobs:
            step_mass = call_mass(generation, 0) if generation.top_logprobs else None
            return {"called": False, "decision": None if step_mass is None else 1 - step_mass}
        spans = call_spans(joined)
        result: dict[str, Any] = {"called": True, "decision": None, "name": None}
        arguments: dict[str, float] = {}
        names: list[float] = []
        for index, call in enumerate(spans):
            if index == 0 and call.marker >= 0 and generation.top_logprobs:
                step = _covering(offsets, (call.marker, call.marker + 1))
                if step:
                    result["decision"] = call_mass(generation, step[0])
            name = _joint(generation, _covering(offsets, call.name))
            if name is not None:
                names.append(name)
            prefix = "" if index == 0 else f"#{index + 1}."
            for key, span in call.arguments.items():
                value = _joint(generation, _covering(offsets, span))
                if value is not None:
                    arguments[prefix + key] = value
        result["name"] = min(names) if names else None
        result["arguments"] = arguments
        result["arguments_min"] = min(arguments.values()) if arguments else None
        return result

    def confidence(self, generation: Generation, context: EstimationContext) -> float | None:
        """The combined part probabilities of a call; perplexity for any other answer."""
        parts = self.parts(generation, context)
        context.extras["tool_call_parts"] = parts
        if not parts["called"]:
            return self._fallback.confidence(generation, context)
        values = [parts["decision"], parts["name"], *parts["arguments"].values()]
        found = [float(v) for v in values if v is not None]
        if not found:
            return self._fallback.confidence(generation, context)
        combined = min(found) if self.combine == "min" else math.prod(found)
        return min(1.0, max(0.0, combined))
