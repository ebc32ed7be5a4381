"""Session fixtures of the LlamaIndex integration tests (a plugin module, not a conftest).

Test modules load it with ``pytest_plugins = ["tests.integration.li_fixtures"]``. Each model is
loaded once per session; the strong model (bundled 1.5B, in process) loads on first escalation.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent

from confroute import LocalModel
from confroute.models import DEFAULT_LLM, DEFAULT_SLM
from llamaindex_confroute import RoutingDecisionEvent, TransformersEmbedding

STRONG = f"confroute/{DEFAULT_LLM}"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class DecisionRecorder(BaseEventHandler):
    """Keeps every RoutingDecisionEvent dispatched while it is registered."""

    events: list[RoutingDecisionEvent] = Field(default_factory=list)

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, RoutingDecisionEvent):
            self.events.append(event)


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module (its ``main`` is not run)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def li_slm() -> LocalModel:
    return LocalModel(DEFAULT_SLM)


@pytest.fixture(scope="session")
def li_embedding() -> TransformersEmbedding:
    return TransformersEmbedding()


@pytest.fixture
def li_recorder() -> Iterator[DecisionRecorder]:
    root = get_dispatcher()
    recorder = DecisionRecorder()
    root.add_event_handler(recorder)
    yield recorder
    root.event_handlers.remove(recorder)
