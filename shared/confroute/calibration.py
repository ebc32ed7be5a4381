"""Calibration profiles: what an SLM and estimator produce on a calibration set, as numbers only.

The paper's generalization result: confidence distributions depend mostly on the SLM and the
estimator, not on the downstream data. So a calibration set pooled from many datasets (the
confidence range split into 30 bins, 10% of each bin sampled) gives thresholds for a target
escalation rate that transfer to unseen data without labels from it.

A :class:`CalibrationProfile` is frozen and stored as JSON (never pickle). It carries a
fingerprint (:mod:`confroute.calibration_fingerprint`: model weights hash, estimator and its
parameters, prompt style, answer format, engine, confroute version) so that a profile made for
another model is refused, and one made on another engine is used only where
:mod:`confroute.calibration_transfer` measured the shift small enough. Building a profile
from scored items (:func:`build_calibration_set`, :func:`profile_from_run`) lives in
:mod:`confroute.calibration_set`; both names are importable from here.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from confroute.bounds import check_unit_interval
from confroute.calibration_fingerprint import ProfileFingerprint
from confroute.calibration_set import build_calibration_set, profile_from_run
from confroute.calibration_transfer import engine_problem
from confroute.errors import CalibrationError, ProfileMismatchError
from confroute.profile_lookup import default_profile_path, profile_search_dirs, shipped_profiles

__all__ = [
    "MIN_FORMAT_ITEMS",
    "CalibrationProfile",
    "ManifestEntry",
    "PoolItem",
    "ProfileFingerprint",
    "RoutingPoint",
    "build_calibration_set",
    "check_rate",
    "default_profile_path",
    "profile_from_run",
    "profile_search_dirs",
    "shipped_profiles",
]

PROFILE_FORMAT = 1
MIN_FORMAT_ITEMS = 30
"""Fewest items of one answer format for a per-format threshold (else the pooled one)."""


def check_rate(rate: float, name: str = "escalation_rate") -> float:
    """Return ``rate`` as a float in [0, 1], or raise :class:`CalibrationError`.

    The calibration form of :func:`confroute.bounds.check_unit_interval`.
    """
    return check_unit_interval(name, rate, error=CalibrationError)


class ManifestEntry(BaseModel):
    """One calibration item: where it came from (no dataset text)."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    item_id: str


class PoolItem(BaseModel):
    """One scored instance of the calibration pool."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    item_id: str
    confidence: float | None
    """The estimator's confidence; None (no confidence) counts as 0."""
    correct: bool | None = None
    """Whether the SLM answered correctly, when labels exist."""
    strong_correct: bool | None = None
    """Whether the strong model answered correctly, when measured."""
    answer_format: str | None = None
    """Answer format of the item (``letter``, ``yes_no``, ``number``, ``any``), when known."""


class RoutingPoint(BaseModel):
    """One point of a predicted routing curve."""

    escalation_rate: float
    threshold: float
    kept_accuracy: float | None
    """SLM accuracy on the answers kept local (None without labels)."""
    system_accuracy: float | None
    """Accuracy of the routed system (None without strong-model labels)."""


