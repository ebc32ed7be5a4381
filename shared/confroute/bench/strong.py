"""The strong models' side of a sweep: answers cached beside the SLM answers.

A bundled in-process model (``confroute/<name>``) answers in batches; any other LiteLLM model
is called with :class:`~confroute.escalation.Escalation`, a few calls in parallel. A strong
model that is the same bundled model as an SLM of the run reuses that SLM's cached answers.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from confroute.backend import LocalBackend
from confroute.bench.cache import RecordFile, model_slug
from confroute.bench.datasets import BenchItem
from confroute.bench.formats import extract_answer, messages_for
from confroute.bench.sweep import SweepCell, SweepConfig, chunks, progress_bar
from confroute.errors import EscalationError
from confroute.escalation import Escalation
from confroute.generation import GenerationConfig
from confroute.settings import LOCAL_PROVIDER

__all__ = ["StrongAnswers"]

logger = logging.getLogger(__name__)


class StrongAnswers:
    """Answers the strong models of a sweep, one :class:`SweepCell` at a time."""

    def __init__(
        self,
        config: SweepConfig,
        run_dir: str | os.PathLike[str],
        *,
        models: dict[str, LocalBackend],
        stats: dict[str, int],
        grade: Callable[[BenchItem, str, str | None, dict[str, Any]], bool],
        cap: Callable[[BenchItem, str, bool], int],
        progress: bool = True,
    ) -> None:
        """Share the runner's state.

        Args:
            config: The sweep.
            run_dir: The run directory (the SLM answers are read from its ``slm/`` folder).
            models: Loaded local models by name, shared with the SLM runner (updated here).
            stats: The run's counters, shared with the SLM runner (updated here).
            grade: Grades ``(item, text, extracted answer, record)``; may add judge fields.
            cap: The token cap of ``(item, prompt format, strong)``.
            progress: Show progress bars on stderr.
        """
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self._models = models
        self.stats = stats
        self._grade = grade
        self._cap = cap

    def run(self, group: SweepCell) -> None:
        """Answer every item of ``group`` not cached yet (reusing an SLM run's answers)."""
        todo = [i for i in group.items if i.item_id not in group.cached]
        if todo:
            todo = self.reuse_slm_answers(group, todo)
        if not todo:
            return
        bar = progress_bar(
            len(todo), f"{group.model} {group.dataset} {group.prompt_format}", self.progress
        )
        local = None
        if group.model.startswith(LOCAL_PROVIDER + "/"):
            # the in-process provider's model, run in batches (same model, same template)
            from confroute import provider

            name = group.model.split("/", 1)[1]
            local = self._models.get(name)
            if local is None:
                local = provider.get_local_model(name)
                self._models[name] = local
        try:
            for batch in chunks(todo, self.config.batch_size):
                started = time.perf_counter()
                if local is not None:
                    texts = self._strong_local(local, group, batch)
                else:
                    texts = self._strong_remote(group, batch)
                elapsed = (time.perf_counter() - started) / len(batch)
                out = []
                for item, (text, finish) in zip(batch, texts, strict=True):
                    if text is None:
                        continue  # a failed call is not cached: the next run retries it
                    answer = extract_answer(text, item)
                    record: dict[str, Any] = {"item_id": item.item_id}
                    record |= {
                        "text": text,
                        "answer": answer,
                        "correct": self._grade(item, text, answer, record),
                        "finish_reason": finish,
                        "latency_s": round(elapsed, 4),
                    }
                    out.append(record)
                    group.cached[item.item_id] = record
                group.records.append(out)
                self.stats["strong"] += len(batch)
                bar.update(len(batch))
        finally:
            bar.close()

    def reuse_slm_answers(self, group: SweepCell, todo: list[BenchItem]) -> list[BenchItem]:
        """Copy the answers an SLM run of the same bundled model already wrote.

        A strong model ``confroute/<name>`` answers with the same model, the same messages and
        greedy decoding as the SLM run of ``<name>``; when the token caps agree too, its answer
        is the SLM's answer, so it is taken from the SLM cache instead of generated again.
        Returns the items still to answer.
        """
        if not group.model.startswith(LOCAL_PROVIDER + "/"):
            return todo
        if self.config.strong_max_new_tokens != self.config.max_new_tokens:
            return todo
        name = group.model.split("/", 1)[1]
        path = self.run_dir / "slm" / model_slug(name) / group.dataset
        slm = RecordFile(path / f"{group.prompt_format}.jsonl").load()
        keys = ("text", "answer", "correct", "finish_reason", "latency_s")
        out: list[dict[str, Any]] = []
        for item in todo:
            if item.item_id in slm:
                record = {k: slm[item.item_id].get(k) for k in keys}
                out.append({"item_id": item.item_id, **record, "from_slm": True})
                group.cached[item.item_id] = out[-1]
        if out:
            group.records.append(out)
            self.stats["strong_reused"] = self.stats.get("strong_reused", 0) + len(out)
        return [i for i in todo if i.item_id not in slm]

    def _strong_local(
        self, model: LocalBackend, group: SweepCell, items: list[BenchItem]
    ) -> list[tuple[str | None, str | None]]:
        config = GenerationConfig(max_new_tokens=self._cap(items[0], group.prompt_format, True))
        generations = model.generate([messages_for(i, group.prompt_format) for i in items], config)
        return [(g.text, g.finish_reason) for g in generations]

    def _strong_remote(
        self, group: SweepCell, items: list[BenchItem]
    ) -> list[tuple[str | None, str | None]]:
        escalation = Escalation(group.model)

        def ask(item: BenchItem) -> tuple[str | None, str | None]:
            try:
                result = escalation.complete(
                    messages_for(item, group.prompt_format),
                    temperature=0.0,
                    max_tokens=self._cap(item, group.prompt_format, True),
                )
            except EscalationError as error:
                logger.warning(
                    "strong model failed on %s/%s: %s", group.dataset, item.item_id, error
                )
                return None, "error"
            return result.text, result.finish_reason

        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            return list(pool.map(ask, items))
