"""``confroute serve``: the command-line entry of the OpenAI-compatible server.

The main command line (:mod:`confroute.cli`) adds the parser with :func:`add_serve_parser` and
runs it with :func:`run_serve`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from pydantic import SecretStr

from confroute.backend import LocalBackend
from confroute.cli_args import (
    add_slm_backend_arguments,
    add_sticky_arguments,
    add_tool_estimator_arguments,
    slm_backend_settings,
    sticky_settings,
    tool_estimator_settings,
)
from confroute.errors import ConfigurationError
from confroute.settings import RouterSettings, environment, settings_from

__all__ = ["add_serve_parser", "run_serve"]

DEFAULT_WINDOW_MS = 5.0
"""Default batching window (the same as :data:`confroute.serving.batcher.DEFAULT_WINDOW_MS`)."""


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``serve`` command to an ``argparse`` sub-parser collection and return it."""
    from confroute import estimators

    env = environment()
    defaults = RouterSettings.model_fields
    serve: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="serve an OpenAI-compatible API (/v1/chat/completions) that routes every request",
        description="An OpenAI-compatible HTTP server: every request is answered by the local "
        "model or escalated, and the decision comes back in a 'confroute' field and "
        "x-confroute-* headers.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface (default %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    serve.add_argument(
        "--model-name",
        default="confroute",
        help="model id that clients send and /v1/models lists (default %(default)s)",
    )
    serve.add_argument(
        "--slm",
        default=env.slm,
        help="local model: bundled name, directory, .gguf file, hub id, or a LiteLLM model "
        "string of a server with log-probs (env CONFROUTE_SLM)",
    )
    add_slm_backend_arguments(serve, env)
    serve.add_argument(
        "--llm",
        default=env.llm,
        help="strong model as a LiteLLM model string (env CONFROUTE_LLM; default %(default)s)",
    )
    serve.add_argument("--local-only", action="store_true", help="never escalate (no strong model)")
    serve.add_argument(
        "--api-base",
        default=env.api_base,
        help="base URL of the strong model's server (env CONFROUTE_API_BASE)",
    )
    serve.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="environment variable holding the strong model's key (default CONFROUTE_API_KEY)",
    )
    serve.add_argument(
        "--server-key-env",
        default=None,
        metavar="VAR",
        help="environment variable holding a key that clients must send as a Bearer token",
    )
    serve.add_argument("--threshold", type=float, default=None, help="escalate below this")
    serve.add_argument(
        "--escalation-rate",
        type=float,
        default=None,
        help="escalate this share of requests, held on the live traffic (a bundled model's "
        "shipped profile; default: 0.3 for a bundled model, else --threshold 0.8)",
    )
    serve.add_argument(
        "--max-escalation-rate",
        type=float,
        default=None,
        help="hard cap: never escalate more than this share of any 100 requests",
    )
    serve.add_argument(
        "--policy-state",
        default=None,
        metavar="PATH",
        help="keep the rate policy's live state (windows, spent budget) in this JSON file: "
        "read at start, written at exit",
    )
    serve.add_argument(
        "--estimator",
        default=defaults["estimator"].default,
        choices=estimators.available(),
        help="uncertainty estimator (default %(default)s)",
    )
    add_tool_estimator_arguments(serve, estimators.available())
    add_sticky_arguments(serve)
    serve.add_argument(
        "--max-new-tokens",
        type=int,
        default=defaults["max_new_tokens"].default,
        help="default local answer length cap (default %(default)s)",
    )
    serve.add_argument(
        "--batch-window-ms",
        type=float,
        default=DEFAULT_WINDOW_MS,
        help="how long a request waits for others to share its batch (default %(default)s)",
    )
    serve.add_argument(
        "--max-batch", type=int, default=16, help="most requests in one batch (default 16)"
    )
    serve.add_argument("--no-batching", action="store_true", help="answer one request at a time")
    serve.add_argument(
        "--early-every",
        type=int,
        default=None,
        metavar="K",
        help="early escalation: check the running confidence every K tokens (off by default)",
    )
    serve.add_argument(
        "--early-margin",
        type=float,
        default=0.2,
        help="early escalation: stop when confidence < threshold - margin (default %(default)s)",
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds a client may take to send a request head; also the idle keep-alive "
        "time (default %(default)s)",
    )
    serve.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds a client may take to send a request body; then 408 (default %(default)s)",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=1024**2,
        help="largest request body; larger gets 413 (default %(default)s, 1 MiB)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=None,
        help="open connections at most; more get 503 (default: the descriptor limit less 64, "
        "at most 1024)",
    )
    serve.add_argument(
        "--log-level", default="INFO", help="logging level of the server (default %(default)s)"
    )
    return serve


