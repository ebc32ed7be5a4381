from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes import (
    ScriptedLocalModel,
    ScriptedProvider,
    install_scripted_provider,
    tiny_local_model,
)


@pytest.fixture(scope="session")
def tiny_lm():  # type: ignore[no-untyped-def]
    return tiny_local_model()


@pytest.fixture
def scripted_slm() -> ScriptedLocalModel:
    return ScriptedLocalModel(
        script={
            "sure?": ("391", (0.99, 0.98, 0.97)),
            "unsure?": ("maybe 12", (0.2, 0.3, 0.4)),
        }
    )


@pytest.fixture
def provider() -> Iterator[ScriptedProvider]:
    behaviour = ScriptedProvider()
    remove = install_scripted_provider(behaviour)
    yield behaviour
    remove()
