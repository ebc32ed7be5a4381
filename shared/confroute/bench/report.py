"""``confroute bench report RUN_DIR``: markdown tables, PNG plots and one self-contained HTML page.

Outputs, written to ``RUN_DIR/report/`` (or ``--out``):

- ``metrics.json``: every metric row (see :func:`confroute.bench.evaluate.metric_rows`);
- ``report.md``: AUROC table with 95% bootstrap intervals, APGR / CPT table, accuracies,
  parse failures and truncation;
- ``routing_<slm>_<format>_<dataset>.png``: routing curves with random and oracle curves;
- ``auroc_heatmap_<slm>_<format>.png``: AUROC per method and dataset;
- ``confidence_hist_<slm>_<format>.png``: confidence histograms per dataset, split by
  correctness (like the paper's Figure 4);
- which method is best for which SLM (mean AUROC / APGR, ranked) and the calibration-transfer
  table per SLM, with ``auroc_by_slm.png`` (see :mod:`.sweep_report`);
- ``report.html``: all of the above with the images inlined (base64).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from confroute.bench import metrics as m
from confroute.bench.evaluate import GroupScores, RunData, load_run, metric_rows
from confroute.bench.sweep_report import slm_heatmap, sweep_markdown
from confroute.errors import ConfigurationError

__all__ = ["markdown_tables", "write_report"]

logger = logging.getLogger(__name__)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _ci(row: dict[str, Any], key: str) -> str:
    low, high = row.get(f"{key}_ci") or (None, None)
    value = row.get(key)
    if value is None:
        return "n/a"
    if low is None or high is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.2f}, {high:.2f}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _mean(rows: Sequence[dict[str, Any]], method: str, key: str) -> tuple[float, int]:
    values = [r[key] for r in rows if r["method"] == method and r.get(key) is not None]
    return (float(np.mean(values)) if values else float("nan")), len(values)


def _means(local: Sequence[dict[str, Any]], routed: Sequence[dict[str, Any]]) -> str:
    """Per method: mean AUROC over datasets and, per strong model, mean APGR and CPTs."""
    header = ["method", "mean AUROC", "datasets"]
    strongs = sorted({r["strong"] for r in routed})
    for strong in strongs:
        header += [f"mean APGR ({strong})", "mean CPT(50%)", "mean CPT(80%)", "datasets"]
    body = []
    for method in sorted({r["method"] for r in local}):
        auroc, count = _mean(local, method, "auroc")
        line = [method, f"{auroc:.3f}", str(count)]
        for strong in strongs:
            these = [r for r in routed if r["strong"] == strong]
            apgr, n = _mean(these, method, "apgr")
            line += [f"{apgr:.3f}", f"{_mean(these, method, 'cpt50')[0]:.3f}"]
            line += [f"{_mean(these, method, 'cpt80')[0]:.3f}", str(n)]
        body.append(line)
    return "\nMean over datasets:\n\n" + _table(header, body)


def markdown_tables(rows: Sequence[dict[str, Any]]) -> str:
    """The report's tables as markdown (AUROC per method x dataset; routing metrics)."""
    parts = []
    settings = sorted({(r["slm"], r["format"]) for r in rows})
    for slm, prompt_format in settings:
        mine = [r for r in rows if r["slm"] == slm and r["format"] == prompt_format]
        local = [r for r in mine if r["strong"] is None]
        datasets = sorted({r["dataset"] for r in local})
        methods = sorted({r["method"] for r in local})
        parts.append(f"### SLM `{slm}`, format `{prompt_format}`\n")
        parts.append("AUROC of confidence vs. correctness, 95% bootstrap interval:\n")
        cell = {(r["method"], r["dataset"]): _ci(r, "auroc") for r in local}
        parts.append(
            _table(
                ["method", *datasets],
                [[mt, *(cell.get((mt, d), "") for d in datasets)] for mt in methods],
            )
        )
        first = {r["dataset"]: r for r in local}
        parts.append(
            "\nSLM accuracy, parse failures, answers cut at the token cap (and the AUROC of "
            "'not truncated' alone, which a confidence may merely mirror):\n"
        )
        parts.append(
            _table(
                ["dataset", "n", "SLM accuracy", "unparsed", "truncated", "AUROC(not truncated)"],
                [
                    [
                        d,
                        str(first[d]["n"]),
                        _fmt(first[d]["slm_accuracy"]),
                        str(first[d]["unparsed"]),
                        str(first[d]["truncated"]),
                        _fmt(first[d]["not_truncated_auroc"]),
                    ]
                    for d in datasets
                ],
            )
        )
        routed = [r for r in mine if r["strong"] is not None]
        for strong in sorted({r["strong"] for r in routed}):
            these = [r for r in routed if r["strong"] == strong]
            parts.append(f"\nRouting to `{strong}` (APGR 0.5 = random routing):\n")
            parts.append(
                _table(
                    [
                        "dataset",
                        "method",
                        "n",
                        "SLM acc",
                        "LLM acc",
                        "APGR [95% CI]",
                        "CPT(50%)",
                        "CPT(80%)",
                        "area",
                        "random",
                        "oracle",
                        "PRR",
                    ],
                    [
                        [
                            r["dataset"],
                            r["method"],
                            str(r["n"]),
                            _fmt(r["slm_accuracy"]),
                            _fmt(r["llm_accuracy"]),
                            _ci(r, "apgr"),
                            _fmt(r["cpt50"]),
                            _fmt(r["cpt80"]),
                            _fmt(r["area"]),
                            _fmt(r["random_area"]),
                            _fmt(r["oracle_area"]),
                            _fmt(r["prr"]),
                        ]
                        for r in sorted(these, key=lambda r: (r["dataset"], r["method"]))
                    ],
                )
            )
        parts.append(_means(local, routed))
        parts.append("")
    return "\n".join(parts)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _plots(data: RunData, rows: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    settings = sorted({(g.slm, g.prompt_format) for g in data.groups})
    for slm, prompt_format in settings:
        groups = [g for g in data.groups if g.slm == slm and g.prompt_format == prompt_format]
        written += _routing_plots(plt, data, groups, out)
        local = [
            r
            for r in rows
            if r["slm"] == slm and r["format"] == prompt_format and r["strong"] is None
        ]
        datasets = sorted({r["dataset"] for r in local})
        methods = sorted({r["method"] for r in local})
        grid = np.full((len(methods), len(datasets)), np.nan)
        for r in local:
            if r["auroc"] is not None:
                grid[methods.index(r["method"]), datasets.index(r["dataset"])] = r["auroc"]
        fig, ax = plt.subplots(
            figsize=(3.5 + 0.9 * len(datasets), 1.5 + 0.45 * len(methods)), layout="constrained"
        )
        image = ax.imshow(grid, cmap="RdYlGn", vmin=0.3, vmax=0.9, aspect="auto")
        ax.set_xticks(range(len(datasets)), datasets, rotation=45, ha="right")
        ax.set_yticks(range(len(methods)), methods)
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8)
        fig.colorbar(image, ax=ax, label="AUROC")
        ax.set_title(f"AUROC: {slm} ({prompt_format})")
        path = out / f"auroc_heatmap_{_slug(slm)}_{prompt_format}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
        written.append(_histograms(plt, groups, out))
        written += _relative_accuracy(plt, rows, slm, prompt_format, out)
    return written + slm_heatmap(plt, rows, out)


