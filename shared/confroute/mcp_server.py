"""``confroute mcp``: an MCP server with the tools ``ask`` and ``score``, on the official SDK.

``ask`` answers a question (optionally resting on a context) with the router, escalating when
unsure unless ``max_escalation`` keeps it local; ``score`` tells how sure the local model is of
a given answer. Each result's text content is what a model reads (the answer, or the score as
JSON); its structured content holds the decision (:class:`AskResult`, :class:`ScoreResult`).
Secrets never appear in results or logs.

Run: ``confroute mcp`` (stdio, for Claude Desktop and IDEs) or ``confroute mcp --transport
streamable-http --port 8765`` (``http://127.0.0.1:8765/mcp``). The ``mcp`` package (extra
``confroute[mcp]``) is imported only when the server is built.
"""

# No ``from __future__ import annotations`` here: the SDK reads the tool functions' annotations
# (defined inside build_server, after the lazy import of mcp) as objects.

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from confroute.agent import ToolDecision, ToolMode, aask, masked, tool_messages
from confroute.cli_args import add_slm_backend_arguments, slm_backend_settings
from confroute.errors import ConfigurationError, ConfRouteError
from confroute.router import ConfRouter
from confroute.settings import RouterSettings, environment

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

__all__ = [
    "AskResult",
    "MaxEscalation",
    "ScoreResult",
    "add_mcp_parser",
    "build_server",
    "keep_stdout_for_the_protocol",
    "mode_for",
    "run_mcp",
]

logger = logging.getLogger(__name__)

MaxEscalation = bool | Literal["never", "local", "strong"]
"""How far ``ask`` may escalate: True or ``"strong"`` (default: escalate when unsure), False,
``"never"`` or ``"local"`` (the local model answers; the result says whether it is unsure)."""

STDOUT_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")
"""Loggers whose records below WARNING are written to stdout (LiteLLM's)."""

INSTRUCTIONS = (
    "confroute answers questions with a small local model and escalates to a stronger model "
    "only when the small one is unsure. Use `ask` for self-contained sub-questions (pass the "
    "text the answer must rest on as `context`); the result's structured content says how "
    "confident the answer is and which model wrote it. Use `score` to check how sure the small "
    "model is of an answer you have."
)


class AskResult(ToolDecision):
    """The structured content of ``ask``: the answer and the routing decision."""

    answer: str
    """The answer text (also the result's text content)."""


class ScoreResult(BaseModel):
    """The structured content of ``score``: the local model's confidence in a given answer."""

    model_config = ConfigDict(frozen=True)

    confidence: float | None
    """Confidence in [0, 1] that the answer is right; None when it could not be computed."""
    threshold: float
    """The threshold the router's policy compares the confidence with."""
    estimator: str
    """The uncertainty estimator that scored it."""
    escalate: bool
    """Whether the router's policy would escalate this answer."""
    reason: str
    """Why (``confident``, ``low_confidence``, ``no_confidence``, ...)."""
    local_model: str
    """The local model that scored the answer."""


def mode_for(max_escalation: MaxEscalation) -> ToolMode:
    """The tool mode for ``ask``'s ``max_escalation`` argument.

    Raises:
        ConfigurationError: A value other than a bool, ``"never"``, ``"local"`` or ``"strong"``.
    """
    if max_escalation is True or max_escalation == "strong":
        return "route"
    if max_escalation is False or max_escalation in ("never", "local"):
        return "local"
    raise ConfigurationError(
        f"max_escalation must be true or 'strong' (escalate when unsure), or false, 'never' or "
        f"'local' (the local model only), got {max_escalation!r}."
    )


