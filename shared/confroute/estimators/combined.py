"""A learned combination of several confidence signals (logistic regression, numpy only).

``confidence = sigmoid(w . standardise(signals) + b)``, fitted on labelled generations with
:meth:`LogisticCombination.fit` and saved as JSON (never pickle). The default signals are the
four single-pass ones, which cost nothing beyond the generation; adding ``p_true`` costs one
follow-up prefill.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from confroute.errors import ConfigurationError
from confroute.estimators.base import EstimationContext, Estimator, shared_confidence
from confroute.generation import Generation

if TYPE_CHECKING:
    from confroute.backend import LocalBackend

__all__ = ["COMBINATION_FORMAT", "DEFAULT_SIGNALS", "LogisticCombination"]

Numbers = Sequence[float] | np.ndarray
"""Per-signal numbers: a list or a 1-d array."""

COMBINATION_FORMAT = 1
"""Version of the JSON layout."""
DEFAULT_SIGNALS: tuple[str, ...] = (
    "avg_token_prob",
    "perplexity",
    "mean_token_entropy",
    "min_token_prob",
)
"""The signals combined by default (all single-pass: no extra model work)."""


def _sigmoid(z: np.ndarray) -> np.ndarray:
    result: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))
    return result


class LogisticCombination(Estimator):
    """Logistic regression over other estimators' confidences (a missing one counts as 0)."""

    name: ClassVar[str] = "logistic_combination"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        signals: Sequence[str] = DEFAULT_SIGNALS,
        weights: Numbers | None = None,
        bias: float = 0.0,
        mean: Numbers | None = None,
        scale: Numbers | None = None,
        model: str | None = None,
        fingerprint: str | None = None,
        training: Mapping[str, Any] | None = None,
    ) -> None:
        """Build from fitted numbers, or name a JSON file (loaded by :meth:`prepare`).

        Args:
            path: A JSON file written by :meth:`save`; None with no ``weights`` looks for
                ``logistic_combination.json`` of the local model in the probe directories.
            signals: Estimator names whose confidences are combined.
            weights: One weight per signal (on standardised inputs).
            bias: Intercept.
            mean: Per-signal mean used to standardise (default 0).
            scale: Per-signal scale used to standardise (default 1).
            model: Name of the model the weights were fitted for, if specific.
            fingerprint: That model's fingerprint; checked in :meth:`prepare`.
            training: Summary of the fitting data (no text).
        """
        from confroute import estimators as registry

        self.path = Path(path) if path is not None else None
        self.model = model
        self.fingerprint = fingerprint
        self.training = dict(training or {})
        self._set(signals, weights, bias, mean, scale)
        self._components = [registry.get(name) for name in self.signals]
        if self.name in self.signals:
            raise ConfigurationError("A combination cannot include itself.")
        self.requires = frozenset().union(*(c.requires for c in self._components))  # type: ignore[misc]

    def _set(
        self,
        signals: Sequence[str],
        weights: Numbers | None,
        bias: float,
        mean: Numbers | None,
        scale: Numbers | None,
    ) -> None:
        self.signals = tuple(signals)
        n = len(self.signals)
        if n == 0:
            raise ConfigurationError("A combination needs at least one signal.")
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.bias = float(bias)
        self.mean = np.zeros(n) if mean is None else np.asarray(mean, dtype=np.float64)
        self.scale = np.ones(n) if scale is None else np.asarray(scale, dtype=np.float64)
        for label, array in (("weights", self.weights), ("mean", self.mean), ("scale", self.scale)):
            if array is not None and array.shape != (n,):
                raise ConfigurationError(f"{label} needs {n} values (one per signal).")

    # -- fitting and files -----------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        labels: Sequence[int] | np.ndarray,
        signals: Sequence[str] = DEFAULT_SIGNALS,
        *,
        l2: float = 1e-2,
        iterations: int = 50,
        model: str | None = None,
        fingerprint: str | None = None,
        training: Mapping[str, Any] | None = None,
    ) -> LogisticCombination:
        """Fit by Newton's method (IRLS) with an L2 penalty on the weights.

        Args:
            features: ``(n, len(signals))`` confidences (use 0 for a missing one).
            labels: 1 for a correct answer, 0 for a wrong one.
            signals: The estimator names of the columns.
            l2: Ridge penalty (not applied to the intercept).
            iterations: Newton steps at most.
            model: Model name, when the weights are model-specific.
            fingerprint: That model's fingerprint.
            training: Summary of the data (no text).

        Raises:
            ConfigurationError: Shapes disagree or labels are not 0/1.
        """
        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(labels, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(signals) or y.shape != (x.shape[0],):
            raise ConfigurationError(
                f"features must be (n, {len(signals)}) and labels (n,); got {x.shape}, {y.shape}."
            )
        if not np.isin(y, (0.0, 1.0)).all():
            raise ConfigurationError("labels must be 0 or 1.")
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 1e-12] = 1.0
        design = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
        theta = np.zeros(design.shape[1])
        penalty = np.full(design.shape[1], l2)
        penalty[0] = 0.0
        for _ in range(iterations):
            p = _sigmoid(design @ theta)
            gradient = design.T @ (p - y) + penalty * theta
            hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-9)
            step = np.linalg.solve(hessian, gradient)
            theta -= step
            if np.abs(step).max() < 1e-10:
                break
        summary = {"items": len(y), "positive_rate": float(y.mean()), **(training or {})}
        return cls(
            signals=signals,
            weights=theta[1:],
            bias=theta[0],
            mean=mean,
            scale=scale,
            model=model,
            fingerprint=fingerprint,
            training=summary,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-serialisable content of the combination."""
        if self.weights is None:
            raise ConfigurationError("This combination has no weights yet: fit or load it.")
        return {
            "format": COMBINATION_FORMAT,
            "signals": list(self.signals),
            "weights": self.weights.tolist(),
            "bias": self.bias,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "model": self.model,
            "fingerprint": self.fingerprint,
            "training": self.training,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the combination as JSON; returns the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LogisticCombination:
        """Read a combination written by :meth:`save`.

        Raises:
            ConfigurationError: The file is missing or not a combination.
        """
        source = Path(path)
        try:
            raw = json.loads(source.read_text())
            if raw.get("format") != COMBINATION_FORMAT:
                raise ValueError(f"format {raw.get('format')!r}, expected {COMBINATION_FORMAT}")
            return cls(
                source,
                signals=raw["signals"],
                weights=raw["weights"],
                bias=raw["bias"],
                mean=raw["mean"],
                scale=raw["scale"],
                model=raw.get("model"),
                fingerprint=raw.get("fingerprint"),
                training=raw.get("training"),
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigurationError(
                f"Cannot read a logistic combination from {source}: {error}. Fit one with "
                "LogisticCombination.fit(...).save(path)."
            ) from error

    # -- estimation ------------------------------------------------------------------------

    def prepare(self, local_model: LocalBackend | None) -> None:
        """Load the weights if only a path was given; check the model; prepare the signals.

        Raises:
            ConfigurationError: No weights and no file, or weights fitted for another model.
        """
        if self.weights is None:
            from confroute.probes import probe_search_dirs

            path = self.path
            if path is None and local_model is not None:
                found = [
                    d / local_model.name / "logistic_combination.json" for d in probe_search_dirs()
                ]
                path = next((p for p in found if p.is_file()), None)
            if path is None:
                raise ConfigurationError(
                    "logistic_combination has no weights: fit them with "
                    "LogisticCombination.fit(features, labels).save(path) and pass "
                    "LogisticCombination(path)."
                )
            loaded = LogisticCombination.load(path)
            self._set(loaded.signals, loaded.weights, loaded.bias, loaded.mean, loaded.scale)
            self.model, self.fingerprint = loaded.model, loaded.fingerprint
            self.training = loaded.training
            self._components = loaded._components
            self.requires = loaded.requires  # type: ignore[misc]
        if (
            local_model is not None
            and self.fingerprint is not None
            and self.fingerprint != local_model.fingerprint
        ):
            raise ConfigurationError(
                f"This combination was fitted for {self.model!r}, not {local_model.name!r}; "
                "fit one on that model's generations."
            )
        for component in self._components:
            component.prepare(local_model)

    def signal_values(self, generation: Generation, context: EstimationContext) -> np.ndarray:
        """The component confidences (None -> 0), in ``signals`` order; shared per request."""
        values = [shared_confidence(c, generation, context) for c in self._components]
        return np.asarray([0.0 if v is None else v for v in values], dtype=np.float64)

    def confidence(self, generation: Generation, context: EstimationContext) -> float | None:
        """``sigmoid(w . (signals - mean) / scale + b)``."""
        if self.weights is None:
            self.prepare(context.local_model)
        if self.weights is None:
            return None
        standardised = (self.signal_values(generation, context) - self.mean) / self.scale
        z = float(standardised @ self.weights) + self.bias
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def params(self) -> dict[str, Any]:
        """Signals and weights."""
        return {
            "signals": list(self.signals),
            "weights": None if self.weights is None else [round(w, 6) for w in self.weights],
            "bias": round(self.bias, 6),
        }