def _relative_accuracy(
    plt: Any, rows: Sequence[dict[str, Any]], slm: str, prompt_format: str, out: Path
) -> list[Path]:
    """The paper's relative-accuracy curve per method, averaged over datasets."""
    written = []
    routed = [
        r
        for r in rows
        if r["slm"] == slm and r["format"] == prompt_format and r["strong"] is not None
    ]
    for strong in sorted({r["strong"] for r in routed}):
        fig, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
        fractions = np.arange(1, 11) / 10
        for method in sorted({r["method"] for r in routed}):
            curves = np.array(
                [
                    [np.nan if v is None else v for v in r["relative_accuracy"]]
                    for r in routed
                    if r["strong"] == strong and r["method"] == method
                ],
                dtype=float,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
                mean = np.nanmean(curves, axis=0)
            ax.plot(fractions, mean, marker=".", label=method)
        ax.set_xlabel("fraction of most confident items kept")
        ax.set_ylabel("SLM accuracy / strong accuracy (same items)")
        ax.set_title(f"relative accuracy: {slm} vs {strong.split('/')[-1]}", fontsize=9)
        ax.legend(fontsize=6)
        path = out / f"relative_accuracy_{_slug(slm)}_{prompt_format}_{_slug(strong)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _routing_plots(plt: Any, data: RunData, groups: list[GroupScores], out: Path) -> list[Path]:
    written = []
    for group in groups:
        for (strong, dataset, prompt_format), answers in sorted(data.strong.items()):
            if dataset != group.dataset or prompt_format != group.prompt_format:
                continue
            if strong.split("/")[-1] == group.slm:
                continue
            if not all(i in answers for i in group.item_ids):
                continue
            llm = np.array([answers[i] for i in group.item_ids])
            fig, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
            for method in sorted(group.confidences):
                curve = m.routing_curve(group.effective(method), group.correct_for(method), llm)
                ax.plot(curve.rates, curve.accuracy, label=method, linewidth=1.2)
            rnd = m.random_curve(group.correct, llm)
            orc = m.oracle_curve(group.correct, llm)
            ax.plot(rnd.rates, rnd.accuracy, "k--", label="random", linewidth=1)
            ax.plot(orc.rates, orc.accuracy, "k:", label="oracle", linewidth=1)
            ax.set_xlabel("escalation rate")
            ax.set_ylabel("accuracy of the routed system")
            ax.set_title(f"{dataset}: {group.slm} -> {strong.split('/')[-1]}", fontsize=9)
            ax.legend(fontsize=6, loc="lower right")
            path = out / f"routing_{_slug(group.slm)}_{prompt_format}_{dataset}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)
    return written


def _histograms(plt: Any, groups: list[GroupScores], out: Path) -> Path:
    method = "perplexity"
    cols = min(4, len(groups))
    rows_n = (len(groups) + cols - 1) // cols
    fig, axes = plt.subplots(
        rows_n, cols, figsize=(3.2 * cols, 2.5 * rows_n + 0.4), squeeze=False, layout="constrained"
    )
    for ax, group in zip(axes.flat, groups, strict=False):
        name = method if method in group.confidences else sorted(group.confidences)[0]
        conf = group.effective(name)
        bins = np.linspace(-1.0, 1.0, 41)
        ax.hist(conf[group.correct], bins=bins, alpha=0.6, label="correct", color="tab:green")
        ax.hist(conf[~group.correct], bins=bins, alpha=0.6, label="wrong", color="tab:red")
        ax.set_title(f"{group.dataset} ({name})", fontsize=8)
        ax.set_xlim(-1.05, 1.05)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    first = groups[0]
    fig.suptitle(f"Confidence ({first.slm}, {first.prompt_format}); -1 = unparsed", fontsize=9)
    path = out / f"confidence_hist_{_slug(first.slm)}_{first.prompt_format}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _html(markdown: str, images: Sequence[Path]) -> str:
    body = [
        "<!doctype html><html><head><meta charset='utf-8'><title>confroute bench report</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}"
        "img{max-width:100%}</style></head><body><h1>confroute bench report</h1>",
    ]
    for block in markdown.split("\n\n"):
        lines = block.strip().splitlines()
        if lines and lines[0].startswith("|"):
            body.append("<table>")
            for index, line in enumerate(lines):
                if index == 1:
                    continue
                tag = "th" if index == 0 else "td"
                cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
                body.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            body.append("</table>")
        elif lines:
            text = html.escape("\n".join(lines)).replace("`", "")
            heading = text.startswith("###")
            body.append(f"<h3>{text.lstrip('# ')}</h3>" if heading else f"<p>{text}</p>")
    for image in images:
        encoded = base64.b64encode(image.read_bytes()).decode("ascii")
        body.append(
            f"<h4>{html.escape(image.stem)}</h4><img alt='{html.escape(image.stem)}' "
            f"src='data:image/png;base64,{encoded}'>"
        )
    body.append("</body></html>")
    return "\n".join(body)


def write_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    n_boot: int = 1000,
    plots: bool = True,
    limit: int | None = None,
) -> Path:
    """Write the report of a run directory; returns the report folder.

    ``limit`` reports on the first ``limit`` items of each dataset's sample only (see
    :func:`~confroute.bench.evaluate.load_run`).

    Raises:
        ConfigurationError: The run directory holds no results.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise ConfigurationError(f"Run directory {root} does not exist.")
    out = Path(out_dir) if out_dir is not None else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    data = load_run(root, limit=limit)
    rows = metric_rows(data, n_boot=n_boot)
    (out / "metrics.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    markdown = markdown_tables(rows) + "\n" + sweep_markdown(rows, data, root)
    (out / "report.md").write_text(markdown + "\n", encoding="utf-8")
    images = _plots(data, rows, out) if plots else []
    (out / "report.html").write_text(_html(markdown, images), encoding="utf-8")
    logger.info("report written to %s", out)
    return out
