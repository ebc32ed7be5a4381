"""Task success and escalations of the two tool-agent examples on a small fixed task set.

Each task is a note and a question whose answer is a number or a time in the note. The
LangChain agent (``examples/langchain_tool_agent.py``: ``create_agent`` when LangChain 1.x is
installed, else its loop by hand) and the LlamaIndex ``FunctionAgent``
(``examples/llamaindex_tool_agent.py``) run each task with the bundled models: the agent's
model is the router itself (0.5B, escalating to the in-process 1.5B, or ``--strong none``), and
the tool ``ask_local`` answers with the 0.5B only. Both models run on llama.cpp where it is
installed (``--backend transformers`` for the 0.5B on transformers). A task succeeds when
the agent's final answer contains the expected text.

Reported per agent: successes, tasks where the tool was called, the agent model's calls and
escalations (from the routing decisions), and tool answers flagged ``would_escalate``.

Usage:
    python benchmarks/agent_tasks.py [--quick] [--strong none] [--agents llamaindex]
        [--backend auto|llama.cpp|transformers] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import runpy
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from workflows.errors import WorkflowRuntimeError  # llama-index-core runs its agents on it

from confroute import ConfRouter, RoutingDecision
from confroute.backend import LocalBackend
from confroute.backend_choice import choose_backend, load_backend
from confroute.models import DEFAULT_SLM
from confroute.settings import RouterSettings
from langchain_confroute import ChatConfRoute, DecisionCollector
from llamaindex_confroute import ConfRouteLLM

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

TASKS: list[tuple[str, str, str]] = [
    (
        "The Larkspur K7 robot's battery lasts 14 hours and recharges in 90 minutes.",
        "How many hours does the K7 battery last?",
        "14",
    ),
    (
        "The Larkspur K7 robot carries up to 320 kilograms and moves at 2 metres per second.",
        "How many kilograms can the K7 carry?",
        "320",
    ),
    (
        "The Harbor Street bakery opens at 6:30 every morning and closes at 14:00.",
        "At what time does the Harbor Street bakery open?",
        "6:30",
    ),
    (
        "The city library lends up to 12 books at a time, for 21 days each.",
        "How many books can I borrow from the city library at a time?",
        "12",
    ),
    (
        "Bus line 42 runs to the airport every 15 minutes; the trip takes 35 minutes.",
        "How many minutes does the trip to the airport take on bus line 42?",
        "35",
    ),
    (
        "The municipal pool is 50 metres long and has 8 lanes; entry costs 4.50 euro.",
        "How many lanes does the municipal pool have?",
        "8",
    ),
]


DECISION_KEYS = ("escalated", "reason", "estimator", "confidence", "threshold")
"""What each agent-model decision contributes to the JSON (which rule, which estimator, why)."""


def add_task(
    result: dict[str, Any],
    ok: bool,
    tool_calls: int,
    model: list[dict[str, Any]],
    tool_unsure: int,
) -> None:
    """Count one finished task and print a line about it on stderr.

    ``model`` holds each agent-model call's decision as a dict (:data:`DECISION_KEYS` are
    kept in ``result["decisions"]``); the line lets a long run show what it has so far.
    """
    escalated = sum(bool(d["escalated"]) for d in model)
    result["tasks"] += 1
    result["success"] += ok
    result["tool_called"] += bool(tool_calls)
    result["model_calls"] += len(model)
    result["model_escalations"] += escalated
    result["tool_would_escalate"] += tool_unsure
    result["decisions"].extend(
        {"task": result["tasks"], **{k: d.get(k) for k in DECISION_KEYS}} for d in model
    )
    print(
        f"[{result['agent']}] task {result['tasks']}: {'ok' if ok else 'failed'}, "
        f"{escalated} of {len(model)} model calls escalated, {result['seconds']:.0f} s so far",
        file=sys.stderr,
        flush=True,
    )


def tally(name: str) -> dict[str, Any]:
    return {
        "agent": name,
        "tasks": 0,
        "success": 0,
        "tool_called": 0,
        "model_calls": 0,
        "model_escalations": 0,
        "tool_would_escalate": 0,
        "seconds": 0.0,
        "decisions": [],
        "errors": [],
    }


def run_langchain(slm: LocalBackend, strong: str | None, tasks: list[Any]) -> dict[str, Any]:
    agent = runpy.run_path(str(EXAMPLES / "langchain_tool_agent.py"), run_name="bench")
    llm = ChatConfRoute(local_model=slm, strong_model=strong, max_tokens=96)
    tool = agent["build_tool"](llm)
    result = tally("langchain")
    for notes, question, expected in tasks:
        decisions = DecisionCollector()
        started = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # the example prints its steps
            answer, transcript = agent["run_agent"](
                question, llm, tool, config={"callbacks": [decisions]}, notes=notes
            )
        result["seconds"] += time.perf_counter() - started
        tools = agent["tool_decisions"](transcript)
        unsure = sum(d["would_escalate"] for d in tools)
        add_task(result, expected in str(answer.content), len(tools), decisions.decisions, unsure)
    return result


async def run_llamaindex(slm: LocalBackend, strong: str | None, tasks: list[Any]) -> dict[str, Any]:
    agent = runpy.run_path(str(EXAMPLES / "llamaindex_tool_agent.py"), run_name="bench")
    decisions: list[RoutingDecision] = []
    router = ConfRouter(slm, strong, max_new_tokens=96, hooks=[decisions.append])
    llm = ConfRouteLLM(router=router)
    result = tally("llamaindex")
    for notes, question, expected in tasks:
        decisions.clear()
        started = time.perf_counter()
        try:
            with contextlib.redirect_stdout(sys.stderr):  # the example prints its steps
                answer, tools = await agent["run"](agent["build_agent"](llm), question, notes)
        except WorkflowRuntimeError as error:  # e.g. max iterations: the task failed
            result["errors"].append(f"task {result['tasks'] + 1}: {error}"[:300])
            answer, tools = "", []
        result["seconds"] += time.perf_counter() - started
        model = [d for d in decisions if d.id not in {t["decision_id"] for t in tools}]
        unsure = sum(t["would_escalate"] for t in tools)
        calls = [d.model_dump(mode="json") for d in model]
        add_task(result, expected in answer, len(tools), calls, unsure)
    return result


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the first task only")
    parser.add_argument(
        "--strong",
        default="confroute/qwen2.5-coder-1.5b-instruct",
        help="the agent model's escalation target, or 'none' (default %(default)s)",
    )
    parser.add_argument(
        "--agents",
        choices=["both", "langchain", "llamaindex"],
        default="both",
        help="which agents to run (default %(default)s; LangChain first)",
    )
    parser.add_argument(
        "--backend",
        choices=["auto", "llama.cpp", "transformers"],
        default="auto",
        help="the 0.5B's engine (default %(default)s: llama.cpp where it is installed)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    tasks = TASKS[:1] if args.quick else TASKS
    strong = None if args.strong.lower() == "none" else args.strong
    slm = load_backend(choose_backend(DEFAULT_SLM, args.backend), RouterSettings())
    results = []
    if args.agents in ("both", "langchain"):
        results.append(run_langchain(slm, strong, tasks))
    if args.agents in ("both", "llamaindex"):
        results.append(asyncio.run(run_llamaindex(slm, strong, tasks)))
    if args.json:
        print(
            json.dumps({"backend": slm.capabilities.backend, "strong": strong, "results": results})
        )
        return
    print(f"agent model: {DEFAULT_SLM} -> {strong}; tool: ask_local ({DEFAULT_SLM}, local mode)")
    print("agent       tasks success tool_called model_calls escalations tool_unsure seconds")
    for r in results:
        print(
            f"{r['agent']:11s} {r['tasks']:5d} {r['success']:7d} {r['tool_called']:11d} "
            f"{r['model_calls']:11d} {r['model_escalations']:11d} "
            f"{r['tool_would_escalate']:11d} {r['seconds']:7.1f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
