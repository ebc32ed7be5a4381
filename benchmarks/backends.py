"""Speed of the local engines side by side, in one run, on the same GGUF weights.

For each bundled model (the 0.5B, and the 1.5B unless ``--quick``), batch 1, greedy, the same
short chat prompts and token cap, best wall time of ``--repeats`` rounds per prompt (each round
runs the prompts in turn, so no call follows its own prompt):

(a) plain llama.cpp: ``llama_cpp.Llama.create_chat_completion`` (no log-probs);
(b) confroute's llama.cpp backend (:class:`confroute.llamacpp.LlamaCppModel`) through
    ``ConfRouter.route`` with ``perplexity`` and with ``p_true``;
(c) confroute's transformers backend (:class:`confroute.LocalModel`) with ``perplexity``;
(d) a llama.cpp server (``python -m llama_cpp.server``, same file) reached through the server
    backend (:class:`confroute.server_backend.ServerModel`) with ``perplexity``, and the same
    server called directly through LiteLLM; and ``--requests`` requests from 16 concurrent
    callers, the server's throughput with and without confroute in front (both ask for
    log-probs; run direct, routed, routed, direct and averaged, so neither side gains from its
    place in the order). llama-cpp-python's server answers one request at a time; ``--llama-server
    PATH`` runs llama.cpp's own ``llama-server`` instead, with 16 slots (``--parallel 16``,
    continuous batching), the kind of server the 16-caller target is about
    (``benchmarks/build_llama_server.sh`` builds it from the llama.cpp that llama-cpp-python
    vendors);
(e) the decoding loop itself, on the backend's own ``Llama`` and in this process's CPU time
    (less sensitive than wall time to other load on the machine): plain
    ``Llama.create_completion`` from an empty cache against ``generate_from_ids``, the prefill
    split out (the whole prompt, and only what follows the chat template's shared prefix, which
    both (a) and (b) read from the cache after another prompt), and the CPU cost of
    the loop's per-token statistics (:func:`confroute.llamacpp_decode.step`).

Tokens/s is completion tokens over wall time of the whole call (prefill included), summed over
the prompts. ``overhead_*`` = wall time of (b) over wall time of (a) for the same prompts
(1.0 = no cost); ``speedup_batch1`` = tokens/s of (b, perplexity) over tokens/s of (c), 0.5B.

Usage:
    python benchmarks/backends.py [--quick] [--repeats 3] [--max-new-tokens 48] [--json]
    python benchmarks/backends.py --server-only --llama-server PATH --requests 48 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np

from confroute import ConfRouter, LocalModel
from confroute.generation import GenerationConfig
from confroute.llamacpp import LlamaCppModel
from confroute.llamacpp_decode import step
from confroute.models import BUNDLED_MODELS, DEFAULT_LLM, DEFAULT_SLM, bundled_gguf
from confroute.server_backend import ServerModel

PROMPTS = [
    "Explain what a hash table is.",
    "Why is the sky blue?",
    "Write a Python function that reverses a string.",
]
CONCURRENT = 16
SERVER_TOKENS = 16
"""Token cap of the server part: llama-cpp-python's server keeps every position's logits when
log-probs are asked (``logits_all``), which makes it slow on a CPU; the ratios are what count."""
THREADS = min(4, os.cpu_count() or 1)


def measure(repeats: int, calls: list[Callable[[], int]]) -> dict[str, float]:
    """Wall seconds and tokens summed over prompts (best of ``repeats`` each), and tokens/s.

    Each of the ``repeats`` rounds runs every prompt once, in order, so no call follows its
    own prompt: an engine's prompt cache (``create_chat_completion``'s, the llama.cpp
    backend's system turn) then holds only what consecutive prompts share, as on real
    traffic. Back-to-back repeats of one prompt let plain llama.cpp reuse the whole prompt.
    """
    best = [(float("inf"), 0)] * len(calls)
    for _ in range(repeats):
        for index, call in enumerate(calls):
            started = time.perf_counter()
            tokens = call()
            best[index] = min(best[index], (time.perf_counter() - started, tokens))
    wall = sum(seconds for seconds, _ in best)
    tokens = sum(count for _, count in best)
    return {
        "wall_s": round(wall, 3),
        "tokens": int(tokens),
        "tokens_per_s": round(tokens / wall, 2),
        "latency_s": round(wall / len(calls), 3),
    }


def best_cpu(repeats: int, call: Callable[[], Any]) -> float:
    """Least CPU seconds of this process over ``repeats`` calls."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        call()
        best = min(best, time.process_time() - started)
    return best


