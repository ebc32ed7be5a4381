"""Serving and speed: micro-batching, early escalation, and an OpenAI-compatible HTTP server.

- :class:`MicroBatcher` merges concurrent local generations into one batched call.
- :class:`EarlyEscalation` / :class:`EarlyEscalationRouter` stop hopeless local answers early.
- :func:`create_app`, :func:`serve`, :class:`BackgroundServer`: ``confroute serve``.

Names are imported on first use, so that ``confroute --help`` does not load the router, LiteLLM
or aiohttp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from confroute.serving.batcher import BatchStats, MicroBatcher
    from confroute.serving.early import EarlyEscalation, EarlyEscalationRouter, stopped_early_at
    from confroute.serving.server import BackgroundServer, create_app, serve

__all__ = [
    "BackgroundServer",
    "BatchStats",
    "EarlyEscalation",
    "EarlyEscalationRouter",
    "MicroBatcher",
    "create_app",
    "serve",
    "stopped_early_at",
]

_HOMES = {
    "BatchStats": "batcher",
    "MicroBatcher": "batcher",
    "EarlyEscalation": "early",
    "EarlyEscalationRouter": "early",
    "stopped_early_at": "early",
    "BackgroundServer": "server",
    "create_app": "server",
    "serve": "server",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'confroute.serving' has no attribute {name!r}")
    return getattr(importlib.import_module(f"confroute.serving.{home}"), name)
