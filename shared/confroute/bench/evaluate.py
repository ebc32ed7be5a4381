"""Turn a run directory into per-item arrays and metric rows (no model is loaded).

Probe methods (``trained_probe``: 5-fold cross-validation within a dataset; ``ood_probe``:
trained on the other datasets of the run) and the query-only baseline (trained on the other
datasets) are fitted here, from the cached hidden states and query embeddings.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from confroute.answer_format import AnswerFormat
from confroute.bench import metrics as m
from confroute.bench.answer_formats import option_probability
from confroute.bench.baseline import BASELINE_METHOD, train_on_other_datasets
from confroute.bench.cache import RecordFile, decode_hidden, model_slug
from confroute.bench.datasets import sample_key
from confroute.bench.runner import load_embeddings
from confroute.errors import ConfigurationError
from confroute.generation import Generation, TokenAlternative

__all__ = [
    "OPTION_PROB",
    "GroupScores",
    "RunData",
    "group_records",
    "load_run",
    "metric_rows",
    "option_prob",
    "record_format",
]

logger = logging.getLogger(__name__)


@dataclass
class GroupScores:
    """One SLM on one dataset in one prompt format, item by item.

    Attributes:
        slm: SLM name.
        dataset: Dataset name.
        prompt_format: Prompt format.
        item_ids: Item ids, in a fixed order.
        correct: Whether the SLM's answer is right.
        parsed: Whether an answer could be extracted.
        truncated: Whether the answer hit the token cap.
        confidences: Method -> raw confidence (NaN where none).
        method_correct: Method -> correctness when the method answers on its own prompt.
        method_parsed: Method -> whether that own-prompt answer could be parsed (an unparsed
            one gets the lowest confidence, like an unparsed SLM answer).
        hidden: ``(n, d)`` hidden states, when cached.
        p_true_mass: Mass on the True/False tokens, when cached.
    """

    slm: str
    dataset: str
    prompt_format: str
    item_ids: list[str]
    correct: np.ndarray
    parsed: np.ndarray
    truncated: np.ndarray
    confidences: dict[str, np.ndarray] = field(default_factory=dict)
    method_correct: dict[str, np.ndarray] = field(default_factory=dict)
    method_parsed: dict[str, np.ndarray] = field(default_factory=dict)
    hidden: np.ndarray | None = None

    def effective(self, method: str) -> np.ndarray:
        """Confidence with unparsed answers and missing values below every real one."""
        parsed = self.method_parsed.get(method, self.parsed)
        return m.effective_confidence(list(self.confidences[method]), parsed)

    def correct_for(self, method: str) -> np.ndarray:
        """Correctness of the answer the method scored."""
        return self.method_correct.get(method, self.correct)


@dataclass
class RunData:
    """Everything cached in a run directory."""

    groups: list[GroupScores]
    strong: dict[tuple[str, str, str], dict[str, bool]]
    """(strong model, dataset, format) -> item id -> correct."""
    config: dict[str, Any]


MIN_ROUTED_ITEMS = 10
"""Fewest items with a strong answer for routing metrics of a partly answered group."""

OPTION_PROB = "option_prob_renorm"
"""Derived method: the chosen option token's probability renormalised over the option tokens."""


def record_format(record: dict[str, Any]) -> AnswerFormat:
    """The answer format of a cached SLM record (``letter`` with its option count, ...)."""
    kind = str(record.get("answer_format") or "any")
    if kind == "letter":
        return AnswerFormat("letter", int(record.get("num_options") or 0))
    if kind == "yes_no":
        return AnswerFormat("yes_no", 2)
    if kind == "number":
        return AnswerFormat("number")
    return AnswerFormat("any")


@functools.lru_cache(maxsize=64)
def _load_records(path: Path, modified_ns: int) -> dict[str, dict[str, Any]]:
    del modified_ns  # part of the cache key: a rewritten file is read again
    return RecordFile(path).load()


def group_records(run_dir: Path, group: GroupScores) -> list[dict[str, Any]]:
    """A group's cached SLM records, in the group's item order (each file read once)."""
    path = run_dir / "slm" / model_slug(group.slm) / group.dataset / f"{group.prompt_format}.jsonl"
    records = _load_records(path, path.stat().st_mtime_ns)
    return [records[i] for i in group.item_ids]


