"""Cost of each uncertainty estimator, relative to plain generation of the same tokens.

For every method: the wall time of ``ConfRouter.route`` (local generation with what the method
needs - a hidden state, a kept cache, samples - plus the confidence) divided by the wall time
of a plain greedy ``LocalModel.generate`` of the same conversation with the same model. Both
are timed on the same prompts after a warm-up: per prompt, one plain generation before and one
after the round of methods (their mean is the baseline); medians over repeats are summed over
prompts. ``verbalized_1s`` is compared with plain generation of its own (changed) prompt,
so that both write the same tokens; its answers are longer than the plain ones.

Probes and the logistic combination need fitted files; when none exist for the model, the
script fits throwaway ones on random labels in a temporary directory (the cost, not the
quality, is measured).

Usage:
    python benchmarks/overhead.py [--model qwen2.5-coder-0.5b-instruct] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np

from confroute import ConfRouter, LocalModel, estimators
from confroute.estimators import LogisticCombination
from confroute.estimators.probe_network import default_probe_path, train_probe
from confroute.local import GenerationConfig
from confroute.models import DEFAULT_SLM

PROMPTS = [
    "What is 17*23? Reply with the number only.",
    "What is the capital of Australia? Answer in one short sentence.",
    "Which planet is known as the Red Planet? A) Venus B) Mars C) Jupiter D) Saturn. "
    "Reply with just the letter.",
    "Write a Python expression that reverses a string s.",
]
TARGETS = {"p_true": 1.5, "verbalized_2s": 1.5, "jaccard_degree": 3.0}
SINGLE_PASS_TARGET = 1.05


def target(method: str) -> float | None:
    if method in TARGETS:
        return TARGETS[method]
    if method in ("verbalized_1s", "logistic_combination"):
        return None
    return SINGLE_PASS_TARGET


def ensure_fitted_files(model: LocalModel, directory: Path) -> None:
    """Throwaway probes and combination on random labels, when none exist for ``model``."""
    hidden = model.model.config.hidden_size
    rng = np.random.default_rng(0)
    features = rng.normal(size=(64, hidden)).astype(np.float32)
    labels = np.arange(64) % 2
    for kind in ("trained", "ood"):
        if not default_probe_path(model.name, kind).with_suffix(".safetensors").is_file():
            probe = train_probe(
                features,
                labels,
                model=model.name,
                fingerprint=model.fingerprint,
                kind=kind,
                epochs=1,
            )
            probe.save(directory / model.name / f"{kind}_probe")
    combo = LogisticCombination.fit(rng.uniform(size=(64, 4)), labels)
    combo.save(directory / model.name / "logistic_combination.json")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    model = LocalModel(args.model)
    prompts = PROMPTS[: args.prompts]
    workdir = Path(tempfile.mkdtemp(prefix="confroute-overhead-"))
    if not os.environ.get("CONFROUTE_PROBE_DIR"):
        os.environ["CONFROUTE_PROBE_DIR"] = str(workdir)
    ensure_fitted_files(model, Path(os.environ["CONFROUTE_PROBE_DIR"]))
    methods = args.methods or estimators.available()
    routers = {
        m: ConfRouter(model, None, estimator=m, threshold=0.0, max_new_tokens=args.max_new_tokens)
        for m in methods
    }
    plain = GenerationConfig(max_new_tokens=args.max_new_tokens)

    def conversation(method: str, prompt: str) -> list[dict[str, str]]:
        messages = [{"role": "user", "content": prompt}]
        return routers[method].estimator.transform_messages(messages)

    # warm-up: every code path once
    model.generate([[{"role": "user", "content": prompts[0]}]], plain)
    for m in methods:
        routers[m].route(prompts[0])
    base: dict[str, list[list[float]]] = {m: [[] for _ in prompts] for m in methods}
    timed: dict[str, list[list[float]]] = {m: [[] for _ in prompts] for m in methods}
    base_cpu: dict[str, list[list[float]]] = {m: [[] for _ in prompts] for m in methods}
    timed_cpu: dict[str, list[list[float]]] = {m: [[] for _ in prompts] for m in methods}
    tokens: dict[str, list[int]] = {m: [] for m in methods}

    def plain_run(conv: list[dict[str, str]]) -> tuple[float, float, Any]:
        started, cpu = time.perf_counter(), time.process_time()
        [answer] = model.generate([conv], plain)
        return time.perf_counter() - started, time.process_time() - cpu, answer

    for _ in range(args.repeats):
        for i, prompt in enumerate(prompts):
            # one plain generation before and one after the round of methods; their mean is
            # the baseline of every method that answers the unchanged prompt
            original = [{"role": "user", "content": prompt}]
            before = plain_run(original)
            rounds: dict[str, tuple[float, float, Any] | None] = {}
            for m in methods:
                changed = conversation(m, prompt)
                rounds[m] = plain_run(changed) if changed != original else None
                started, cpu = time.perf_counter(), time.process_time()
                response = routers[m].route(prompt)
                timed[m][i].append(time.perf_counter() - started)
                timed_cpu[m][i].append(time.process_time() - cpu)
                reference = (rounds[m] or before)[2]
                tokens[m].append(reference.completion_tokens)
                if (
                    response.local is not None
                    and m != "verbalized_1s"
                    and (response.local.token_ids != reference.token_ids)
                ):
                    print(f"warning: {m} wrote other tokens than plain generation", file=sys.stderr)
            after = plain_run(original)
            for m in methods:
                own = rounds[m]
                if own is not None:
                    base[m][i].append(own[0])
                    base_cpu[m][i].append(own[1])
                else:
                    base[m][i].append((before[0] + after[0]) / 2)
                    base_cpu[m][i].append((before[1] + after[1]) / 2)
    result = {}
    for m in methods:
        plain_time = sum(statistics.median(t) for t in base[m])
        method_time = sum(statistics.median(t) for t in timed[m])
        cpu_ratio = sum(statistics.median(t) for t in timed_cpu[m]) / sum(
            statistics.median(t) for t in base_cpu[m]
        )
        result[m] = {
            "ratio": method_time / plain_time,
            "cpu_ratio": cpu_ratio,
            "plain_s": plain_time,
            "method_s": method_time,
            "mean_tokens": statistics.mean(tokens[m]),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_SLM, help="local model (default %(default)s)")
    parser.add_argument("--prompts", type=int, default=4, help="how many fixed prompts (1-4)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats per prompt")
    parser.add_argument("--methods", nargs="*", default=None, help="estimators (default: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON {method: ratio}")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="ratio printed by --json: wall time (default) or this process's CPU time, "
        "steadier on a shared machine",
    )
    args = parser.parse_args(argv)
    results = measure(args)
    if args.json:
        key = "ratio" if args.clock == "wall" else "cpu_ratio"
        print(json.dumps({m: round(r[key], 3) for m, r in results.items()}))
        return 0
    print(
        f"model {args.model}, {args.prompts} prompts, max_new_tokens {args.max_new_tokens}, "
        f"median of {args.repeats} repeats, load average {os.getloadavg()[0]:.1f}"
    )
    print()
    print("| method | wall ratio | target | CPU ratio | plain s | with confidence s | tokens |")
    print("|---|---|---|---|---|---|---|")
    for m, r in results.items():
        goal = target(m)
        mark = "" if goal is None else (" ok" if r["ratio"] <= goal else " MISSED")
        print(
            f"| {m} | {r['ratio']:.3f} | {'-' if goal is None else f'<= {goal}'}{mark} | "
            f"{r['cpu_ratio']:.3f} | {r['plain_s']:.2f} | {r['method_s']:.2f} | "
            f"{r['mean_tokens']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
