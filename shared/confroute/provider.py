"""An in-process LiteLLM provider: ``model="confroute/<bundled name>"`` runs a local model.

It lets a bundled model act as the strong model with no server and no key, through the same
LiteLLM calls as any hosted provider::

    import confroute.provider, litellm
    confroute.provider.register_provider()
    litellm.completion(model="confroute/qwen2.5-coder-1.5b-instruct", messages=[...])

Models are loaded on first use and kept for the life of the process (one per name).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import litellm

from confroute.backend import LocalBackend
from confroute.backend_choice import choose_backend, load_backend
from confroute.generation import GenerationConfig
from confroute.settings import LOCAL_PROVIDER, RouterSettings
from confroute.tools import parse_tool_calls

__all__ = ["LocalProvider", "get_local_model", "register_provider"]

_DEFAULT_MAX_NEW_TOKENS: int = RouterSettings.model_fields["max_new_tokens"].default
"""Tokens generated when the request names no ``max_tokens`` (the router's default)."""

_models: dict[str, LocalBackend] = {}
_models_lock = threading.Lock()
_SETTINGS = RouterSettings()
_registered = threading.Lock()


def get_local_model(name: str) -> LocalBackend:
    """The process-wide backend for ``name``, loaded on first use.

    The engine follows :func:`confroute.backend_choice.choose_backend` (a bundled model runs
    on llama.cpp when ``llama-cpp-python`` is installed, else on transformers).
    """
    with _models_lock:
        if name not in _models:
            _models[name] = load_backend(choose_backend(name), _SETTINGS)
        return _models[name]


def set_local_model(name: str, model: LocalBackend) -> None:
    """Serve an already loaded model under ``confroute/<name>`` (shares it with the router)."""
    with _models_lock:
        _models[name] = model


def _config(optional_params: dict[str, Any]) -> GenerationConfig:
    stop = optional_params.get("stop") or ()
    temperature = optional_params.get("temperature")
    return GenerationConfig(
        max_new_tokens=int(optional_params.get("max_tokens") or _DEFAULT_MAX_NEW_TOKENS),
        temperature=float(temperature) if temperature is not None else 0.0,
        top_p=float(optional_params.get("top_p") or 1.0),
        stop=(stop,) if isinstance(stop, str) else tuple(stop),
    )


class LocalProvider(litellm.CustomLLM):  # type: ignore[misc]
    """LiteLLM ``CustomLLM`` handler that answers with an in-process local model."""

    def _answer(self, model: str, messages: list[Any], optional_params: dict[str, Any]) -> Any:
        name = model.split("/", 1)[1] if model.startswith(LOCAL_PROVIDER + "/") else model
        local = get_local_model(name)
        started = time.perf_counter()
        tools = optional_params.get("tools") or None
        if optional_params.get("tool_choice") == "none":
            tools = None  # answer in words (asked when a model repeated an answered call)
        [generation] = local.generate([messages], _config(optional_params), tools=tools)
        message: dict[str, Any] = {"role": "assistant", "content": generation.text}
        finish_reason: str = generation.finish_reason
        if tools:
            parsed = parse_tool_calls(generation.text, tools)
            if parsed.calls:
                message = {
                    "role": "assistant",
                    "content": parsed.content or None,
                    "tool_calls": parsed.calls,
                }
                finish_reason = "tool_calls"
        response = litellm.ModelResponse(
            model=f"{LOCAL_PROVIDER}/{name}",
            choices=[{"index": 0, "finish_reason": finish_reason, "message": message}],
            usage={
                "prompt_tokens": generation.prompt_tokens,
                "completion_tokens": generation.completion_tokens,
                "total_tokens": generation.prompt_tokens + generation.completion_tokens,
            },
        )
        response._hidden_params["response_cost"] = 0.0
        response._response_ms = (time.perf_counter() - started) * 1000
        return response

    def completion(self, model: str, messages: list[Any], *args: Any, **kwargs: Any) -> Any:
        """Answer with the local model."""
        return self._answer(model, messages, kwargs.get("optional_params") or {})

    async def acompletion(self, model: str, messages: list[Any], *args: Any, **kwargs: Any) -> Any:
        """Answer with the local model in a worker thread."""
        return await asyncio.to_thread(
            self._answer, model, messages, kwargs.get("optional_params") or {}
        )

    def streaming(
        self, model: str, messages: list[Any], *args: Any, **kwargs: Any
    ) -> Iterator[Any]:
        """Generate, then yield the answer as one chunk per token."""
        response = self._answer(model, messages, kwargs.get("optional_params") or {})
        yield from _chunks(response)

    async def astreaming(
        self, model: str, messages: list[Any], *args: Any, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """Async form of :meth:`streaming`."""
        response = await asyncio.to_thread(
            self._answer, model, messages, kwargs.get("optional_params") or {}
        )
        for chunk in _chunks(response):
            yield chunk


def _chunks(response: Any) -> Iterator[dict[str, Any]]:
    message = response.choices[0].message
    text: str = message.content or ""
    usage = response.usage
    for index, call in enumerate(getattr(message, "tool_calls", None) or []):
        yield {
            "text": "",
            "tool_use": {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
                "index": index,
            },
            "is_finished": False,
            "finish_reason": "",
            "usage": None,
            "index": 0,
        }
    words = text.split(" ")
    for index, word in enumerate(words):
        piece = word if index == len(words) - 1 else word + " "
        last = index == len(words) - 1
        yield {
            "text": piece,
            "tool_use": None,
            "is_finished": last,
            "finish_reason": response.choices[0].finish_reason if last else "",
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            }
            if last
            else None,
            "index": 0,
        }


_handler = LocalProvider()


def register_provider() -> None:
    """Register the ``confroute/`` provider with LiteLLM (idempotent)."""
    with _registered:
        if not any(item.get("provider") == LOCAL_PROVIDER for item in litellm.custom_provider_map):
            litellm.custom_provider_map.append(
                {"provider": LOCAL_PROVIDER, "custom_handler": _handler}
            )
            litellm.utils.custom_llm_setup()