def shared_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with (the chat template's system turn)."""
    count = 0
    while all(len(p) > count and p[count] == prompts[0][count] for p in prompts):
        count += 1
    return count


def loop_section(backend: LlamaCppModel, cap: int, repeats: int) -> dict[str, Any]:
    """(e): the backend's loop against plain llama.cpp on its own ``Llama``, in CPU seconds."""
    llama = backend.llama
    prompts = [backend.encode(backend.render(messages(p))) for p in PROMPTS]
    common = shared_prefix(prompts)
    config = GenerationConfig(max_new_tokens=cap)
    plain_cpu = ours_cpu = full_cpu = suffix_cpu = 0.0
    tokens = 0
    same = True
    for ids in prompts:

        def plain(ids: list[int] = ids) -> None:
            llama.reset()
            llama.create_completion(ids, max_tokens=cap, temperature=0.0)

        def prefill_full(ids: list[int] = ids) -> None:
            llama.reset()
            llama.eval(ids)

        def prefill_suffix(ids: list[int] = ids) -> None:
            llama.n_tokens = common  # the cache holds the shared prefix after prefill_full
            llama.eval(ids[common:])

        def ours(ids: list[int] = ids) -> None:
            backend.generate_from_ids([ids], config)

        plain_cpu += best_cpu(repeats, plain)
        ours_cpu += best_cpu(repeats, ours)
        full_cpu += best_cpu(repeats, prefill_full)
        suffix_cpu += best_cpu(repeats, prefill_suffix)
        llama.reset()
        text = llama.create_completion(ids, max_tokens=cap, temperature=0.0)
        [generation] = backend.generate_from_ids([ids], config)
        same = same and text["choices"][0]["text"] == generation.text
        tokens += generation.completion_tokens
    import llama_cpp

    row = np.ctypeslib.as_array(
        llama_cpp.llama_get_logits_ith(llama.ctx, -1), shape=(llama.n_vocab(),)
    ).copy()
    rounds = 200
    started = time.process_time()
    for _ in range(rounds):
        step(row, backend.top_k)
    step_ms = (time.process_time() - started) / rounds * 1e3
    return {
        "prompt_tokens": sum(len(p) for p in prompts),
        "shared_prefix_tokens": common,
        "completion_tokens": tokens,
        "plain_cpu_s": round(plain_cpu, 3),
        "backend_cpu_s": round(ours_cpu, 3),
        "cpu_ratio": round(ours_cpu / plain_cpu, 3),
        "prefill_full_cpu_s": round(full_cpu, 3),
        "prefill_after_shared_prefix_cpu_s": round(suffix_cpu, 3),
        "step_cpu_ms_per_token": round(step_ms, 3),
        "step_share_of_backend_cpu": round(step_ms * tokens / 1e3 / ours_cpu, 4),
        "same_text": same,
    }


def messages(prompt: str) -> list[dict[str, str]]:
    """One user turn."""
    return [{"role": "user", "content": prompt}]


def routed(router: ConfRouter, prompt: str, cap: int) -> Callable[[], int]:
    """A call of ``router.route`` returning the local answer's token count."""

    def call() -> int:
        local = router.route(prompt, max_new_tokens=cap).local
        return local.completion_tokens if local is not None else 0

    return call


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def llama_server(gguf: str, alias: str, binary: str | None = None) -> Iterator[str]:
    """A llama.cpp server on 127.0.0.1 for the duration; yields its /v1 URL.

    ``binary``: llama.cpp's ``llama-server`` with :data:`CONCURRENT` slots of 2,048 tokens
    (continuous batching); None: ``python -m llama_cpp.server`` (one request at a time).
    """
    port = free_port()
    if binary is not None:
        command = [
            binary, "--model", gguf, "--alias", alias, "--host", "127.0.0.1",
            "--port", str(port), "--ctx-size", str(2048 * CONCURRENT),
            "--parallel", str(CONCURRENT), "--threads", str(THREADS), "--no-webui",
        ]  # fmt: skip
    else:
        command = [
            sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--model_alias", alias,
            "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
            "--n_threads", str(THREADS),
        ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(base + "/models", timeout=5):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{command[0]} did not start") from None
                time.sleep(1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


async def concurrent_throughput(call: Callable[[str], Any], total: int) -> float:
    """Requests/s of ``total`` requests from ``CONCURRENT`` callers (each awaits in turn)."""
    queue = [PROMPTS[i % len(PROMPTS)] for i in range(total)]

    async def caller() -> None:
        while queue:
            await call(queue.pop())

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CONCURRENT)))
    return total / (time.perf_counter() - started)


