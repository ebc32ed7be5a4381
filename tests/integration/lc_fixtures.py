"""Shared pieces of the LangChain integration tests: the bundled SLM, loaded once per process.

The conformance suite builds its chat model from a property, not a fixture, so the model is
held by a cached function rather than a session fixture.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from confroute import DEFAULT_SLM, LocalModel

FULL_SUITE = os.environ.get("CONFROUTE_LC_FULL_SUITE", "1") == "1"
"""Run LangChain's tool-calling and structured-output conformance tests too (slow on CPU)."""


@cache
def bundled_slm() -> LocalModel:
    """The bundled 0.5B SLM, loaded once for every LangChain integration test."""
    return LocalModel(DEFAULT_SLM)


def lc_params(**overrides: Any) -> dict[str, Any]:
    """ChatConfRoute settings for the integration tests: the shared SLM, short answers."""
    return {"local_model": bundled_slm(), "max_tokens": 24, **overrides}
