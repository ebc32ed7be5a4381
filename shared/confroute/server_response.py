"""Reading an OpenAI-compatible chat completion into Generation objects.

Used by :class:`~confroute.server_backend.ServerModel`. The API returns, per answer token, the
token's text, its log-probability and the top-k alternatives (``choices[i].logprobs.content``),
but no token ids and no full distribution: every ``token_id`` is ``-1`` and there are no
entropies. Tool calls the server parsed out of the answer (``message.tool_calls``) are written
back into the text in the form :func:`confroute.tools.parse_tool_calls` reads
(``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``), and kept as returned in
``extras["tool_calls"]``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from confroute.errors import LocalBackendError, LogprobsUnavailableError
from confroute.generation import Generation, TokenAlternative

__all__ = ["NO_TOKEN_ID", "TokenEntry", "read_generations", "tool_call_text"]

NO_TOKEN_ID = -1
"""The ``token_id`` of every token and alternative read from an API: it reports none."""

TokenEntry = tuple[str, float, tuple[TokenAlternative, ...]]
"""One answer token as the API reports it: text, log-probability, alternatives."""

_HOW_TO_GET_LOGPROBS = (
    "llama.cpp's server (llama-server, python -m llama_cpp.server) returns them; Ollama 0.12.11 "
    "and later returns them on its OpenAI-compatible endpoint (model 'openai/<name>', "
    "api_base 'http://HOST:11434/v1'); vLLM returns them up to its --max-logprobs (default 20, "
    "so top_logprobs must not exceed it); a hosted API must document logprobs/top_logprobs."
)
"""Where log-probabilities come from, for the error that says they are missing."""


def _field(item: Any, name: str) -> Any:
    """``item.name`` or ``item[name]`` (LiteLLM returns objects; a fake may return dicts)."""
    if isinstance(item, Mapping):
        return item.get(name)
    return getattr(item, name, None)


def tool_call_text(calls: Sequence[Any]) -> str:
    """Tool calls as the tagged text the local answer parser reads.

    Arguments that are a JSON string are decoded so the block holds a JSON object; arguments
    that are not JSON are written as they are, so the parser reports the call as malformed.
    """
    blocks = []
    for call in calls:
        function = _field(call, "function") or {}
        name = _field(function, "name")
        arguments = _field(function, "arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except ValueError:
                raw = f'{{"name": {json.dumps(name)}, "arguments": {arguments}}}'
                blocks.append(f"<tool_call>\n{raw}\n</tool_call>")
                continue
        payload = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
        blocks.append(f"<tool_call>\n{payload}\n</tool_call>")
    return "\n".join(blocks)


def _plain_call(call: Any) -> dict[str, Any]:
    """A tool call as a plain OpenAI-shaped dict."""
    if hasattr(call, "model_dump"):
        dumped: dict[str, Any] = call.model_dump()
        return dumped
    return dict(call)


def _entries(logprobs: Any) -> list[TokenEntry] | None:
    """The per-token entries of ``choice.logprobs`` (None when the server sent none)."""
    if logprobs is None:
        return None
    content = _field(logprobs, "content")
    if content is None:
        return None
    entries = []
    for item in content:
        alternatives = tuple(
            TokenAlternative(str(_field(alt, "token")), NO_TOKEN_ID, float(_field(alt, "logprob")))
            for alt in _field(item, "top_logprobs") or ()
        )
        entries.append((str(_field(item, "token")), float(_field(item, "logprob")), alternatives))
    return entries


def _trimmed(entries: list[TokenEntry], text: str) -> list[TokenEntry]:
    """The entries that spell ``text``: a server may report tokens past a stop sequence.

    Only when the tokens' joined text starts with ``text`` and runs past it; otherwise (a
    server that rewrites the text) the entries are kept as they are.
    """
    joined = "".join(token for token, _, _ in entries)
    if len(joined) <= len(text) or not joined.startswith(text):
        return entries
    length = 0
    for count, (token, _, _) in enumerate(entries, start=1):
        length += len(token)
        if length >= len(text):
            return entries[:count]
    return entries


def read_generations(
    response: Any,
    *,
    model: str,
    server: str,
    latency_s: float,
    prompt_tokens: int,
) -> list[Generation]:
    """One :class:`Generation` per choice of a chat-completion response.

    Args:
        response: The response (LiteLLM's ``ModelResponse``, or anything of that shape).
        model: The backend's name, written into each generation.
        server: How to name the server in errors (model and masked base URL).
        latency_s: Wall time of the call.
        prompt_tokens: Prompt length to report when the response has no ``usage``.

    Raises:
        LogprobsUnavailableError: A non-empty answer came without log-probabilities.
        LocalBackendError: The response has no choices.
    """
    choices = _field(response, "choices") or []
    if not choices:
        raise LocalBackendError(
            f"{server} answered with no choices; check that it serves chat completions.",
            model=model,
            attempts=1,
            errors=["the response has no choices"],
        )
    usage = _field(response, "usage")
    reported = _field(usage, "prompt_tokens") if usage is not None else None
    generations = []
    for choice in choices:
        message = _field(choice, "message")
        content = _field(message, "content") if message is not None else None
        content = content if isinstance(content, str) else ""
        calls = list(_field(message, "tool_calls") or ()) if message is not None else []
        entries = _entries(_field(choice, "logprobs"))
        if entries is None or (not entries and (content or calls)):
            if not content and not calls:
                entries = []  # an empty answer has no tokens to report
            else:
                raise LogprobsUnavailableError(
                    f"{server} returned an answer without token log-probabilities, so no "
                    "confidence can be computed from it (confroute never guesses one). Use a "
                    f"server that returns logprobs/top_logprobs: {_HOW_TO_GET_LOGPROBS}"
                )
        if not calls:
            entries = _trimmed(entries, content)
        text = content
        extras: dict[str, Any] = {}
        if calls:
            extras["tool_calls"] = [_plain_call(c) for c in calls]
            text = "\n".join(part for part in (content, tool_call_text(calls)) if part)
        generations.append(
            Generation(
                text=text,
                token_ids=(NO_TOKEN_ID,) * len(entries),
                tokens=tuple(token for token, _, _ in entries),
                logprobs=tuple(logprob for _, logprob, _ in entries),
                top_logprobs=tuple(alternatives for _, _, alternatives in entries),
                entropies=(),
                finish_reason="length" if _field(choice, "finish_reason") == "length" else "stop",
                prompt_tokens=int(reported) if isinstance(reported, int) else prompt_tokens,
                model=model,
                latency_s=latency_s,
                extras=extras,
            )
        )
    return generations
