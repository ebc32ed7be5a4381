"""The paper's probes, trained by the benchmark on cached hidden states.

``trained_probe``: k-fold cross-validation within one dataset (every item is scored by a probe
that did not see it; 20 epochs, lr 5e-4). ``ood_probe``: for each dataset, a probe trained on
all the other datasets of the run (20 epochs, lr 1e-4). Both use
:func:`confroute.estimators.probe_network.train_probe`, the same network the router's probe
estimators load.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["cross_validated", "trained_on_others"]

logger = logging.getLogger(__name__)


def _train_and_predict(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, kind: str, seed: int
) -> np.ndarray:
    import torch

    from confroute.estimators.probe_network import train_probe

    # a small MLP on a few thousand rows: one thread is fastest (no oversubscription)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        probe = train_probe(
            x_train,
            y_train.astype(int),
            model="bench",
            fingerprint="bench",
            kind=kind,  # type: ignore[arg-type]
            seed=seed,
        )
        return np.asarray(probe.predict(x_test), dtype=float).reshape(-1)
    finally:
        torch.set_num_threads(threads)


def cross_validated(
    hidden: np.ndarray, correct: np.ndarray, folds: int = 5, seed: int = 0
) -> np.ndarray | None:
    """Out-of-fold probe confidences for every item (None when a fold has one class only)."""
    n = len(correct)
    if n < 2 * folds:
        return None
    order = np.random.default_rng(seed).permutation(n)
    result = np.full(n, np.nan)
    for fold in range(folds):
        test = order[fold::folds]
        train = np.setdiff1d(order, test)
        y = correct[train]
        if y.min() == y.max():
            logger.info("trained_probe: a training fold has one class; left out")
            return None
        result[test] = _train_and_predict(hidden[train], y, hidden[test], "trained", seed)
    return result


def trained_on_others(
    data: dict[str, tuple[np.ndarray, np.ndarray]], seed: int = 0
) -> dict[str, np.ndarray]:
    """For each dataset, confidences from a probe trained on the other datasets."""
    result: dict[str, np.ndarray] = {}
    for held_out, (x_test, _) in data.items():
        others = [d for d in data if d != held_out]
        if not others:
            continue
        x = np.concatenate([data[d][0] for d in others])
        y = np.concatenate([data[d][1] for d in others])
        if y.min() == y.max():
            continue
        result[held_out] = _train_and_predict(x, y, x_test, "ood", seed)
    return result
