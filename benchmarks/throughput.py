"""Requests per second of the local model with and without micro-batching.

For 1, 4 and 16 concurrent callers, each caller sends its share of the requests one after the
other through ``ConfRouter.aroute`` (local-only routing, ``strong_model=None``, so only the SLM
is measured). With micro-batching off the model answers one request at a time; with it on
(:class:`confroute.serving.MicroBatcher`) requests that arrive together share one batched
generation. Every configuration answers the same prompts with the same greedy settings, in
one process, after a warm-up, so the ratios are comparable even on a busy machine.

``speedup_16`` = requests/s with micro-batching at 16 callers divided by requests/s of the
same 16 callers with micro-batching off (one request at a time).

Usage:
    python benchmarks/throughput.py [--model qwen2.5-coder-0.5b-instruct] [--max-new-tokens 16]
        [--requests 16] [--window-ms 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from confroute import ConfRouter, LocalModel
from confroute.models import DEFAULT_SLM
from confroute.serving import MicroBatcher

CALLERS = (1, 4, 16)
PROMPTS = [
    "Explain what a hash table is.",
    "Describe how photosynthesis works.",
    "Write a Python function that checks whether a number is prime.",
    "What causes the seasons on Earth?",
    "Explain the difference between a list and a tuple in Python.",
    "Why is the sky blue?",
    "Describe the water cycle.",
    "What is recursion? Give an example.",
    "Explain how binary search works.",
    "What is the Pythagorean theorem?",
    "Describe what a compiler does.",
    "Explain what an HTTP request is.",
    "What is the difference between RAM and disk storage?",
    "Explain gradient descent in simple words.",
    "What does a DNS server do?",
    "Describe how a bicycle stays upright.",
]


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0 < q < 1) by linear interpolation."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


async def run_round(
    router: ConfRouter, callers: int, requests: int, max_new_tokens: int
) -> dict[str, Any]:
    """``callers`` concurrent callers send ``requests`` requests in all; time each one."""
    per_caller = [requests // callers + (i < requests % callers) for i in range(callers)]
    latencies: list[float] = []
    tokens = 0

    async def caller(index: int, count: int) -> None:
        nonlocal tokens
        for k in range(count):
            prompt = PROMPTS[(index + k * callers) % len(PROMPTS)]
            started = time.perf_counter()
            response = await router.aroute(prompt, max_new_tokens=max_new_tokens)
            latencies.append(time.perf_counter() - started)
            tokens += response.decision.local_completion_tokens

    started = time.perf_counter()
    await asyncio.gather(*(caller(i, n) for i, n in enumerate(per_caller) if n))
    wall = time.perf_counter() - started
    return {
        "callers": callers,
        "requests": requests,
        "wall_s": round(wall, 3),
        "requests_per_s": round(requests / wall, 4),
        "tokens_per_s": round(tokens / wall, 2),
        "p50_latency_s": round(percentile(latencies, 0.5), 3),
        "p95_latency_s": round(percentile(latencies, 0.95), 3),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run every configuration and return the report."""
    model = LocalModel(args.model, max_batch_size=max(CALLERS))
    plain = ConfRouter(model, None, max_new_tokens=args.max_new_tokens)
    batcher = MicroBatcher(model, window_ms=args.window_ms, max_batch=max(CALLERS))
    batched = ConfRouter(batcher, None, max_new_tokens=args.max_new_tokens)
    plain.route(PROMPTS[0], max_new_tokens=4)  # warm-up

    async def all_rounds() -> dict[str, list[dict[str, Any]]]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=2 * max(CALLERS)))
        results: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
        for callers in CALLERS:
            for mode, router in (("off", plain), ("on", batched)):
                row = await run_round(router, callers, args.requests, args.max_new_tokens)
                results[mode].append(row)
                print(f"batching {mode:3s} {json.dumps(row)}", file=sys.stderr)
        return results

    results = asyncio.run(all_rounds())
    batcher.close()
    rps = {
        mode: {r["callers"]: r["requests_per_s"] for r in rows} for mode, rows in results.items()
    }
    return {
        "model": model.name,
        "max_new_tokens": args.max_new_tokens,
        "requests_per_round": args.requests,
        "window_ms": args.window_ms,
        "batching_off": results["off"],
        "batching_on": results["on"],
        "speedup_16": round(rps["on"][16] / rps["off"][16], 3),
        "speedup_16_vs_single_caller": round(rps["on"][16] / rps["off"][1], 3),
        "mean_batch_on": round(batcher.stats.mean_batch, 2),
    }


def main() -> int:
    """Parse the arguments, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_SLM, help="local model (default %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--requests", type=int, default=16, help="requests per round")
    parser.add_argument("--window-ms", type=float, default=5.0, help="batching window")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    report = measure(args)
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"model {report['model']}, max_new_tokens {report['max_new_tokens']}, "
        f"{report['requests_per_round']} requests per round"
    )
    print("| callers | batching | requests/s | tokens/s | p50 latency s | p95 latency s |")
    print("|---|---|---|---|---|---|")
    for mode in ("off", "on"):
        for row in report[f"batching_{mode}"]:
            print(
                f"| {row['callers']} | {mode} | {row['requests_per_s']} | {row['tokens_per_s']} "
                f"| {row['p50_latency_s']} | {row['p95_latency_s']} |"
            )
    print(f"speedup_16 = {report['speedup_16']} (target >= 3)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
