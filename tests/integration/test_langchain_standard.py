"""LangChain's conformance suite for ChatConfRoute with the real bundled models.

The bundled 0.5B answers. The thresholds (text and tool calls) are 0, so the suite's ~20 calls
stay on the 0.5B (each escalation to the in-process 1.5B costs tens of seconds of CPU here);
escalation, including an escalated stream, runs on the real 1.5B in
``test_langchain_escalation.py``.

The whole suite runs, tool calling and structured output included; ``CONFROUTE_LC_FULL_SUITE=0``
switches those parts off (through the suite's own ``has_tool_calling`` /
``has_structured_output``) for a quicker run, since every tool prompt costs 10-30 s of CPU on a
2-core machine.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests

from langchain_confroute import ChatConfRoute
from tests.integration.lc_fixtures import FULL_SUITE, lc_params

pytestmark = pytest.mark.integration


OPTIONAL_PARAM_REASON = (
    "The bundled 0.5B does not call the schema's tool when the schema has an optional field "
    "(it answers the joke in text), so no structured object comes back. Not strict: the "
    "prompts are langchain-tests' (not pinned) and the outcome is the 0.5B's greedy text, so an "
    "XPASS means the suite or the model changed, not that confroute broke."
)
UNICODE_TOOL_REASON = (
    "The bundled 0.5B answers the prompt with non-ASCII tool arguments in text instead of "
    "calling the tool. Not strict: the prompts are langchain-tests' (not pinned) and the "
    "outcome is the 0.5B's greedy text, so an XPASS means the suite or the model changed."
)


class TestChatConfRouteIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatConfRoute]:
        return ChatConfRoute

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # tool_threshold=0.0 keeps the suite's tool calls on the 0.5B too (the router decides a
        # call with the tool estimator against its own threshold)
        keep_local = {"threshold": 0.0, "tool_threshold": 0.0}
        return lc_params(max_tokens=64, **keep_local) if FULL_SUITE else lc_params(**keep_local)

    @property
    def has_tool_calling(self) -> bool:
        return FULL_SUITE

    @property
    def has_structured_output(self) -> bool:
        return FULL_SUITE

    @property
    def supports_model_override(self) -> bool:
        # The local model is loaded weights, chosen when the chat model is built.
        return False

    @pytest.mark.xfail(strict=False, reason=OPTIONAL_PARAM_REASON)
    def test_structured_output_optional_param(self, model: BaseChatModel) -> None:
        super().test_structured_output_optional_param(model)

    @pytest.mark.xfail(strict=False, reason=UNICODE_TOOL_REASON)
    def test_unicode_tool_call_integration(
        self, model: BaseChatModel, *, tool_choice: str | None = None, force_tool_call: bool = True
    ) -> None:
        super().test_unicode_tool_call_integration(
            model, tool_choice=tool_choice, force_tool_call=force_tool_call
        )