def server_section(
    gguf: str, cap: int, repeats: int, requests: int, binary: str | None
) -> dict[str, Any]:
    """(d): the server backend against direct LiteLLM calls, batch 1 and 16 callers."""
    import litellm

    alias = "bench-slm"
    with llama_server(gguf, alias, binary) as base:
        model = f"openai/{alias}"
        direct_kwargs: dict[str, Any] = {
            "model": model, "api_base": base, "api_key": "none", "max_tokens": cap,
            "temperature": 0.0, "logprobs": True, "top_logprobs": 5,
        }  # fmt: skip

        def direct(prompt: str) -> Callable[[], int]:
            def call() -> int:
                reply = litellm.completion(messages=messages(prompt), **direct_kwargs)
                return int(reply.usage.completion_tokens)

            return call

        router = ConfRouter(ServerModel(model, api_base=base, api_key="none"), None)
        plain = measure(repeats, [direct(p) for p in PROMPTS])
        through = measure(repeats, [routed(router, p, cap) for p in PROMPTS])

        async def direct_async(prompt: str) -> Any:
            return await litellm.acompletion(messages=messages(prompt), **direct_kwargs)

        async def routed_async(prompt: str) -> Any:
            return await router.aroute(prompt, max_new_tokens=cap)

        asyncio.run(concurrent_throughput(direct_async, CONCURRENT))  # warm every slot
        # direct, routed, routed, direct: each side runs once early and once late, so neither
        # gains from going second (the server's slots cache the prompts)
        order = (direct_async, routed_async, routed_async, direct_async)
        rates = [asyncio.run(concurrent_throughput(call, requests)) for call in order]
        plain_rps, routed_rps = (rates[0] + rates[3]) / 2, (rates[1] + rates[2]) / 2
    return {
        "server": "llama-server --parallel 16" if binary else "llama_cpp.server",
        "max_new_tokens": cap,
        "direct_litellm": plain,
        "server_backend_perplexity": through,
        "overhead_batch1": round(through["wall_s"] / plain["wall_s"], 3),
        "concurrent_callers": CONCURRENT,
        "requests": requests,
        "direct_requests_per_s": round(plain_rps, 3),
        "routed_requests_per_s": round(routed_rps, 3),
        "throughput_ratio": round(routed_rps / plain_rps, 3),
        "requests_per_s_in_order": [round(r, 3) for r in rates],
    }


