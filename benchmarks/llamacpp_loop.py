"""The llama.cpp backend's decoding loop against plain ``Llama.create_completion``, same prompts.

Both run greedy on the same ``llama_cpp.Llama`` (the backend's own), batch 1, from an empty
cache (``Llama.reset()`` before each plain call: the backend never reuses a cached prompt for
an answer, so neither does the baseline). Reports the best of ``--repeats`` runs per prompt,
in wall time and in this process's CPU time (less sensitive to other load on the machine).

    python benchmarks/llamacpp_loop.py --quick            # 3 prompts, 48 tokens, best of 2
    python benchmarks/llamacpp_loop.py --model qwen2.5-coder-1.5b-instruct --json
"""

from __future__ import annotations

import argparse
import json
import time

from confroute.generation import GenerationConfig
from confroute.llamacpp import LlamaCppModel
from confroute.models import DEFAULT_SLM

PROMPTS = (
    "What is the capital of France? Answer in one sentence.",
    "Write a Python function that reverses a string.",
    "Explain what a hash map is in two sentences.",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_SLM)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="best of 2 instead of --repeats")
    parser.add_argument("--json", action="store_true", help="one JSON object on the last line")
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    model = LlamaCppModel(args.model)
    llama = model.llama
    config = GenerationConfig(max_new_tokens=args.max_new_tokens)
    model.generate([[{"role": "user", "content": "Hi"}]], GenerationConfig(max_new_tokens=2))
    rows = []
    for prompt in PROMPTS:
        ids = model.encode(model.render([{"role": "user", "content": prompt}]))
        plain_s = ours_s = plain_cpu = ours_cpu = float("inf")
        plain_n = ours_n = 0
        same = True
        for _ in range(repeats):
            llama.reset()
            started, cpu = time.perf_counter(), time.process_time()
            out = llama.create_completion(ids, max_tokens=args.max_new_tokens, temperature=0.0)
            plain_s = min(plain_s, time.perf_counter() - started)
            plain_cpu = min(plain_cpu, time.process_time() - cpu)
            plain_n = int(out["usage"]["completion_tokens"])
            started, cpu = time.perf_counter(), time.process_time()
            [generation] = model.generate_from_ids([ids], config)
            ours_s = min(ours_s, time.perf_counter() - started)
            ours_cpu = min(ours_cpu, time.process_time() - cpu)
            ours_n = generation.completion_tokens
            same = same and out["choices"][0]["text"] == generation.text
        row = {
            "prompt_tokens": len(ids),
            "plain_tokens": plain_n,
            "plain_tokens_per_s": round(plain_n / plain_s, 1),
            "backend_tokens": ours_n,
            "backend_tokens_per_s": round(ours_n / ours_s, 1),
            "time_per_token_ratio": round(
                (ours_s / max(ours_n, 1)) / (plain_s / max(plain_n, 1)), 3
            ),
            "cpu_per_token_ratio": round(
                (ours_cpu / max(ours_n, 1)) / (plain_cpu / max(plain_n, 1)), 3
            ),
            "same_text": same,
        }
        rows.append(row)
        if not args.json:
            print(json.dumps(row))
    summary = {
        "model": args.model,
        "plain_tokens_per_s": round(
            sum(r["plain_tokens"] for r in rows)
            / sum(r["plain_tokens"] / r["plain_tokens_per_s"] for r in rows),
            1,
        ),
        "backend_tokens_per_s": round(
            sum(r["backend_tokens"] for r in rows)
            / sum(r["backend_tokens"] / r["backend_tokens_per_s"] for r in rows),
            1,
        ),
        "rows": rows,
    }
    summary["overhead"] = round(summary["plain_tokens_per_s"] / summary["backend_tokens_per_s"], 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
