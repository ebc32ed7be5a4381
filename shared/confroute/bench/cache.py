"""The run directory: append-only JSONL records of model answers, one file per group.

Layout under the run directory::

    sweep.json                                   the last sweep configuration
    slm/<model>/<dataset>/<format>.jsonl         SLM answers, per-token stats, confidences
    strong/<model>/<dataset>/<format>.jsonl      strong-model answers

A record is one JSON line keyed by ``item_id``; a later line for the same id replaces the earlier
one (new confidences are added by appending the merged record). A line cut short by a crash is
skipped, so a run can always resume. Records hold no question text, only ids, answers and stats.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from confroute.generation import Generation, TokenAlternative

__all__ = [
    "RecordFile",
    "decode_hidden",
    "encode_hidden",
    "generation_from_record",
    "generation_to_record",
    "model_slug",
    "slm_record_files",
]

logger = logging.getLogger(__name__)


def model_slug(model: str) -> str:
    """A file-system-safe folder name for a model name or LiteLLM string."""
    return re.sub(r"[^A-Za-z0-9._-]+", "__", model)


def encode_hidden(hidden: np.ndarray | None) -> str | None:
    """A hidden-state vector as base64 float16 (about 2 bytes per dimension)."""
    if hidden is None:
        return None
    return base64.b64encode(np.asarray(hidden, dtype=np.float16).tobytes()).decode("ascii")


def decode_hidden(data: str | None) -> np.ndarray | None:
    """Inverse of :func:`encode_hidden` (as float32)."""
    if data is None:
        return None
    return np.frombuffer(base64.b64decode(data), dtype=np.float16).astype(np.float32)


def generation_to_record(generation: Generation) -> dict[str, Any]:
    """The per-token statistics of a generation, JSON-ready."""
    return {
        "text": generation.text,
        "finish_reason": generation.finish_reason,
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "latency_s": generation.latency_s,
        "token_ids": list(generation.token_ids),
        "tokens": list(generation.tokens),
        "logprobs": [round(x, 6) for x in generation.logprobs],
        "entropies": [round(x, 6) for x in generation.entropies],
        "top": [
            [[a.token, a.token_id, round(a.logprob, 6)] for a in alts]
            for alts in generation.top_logprobs
        ],
        "hidden": encode_hidden(generation.hidden_state),
        "hidden_layer": generation.hidden_layer,
    }


def generation_from_record(record: dict[str, Any], model: str = "") -> Generation:
    """Rebuild a :class:`Generation` (no key/value cache) from :func:`generation_to_record`."""
    return Generation(
        text=record["text"],
        token_ids=tuple(record["token_ids"]),
        tokens=tuple(record["tokens"]),
        logprobs=tuple(record["logprobs"]),
        top_logprobs=tuple(
            tuple(TokenAlternative(t, int(i), float(lp)) for t, i, lp in alts)
            for alts in record["top"]
        ),
        entropies=tuple(record["entropies"]),
        finish_reason=record["finish_reason"],
        prompt_tokens=int(record["prompt_tokens"]),
        model=model,
        latency_s=float(record.get("latency_s", 0.0)),
        hidden_state=decode_hidden(record.get("hidden")),
        hidden_layer=record.get("hidden_layer"),
    )


class RecordFile:
    """An append-only JSONL file of records keyed by ``item_id``."""

    def __init__(self, path: Path) -> None:
        """Open (lazily) the file at ``path``; parent folders are created on first write."""
        self.path = path

    def load(self) -> dict[str, dict[str, Any]]:
        """Every item's latest record (lines cut short by a crash are skipped)."""
        records: dict[str, dict[str, Any]] = {}
        if not self.path.is_file():
            return records
        with self.path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    logger.warning(
                        "%s:%d: skipping a damaged line (interrupted run?)", self.path, number
                    )
                    continue
                records[str(record["item_id"])] = record
        return records

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Append records and flush them to disk."""
        lines = [json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records]
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            # a previous crash may have left a partial last line: start on a fresh one
            if handle.tell() > 0:
                with self.path.open("rb") as check:
                    check.seek(-1, 2)
                    if check.read(1) != b"\n":
                        handle.write("\n")
            handle.writelines(lines)
            handle.flush()


def slm_record_files(run_dir: Path, model: str, prompt_format: str) -> dict[str, RecordFile]:
    """The record file of each dataset a bench run holds for ``model`` and ``prompt_format``."""
    folder = run_dir / "slm" / model_slug(model)
    return {
        path.parent.name: RecordFile(path)
        for path in sorted(folder.glob(f"*/{prompt_format}.jsonl"))
    }
