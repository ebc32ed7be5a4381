"""Estimators that read a trained MLP probe on the answer's hidden state."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from confroute.errors import ConfigurationError
from confroute.estimators.base import PROBE_LAYER, EstimationContext, Estimator, Requirement
from confroute.generation import Generation

if TYPE_CHECKING:
    from confroute.backend import LocalBackend
    from confroute.probes import Probe

__all__ = ["OODProbe", "TrainedProbe"]


class _ProbeEstimator(Estimator):
    """Confidence = the probe's probability that the answer is correct."""

    kind: ClassVar[str]
    requires: ClassVar[frozenset[str]] = frozenset({Requirement.HIDDEN_STATE})
    hidden_layer: ClassVar[int] = PROBE_LAYER

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        """Build the estimator.

        Args:
            path: The probe file (stem, ``.safetensors`` or ``.json``); None looks up the
                local model's probe in :func:`confroute.probes.probe_search_dirs`.
        """
        self.path = Path(path) if path is not None else None
        self._probe: Probe | None = None
        self._for: str | None = None

    def prepare(self, local_model: LocalBackend | None) -> None:
        """Load the probe for ``local_model`` and check that it was made for it.

        Raises:
            ConfigurationError: No probe file (the message gives the command that builds
                one), or a probe made for another model.
        """
        from confroute.probes import REBUILD_COMMAND, Probe, default_probe_path

        if local_model is None:
            raise ConfigurationError(f"{self.name} needs the local model to find its probe.")
        if self._probe is not None and self._for == local_model.fingerprint:
            return
        stem = self.path or default_probe_path(local_model.name, self.kind)
        if not stem.with_suffix(".safetensors").is_file():
            raise ConfigurationError(
                f"No {self.kind} probe for {local_model.name!r} at {stem}.safetensors. Build it "
                "with: "
                + REBUILD_COMMAND.format(model=local_model.name, kind=self.kind)
                + " (or pass the file: "
                + f"{type(self).__name__}(path=...), or set CONFROUTE_PROBE_DIR)."
            )
        probe = Probe.load(stem, model=local_model.name, fingerprint=local_model.fingerprint)
        if probe.metadata.layer != self.hidden_layer:
            raise ConfigurationError(
                f"The probe at {stem} reads layer {probe.metadata.layer}; {self.name} captures "
                f"layer {self.hidden_layer}. Rebuild the probe."
            )
        self._probe, self._for = probe, local_model.fingerprint

    def confidence(self, generation: Generation, context: EstimationContext) -> float | None:
        """The probe's probability of a correct answer; None without a hidden state."""
        if self._probe is None or (
            context.local_model is not None and self._for != context.local_model.fingerprint
        ):
            self.prepare(context.local_model)
        if generation.hidden_state is None or not generation.token_ids:
            return None
        if generation.hidden_layer != self.hidden_layer:
            raise ConfigurationError(
                f"{self.name} needs the hidden state of layer {self.hidden_layer}; generate with "
                f"GenerationConfig(hidden_layer={self.hidden_layer}) (ConfRouter does this)."
            )
        probe = self._probe
        if probe is None:
            raise ConfigurationError(f"{self.name} has no probe loaded; call prepare(model).")
        return float(probe.predict(generation.hidden_state))

    def params(self) -> dict[str, Any]:
        """Which probe file."""
        return {"path": str(self.path) if self.path else None, "kind": self.kind}


class TrainedProbe(_ProbeEstimator):
    """MLP probe trained on labelled in-domain generations (20 epochs, lr 5e-4).

    There is no shipped file: train one on your data with :func:`confroute.probes.train_probe`
    or ``benchmarks/train_probes.py --kind trained`` and pass its path.
    """

    name: ClassVar[str] = "trained_probe"
    kind: ClassVar[str] = "trained"


class OODProbe(_ProbeEstimator):
    """The same MLP trained on other datasets (20 epochs, lr 1e-4); works on unseen data."""

    name: ClassVar[str] = "ood_probe"
    kind: ClassVar[str] = "ood"
