"""The ``confroute`` command line: ``confroute ask "QUESTION"`` and ``confroute models``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from confroute.bench.cli import add_bench_parser, run_bench
from confroute.calibrate_cli import add_parsers as add_calibration_parsers
from confroute.calibrate_cli import run_calibrate, run_profile
from confroute.cli_args import (
    add_slm_backend_arguments,
    add_tool_estimator_arguments,
    slm_backend_settings,
    tool_estimator_settings,
)
from confroute.errors import ConfRouteError
from confroute.mcp_server import add_mcp_parser, run_mcp
from confroute.models import BUNDLED_MODELS, DEFAULT_SLM
from confroute.serving.cli import add_serve_parser, run_serve
from confroute.settings import environment

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from confroute import estimators

    env = environment()
    parser = argparse.ArgumentParser(
        prog="confroute",
        description="Answer with a small local model; escalate to a strong model when unsure.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    ask = commands.add_parser("ask", help="answer one question and show the routing decision")
    ask.add_argument("question", help="the question to answer")
    ask.add_argument(
        "--slm",
        default=env.slm,
        help="local model: bundled name, directory, .gguf file, hub id, or a LiteLLM model "
        "string of a server with log-probs (env CONFROUTE_SLM; default %(default)s)",
    )
    add_slm_backend_arguments(ask, env)
    ask.add_argument(
        "--llm",
        default=env.llm,
        help="strong model as a LiteLLM model string, a comma-separated cascade of tiers "
        "(e.g. qwen2.5-coder-1.5b-instruct,openai/gpt-4o-mini), or 'none' to stay local (env "
        "CONFROUTE_LLM; default %(default)s)",
    )
    ask.add_argument("--api-base", default=None, help="base URL of the strong model's server")
    ask.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="name of the environment variable holding the strong model's key",
    )
    ask.add_argument("--threshold", type=float, default=None, help="escalate below this confidence")
    ask.add_argument(
        "--escalation-rate",
        type=float,
        default=None,
        help="escalate this share of requests (the threshold comes from --profile, or the "
        "profile shipped for a bundled model and the estimator)",
    )
    ask.add_argument(
        "--profile",
        default=None,
        help="calibration profile JSON for --escalation-rate (see `confroute calibrate`)",
    )
    ask.add_argument(
        "--estimator",
        default="perplexity",
        choices=estimators.available(),
        help="uncertainty estimator (default %(default)s)",
    )
    add_tool_estimator_arguments(ask, estimators.available())
    ask.add_argument("--max-new-tokens", type=int, default=256, help="local answer length cap")
    ask.add_argument("--system", default=None, help="a system prompt")
    ask.add_argument("--json", action="store_true", help="print one JSON object")
    commands.add_parser("models", help="list the bundled models and whether they are installed")
    add_calibration_parsers(commands, DEFAULT_SLM, estimators.available())
    add_serve_parser(commands)
    add_mcp_parser(commands)
    add_bench_parser(commands)
    return parser


def _strong_model(text: str) -> str | list[str] | None:
    """``--llm``: 'none', one model string, or a comma-separated cascade of tiers."""
    if text.lower() == "none":
        return None
    tiers = [tier.strip() for tier in text.split(",")]
    return tiers if len(tiers) > 1 else text


def _ask(args: argparse.Namespace) -> int:
    from confroute.router import ConfRouter

    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    router = ConfRouter(
        args.slm,
        _strong_model(args.llm),
        **slm_backend_settings(args),
        **tool_estimator_settings(args),
        estimator=args.estimator,
        threshold=args.threshold,
        escalation_rate=args.escalation_rate,
        profile=args.profile,
        api_base=args.api_base,
        api_key=api_key,
        max_new_tokens=args.max_new_tokens,
    )
    messages = [{"role": "user", "content": args.question}]
    if args.system:
        messages.insert(0, {"role": "system", "content": args.system})
    response = router.route(messages)
    decision = response.decision
    if args.json:
        payload = {
            "answer": response.text,
            "model": decision.answered_by,
            **decision.model_dump(mode="json"),
        }
        print(json.dumps(payload, indent=2))
        return 0
    confidence = "n/a" if decision.confidence is None else f"{decision.confidence:.3f}"
    route = "escalated" if decision.escalated else "kept local"
    print(response.text)
    print()
    print(f"answered by : {decision.answered_by} ({route})")
    print(f"confidence  : {confidence} ({decision.estimator}); threshold {decision.threshold:.3f}")
    print(f"reason      : {decision.reason}")
    print(f"policy      : {router.policy!r}")
    latency = f"local {decision.local_latency_s:.2f}s"
    if decision.remote_latency_s is not None:
        latency += f", remote {decision.remote_latency_s:.2f}s"
    print(f"latency     : {latency}")
    if decision.cost_usd is not None:
        print(f"cost        : ${decision.cost_usd:.6f}")
    if decision.error:
        print(f"escalation error: {decision.error}")
    return 0


def _models() -> int:
    from confroute.backend_choice import choose_backend
    from confroute.errors import WeightsNotInstalledError
    from confroute.models import _part_paths

    for name, model in sorted(BUNDLED_MODELS.items()):
        try:
            _part_paths(model)
            status = "installed"
        except WeightsNotInstalledError:
            status = f"not installed ({model.pip_install})"
        engine = choose_backend(name).backend
        print(f"{name:32s} {model.title:45s} {status}; runs on {engine}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        if args.command == "ask":
            return _ask(args)
        if args.command == "calibrate":
            return run_calibrate(args)
        if args.command == "profile":
            return run_profile(args)
        if args.command == "serve":
            return run_serve(args)
        if args.command == "mcp":
            return run_mcp(args)
        if args.command == "bench":
            return run_bench(args)
        return _models()
    except ConfRouteError as error:
        print(f"confroute: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