def build_server(
    router: ConfRouter,
    *,
    name: str = "confroute",
    max_new_tokens: int | None = None,
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "WARNING",
) -> "MCPServer[Any]":
    """An MCP server whose tools ``ask`` and ``score`` answer and score with ``router``.

    Args:
        router: The router (its :meth:`~confroute.router.ConfRouter.ascore` backs ``score``).
        name: The server's name, as clients list it.
        max_new_tokens: Answer length cap of ``ask`` (default: the router's).
        log_level: The SDK's logging level (logs go to stderr).

    Raises:
        ConfigurationError: The ``mcp`` package is not installed.
    """
    try:
        from mcp.server.mcpserver import MCPServer
        from mcp.server.mcpserver.exceptions import ToolError
        from mcp.types import CallToolResult, TextContent, ToolAnnotations
    except ImportError as error:
        raise ConfigurationError(
            "confroute mcp needs the MCP SDK: pip install 'confroute[mcp]' (or pip install mcp)."
        ) from error
    from typing import Annotated

    from confroute import __version__

    server: MCPServer[Any] = MCPServer(
        name, instructions=INSTRUCTIONS, version=__version__, log_level=log_level
    )
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=True)

    async def ask(
        question: Annotated[str, Field(description="The question to answer.")],
        context: Annotated[
            str | None,
            Field(description="Text the answer must rest on (for example retrieved passages)."),
        ] = None,
        max_escalation: Annotated[
            MaxEscalation,
            Field(
                description="true or 'strong': escalate to the strong model when unsure "
                "(default); false, 'never' or 'local': the small local model answers and the "
                "result says whether it is unsure."
            ),
        ] = True,
    ) -> Annotated[CallToolResult, AskResult]:
        """Answer a question with the small local model, escalating when it is unsure."""
        try:
            mode = mode_for(max_escalation)
            text, decision = await aask(
                router, question, context, mode=mode, max_new_tokens=max_new_tokens
            )
        except ConfRouteError as error:
            raise ToolError(masked(str(error), router)) from None
        result = AskResult(answer=text, **decision.model_dump())
        return CallToolResult(
            content=[TextContent(type="text", text=text)],
            structured_content=result.model_dump(mode="json"),
        )

    async def score(
        question: Annotated[str, Field(description="The question that was answered.")],
        answer: Annotated[str, Field(description="The answer to score.")],
        context: Annotated[
            str | None, Field(description="The text the answer had to rest on, if any.")
        ] = None,
    ) -> ScoreResult:
        """How confident the small local model is that an answer to a question is right."""
        try:
            if not isinstance(answer, str) or not answer.strip():
                raise ConfigurationError("answer must be a non-empty string (the answer to score).")
            messages = tool_messages(question, context)
            scored = await router.ascore(messages, answer)
        except ConfRouteError as error:
            raise ToolError(masked(str(error), router)) from None
        return ScoreResult(
            confidence=scored.confidence,
            threshold=scored.threshold,
            estimator=scored.estimator,
            escalate=scored.escalate,
            reason=masked(str(scored.reason), router),
            local_model=router.local.name,
        )

    server.add_tool(ask, annotations=read_only)
    server.add_tool(score, annotations=read_only)
    return server


def add_mcp_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``mcp`` command to an ``argparse`` sub-parser collection and return it."""
    from confroute import estimators

    env = environment()
    defaults = RouterSettings.model_fields
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "mcp",
        help="serve the tools ask and score over MCP (stdio, or streamable HTTP)",
        description="An MCP server (official SDK): `ask` answers with the local model and "
        "escalates when unsure; `score` gives the local model's confidence in an answer.",
    )
    parser.add_argument(
        "--transport",
        choices=("stdio", "streamable-http"),
        default="stdio",
        help="stdio (default; for Claude Desktop and IDEs) or streamable-http",
    )
    parser.add_argument("--host", default="127.0.0.1", help="HTTP interface (default %(default)s)")
    parser.add_argument("--port", type=int, default=8765, help="HTTP port (default %(default)s)")
    parser.add_argument(
        "--slm", default=env.slm, help="local model: bundled name, directory, .gguf or hub id"
    )
    parser.add_argument(
        "--llm",
        "--strong",
        dest="llm",
        default=env.llm,
        help="strong model as a LiteLLM model string, or 'none' to stay local (env "
        "CONFROUTE_LLM; default %(default)s)",
    )
    add_slm_backend_arguments(parser, env)
    parser.add_argument(
        "--api-base", default=env.api_base, help="base URL of the strong model's server"
    )
    parser.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="environment variable holding the strong model's key (default CONFROUTE_API_KEY)",
    )
    parser.add_argument("--threshold", type=float, default=None, help="escalate below this")
    parser.add_argument(
        "--estimator",
        default=defaults["estimator"].default,
        choices=estimators.available(),
        help="uncertainty estimator (default %(default)s)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=defaults["max_new_tokens"].default,
        help="answer length cap (default %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        help="logging level, to stderr (default %(default)s)",
    )
    return parser


def run_mcp(args: argparse.Namespace) -> int:
    """Build the router from the parsed arguments and serve MCP until the client leaves."""
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    if args.transport == "stdio":
        keep_stdout_for_the_protocol()
    if args.api_key_env is None:
        api_key: Any = environment().api_key
    else:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ConfigurationError(
                f"The environment variable {args.api_key_env} is not set; export it first."
            )
    strong = None if str(args.llm).lower() == "none" else args.llm
    router = ConfRouter(
        args.slm,
        strong,
        estimator=args.estimator,
        threshold=args.threshold,
        api_base=args.api_base,
        api_key=api_key,
        max_new_tokens=args.max_new_tokens,
        **slm_backend_settings(args),
    )
    server = build_server(router, log_level=args.log_level)
    print(
        f"confroute mcp: {_where(args)} local={router.local.name} strong={strong}",
        file=sys.stderr,
    )
    if args.transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host=args.host, port=args.port)
    return 0


def keep_stdout_for_the_protocol() -> None:
    """On stdio, keep libraries that log to stdout quiet below WARNING.

    LiteLLM writes its records below WARNING to ``sys.stdout`` (its LevelRoutingStreamHandler),
    even at exit; on the stdio transport stdout is the JSON-RPC stream, and such a line breaks
    the client's reading of it. Its loggers are held at WARNING (their warnings go to stderr).
    """
    for name in STDOUT_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))


def _where(args: argparse.Namespace) -> str:
    if args.transport == "stdio":
        return "stdio"
    return f"http://{args.host}:{args.port}/mcp"
