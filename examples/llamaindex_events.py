"""Count escalations with a LlamaIndex event handler, fully offline.

Every routing decision of ``ConfRouteLLM`` is dispatched as a ``RoutingDecisionEvent`` through
LlamaIndex's instrumentation, so a ``BaseEventHandler`` on the root dispatcher sees them all
(chat, completion, streaming, async, and inside query engines and agents).

Run: python examples/llamaindex_events.py
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import (  # type: ignore[attr-defined]
    get_dispatcher,  # re-exported without __all__, which strict mypy treats as private
)
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.llms import ChatMessage

from llamaindex_confroute import ConfRouteLLM, RoutingDecisionEvent


class EscalationCounter(BaseEventHandler):
    """Counts routing decisions, escalations, and the reasons behind them."""

    decisions: int = 0
    escalations: int = 0
    reasons: Counter[str] = Field(default_factory=Counter)

    @classmethod
    def class_name(cls) -> str:
        return "EscalationCounter"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, RoutingDecisionEvent):
            self.decisions += 1
            self.escalations += int(event.escalated)
            self.reasons[event.reason] += 1

    @property
    def escalation_rate(self) -> float:
        return self.escalations / self.decisions if self.decisions else 0.0


def main() -> None:
    counter = EscalationCounter()
    get_dispatcher().add_event_handler(counter)
    llm = ConfRouteLLM(max_tokens=32)
    print(llm.complete("What is 17*23? Answer with the number only.").text)
    question = "Name the capital of France in one word."
    print("".join(chunk.delta or "" for chunk in llm.stream_chat([ChatMessage(content=question)])))
    print(
        f"{counter.decisions} decisions, {counter.escalations} escalated "
        f"(rate {counter.escalation_rate:.0%}), reasons: {dict(counter.reasons)}"
    )


if __name__ == "__main__":
    main()
