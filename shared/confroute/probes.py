"""The former home of the MLP probe; it now lives in :mod:`confroute.estimators.probe_network`.

Kept so that ``from confroute.probes import train_probe`` (and the other public names) keeps
working; new code imports from :mod:`confroute.estimators.probe_network`.
"""

from __future__ import annotations

from confroute.estimators.probe_network import (
    HIDDEN_SIZES,
    LEARNING_RATES,
    PROBE_FORMAT,
    Probe,
    ProbeKind,
    ProbeMetadata,
    default_probe_path,
    probe_search_dirs,
    train_probe,
)

__all__ = [
    "HIDDEN_SIZES",
    "LEARNING_RATES",
    "PROBE_FORMAT",
    "Probe",
    "ProbeKind",
    "ProbeMetadata",
    "default_probe_path",
    "probe_search_dirs",
    "train_probe",
]
