"""One sweep on the local executor and on a local Ray cluster: wall times and records compared.

Runs the same sweep file (default: the issue's small grid, ``benchmarks/sweeps/small_grid.toml``)
twice, each into its own empty run directory under ``--work-dir``:

(a) ``executor = "local"``: in this process, one shard after the other;
(b) ``executor = "ray"`` on a local Ray cluster of ``--ray-cpus`` CPUs started by this script
    (``ray.init(num_cpus=...)``), one task per shard.

It prints both wall times side by side, Ray's start-up (``ray.init`` of the local cluster,
timed on its own), Ray's overhead (the ratio of (b), start-up included, to (a), and without
start-up) and the load average before each run, then checks that the two run directories
hold the same records item for item (every key but the wall-clock ``latency_s``).

A one-CPU Ray task runs its engine on one thread (Ray sets ``OMP_NUM_THREADS`` to the task's
``num_cpus``; torch and confroute's llama.cpp backend follow it), and so does the local run:
``OMP_NUM_THREADS`` and torch are set to ``--threads`` threads (default: the sweep's
``[ray] num_cpus``), so the comparison is like for like and the records can be equal.

Usage:
    python benchmarks/sweep_executors.py [SWEEP_FILE] [--data-dir DIR] [--limit N]
        [--backend ENGINE] [--ray-cpus 2] [--work-dir DIR] [--ray-first] [--json]

``--limit`` overrides every dataset's item count (a quick check: ``--limit 3``); ``--backend``
sets every SLM's engine (``transformers`` where llama-cpp-python is not installed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import confroute
from confroute.bench.cache import RecordFile
from confroute.bench.datasets import DATA_DIR_ENV
from confroute.bench.sweep_file import SweepFile, load_sweep
from confroute.bench.sweep_run import SweepResult, run_sweep

HERE = Path(__file__).resolve().parent
SMALL_GRID = HERE / "sweeps" / "small_grid.toml"
IGNORED = ("latency_s",)
"""Record keys that measure the machine, not the answer."""


def configure(sweep: SweepFile, args: argparse.Namespace) -> SweepFile:
    """The sweep with the command line's data directory, limit and engine."""
    update: dict[str, Any] = {}
    data_dir = args.data_dir or os.environ.get(DATA_DIR_ENV)
    if data_dir:
        update["data_dir"] = Path(data_dir)
    if args.limit is not None:
        update["limit"] = args.limit
        update["datasets"] = tuple(d.model_copy(update={"limit": None}) for d in sweep.datasets)
    if args.backend is not None:
        update["slms"] = tuple(s.model_copy(update={"backend": args.backend}) for s in sweep.slms)
    return sweep.model_copy(update=update)


