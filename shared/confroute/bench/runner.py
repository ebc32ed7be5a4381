"""The sweep runner: SLMs x strong models x datasets x methods x formats, cached on disk.

Every SLM answer is stored with its per-token statistics and every estimator's confidence;
every strong-model answer is stored too (see :mod:`confroute.bench.cache`). A rerun loads the
cache and computes only what is missing: a new method on cached answers reuses their stored
statistics (single-pass methods cost nothing, follow-up methods one prefill each), and an
interrupted run resumes at the batch it stopped in. The device is auto-detected
(``LocalModel(device="auto")``), so the same sweep runs unchanged on a GPU machine.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from confroute import estimators as registry
from confroute.backend import LocalBackend
from confroute.bench.cache import (
    RecordFile,
    generation_from_record,
    generation_to_record,
    model_slug,
)
from confroute.bench.datasets import BenchItem, load_dataset
from confroute.bench.formats import FORMATS, extract_answer, grade, messages_for
from confroute.bench.judge import LLMJudge
from confroute.bench.strong import StrongAnswers
from confroute.bench.sweep import (
    DEFAULT_METHODS,
    PROBE_METHODS,
    SINGLE_PASS_METHODS,
    SweepCell,
    SweepConfig,
    chunks,
    progress_bar,
)
from confroute.estimators import PROBE_LAYER, EstimationContext, Estimator, Requirement
from confroute.generation import Generation
from confroute.local import GenerationConfig, LocalModel

__all__ = [
    "DEFAULT_METHODS",
    "PROBE_METHODS",
    "SINGLE_PASS_METHODS",
    "SweepConfig",
    "SweepRunner",
    "load_embeddings",
]

logger = logging.getLogger(__name__)


def load_embeddings(path: Path) -> dict[str, np.ndarray]:
    """Cached query embeddings by item id (empty when the file does not exist)."""
    if not path.is_file():
        return {}
    with np.load(path) as data:
        return {
            str(i): v.astype(np.float32) for i, v in zip(data["ids"], data["vectors"], strict=True)
        }


class SweepRunner:
    """Runs a :class:`SweepConfig` into a run directory, computing only what is not cached."""

    def __init__(
        self,
        config: SweepConfig,
        run_dir: str | os.PathLike[str],
        *,
        load_local: Callable[[str], LocalBackend] | None = None,
        progress: bool = True,
    ) -> None:
        """Prepare a run.

        Args:
            config: The sweep.
            run_dir: Where the cache lives (created when missing).
            load_local: Loads a local model by name (default ``LocalModel(name, device=...)``);
                tests pass fakes here.
            progress: Show progress bars on stderr.
        """
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self._load_local = load_local or (lambda name: LocalModel(name, device=config.device))
        self._models: dict[str, LocalBackend] = {}
        self.stats: dict[str, int] = {"slm_generated": 0, "methods_computed": 0, "strong": 0}
        self._judge: LLMJudge | None = LLMJudge(config.judge) if config.judge else None
        self._strong = StrongAnswers(
            config,
            self.run_dir,
            models=self._models,
            stats=self.stats,
            grade=self._grade,
            cap=self._cap,
            progress=progress,
        )
        self.estimators: dict[str, Estimator] = {
            m: registry.get(m) for m in config.methods if m not in PROBE_METHODS
        }

    # -- public ----------------------------------------------------------------------------

    def run(self) -> dict[str, int]:
        """Run the whole sweep; returns counts of what was computed (0 when all was cached)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "sweep.json").write_text(
            json.dumps(self.config.to_dict(), indent=2) + "\n", encoding="utf-8"
        )
        data = {
            name: load_dataset(
                name, self.config.data_dir, limit=self.config.limit, seed=self.config.seed
            )
            for name in self.config.datasets
        }
        for slm in self.config.slms:
            for dataset, items in data.items():
                for prompt_format in self.config.formats:
                    self._run_slm(self._group("slm", slm, dataset, prompt_format, items))
        for strong in self.config.strong_models:
            for dataset, items in data.items():
                for prompt_format in self.config.formats:
                    self._strong.run(self._group("strong", strong, dataset, prompt_format, items))
        if self.config.baseline:
            self._embed_queries(data)
        return dict(self.stats)

    def _embed_queries(self, data: dict[str, list[BenchItem]]) -> None:
        """Cache query embeddings (numbers only) for the query-router baseline."""
        from confroute.bench.baseline import QueryEmbedder

        embedder: QueryEmbedder | None = None
        for dataset, items in data.items():
            path = self.run_dir / "embeddings" / f"{dataset}.npz"
            cached = load_embeddings(path)
            todo = [i for i in items if i.item_id not in cached]
            if not todo:
                continue
            if embedder is None:
                embedder = QueryEmbedder()
            texts = [messages_for(i, "answer_only")[0]["content"] for i in todo]
            vectors = embedder.embed(texts)
            cached.update({i.item_id: v for i, v in zip(todo, vectors, strict=True)})
            self.stats["embedded"] = self.stats.get("embedded", 0) + len(todo)
            path.parent.mkdir(parents=True, exist_ok=True)
            ids = sorted(cached)
            np.savez(
                path,
                ids=np.array(ids),
                vectors=np.stack([cached[i] for i in ids]).astype(np.float16),
            )

    # -- one cell at a time (the sweep executors of :mod:`.sweep_file`, :mod:`.ray_executor`)

    def pending(
        self, role: str, model: str, dataset: str, prompt_format: str, items: list[BenchItem]
    ) -> list[BenchItem]:
        """The items of one cell (``role`` ``slm`` or ``strong``) that still need work."""
        group = self._group(role, model, dataset, prompt_format, items)
        if role == "strong":
            return [i for i in items if i.item_id not in group.cached]
        return [i for i in items if self._missing(group.cached.get(i.item_id))]

    def run_cell(
        self, role: str, model: str, dataset: str, prompt_format: str, items: list[BenchItem]
    ) -> None:
        """Run one cell of a sweep (what :meth:`run` does for every cell), from the cache."""
        group = self._group(role, model, dataset, prompt_format, items)
        if role == "strong":
            self._strong.run(group)
        else:
            self._run_slm(group)

    def embed_queries(self, data: dict[str, list[BenchItem]]) -> None:
        """Cache the query embeddings of the baseline for these items (see :meth:`run`)."""
        self._embed_queries(data)

    def local_model(self, name: str) -> LocalBackend:
        """The loaded local model for ``name`` (loaded once per runner)."""
        if name not in self._models:
            logger.info("loading %s", name)
            self._models[name] = self._load_local(name)
        return self._models[name]

    # -- groups ----------------------------------------------------------------------------

    def _group(
        self, role: str, model: str, dataset: str, prompt_format: str, items: list[BenchItem]
    ) -> SweepCell:
        path = self.run_dir / role / model_slug(model) / dataset / f"{prompt_format}.jsonl"
        meta = path.parent.parent / "model.json"
        if not meta.is_file():
            meta.parent.mkdir(parents=True, exist_ok=True)
            meta.write_text(json.dumps({"model": model, "role": role}) + "\n", encoding="utf-8")
        records = RecordFile(path)
        return SweepCell(model, dataset, prompt_format, items, records, records.load())

    def _reuse_slm_answers(self, group: SweepCell, todo: list[BenchItem]) -> list[BenchItem]:
        """See :meth:`StrongAnswers.reuse_slm_answers`; returns the items still to answer."""
        return self._strong.reuse_slm_answers(group, todo)

    def _cap(self, item: BenchItem, prompt_format: str, strong: bool = False) -> int:
        override = self.config.strong_max_new_tokens if strong else self.config.max_new_tokens
        return override or FORMATS[prompt_format].cap(item.answer_format)

    def _missing(self, record: dict[str, Any] | None) -> list[str]:
        if record is None:
            return list(self.config.methods)
        have = record.get("confidences", {})
        missing = [m for m in self.config.methods if m not in have and m not in PROBE_METHODS]
        if any(m in PROBE_METHODS for m in self.config.methods) and record.get("hidden") is None:
            missing.append("hidden_state")
        return missing

    def _run_slm(self, group: SweepCell) -> None:
        todo = [i for i in group.items if self._missing(group.cached.get(i.item_id))]
        if not todo:
            return
        model = self.local_model(group.model)
        want_hidden = any(m in PROBE_METHODS for m in self.config.methods)
        follow_up = any(Requirement.FOLLOW_UP in e.requires for e in self.estimators.values())
        bar = progress_bar(
            len(todo), f"{group.model} {group.dataset} {group.prompt_format}", self.progress
        )
        try:
            for batch in chunks(todo, self.config.batch_size):
                regenerate = [
                    i
                    for i in batch
                    if group.cached.get(i.item_id) is None
                    or "hidden_state" in self._missing(group.cached.get(i.item_id))
                ]
                fresh = self._generate(model, group, regenerate, want_hidden, follow_up)
                out = []
                for item in batch:
                    if item.item_id in fresh:
                        record, generation = fresh[item.item_id]
                    else:
                        record = dict(group.cached[item.item_id])
                        generation = generation_from_record(record, model.name)
                    self._score(model, group, item, record, generation)
                    generation.extras.pop("prefix", None)
                    out.append(record)
                for estimator in self.estimators.values():
                    if Requirement.PROMPT in estimator.requires:
                        self._prompt_variants(model, group, batch, out, estimator)
                for record in out:
                    group.cached[record["item_id"]] = record
                group.records.append(out)
                bar.update(len(batch))
        finally:
            bar.close()

    def _generate(
        self,
        model: LocalBackend,
        group: SweepCell,
        items: list[BenchItem],
        want_hidden: bool,
        follow_up: bool,
    ) -> dict[str, tuple[dict[str, Any], Generation]]:
        if not items:
            return {}
        # one batch per token cap (answer formats of one dataset share a cap)
        result: dict[str, tuple[dict[str, Any], Generation]] = {}
        config = GenerationConfig(
            max_new_tokens=self._cap(items[0], group.prompt_format),
            hidden_layer=PROBE_LAYER if want_hidden else None,
            keep_cache=follow_up,
        )
        conversations = [messages_for(i, group.prompt_format) for i in items]
        if model.capabilities.tokenizer:
            prompts = [model.encode(model.render(c)) for c in conversations]
            generations = model.generate_from_ids(prompts, config)
        else:  # a model behind an API (``server``) takes messages, in its own template
            generations = model.generate(conversations, config)
        self.stats["slm_generated"] += len(items)
        for item, generation in zip(items, generations, strict=True):
            old = group.cached.get(item.item_id, {})
            record = {
                "item_id": item.item_id,
                **generation_to_record(generation),
                "confidences": dict(old.get("confidences", {})),
                "extras": dict(old.get("extras", {})),
                "variants": dict(old.get("variants", {})),
            }
            answer = extract_answer(generation.text, item)
            record.update(
                answer=answer,
                correct=self._grade(item, generation.text, answer, record),
                gold=item.answer,
                num_options=item.num_options,
                answer_format=item.answer_format,
            )
            result[item.item_id] = (record, generation)
        return result

    def _score(
        self,
        model: LocalBackend,
        group: SweepCell,
        item: BenchItem,
        record: dict[str, Any],
        generation: Generation,
    ) -> None:
        messages = messages_for(item, group.prompt_format)
        config = GenerationConfig(max_new_tokens=self._cap(item, group.prompt_format))
        context = EstimationContext(messages=messages, local_model=model, config=config)
        confidences = record.setdefault("confidences", {})
        extras = record.setdefault("extras", {})
        for name, estimator in self.estimators.items():
            if name in confidences or Requirement.PROMPT in estimator.requires:
                continue  # prompt-changing methods are batched in _prompt_variants
            self.stats["methods_computed"] += 1
            value = estimator.confidence(generation, context)
            confidences[name] = None if value is None else round(float(value), 6)
        for key in ("p_true_mass", "verbalized_2s_reply", "jaccard_samples"):
            if key in context.extras:
                extras[key] = context.extras[key]

    def _prompt_variants(
        self,
        model: LocalBackend,
        group: SweepCell,
        items: list[BenchItem],
        records: list[dict[str, Any]],
        estimator: Estimator,
    ) -> None:
        """A method that changes the prompt (verbalized 1-step) answers on its own, batched."""
        todo = [
            (item, record)
            for item, record in zip(items, records, strict=True)
            if estimator.name not in record.get("confidences", {})
        ]
        if not todo:
            return
        conversations = [
            estimator.transform_messages(messages_for(item, group.prompt_format, firm=False))
            for item, _ in todo
        ]
        cap = max(self._cap(todo[0][0], group.prompt_format), 48)
        generations = model.generate(conversations, GenerationConfig(max_new_tokens=cap))
        for (item, record), messages, generation in zip(
            todo, conversations, generations, strict=True
        ):
            self.stats["methods_computed"] += 1
            context = EstimationContext(messages=messages, local_model=model)
            value = estimator.confidence(generation, context)
            answer = extract_answer(estimator.clean_answer(generation.text), item)
            record.setdefault("variants", {})[estimator.name] = {
                "text": generation.text,
                "answer": answer,
                "correct": grade(answer, item),
                "finish_reason": generation.finish_reason,
            }
            record.setdefault("confidences", {})[estimator.name] = (
                None if value is None else round(float(value), 6)
            )

    def _grade(
        self, item: BenchItem, text: str, answer: str | None, record: dict[str, Any]
    ) -> bool:
        """Exact grading; free text is graded by the judge when one is configured."""
        exact = grade(answer, item)
        if self._judge is None or item.answer_format != "text":
            return exact
        verdict = self._judge.grade(item, text)
        record["judge"] = verdict
        record["correct_exact"] = exact
        return exact if verdict is None else verdict
