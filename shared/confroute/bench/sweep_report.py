"""The report's view across SLMs: which method is best for which SLM, and threshold transfer.

Added to every ``confroute bench report`` (most useful for a sweep of several SLMs):

- a table of methods x SLMs (one column per SLM and prompt format) of the mean AUROC over
  datasets with each method's rank, the best method per column in the last row; the same
  for the mean APGR against each strong model (the paper's "which method for which SLM");
- ``auroc_by_slm.png``: that AUROC table as a heat map (two SLMs or formats or more);
- per SLM and format, the leave-one-dataset-out calibration-transfer table of
  :mod:`.transfer` (rate MAE of the fixed-threshold policy, methods x variant / pooling),
  when the SLM answered at least two datasets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from confroute.bench.evaluate import RunData

__all__ = ["best_method_tables", "slm_heatmap", "sweep_markdown", "transfer_tables"]


def _mean_by(
    rows: Sequence[dict[str, Any]], key: str, strong: str | None
) -> dict[tuple[str, str], dict[str, float]]:
    """(SLM, format) -> method -> mean of ``key`` over datasets (rows of ``strong``)."""
    values: dict[tuple[str, str], dict[str, list[float]]] = {}
    for row in rows:
        if row["strong"] != strong or row.get(key) is None:
            continue
        setting = values.setdefault((row["slm"], row["format"]), {})
        setting.setdefault(row["method"], []).append(float(row[key]))
    return {s: {m: float(np.mean(v)) for m, v in by.items()} for s, by in values.items()}


def _ranked(means: dict[tuple[str, str], dict[str, float]], title: str) -> str:
    settings = sorted(means)
    methods = sorted({m for by in means.values() for m in by})
    multi_format = len({f for _, f in settings}) > 1
    names = [f"{s} ({f})" if multi_format else s for s, f in settings]
    # ties share a rank (1 + the number of methods strictly better)
    ranks = {s: {m: 1 + sum(v > by[m] for v in by.values()) for m in by} for s, by in means.items()}
    lines = [title, "", "| method | " + " | ".join(f"`{n}`" for n in names) + " |"]
    lines.append("|---" * (len(names) + 1) + "|")
    for method in methods:
        cells = [
            f"{means[s][method]:.3f} ({ranks[s][method]})" if method in means[s] else "-"
            for s in settings
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    best = [", ".join(f"`{m}`" for m in sorted(ranks[s]) if ranks[s][m] == 1) for s in settings]
    lines.append("| best | " + " | ".join(best) + " |")
    return "\n".join(lines)


def best_method_tables(rows: Sequence[dict[str, Any]]) -> str:
    """Methods x SLMs: mean AUROC (and mean APGR per strong model) over datasets, ranked."""
    parts = [
        _ranked(
            _mean_by(rows, "auroc", None),
            "Mean AUROC over datasets (rank within the SLM; higher is better):",
        )
    ]
    for strong in sorted({r["strong"] for r in rows if r["strong"] is not None}):
        means = _mean_by(rows, "apgr", strong)
        if means:
            parts.append(_ranked(means, f"Mean APGR routing to `{strong}` (0.5 = random):"))
    return "\n\n".join(parts)


def transfer_tables(run_dir: Path, data: RunData) -> str:
    """Leave-one-dataset-out transfer per SLM and format (fixed thresholds, rate MAE)."""
    from confroute.bench.transfer import leave_one_dataset_out, pivot_markdown

    parts = []
    for slm, prompt_format in sorted({(g.slm, g.prompt_format) for g in data.groups}):
        if sum(1 for g in data.groups if (g.slm, g.prompt_format) == (slm, prompt_format)) < 2:
            parts.append(f"SLM `{slm}` ({prompt_format}): one dataset only, nothing to transfer.")
            continue
        found = leave_one_dataset_out(run_dir, slm=slm, prompt_format=prompt_format, data=data)
        if found:
            parts.append(f"Format `{prompt_format}`: " + pivot_markdown(found, "fixed").strip())
    return "\n\n".join(parts)


def sweep_markdown(rows: Sequence[dict[str, Any]], data: RunData, run_dir: Path) -> str:
    """The two sections above as markdown."""
    return "\n\n".join(
        [
            "### Which method is best for which SLM",
            best_method_tables(rows),
            "### Calibration transfer per SLM (leave one dataset out)",
            "Rate MAE of thresholds for target escalation rates 0.1-0.5 calibrated on the "
            "other datasets and applied to the held-out one (fixed policy; `python -m "
            "confroute.bench.transfer RUN_DIR --pivot` for every policy and metric):",
            transfer_tables(run_dir, data),
            "",
        ]
    )


def slm_heatmap(plt: Any, rows: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """``auroc_by_slm.png``: mean AUROC, methods x SLMs.

    Written for two (SLM, format) settings or more; one SLM's is its ``auroc_heatmap_*.png``.
    """
    means = _mean_by(rows, "auroc", None)
    if len(means) < 2:
        return []
    settings = sorted(means)
    methods = sorted({m for by in means.values() for m in by})
    grid = np.array([[means[s].get(m, math.nan) for s in settings] for m in methods])
    fig, ax = plt.subplots(
        figsize=(3.5 + 1.1 * len(settings), 1.5 + 0.45 * len(methods)), layout="constrained"
    )
    image = ax.imshow(grid, cmap="RdYlGn", vmin=0.3, vmax=0.9, aspect="auto")
    ax.set_xticks(range(len(settings)), [f"{s}\n{f}" for s, f in settings], fontsize=7)
    ax.set_yticks(range(len(methods)), methods)
    for (i, j), value in np.ndenumerate(grid):
        if not math.isnan(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax, label="mean AUROC over datasets")
    ax.set_title("Which method for which SLM (mean AUROC)")
    path = out / "auroc_by_slm.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