def records(run_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Every cached record, by record file and item, without :data:`IGNORED` keys."""
    out = {}
    for path in sorted(run_dir.glob("*/*/*/*.jsonl")):
        out[str(path.relative_to(run_dir))] = {
            item: {k: v for k, v in record.items() if k not in IGNORED}
            for item, record in RecordFile(path).load().items()
        }
    return out


def compare(local: Path, on_ray: Path) -> dict[str, Any]:
    """Records of the two run directories, item for item: counts and the first differences."""
    a, b = records(local), records(on_ray)
    differences = []
    total = equal = 0
    for cell in sorted(set(a) | set(b)):
        left, right = a.get(cell, {}), b.get(cell, {})
        for item in sorted(set(left) | set(right)):
            total += 1
            if item not in left or item not in right:
                differences.append(f"{cell} {item}: only in {'ray' if item in right else 'local'}")
            elif left[item] != right[item]:
                keys = sorted(
                    k
                    for k in left[item].keys() | right[item].keys()
                    if left[item].get(k) != right[item].get(k)
                )
                differences.append(f"{cell} {item}: {', '.join(keys)} differ")
            else:
                equal += 1
    return {"records": total, "equal": equal, "differences": differences}


def set_threads(sweep: SweepFile, threads: int) -> None:
    """Run the engines on ``threads`` threads, as a Ray task of that many CPUs does."""
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by the llama.cpp backend
    if all(s.backend == "llama.cpp" for s in sweep.slms):
        return
    import torch

    torch.set_num_threads(threads)


def run_local(sweep: SweepFile, run_dir: Path) -> dict[str, Any]:
    """(a): the sweep in this process."""
    load = os.getloadavg()[0]
    result = run_sweep(sweep, run_dir=run_dir, executor="local", progress=False)
    return {"load_before": load, **summary(result)}


def run_ray(sweep: SweepFile, run_dir: Path, cpus: int) -> dict[str, Any]:
    """(b): a local Ray cluster started here (timed apart), the sweep on it, the cluster stopped."""
    import ray

    load = os.getloadavg()[0]
    shared = Path(confroute.__file__).resolve().parents[1]
    path = os.pathsep.join([str(shared), str(shared.parent), os.environ.get("PYTHONPATH", "")])
    started = time.perf_counter()
    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},  # the workers import this checkout
    )
    start_s = time.perf_counter() - started
    try:
        result = run_sweep(sweep, run_dir=run_dir, executor="ray", progress=False)
    finally:
        stopping = time.perf_counter()
        ray.shutdown()
        stop_s = time.perf_counter() - stopping
    return {"load_before": load, "start_s": start_s, "stop_s": stop_s, **summary(result)}


def summary(result: SweepResult) -> dict[str, Any]:
    """What one run did, as plain values."""
    return {
        "wall_s": result.wall_s,
        "shards": result.run_shards,
        "stats": dict(result.stats),
        "retried": sorted(k for k, n in result.attempts.items() if n > 1),
        "failures": [f"{f.shard}: {f.error}" for f in result.failures],
    }


def fresh(folder: Path) -> Path:
    """``folder``, refused unless it is empty or absent (each run starts from an empty cache)."""
    if folder.exists() and any(folder.iterdir()):
        sys.exit(f"{folder} is not empty: give another --work-dir (each run starts empty).")
    return folder


def main() -> None:
    """Run both executors and print the comparison (one JSON line with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_file", nargs="?", type=Path, default=SMALL_GRID)
    parser.add_argument("--data-dir", default=None, help=f"benchmark data (env {DATA_DIR_ENV})")
    parser.add_argument("--limit", type=int, default=None, help="items per dataset (override)")
    parser.add_argument("--backend", default=None, help="engine of every SLM (override)")
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--threads", type=int, default=None, help="torch threads, local run")
    parser.add_argument("--work-dir", type=Path, default=None, help="holds local/ and ray/")
    parser.add_argument("--ray-first", action="store_true", help="run Ray before local")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()

    sweep = configure(load_sweep(args.sweep_file), args)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    work = args.work_dir or HERE.parent / "runs" / f"sweep-executors-{stamp}"
    local_dir, ray_dir = fresh(work / "local"), fresh(work / "ray")
    set_threads(sweep, args.threads or max(1, int(sweep.ray.num_cpus)))

    runs: dict[str, dict[str, Any]] = {}
    for name in ("ray", "local") if args.ray_first else ("local", "ray"):
        if name == "local":
            runs[name] = run_local(sweep, local_dir)
        else:
            runs[name] = run_ray(sweep, ray_dir, args.ray_cpus)
        if not args.json:
            print(f"{name}: {runs[name]['wall_s']:.1f} s", file=sys.stderr, flush=True)
    local, on_ray = runs["local"], runs["ray"]
    same = compare(local_dir, ray_dir)
    ray_total = on_ray["start_s"] + on_ray["wall_s"]
    result = {
        "sweep_file": str(args.sweep_file),
        "work_dir": str(work),
        "slms": [s.key for s in sweep.slms],
        "datasets": [d.name for d in sweep.datasets],
        "limits": [sweep.limit_of(d) for d in sweep.datasets],
        "methods": list(sweep.methods),
        "ray_cpus": args.ray_cpus,
        "local": local,
        "ray": on_ray,
        "ray_total_s": ray_total,
        "ratio_ray_total_to_local": ray_total / local["wall_s"],
        "ratio_ray_sweep_to_local": on_ray["wall_s"] / local["wall_s"],
        "records_equal": same["records"] > 0 and same["equal"] == same["records"],
        "comparison": {**same, "differences": same["differences"][:20]},
    }
    if not args.json:
        print_table(result)
    print(json.dumps(result))
    if local["failures"] or on_ray["failures"] or not result["records_equal"]:
        sys.exit(1)


def print_table(result: dict[str, Any]) -> None:
    """The figures, side by side."""
    local, on_ray, same = result["local"], result["ray"], result["comparison"]
    print(f"sweep {result['sweep_file']}: SLMs {', '.join(result['slms'])}")
    print(f"  datasets {', '.join(result['datasets'])} x {result['limits']} items")
    print(f"  methods {', '.join(result['methods'])}; run dirs under {result['work_dir']}")
    print()
    print(f"| | local (in process) | Ray, local cluster of {result['ray_cpus']} CPUs |")
    print("|---|---|---|")
    print(f"| load average before | {local['load_before']:.1f} | {on_ray['load_before']:.1f} |")
    print(f"| cluster start-up (ray.init) | - | {on_ray['start_s']:.1f} s |")
    print(f"| sweep wall time | {local['wall_s']:.1f} s | {on_ray['wall_s']:.1f} s |")
    print(f"| total | {local['wall_s']:.1f} s | {result['ray_total_s']:.1f} s |")
    print(f"| shards run | {local['shards']} | {on_ray['shards']} |")
    generated = (local["stats"].get("slm_generated", 0), on_ray["stats"].get("slm_generated", 0))
    print(f"| answers generated | {generated[0]} | {generated[1]} |")
    print(f"| retried shards | {len(local['retried'])} | {len(on_ray['retried'])} |")
    print()
    print(
        f"Ray / local: {result['ratio_ray_total_to_local']:.2f} with start-up, "
        f"{result['ratio_ray_sweep_to_local']:.2f} without (ray.shutdown {on_ray['stop_s']:.1f} s "
        "not counted)"
    )
    verdict = "equal" if result["records_equal"] else "NOT equal"
    print(f"records: {same['equal']} of {same['records']} {verdict} item for item (latency aside)")
    for line in same["differences"]:
        print(f"  {line}")
    for name in ("local", "ray"):
        for failure in result[name]["failures"]:
            print(f"{name} failed: {failure}")


if __name__ == "__main__":
    main()
