"""MLP probes on a hidden state: train, save (safetensors + JSON), load for one model only.

A probe reads the hidden state of the 8th-to-last layer at the last answer token (captured
during generation, no second forward pass) and predicts whether the answer is correct. The
network is the paper's 4-layer MLP with LeakyReLU; inputs are standardised with the training
mean and standard deviation, which are saved with the weights.

A probe file pair is ``NAME.safetensors`` (weights, input mean and scale) and ``NAME.json``
(model name and fingerprint, layer, sizes, training summary). Loading a probe for a model with
another fingerprint is refused: its hidden states mean nothing to it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from confroute.errors import ConfigurationError
from confroute.estimators.base import PROBE_LAYER
from confroute.settings import environment

if TYPE_CHECKING:
    import torch

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

logger = logging.getLogger(__name__)

PROBE_FORMAT = 1
"""Version of the probe file layout."""
HIDDEN_SIZES: tuple[int, int, int] = (256, 128, 64)
"""Widths of the three hidden layers (four linear layers in all)."""
ProbeKind = Literal["trained", "ood"]
"""``trained``: in-domain labelled data; ``ood``: trained on other datasets."""
LEARNING_RATES: Mapping[str, float] = {"trained": 5e-4, "ood": 1e-4}
"""The paper's learning rates per probe kind (20 epochs each)."""
REBUILD_COMMAND = "python benchmarks/train_probes.py --data-dir DIR --model {model} --kind {kind}"
"""The command that (re)builds a probe for a bundled model."""


@dataclass(frozen=True)
class ProbeMetadata:
    """What a probe was trained for and on.

    Attributes:
        model: Name of the local model whose hidden states it reads.
        fingerprint: That model's weights fingerprint (sha256 for bundled models).
        layer: Hidden-state layer index (negative: from the last).
        input_dim: Hidden size of the model.
        kind: ``trained`` or ``ood``.
        hidden_sizes: Widths of the hidden layers.
        epochs: Training epochs.
        lr: Learning rate.
        training: Summary of the training data (datasets, counts, accuracy); no text.
        format: File layout version.
    """

    model: str
    fingerprint: str
    layer: int
    input_dim: int
    kind: str = "trained"
    hidden_sizes: tuple[int, ...] = HIDDEN_SIZES
    epochs: int = 20
    lr: float = 5e-4
    training: dict[str, Any] = field(default_factory=dict)
    format: int = PROBE_FORMAT


def _network(input_dim: int, hidden_sizes: Sequence[int]) -> torch.nn.Sequential:
    import torch

    layers: list[torch.nn.Module] = []
    width = input_dim
    for size in hidden_sizes:
        layers += [torch.nn.Linear(width, size), torch.nn.LeakyReLU()]
        width = size
    layers.append(torch.nn.Linear(width, 1))
    return torch.nn.Sequential(*layers)


