"""LangChain's own conformance suite for ChatConfRoute, on a scripted local model (no weights)."""

from __future__ import annotations

from functools import cache
from typing import Any

from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_confroute import ChatConfRoute
from tests.fakes import ScriptedLocalModel


@cache
def _scripted_slm() -> ScriptedLocalModel:
    return ScriptedLocalModel(script={"Hello": ("Hi there!", (0.99, 0.98, 0.97))})


class TestChatConfRouteUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatConfRoute]:
        return ChatConfRoute

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"local_model": _scripted_slm(), "strong_model": "scripted/strong"}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {"CONFROUTE_API_KEY": "env-key", "CONFROUTE_API_BASE": "http://127.0.0.1:9"},
            {"local_model": _scripted_slm()},
            {"api_key": "env-key", "api_base": "http://127.0.0.1:9"},
        )

    @property
    def supports_model_override(self) -> bool:
        # The local model holds loaded weights; it is chosen when the model is built.
        return False