def option_prob(record: dict[str, Any]) -> float | None:
    """Probability of the chosen option, renormalised over every option-token variant.

    :func:`confroute.bench.answer_formats.option_probability` on the cached statistics, at the
    token that spells the extracted answer. None for other formats and unparsed answers.
    """
    answer = record.get("answer")
    if answer is None:
        return None
    tokens = tuple(record.get("tokens", ()))
    statistics = Generation(
        text="".join(tokens),
        token_ids=(),
        tokens=tokens,
        logprobs=(),
        top_logprobs=tuple(
            tuple(TokenAlternative(str(t), int(i), float(lp)) for t, i, lp in alternatives)
            for alternatives in record.get("top", ())
        ),
        entropies=(),
        finish_reason="stop",
        prompt_tokens=0,
    )
    return option_probability(statistics, record_format(record), answer)


def _model_name(folder: Path) -> str:
    meta = folder / "model.json"
    return str(json.loads(meta.read_text())["model"]) if meta.is_file() else folder.name


def load_run(
    run_dir: str | Path,
    *,
    probes: bool = True,
    baseline: bool = True,
    limit: int | None = None,
) -> RunData:
    """Read a run directory.

    Args:
        run_dir: A run directory of ``confroute bench run``.
        probes: Score the probe methods from the cached hidden states.
        baseline: Score the query-only baseline from the cached query embeddings.
        limit: Keep only the first ``limit`` items of each dataset's fixed sample (the items
            a ``--limit`` run asks), so methods computed for fewer items than others can be
            compared on the same items.

    Raises:
        ConfigurationError: The directory holds no SLM results, or ``limit`` is below 1.
    """
    if limit is not None and limit < 1:
        raise ConfigurationError(f"limit must be at least 1, got {limit}.")
    root = Path(run_dir)
    config_path = root / "sweep.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    seed = int(config.get("seed", 0))
    groups = []
    for path in sorted(root.glob("slm/*/*/*.jsonl")):
        records = RecordFile(path).load()
        if limit is not None:
            first = sorted(records, key=lambda i: sample_key(path.parent.name, i, seed))[:limit]
            records = {i: records[i] for i in first}
        if not records:
            continue
        ids = sorted(records)
        rows = [records[i] for i in ids]
        # a method counts for a group only when every item was scored with it (a method added
        # to a run with a smaller --limit covers a prefix only; its missing items are not
        # "no confidence")
        methods = sorted(set.intersection(*(set(r.get("confidences", {})) for r in rows)))
        group = GroupScores(
            slm=_model_name(path.parent.parent),
            dataset=path.parent.name,
            prompt_format=path.stem,
            item_ids=ids,
            correct=np.array([bool(r["correct"]) for r in rows]),
            parsed=np.array([r.get("answer") is not None for r in rows]),
            truncated=np.array([r.get("finish_reason") == "length" for r in rows]),
        )
        for method in methods:
            values = [r.get("confidences", {}).get(method) for r in rows]
            group.confidences[method] = np.array(
                [np.nan if v is None else float(v) for v in values]
            )
            if all(method in r.get("variants", {}) for r in rows):
                group.method_correct[method] = np.array(
                    [bool(r["variants"][method]["correct"]) for r in rows]
                )
                group.method_parsed[method] = np.array(
                    [r["variants"][method].get("answer") is not None for r in rows]
                )
        renormalised = [option_prob(r) for r in rows]
        if any(v is not None for v in renormalised):
            group.confidences[OPTION_PROB] = np.array(
                [np.nan if v is None else v for v in renormalised]
            )
        hidden = [decode_hidden(r.get("hidden")) for r in rows]
        if all(h is not None for h in hidden):
            group.hidden = np.stack([h for h in hidden if h is not None])
        groups.append(group)
    if not groups:
        raise ConfigurationError(f"{root} holds no benchmark results; run `confroute bench run`.")
    strong: dict[tuple[str, str, str], dict[str, bool]] = {}
    for path in sorted(root.glob("strong/*/*/*.jsonl")):
        key = (_model_name(path.parent.parent), path.parent.name, path.stem)
        strong[key] = {i: bool(r["correct"]) for i, r in RecordFile(path).load().items()}
    data = RunData(groups, strong, config)
    if probes:
        _add_probes(data)
    if baseline:
        _add_baseline(data, root)
    return data


def _add_baseline(data: RunData, root: Path) -> None:
    by_setting: dict[tuple[str, str], list[GroupScores]] = {}
    for group in data.groups:
        by_setting.setdefault((group.slm, group.prompt_format), []).append(group)
    for groups in by_setting.values():
        embeddings, correct = {}, {}
        for group in groups:
            cached = load_embeddings(root / "embeddings" / f"{group.dataset}.npz")
            if all(i in cached for i in group.item_ids):
                embeddings[group.dataset] = np.stack([cached[i] for i in group.item_ids])
                correct[group.dataset] = group.correct
        predicted = train_on_other_datasets(embeddings, correct)
        for group in groups:
            if group.dataset in predicted:
                group.confidences[BASELINE_METHOD] = predicted[group.dataset]