def model_section(name: str, args: argparse.Namespace, repeats: int) -> dict[str, Any]:
    """(a)-(e) for one bundled model (only (d) with ``--server-only``)."""
    import llama_cpp

    cap = args.max_new_tokens
    gguf = str(bundled_gguf(BUNDLED_MODELS[name]))
    if args.server_only:
        return {"server": server_part(name, gguf, args, repeats)}
    llama = llama_cpp.Llama(gguf, n_ctx=2048, n_threads=THREADS, verbose=False)

    def plain(prompt: str) -> Callable[[], int]:
        def call() -> int:
            reply: Any = llama.create_chat_completion(
                messages=messages(prompt),  # type: ignore[arg-type]
                max_tokens=cap,
                temperature=0.0,
            )
            return int(reply["usage"]["completion_tokens"])

        return call

    for prompt in PROMPTS[:1]:
        plain(prompt)()  # warm-up
    result: dict[str, Any] = {"plain_llama_cpp": measure(repeats, [plain(p) for p in PROMPTS])}
    llama.close()
    backend = LlamaCppModel(gguf, n_threads=THREADS)
    for estimator in ("perplexity", "p_true"):
        router = ConfRouter(backend, None, estimator=estimator)
        routed(router, PROMPTS[0], cap)()  # warm-up
        result[f"llama_cpp_{estimator}"] = measure(
            repeats, [routed(router, p, cap) for p in PROMPTS]
        )
    result["loop"] = loop_section(backend, cap, repeats)
    del backend
    transformers_router = ConfRouter(LocalModel(name), None)
    routed(transformers_router, PROMPTS[0], cap)()  # warm-up
    result["transformers_perplexity"] = measure(
        repeats, [routed(transformers_router, p, cap) for p in PROMPTS]
    )
    del transformers_router
    plain_wall = result["plain_llama_cpp"]["wall_s"]
    for estimator in ("perplexity", "p_true"):
        measured = result[f"llama_cpp_{estimator}"]
        result[f"overhead_{estimator}"] = round(measured["wall_s"] / plain_wall, 3)
    result["speedup_batch1"] = round(
        result["llama_cpp_perplexity"]["tokens_per_s"]
        / result["transformers_perplexity"]["tokens_per_s"],
        2,
    )
    print(json.dumps({"model": name, **result}), flush=True)  # kept if a later part fails
    if not args.no_server:
        result["server"] = server_part(name, gguf, args, repeats)
    return result


def server_part(name: str, gguf: str, args: argparse.Namespace, repeats: int) -> dict[str, Any]:
    """(d), printed as soon as it is measured; llama-server gets the full token cap."""
    binary = args.llama_server
    cap = args.max_new_tokens if binary else min(args.max_new_tokens, SERVER_TOKENS)
    section = server_section(gguf, cap, repeats, args.requests, binary)
    print(json.dumps({"model": name, "server": section}), flush=True)
    return section


def main() -> None:
    """Run the comparison and print a table (or one JSON line with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="0.5B only, 1 repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--no-server", action="store_true", help="skip (d)")
    parser.add_argument("--server-only", action="store_true", help="only (d)")
    parser.add_argument(
        "--llama-server",
        default=None,
        metavar="PATH",
        help="(d) on llama.cpp's llama-server binary with 16 slots (default: llama_cpp.server)",
    )
    parser.add_argument(
        "--requests", type=int, default=CONCURRENT, help="requests of the 16-caller part"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.server_only and args.no_server:
        parser.error("--server-only and --no-server leave nothing to run")
    repeats = 1 if args.quick else args.repeats
    names = [DEFAULT_SLM] if args.quick else [DEFAULT_SLM, DEFAULT_LLM]
    started = time.perf_counter()
    models = {name: model_section(name, args, repeats) for name in names}
    small = models[DEFAULT_SLM]
    summary: dict[str, Any] = {
        "prompts": len(PROMPTS),
        "max_new_tokens": args.max_new_tokens,
        "repeats": repeats,
        "threads": THREADS,
        "models": models,
        **{
            key: small[key]
            for key in ("speedup_batch1", "overhead_perplexity", "overhead_p_true")
            if key in small
        },
        "wall_s": round(time.perf_counter() - started, 1),
    }
    if not args.json:
        for name, section in models.items():
            print(f"== {name}")
            for key, value in section.items():
                print(f"  {key}: {value}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