class CalibrationProfile(BaseModel):
    """The confidence distribution of one SLM + estimator on a calibration set.

    ``confidences`` is sorted ascending; ``correct`` / ``strong_correct``, when present, are
    aligned with it.
    """

    model_config = ConfigDict(frozen=True)

    format: int = PROFILE_FORMAT
    """File format version."""
    fingerprint: ProfileFingerprint
    """What the profile was measured with."""
    confidences: tuple[float, ...]
    """Calibration confidences, ascending."""
    correct: tuple[bool, ...] | None = None
    """SLM correctness per confidence, when labels exist."""
    strong_correct: tuple[bool, ...] | None = None
    """Strong-model correctness per confidence, when measured."""
    manifest: tuple[ManifestEntry, ...] = ()
    """The calibration items (dataset, item id), aligned with ``confidences``."""
    answer_formats: tuple[str, ...] | None = None
    """Answer format per confidence (see :mod:`confroute.answer_format`), when known; lets
    :meth:`threshold_for` use the items of the request's format only."""
    construction: dict[str, Any] = Field(default_factory=dict)
    """How the set was built (bins, fraction, seed, pool size, datasets)."""

    @model_validator(mode="after")
    def _check(self) -> CalibrationProfile:
        if not self.confidences:
            raise ValueError("a calibration profile needs at least one confidence")
        values = np.asarray(self.confidences, dtype=float)
        if np.any(~np.isfinite(values)) or values.min() < 0 or values.max() > 1:
            raise ValueError("confidences must be finite numbers in [0, 1]")
        if np.any(np.diff(values) < 0):
            raise ValueError("confidences must be sorted ascending")
        for name in ("correct", "strong_correct"):
            labels = getattr(self, name)
            if labels is not None and len(labels) != len(self.confidences):
                raise ValueError(f"{name} must have one label per confidence")
        if self.manifest and len(self.manifest) != len(self.confidences):
            raise ValueError("manifest must have one entry per confidence")
        if self.answer_formats is not None and len(self.answer_formats) != len(self.confidences):
            raise ValueError("answer_formats must have one entry per confidence")
        return self

    # -- construction and storage ----------------------------------------------------------

    @classmethod
    def from_pool(
        cls,
        items: Sequence[PoolItem],
        fingerprint: ProfileFingerprint,
        construction: dict[str, Any] | None = None,
    ) -> CalibrationProfile:
        """A profile holding every item of ``items`` (no sampling)."""
        if not items:
            raise CalibrationError(
                "The calibration set is empty: score at least one item (check the data "
                "directory and --limit)."
            )
        ordered = sorted(items, key=lambda i: (i.confidence or 0.0, i.dataset, i.item_id))
        has_labels = all(i.correct is not None for i in ordered)
        has_strong = all(i.strong_correct is not None for i in ordered)
        has_formats = all(i.answer_format is not None for i in ordered)
        return cls(
            fingerprint=fingerprint,
            confidences=tuple(float(i.confidence or 0.0) for i in ordered),
            correct=tuple(bool(i.correct) for i in ordered) if has_labels else None,
            strong_correct=tuple(bool(i.strong_correct) for i in ordered) if has_strong else None,
            manifest=tuple(ManifestEntry(dataset=i.dataset, item_id=i.item_id) for i in ordered),
            answer_formats=tuple(str(i.answer_format) for i in ordered) if has_formats else None,
            construction=construction or {},
        )

    def save(self, path: str | Path) -> None:
        """Write the profile as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CalibrationProfile:
        """Read a profile written by :meth:`save`.

        Raises:
            CalibrationError: The file is missing, not JSON, or not a valid profile.
        """
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError) as error:
            raise CalibrationError(
                f"Cannot read calibration profile {path}: {error}. Rebuild it with "
                "`confroute calibrate`."
            ) from error
        except json.JSONDecodeError as error:
            raise CalibrationError(
                f"{path} is not valid JSON ({error}); rebuild it with `confroute calibrate`."
            ) from error
        if isinstance(data, dict) and data.get("format", PROFILE_FORMAT) != PROFILE_FORMAT:
            raise CalibrationError(
                f"{path} has profile format {data.get('format')}; this confroute reads format "
                f"{PROFILE_FORMAT}. Rebuild it with `confroute calibrate`."
            )
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise CalibrationError(
                f"{path} is not a valid calibration profile: {error.errors()[0]['msg']}. "
                "Rebuild it with `confroute calibrate`."
            ) from error

    def check_compatible(
        self,
        model_fingerprint: str,
        estimator: str,
        *,
        model_name: str = "",
        strict: bool = True,
        backend: str | None = None,
    ) -> None:
        """Refuse (or, with ``strict=False``, warn about) a profile made for another setting.

        Args:
            model_fingerprint: The router's model weights fingerprint.
            estimator: The router's estimator.
            model_name: The model's name, for the message.
            strict: Raise (True) or warn (False).
            backend: The engine the model runs on (``capabilities.backend``); another engine
                than the profile's is accepted only where the measured confidence shift allows
                it (:func:`confroute.calibration_transfer.transfer_allowed`). None: not checked.

        Raises:
            ProfileMismatchError: The model weights or the estimator differ, or the engine
                differs where the shift was not measured small, and ``strict``.
        """
        problems = []
        if self.fingerprint.model_fingerprint != model_fingerprint:
            problems.append(
                f"model weights {model_fingerprint[:12]} ({model_name or 'this model'}) vs "
                f"{self.fingerprint.model_fingerprint[:12]} ({self.fingerprint.model_name})"
            )
        if self.fingerprint.estimator != estimator:
            problems.append(f"estimator {estimator!r} vs {self.fingerprint.estimator!r}")
        engine = engine_problem(self.fingerprint.backend, backend, estimator)
        if engine is not None:
            problems.append(engine)
        if not problems:
            return
        flag = f" --slm-backend {backend}" if engine is not None else ""
        message = (
            "The calibration profile was made for another setting: "
            + "; ".join(problems)
            + ". Build a profile for this model, estimator and engine with `confroute "
            f"calibrate{flag}`, or pass strict=False to use it anyway."
        )
        if strict:
            raise ProfileMismatchError(message)
        warnings.warn(message, stacklevel=2)

    # -- what a profile answers ------------------------------------------------------------

    @property
    def size(self) -> int:
        """Number of calibration items."""
        return len(self.confidences)

    def formats(self) -> dict[str, int]:
        """Answer format -> number of calibration items (empty when formats are unknown)."""
        counts: dict[str, int] = {}
        for name in self.answer_formats or ():
            counts[name] = counts.get(name, 0) + 1
        return counts

    def confidences_for(self, answer_format: str | None = None) -> tuple[float, ...]:
        """The calibration confidences of one answer format (ascending).

        The pooled confidences when ``answer_format`` is None or ``any``, when the profile
        records no formats, or when fewer than :data:`MIN_FORMAT_ITEMS` items have that format.
        """
        if answer_format in (None, "any") or self.answer_formats is None:
            return self.confidences
        chosen = tuple(
            c
            for c, f in zip(self.confidences, self.answer_formats, strict=True)
            if f == answer_format
        )
        return chosen if len(chosen) >= MIN_FORMAT_ITEMS else self.confidences

    def threshold_for(self, escalation_rate: float, answer_format: str | None = None) -> float:
        """The threshold that escalates ``escalation_rate`` of the calibration set.

        Escalation happens when confidence < threshold, so the threshold is placed midway
        between the k-th and (k+1)-th smallest confidence, k = round(rate * n). Rate 0 gives
        0.0 (escalate nothing), rate 1 gives 1.0 (escalate everything). With ``answer_format``
        only that format's items count (see :meth:`confidences_for`).
        """
        rate = check_rate(escalation_rate)
        values = self.confidences_for(answer_format)
        n = len(values)
        k = round(rate * n)
        if k <= 0:
            return 0.0
        if k >= n:
            return 1.0
        low, high = values[k - 1], values[k]
        return float((low + high) / 2) if high > low else float(high)

    def escalation_rate_at(self, threshold: float) -> float:
        """Fraction of the calibration set that ``threshold`` escalates."""
        if threshold >= 1.0:
            return 1.0
        below = np.searchsorted(np.asarray(self.confidences), threshold, side="left")
        return float(below / self.size)

    def predicted_routing_curve(self, rates: Sequence[float] | None = None) -> list[RoutingPoint]:
        """The routing curve the profile predicts for unseen data.

        At each rate r the r least confident answers are escalated; ``kept_accuracy`` is the
        SLM's accuracy on the rest and ``system_accuracy`` counts escalated items as right when
        the strong model was (both None where the labels are missing).
        """
        grid = [
            check_rate(r, "rate") for r in (rates if rates is not None else np.linspace(0, 1, 11))
        ]
        n = self.size
        points = []
        for rate in grid:
            k = round(rate * n)
            kept = self.correct[k:] if self.correct is not None else None
            kept_accuracy = (sum(kept) / len(kept)) if kept else None
            system = None
            if self.correct is not None and self.strong_correct is not None:
                system = (sum(self.strong_correct[:k]) + sum(self.correct[k:])) / n
            points.append(
                RoutingPoint(
                    escalation_rate=rate,
                    threshold=self.threshold_for(rate),
                    kept_accuracy=kept_accuracy,
                    system_accuracy=system,
                )
            )
        return points

    def summary(self) -> dict[str, Any]:
        """Size, quantiles, accuracy and datasets, for display."""
        values = np.asarray(self.confidences)
        quantiles = {
            f"q{int(q * 100):02d}": float(np.quantile(values, q)) for q in (0.1, 0.3, 0.5, 0.7, 0.9)
        }
        datasets: dict[str, int] = {}
        for entry in self.manifest:
            datasets[entry.dataset] = datasets.get(entry.dataset, 0) + 1
        return {
            "fingerprint": self.fingerprint.short(),
            "items": self.size,
            "formats": self.formats() or None,
            "mean_confidence": float(values.mean()),
            **quantiles,
            "slm_accuracy": (sum(self.correct) / self.size) if self.correct is not None else None,
            "datasets": datasets,
        }
