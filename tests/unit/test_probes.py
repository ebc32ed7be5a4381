"""MLP probes on synthetic hidden states; files; model checks; the probe estimators."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from confroute import ConfRouter
from confroute.errors import ConfigurationError
from confroute.estimators import PROBE_LAYER, LogisticCombination, OODProbe, TrainedProbe
from confroute.estimators.probe_network import (
    Probe,
    ProbeMetadata,
    default_probe_path,
    train_probe,
)
from confroute.local import LocalModel


def synthetic(n: int = 400, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hidden states whose first coordinate (plus noise) says whether the answer is right."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    states = rng.normal(size=(n, dim)).astype(np.float32) * 3.0 + 10.0
    states[:, 0] += np.where(labels == 1, 4.0, -4.0)
    return states, labels


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float((pos[:, None] > neg[None, :]).mean())


def test_the_probe_learns_a_separable_signal() -> None:
    x, y = synthetic()
    probe = train_probe(x[:300], y[:300], model="m", fingerprint="fp", kind="trained")
    scores = probe.predict(x[300:])
    assert scores.shape == (100,)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert auroc(scores, y[300:]) > 0.95
    assert probe.metadata.lr == 5e-4 and probe.metadata.epochs == 20
    assert probe.metadata.layer == PROBE_LAYER == -8
    assert probe.metadata.training == {
        "items": 300,
        "positive_rate": pytest.approx(y[:300].mean(), abs=1e-4),
    }


def test_early_stopping_keeps_the_best_epoch_on_held_out_items() -> None:
    x, y = synthetic(n=400)
    probe = train_probe(
        x[:300], y[:300], model="m", fingerprint="fp", kind="ood", epochs=30, validation=0.2
    )
    held = probe.metadata.training["validation"]
    assert held["items"] == 60 and probe.metadata.training["items"] == 240
    assert 1 <= held["best_epoch"] <= 30 and held["loss"] > 0
    assert auroc(probe.predict(x[300:]), y[300:]) > 0.95
    # a signal-free set stops early: the held-out loss stops improving
    noise = np.random.default_rng(3).normal(size=(300, 32)).astype(np.float32)
    labels = np.random.default_rng(4).integers(0, 2, 300)
    stopped = train_probe(
        noise, labels, model="m", fingerprint="fp", epochs=40, validation=0.2, patience=2
    )
    assert stopped.metadata.training["validation"]["best_epoch"] < 38


@pytest.mark.parametrize(
    ("validation", "patience", "needle"),
    [(1.0, 3, "validation"), (-0.1, 3, "validation"), (0.1, 0, "patience")],
)
def test_bad_early_stopping_settings_are_refused(
    validation: float, patience: int, needle: str
) -> None:
    x, y = synthetic(n=40)
    with pytest.raises(ConfigurationError, match=needle):
        train_probe(x, y, model="m", fingerprint="fp", validation=validation, patience=patience)


def test_a_held_out_split_with_one_class_is_refused() -> None:
    x, y = synthetic(n=40)
    y = np.zeros(40, dtype=int)
    y[0] = 1  # one right answer: a 50% held-out split leaves one side with one class
    with pytest.raises(ConfigurationError, match="correct and wrong"):
        train_probe(x, y, model="m", fingerprint="fp", validation=0.5)


def test_the_network_is_a_four_layer_mlp_with_leaky_relu() -> None:
    x, y = synthetic(n=40)
    probe = train_probe(x, y, model="m", fingerprint="fp", kind="ood", epochs=1)
    linear = [m for m in probe.network if type(m).__name__ == "Linear"]
    activations = [m for m in probe.network if type(m).__name__ == "LeakyReLU"]
    assert [layer.out_features for layer in linear] == [256, 128, 64, 1]
    assert len(activations) == 3
    assert probe.metadata.lr == 1e-4  # the paper's OOD learning rate


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    x, y = synthetic(n=80)
    probe = train_probe(
        x, y, model="m", fingerprint="fp", epochs=2, training={"datasets": {"MMLU": 80}}
    )
    weights, meta = probe.save(tmp_path / "m" / "trained_probe")
    assert weights.suffix == ".safetensors" and meta.suffix == ".json"
    saved = json.loads(meta.read_text())
    assert saved["fingerprint"] == "fp" and saved["layer"] == -8
    assert saved["training"]["datasets"] == {"MMLU": 80}
    loaded = Probe.load(tmp_path / "m" / "trained_probe.json", model="m", fingerprint="fp")
    np.testing.assert_allclose(loaded.predict(x[:5]), probe.predict(x[:5]), rtol=1e-6)


def hand_set_probe() -> Probe:
    """One linear layer, weights (1, 0), bias 0; inputs scaled with mean (1, 0), scale (2, 1)."""
    import torch

    network = torch.nn.Sequential(torch.nn.Linear(2, 1))
    with torch.no_grad():
        network[0].weight.copy_(torch.tensor([[1.0, 0.0]]))
        network[0].bias.zero_()
    metadata = ProbeMetadata(model="m", fingerprint="fp", layer=-8, input_dim=2, hidden_sizes=())
    return Probe(network, np.array([1.0, 0.0]), np.array([2.0, 1.0]), metadata)


def test_a_hand_set_probe_standardises_then_applies_the_sigmoid(tmp_path: Path) -> None:
    probe = hand_set_probe()
    # sigmoid((3 - 1) / 2) = sigmoid(1); the second coordinate has weight 0
    assert float(probe.predict(np.array([3.0, 5.0]))) == pytest.approx(0.7310585786)
    batch = probe.predict(np.array([[1.0, 9.0], [-1.0, 0.0]]))
    assert batch.shape == (2,)
    np.testing.assert_allclose(batch, [0.5, 0.2689414214], rtol=1e-6)
    probe.save(tmp_path / "hand")
    loaded = Probe.load(tmp_path / "hand", model="m", fingerprint="fp")
    assert loaded.metadata == probe.metadata
    np.testing.assert_allclose(loaded.mean, [1.0, 0.0])
    np.testing.assert_allclose(loaded.scale, [2.0, 1.0])
    assert float(loaded.predict(np.array([3.0, 5.0]))) == pytest.approx(0.7310585786)
    with pytest.raises(ConfigurationError, match=r"reads 2-wide hidden states of 'm'; got width 3"):
        probe.predict(np.zeros(3))


def test_unreadable_probe_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"No probe at .*missing.*both needed"):
        Probe.load(tmp_path / "missing")
    weights, meta = hand_set_probe().save(tmp_path / "p")
    meta.write_text("{not json")
    with pytest.raises(ConfigurationError, match="Cannot read the probe at"):
        Probe.load(tmp_path / "p")
    hand_set_probe().save(tmp_path / "p")
    saved = json.loads(meta.read_text())
    meta.write_text(json.dumps({**saved, "format": 99}))
    with pytest.raises(ConfigurationError, match=r"has format 99; this confroute reads format 1"):
        Probe.load(tmp_path / "p")
    weights.write_bytes(b"not safetensors")
    meta.write_text(json.dumps(saved))
    with pytest.raises(ConfigurationError, match="Cannot read the probe at"):
        Probe.load(tmp_path / "p")


def test_a_probe_for_another_model_is_refused(tmp_path: Path) -> None:
    x, y = synthetic(n=40)
    train_probe(x, y, model="m", fingerprint="aaaa", epochs=1).save(tmp_path / "p")
    with pytest.raises(ConfigurationError, match=r"trained on 'm'.*not on 'other'"):
        Probe.load(tmp_path / "p", model="other", fingerprint="bbbb")


def test_bad_training_input_is_refused() -> None:
    x, y = synthetic(n=10)
    with pytest.raises(ConfigurationError, match="both"):
        train_probe(x, np.ones(10), model="m", fingerprint="fp")
    with pytest.raises(ConfigurationError, match=r"\(n, hidden\)"):
        train_probe(x, y[:5], model="m", fingerprint="fp")


def test_missing_probe_names_the_rebuild_command(
    tiny_lm: LocalModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONFROUTE_PROBE_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("CONFROUTE_CACHE", str(tmp_path / "cache"))
    assert (
        default_probe_path("tiny-random", "ood") == tmp_path / "cache/probes/tiny-random/ood_probe"
    )
    with pytest.raises(ConfigurationError, match=r"benchmarks/train_probes\.py .*--kind ood"):
        ConfRouter(tiny_lm, None, estimator="ood_probe")
    with pytest.raises(ConfigurationError, match="--kind trained"):
        ConfRouter(tiny_lm, None, estimator="trained_probe")


def test_probe_estimator_reads_the_hidden_state_captured_during_generation(
    tiny_lm: LocalModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = synthetic(n=60, dim=32)  # the tiny model's hidden size is 32
    probe = train_probe(x, y, model="tiny-random", fingerprint="tiny-sha", kind="ood", epochs=2)
    monkeypatch.setenv("CONFROUTE_PROBE_DIR", str(tmp_path))
    probe.save(tmp_path / "tiny-random" / "ood_probe")
    router = ConfRouter(tiny_lm, None, estimator="ood_probe", threshold=0.0, max_new_tokens=3)
    assert router.defaults.hidden_layer == -8
    response = router.route("What is 17*23?")
    state = response.local.hidden_state
    assert state is not None and state.shape == (32,)
    assert response.local.hidden_layer == -8
    assert response.decision.confidence == pytest.approx(float(probe.predict(state)))
    # an explicit path works too, and a wrong model is refused when the router is built
    explicit = TrainedProbe(tmp_path / "tiny-random" / "ood_probe")
    assert explicit.params() == {"path": str(tmp_path / "tiny-random/ood_probe"), "kind": "trained"}
    again = ConfRouter(tiny_lm, None, estimator=explicit, threshold=0.0, max_new_tokens=3)
    assert again.route("What is 17*23?").decision.confidence == pytest.approx(
        response.decision.confidence
    )
    train_probe(x, y, model="big", fingerprint="other", epochs=1).save(tmp_path / "big")
    with pytest.raises(ConfigurationError, match="not on 'tiny-random'"):
        ConfRouter(tiny_lm, None, estimator=OODProbe(tmp_path / "big"))


def test_logistic_combination_fit_save_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(300, 2))
    y = (rng.uniform(size=300) < 0.1 + 0.8 * x[:, 0]).astype(int)  # only column 0 matters
    fitted = LogisticCombination.fit(x, y, ["perplexity", "min_token_prob"], model="m")
    assert fitted.weights is not None
    assert fitted.weights[0] > 0.5 > abs(fitted.weights[1])
    path = fitted.save(tmp_path / "combo.json")
    loaded = LogisticCombination.load(path)
    assert loaded.signals == ("perplexity", "min_token_prob")
    np.testing.assert_allclose(loaded.weights, fitted.weights)
    assert loaded.training["items"] == 300
    # a hand-set combination: sigmoid(w . (x - mean) / scale + b)
    hand = LogisticCombination(
        signals=["perplexity"], weights=[2.0], bias=-1.0, mean=[0.5], scale=[0.25]
    )
    assert hand.to_dict()["weights"] == [2.0]
    with pytest.raises(ConfigurationError, match="Cannot read"):
        LogisticCombination.load(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("model", "width"),
    [("qwen2.5-coder-0.5b-instruct", 896), ("qwen2.5-coder-1.5b-instruct", 1536)],
)
def test_the_shipped_ood_probes_match_their_weights(model: str, width: int) -> None:
    from confroute.models import BUNDLED_MODELS

    stem = Path(__file__).parents[2] / "shared/confroute/probe_files" / model / "ood_probe"
    probe = Probe.load(stem, model=model, fingerprint=BUNDLED_MODELS[model].sha256)
    assert (probe.metadata.kind, probe.metadata.layer, probe.metadata.input_dim) == (
        "ood",
        -8,
        width,
    )
    assert probe.metadata.lr == 1e-4 and probe.metadata.epochs == 20
    training = probe.metadata.training
    assert sum(d["items"] for d in training["datasets"].values()) == 1100  # 11 datasets x 100
    assert training["source"] == "bench run cache"
    value = probe.predict(np.zeros(width, dtype=np.float32))
    assert 0.0 <= float(value) <= 1.0
