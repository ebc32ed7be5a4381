"""Command-line arguments shared by ``confroute ask`` and ``confroute serve``."""

from __future__ import annotations

import argparse
import os
from typing import Any

from confroute.settings import Environment, RouterSettings

__all__ = [
    "add_slm_backend_arguments",
    "add_sticky_arguments",
    "add_tool_estimator_arguments",
    "slm_backend_settings",
    "sticky_settings",
    "tool_estimator_settings",
]


def add_slm_backend_arguments(parser: argparse.ArgumentParser, env: Environment) -> None:
    """``--slm-backend``, ``--slm-api-base`` and ``--slm-api-key-env`` (ask and serve)."""
    parser.add_argument(
        "--slm-backend",
        default=env.slm_backend,
        choices=["auto", "transformers", "llama.cpp", "server"],
        help="engine of --slm; 'auto' follows the rule in docs/backends.md (env "
        "CONFROUTE_SLM_BACKEND; default %(default)s)",
    )
    parser.add_argument(
        "--slm-api-base",
        default=None,
        help="base URL of the SLM's server (--slm-backend server; env CONFROUTE_SLM_API_BASE)",
    )
    parser.add_argument(
        "--slm-api-key-env",
        default=None,
        metavar="VAR",
        help="name of the environment variable holding the SLM server's key "
        "(default CONFROUTE_SLM_API_KEY)",
    )


def slm_backend_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The router settings of the SLM backend arguments (the key is read, never printed)."""
    settings: dict[str, Any] = {"local_backend": args.slm_backend}
    if args.slm_api_base:
        settings["local_api_base"] = args.slm_api_base
    if args.slm_api_key_env:
        settings["local_api_key"] = os.environ.get(args.slm_api_key_env)
    return settings


def add_tool_estimator_arguments(parser: argparse.ArgumentParser, names: list[str]) -> None:
    """``--tool-estimator`` and ``--tool-threshold`` (ask and serve): who decides tool calls."""
    fields = RouterSettings.model_fields
    parser.add_argument(
        "--tool-estimator",
        default=fields["tool_estimator"].default,
        choices=[*names, "none"],
        help="estimator that decides an answer which is a tool call, against --tool-threshold; "
        "'none': --estimator decides every answer (default %(default)s)",
    )
    parser.add_argument(
        "--tool-threshold",
        type=float,
        default=fields["tool_threshold"].default,
        help="escalate a tool call whose --tool-estimator confidence is below this (default "
        "%(default)s, chosen on BFCL's development split)",
    )


def tool_estimator_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The router settings of the tool estimator arguments."""
    name = None if args.tool_estimator == "none" else args.tool_estimator
    return {"tool_estimator": name, "tool_threshold": args.tool_threshold}


def add_sticky_arguments(parser: argparse.ArgumentParser) -> None:
    """``--sticky-turns`` and ``--sticky-release-confidence``: conversation-aware routing."""
    fields = RouterSettings.model_fields
    parser.add_argument(
        "--sticky-turns",
        type=int,
        default=fields["sticky_turns"].default,
        metavar="K",
        help="once a conversation escalates, escalate its next K user turns too "
        "(reason 'sticky'; conversations keyed by X-Conversation-Id or the request's 'user'; "
        "default %(default)s: each request alone)",
    )
    parser.add_argument(
        "--sticky-release-confidence",
        type=float,
        default=fields["sticky_release_confidence"].default,
        metavar="C",
        help="with --sticky-turns: a turn whose local confidence reaches C returns the "
        "conversation to the local model early (default %(default)s)",
    )


def sticky_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The router settings of the sticky arguments."""
    return {
        "sticky_turns": args.sticky_turns,
        "sticky_release_confidence": args.sticky_release_confidence,
    }