def run_serve(args: argparse.Namespace) -> int:
    """Build the router from the parsed arguments and serve until interrupted."""
    from confroute.router import ConfRouter
    from confroute.serving.early import EarlyEscalation, EarlyEscalationRouter
    from confroute.serving.server import ServerLimits, serve

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if args.max_batch < 1:
        raise ConfigurationError(f"--max-batch must be >= 1, got {args.max_batch}.")
    limits = ServerLimits(
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        max_body_bytes=args.max_body_bytes,
        max_connections=args.max_connections,
    )
    server_key = _env_value(args.server_key_env)
    api_key: SecretStr | str | None = (
        environment().api_key if args.api_key_env is None else _env_value(args.api_key_env)
    )
    settings = settings_from(
        None,
        **slm_backend_settings(args),
        **tool_estimator_settings(args),
        **sticky_settings(args),
        estimator=args.estimator,
        threshold=args.threshold,
        escalation_rate=args.escalation_rate,
        max_escalation_rate=args.max_escalation_rate,
        api_base=args.api_base,
        api_key=api_key,
        max_new_tokens=args.max_new_tokens,
    )
    local = _local_backend(args, settings)
    strong = None if args.local_only else args.llm
    if args.early_every is not None:
        early = EarlyEscalation(every=args.early_every, margin=args.early_margin)
        router: ConfRouter = EarlyEscalationRouter(
            local, strong, settings=settings, early_escalation=early
        )
    else:
        router = ConfRouter(local, strong, settings=settings)
    state = getattr(router.policy, "save_state", None) if args.policy_state else None
    if args.policy_state and state is None:
        raise ConfigurationError(
            f"--policy-state keeps the live state of a rate policy; {router.policy!r} has "
            "none. Use --escalation-rate (or the default rate of a bundled model)."
        )
    if state is not None:
        getattr(router.policy, "load_state")(args.policy_state)  # noqa: B009 (not a Protocol)
    print(
        f"confroute serve: http://{args.host}:{args.port}/v1 model={args.model_name!r} "
        f"local={router.local.name} ({router.local.capabilities.backend}) strong={strong} "
        f"policy={router.policy!r} (Ctrl-C stops)",
        file=sys.stderr,
    )
    try:
        serve(
            router,
            host=args.host,
            port=args.port,
            model_name=args.model_name,
            api_key=server_key,
            limits=limits,
        )
    finally:
        if state is not None:
            state(args.policy_state)
    return 0


def _local_backend(args: argparse.Namespace, settings: RouterSettings) -> LocalBackend:
    """The SLM by the engine rule; the in-process transformers engine gets the micro-batcher.

    llama.cpp in process decodes one sequence at a time and a server batches on its own, so
    neither is wrapped.
    """
    from confroute.backend_choice import choose_backend, load_backend
    from confroute.estimators import get
    from confroute.local import LocalModel
    from confroute.serving.batcher import MicroBatcher

    filled = settings.with_env()
    choice = choose_backend(
        args.slm,
        settings.local_backend,
        api_base=filled.local_api_base,
        needs=get(settings.estimator).requires,
    )
    if choice.backend != "transformers":
        return load_backend(choice, settings)
    local: LocalBackend = LocalModel(choice.model, max_batch_size=args.max_batch)
    if not args.no_batching:
        local = MicroBatcher(local, window_ms=args.batch_window_ms, max_batch=args.max_batch)
    return local


def _env_value(name: str | None) -> str | None:
    """The value of a variable the user named (``--api-key-env VAR``); None when unnamed."""
    if name is None:
        return None
    value = os.environ.get(name)
    if not value:
        raise ConfigurationError(f"The environment variable {name} is not set; export it first.")
    return value