class Probe:
    """A trained MLP probe with its input scaling and metadata."""

    def __init__(
        self,
        network: torch.nn.Sequential,
        mean: np.ndarray,
        scale: np.ndarray,
        metadata: ProbeMetadata,
    ) -> None:
        """Wrap a network; use :func:`train_probe` or :meth:`load` to get one."""
        self.network = network.eval()
        self.mean = np.asarray(mean, dtype=np.float32)
        self.scale = np.asarray(scale, dtype=np.float32)
        self.metadata = metadata

    def __repr__(self) -> str:
        """Model, layer, kind."""
        m = self.metadata
        return f"Probe(model={m.model!r}, layer={m.layer}, kind={m.kind!r})"

    def predict(self, hidden: np.ndarray) -> np.ndarray:
        """Probability of a correct answer for each row of ``hidden`` (or one vector)."""
        import torch

        features = np.asarray(hidden, dtype=np.float32)
        single = features.ndim == 1
        features = np.atleast_2d(features)
        if features.shape[1] != self.metadata.input_dim:
            raise ConfigurationError(
                f"The probe reads {self.metadata.input_dim}-wide hidden states of "
                f"{self.metadata.model!r}; got width {features.shape[1]}. Use a probe trained "
                "for this model."
            )
        scaled = (features - self.mean) / self.scale
        with torch.inference_mode():
            logits = self.network(torch.from_numpy(scaled)).squeeze(-1)
        probs: np.ndarray = torch.sigmoid(logits).numpy().astype(np.float64)
        return probs[:1].reshape(()) if single else probs

    def check_model(self, name: str, fingerprint: str) -> None:
        """Refuse a model other than the one the probe was trained for.

        Raises:
            ConfigurationError: The fingerprints differ.
        """
        if fingerprint != self.metadata.fingerprint:
            raise ConfigurationError(
                f"This {self.metadata.kind} probe was trained on {self.metadata.model!r} "
                f"(fingerprint {self.metadata.fingerprint[:12]}), not on {name!r} "
                f"(fingerprint {fingerprint[:12]}). Train one for {name!r}: "
                + REBUILD_COMMAND.format(model=name, kind=self.metadata.kind)
            )

    def save(self, path: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``PATH.safetensors`` and ``PATH.json``; returns both paths."""
        from safetensors.torch import save_file

        stem = Path(path).with_suffix("")
        stem.parent.mkdir(parents=True, exist_ok=True)
        tensors = {
            f"network.{k}": v.detach().contiguous().cpu()
            for k, v in self.network.state_dict().items()
        }
        import torch

        tensors["input.mean"] = torch.from_numpy(self.mean.copy())
        tensors["input.scale"] = torch.from_numpy(self.scale.copy())
        weights, meta = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
        save_file(tensors, str(weights), metadata={"format": str(PROBE_FORMAT)})
        meta.write_text(json.dumps(asdict(self.metadata), indent=2, sort_keys=True) + "\n")
        return weights, meta

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        model: str | None = None,
        fingerprint: str | None = None,
    ) -> Probe:
        """Load a probe; with ``fingerprint``, refuse one made for another model.

        Raises:
            ConfigurationError: Files missing or unreadable, or made for another model.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        stem = Path(path).with_suffix("")
        weights, meta = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
        if not weights.is_file() or not meta.is_file():
            raise ConfigurationError(
                f"No probe at {stem} (.safetensors + .json both needed). Train one with "
                + REBUILD_COMMAND.format(model=model or "MODEL", kind="ood")
            )
        try:
            raw = json.loads(meta.read_text())
            raw["hidden_sizes"] = tuple(raw.get("hidden_sizes", HIDDEN_SIZES))
            metadata = ProbeMetadata(**raw)
            tensors = load_file(str(weights))
        except (OSError, ValueError, TypeError, SafetensorError) as error:
            raise ConfigurationError(f"Cannot read the probe at {stem}: {error}.") from error
        if metadata.format != PROBE_FORMAT:
            raise ConfigurationError(
                f"The probe at {stem} has format {metadata.format}; this confroute reads "
                f"format {PROBE_FORMAT}. Rebuild it."
            )
        network = _network(metadata.input_dim, metadata.hidden_sizes)
        state = {k.removeprefix("network."): v for k, v in tensors.items() if k.startswith("net")}
        network.load_state_dict(state)
        probe = cls(
            network,
            tensors["input.mean"].numpy(),
            tensors["input.scale"].numpy(),
            metadata,
        )
        if fingerprint is not None:
            probe.check_model(model or "this model", fingerprint)
        return probe


def train_probe(
    features: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    model: str,
    fingerprint: str,
    layer: int = PROBE_LAYER,
    kind: ProbeKind = "trained",
    epochs: int = 20,
    lr: float | None = None,
    batch_size: int = 32,
    hidden_sizes: Sequence[int] = HIDDEN_SIZES,
    seed: int = 0,
    training: Mapping[str, Any] | None = None,
    validation: float = 0.0,
    patience: int = 3,
) -> Probe:
    """Train the MLP probe on hidden states labelled correct (1) / wrong (0).

    With ``validation`` > 0 that share of the items (a seeded random draw) is held out for
    early stopping: after each epoch the loss on the held-out items is measured, training
    stops after ``patience`` epochs without a better one, and the network of the best epoch is
    kept. The held-out items are not trained on; the metadata records their count, the best
    epoch and its loss.

    Args:
        features: ``(n, hidden_size)`` hidden states at the last answer token.
        labels: ``n`` labels, 1 for a correct answer.
        model: Name of the model the states come from.
        fingerprint: That model's weights fingerprint.
        layer: The layer they were read from.
        kind: ``trained`` (in-domain, lr 5e-4) or ``ood`` (other datasets, lr 1e-4).
        epochs: Passes over the data (the paper: 20).
        lr: Learning rate (default: the paper's for ``kind``).
        batch_size: Mini-batch size.
        hidden_sizes: Widths of the hidden layers.
        seed: Seed of initialisation and shuffling.
        training: Summary of the data to store in the metadata (no text).
        validation: Share of the items held out for early stopping (0: none, train all
            ``epochs``).
        patience: Epochs without a better held-out loss before training stops.

    Raises:
        ConfigurationError: Shapes disagree, the labels are not 0/1 of both classes (in
            the training and the held-out items), or ``validation`` / ``patience`` is out of
            range.
    """
    import torch

    x = np.asarray(features, dtype=np.float32)
    y = np.asarray(labels, dtype=np.float32)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ConfigurationError(
            f"features must be (n, hidden) and labels (n,); got {x.shape} and {y.shape}."
        )
    if not np.isin(y, (0.0, 1.0)).all() or len(np.unique(y)) < 2:
        raise ConfigurationError("labels must be 0/1 and contain both correct and wrong answers.")
    if kind not in LEARNING_RATES:
        raise ConfigurationError(f"kind must be 'trained' or 'ood', got {kind!r}.")
    if not 0.0 <= validation < 1.0:
        raise ConfigurationError(f"validation must be in [0, 1), got {validation!r}.")
    if patience < 1:
        raise ConfigurationError(f"patience must be >= 1, got {patience!r}.")
    rate = LEARNING_RATES[kind] if lr is None else lr
    held = np.zeros(len(y), dtype=bool)
    if validation > 0:
        held[
            np.random.default_rng(seed).permutation(len(y))[: max(1, round(validation * len(y)))]
        ] = True
        if len(np.unique(y[held])) < 2 or len(np.unique(y[~held])) < 2:
            raise ConfigurationError(
                "The held-out and the training items must each hold correct and wrong answers; "
                "give more items or a larger validation share."
            )
    x_fit, y_fit = x[~held], y[~held]
    mean = x_fit.mean(axis=0)
    scale = x_fit.std(axis=0) + 1e-6
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    network = _network(x.shape[1], hidden_sizes)
    optimiser = torch.optim.Adam(network.parameters(), lr=rate)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    inputs = torch.from_numpy((x_fit - mean) / scale)
    targets = torch.from_numpy(y_fit)
    held_inputs = torch.from_numpy((x[held] - mean) / scale)
    held_targets = torch.from_numpy(y[held])
    best: tuple[float, int, dict[str, Any]] | None = None  # held-out loss, epoch, weights
    network.train()
    loss = torch.tensor(0.0)
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), batch_size):
            index = order[start : start + batch_size]
            optimiser.zero_grad()
            loss = loss_fn(network(inputs[index]).squeeze(-1), targets[index])
            loss.backward()
            optimiser.step()
        if not held.any():
            continue
        network.eval()
        with torch.no_grad():
            held_loss = float(loss_fn(network(held_inputs).squeeze(-1), held_targets))
        network.train()
        if best is None or held_loss < best[0]:
            state = {k: v.detach().clone() for k, v in network.state_dict().items()}
            best = (held_loss, epoch, state)
        elif epoch - best[1] >= patience:
            break
    if best is not None:
        network.load_state_dict(best[2])
    logger.debug("probe trained: final batch loss %.4f", loss.detach().item())
    summary: dict[str, Any] = {"items": len(y_fit), "positive_rate": round(float(y_fit.mean()), 4)}
    if best is not None:
        summary["validation"] = {
            "items": int(held.sum()),
            "best_epoch": best[1],
            "loss": round(best[0], 4),
            "patience": patience,
        }
    summary.update(training or {})
    metadata = ProbeMetadata(
        model=model,
        fingerprint=fingerprint,
        layer=layer,
        input_dim=int(x.shape[1]),
        kind=kind,
        hidden_sizes=tuple(hidden_sizes),
        epochs=epochs,
        lr=rate,
        training=summary,
    )
    return Probe(network, mean, scale, metadata)


def probe_search_dirs() -> list[Path]:
    """Where probes are looked for, in order: ``$CONFROUTE_PROBE_DIR``, the package, the cache."""
    from confroute.models import cache_dir

    dirs = []
    probe_dir = environment().probe_dir
    if probe_dir is not None:
        dirs.append(probe_dir)
    dirs.append(Path(__file__).parents[1] / "probe_files")
    dirs.append(cache_dir() / "probes")
    return dirs


def default_probe_path(model: str, kind: str) -> Path:
    """The first existing ``DIR/MODEL/KIND_probe`` stem, else the cache location to write to."""
    candidates = [d / model / f"{kind}_probe" for d in probe_search_dirs()]
    for stem in candidates:
        if stem.with_suffix(".safetensors").is_file():
            return stem
    return candidates[-1]
