"""What a calibration profile was measured with: :class:`ProfileFingerprint`.

A profile's thresholds hold only for the setting that produced its confidences: the same
weights, estimator, prompt style, answer format and engine. The fingerprint records each one;
:meth:`confroute.calibration.CalibrationProfile.check_compatible` compares it with the router's
model, and :mod:`confroute.calibration_transfer` says which engine changes the measured
confidence shift allows. Importable from :mod:`confroute.calibration` too.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LEGACY_BACKEND", "ProfileFingerprint"]

LEGACY_BACKEND = "transformers"
"""Engine of a profile written before the engine was recorded (they were all made on it)."""


class ProfileFingerprint(BaseModel):
    """What a profile was measured with; a profile only transfers to the same setting."""

    model_config = ConfigDict(frozen=True)

    model_name: str
    """Display name of the SLM."""
    model_fingerprint: str
    """sha256 of the SLM weights (GGUF) or its hub id / path."""
    estimator: str
    """Estimator name."""
    estimator_params: dict[str, Any] = Field(default_factory=dict)
    """Estimator settings that change its output."""
    prompt_style: str = "default"
    """Name of the prompt format used to score the calibration items."""
    answer_format: str = "any"
    """Answer format the profile is for (``letter:4``, ``yes_no``, ``number``, ``any``, ...)."""
    confroute_version: str = ""
    """confroute version that built the profile."""
    backend: str = LEGACY_BACKEND
    """Engine that computed the confidences (``LocalBackend.capabilities.backend``:
    ``transformers``, ``llama.cpp`` or ``server``); a profile without it was made on
    transformers (:data:`LEGACY_BACKEND`)."""

    def short(self) -> str:
        """One line naming the model, its hash prefix, the estimator and the engine."""
        return (
            f"{self.model_name} (weights {self.model_fingerprint[:12]}), "
            f"estimator {self.estimator}, format {self.answer_format}, engine {self.backend}"
        )