def _add_probes(data: RunData) -> None:
    from confroute.bench.probing import cross_validated, trained_on_others

    by_setting: dict[tuple[str, str], list[GroupScores]] = {}
    for group in data.groups:
        if group.hidden is not None:
            by_setting.setdefault((group.slm, group.prompt_format), []).append(group)
    for groups in by_setting.values():
        for group in groups:
            assert group.hidden is not None
            values = cross_validated(group.hidden, group.correct)
            if values is not None:
                group.confidences["trained_probe"] = values
        for dataset, values in trained_on_others(
            {g.dataset: (g.hidden, g.correct) for g in groups if g.hidden is not None}
        ).items():
            next(g for g in groups if g.dataset == dataset).confidences["ood_probe"] = values


def _nan_round(value: float, digits: int = 3) -> float | None:
    return None if np.isnan(value) else round(float(value), digits)


def metric_rows(data: RunData, *, n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """One row per (SLM, strong model or none, dataset, format, method) with every metric.

    Rows with ``strong`` None hold the metrics that need no stronger model (AUROC, PRR, ECE);
    routing metrics (APGR, CPT, curve area) appear when a strong model differing from the SLM
    answered the same items.
    """
    rows = []
    for group in data.groups:
        strong_models = sorted(
            {
                s
                for (s, d, f) in data.strong
                if d == group.dataset and f == group.prompt_format and s.split("/")[-1] != group.slm
            }
        )
        for method in sorted(group.confidences):
            conf = conf_all = group.effective(method)
            correct = correct_all = group.correct_for(method)
            base = {
                "slm": group.slm,
                "dataset": group.dataset,
                "format": group.prompt_format,
                "method": method,
                "n": len(conf),
                "slm_accuracy": _nan_round(float(correct.mean())),
                "unparsed": int((~group.parsed).sum()),
                "truncated": int(group.truncated.sum()),
                "auroc": _nan_round(m.auroc(conf, correct)),
                "auroc_ci": [
                    _nan_round(v)
                    for v in m.bootstrap_ci(m.auroc, conf, correct, n_boot=n_boot, seed=seed)
                ],
                "prr": _nan_round(m.prr(conf, correct)),
                "not_truncated_auroc": _nan_round(m.auroc(~group.truncated, correct)),
                "ece": _nan_round(m.ece(np.clip(conf, 0, 1), correct)),
            }
            rows.append({**base, "strong": None})
            for strong in strong_models:
                answers = data.strong[(strong, group.dataset, group.prompt_format)]
                # routing metrics on the items the strong model answered (all, or a prefix
                # sample when the strong run used a smaller --limit)
                mask = np.array([i in answers for i in group.item_ids])
                if not mask.all() and mask.sum() < MIN_ROUTED_ITEMS:
                    continue
                llm = np.array([answers[i] for i in np.asarray(group.item_ids)[mask]])
                conf, correct = conf_all[mask], correct_all[mask]
                curve = m.routing_curve(conf, correct, llm)

                def apgr_of(c: np.ndarray, s: np.ndarray, ll: np.ndarray) -> float:
                    return m.apgr(m.routing_curve(c, s, ll))

                rows.append(
                    {
                        **base,
                        "n": int(mask.sum()),
                        "slm_accuracy": _nan_round(float(correct.mean())),
                        "strong": strong,
                        "llm_accuracy": _nan_round(float(llm.mean())),
                        "area": _nan_round(curve.area),
                        "random_area": _nan_round(m.random_curve(correct, llm).area),
                        "oracle_area": _nan_round(m.oracle_curve(correct, llm).area),
                        "apgr": _nan_round(m.apgr(curve)),
                        "apgr_ci": [
                            _nan_round(v)
                            for v in m.bootstrap_ci(
                                apgr_of, conf, correct, llm, n_boot=n_boot, seed=seed
                            )
                        ],
                        "cpt50": _nan_round(m.cpt(curve, 0.5)),
                        "cpt80": _nan_round(m.cpt(curve, 0.8)),
                        "relative_accuracy": [
                            _nan_round(v) for v in m.relative_accuracy_curve(conf, correct, llm)
                        ],
                    }
                )
    return rows
