"""The budget settings through ConfRouter: the cap in decisions, clear errors, the default."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from confroute import ConfRouter, RoutingDecision
from confroute.calibration import CalibrationProfile, PoolItem, ProfileFingerprint
from confroute.errors import ConfigurationError
from confroute.models import BUNDLED_MODELS
from confroute.policies import (
    EscalationCap,
    FixedThreshold,
    StreamingQuantile,
    TargetEscalationRate,
)
from confroute.settings import DEFAULT_ESCALATION_RATE, DEFAULT_SLM, DEFAULT_THRESHOLD
from tests.fakes import ScriptedLocalModel, ScriptedProvider

FP = ProfileFingerprint(
    model_name="scripted-slm", model_fingerprint="scripted-sha", estimator="perplexity"
)
PROFILE = CalibrationProfile.from_pool(
    [PoolItem(dataset="d", item_id=str(i), confidence=i / 10) for i in range(11)], FP
)


def test_a_capped_router_refuses_escalations_beyond_the_cap(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    seen: list[RoutingDecision] = []
    router = ConfRouter(
        scripted_slm,
        "scripted/strong",
        escalation_rate=0.5,
        profile=PROFILE,
        max_escalation_rate=0.5,
        budget_window=4,
        max_retries=0,
        hooks=[seen.append],
    )
    assert isinstance(router.policy, StreamingQuantile) and router.policy.cap is not None
    for _ in range(8):
        router.route("unsure?")  # every answer is unsure: the cap decides
    flags = [d.escalated for d in seen]
    assert all(sum(flags[k : k + 4]) <= 2 for k in range(len(flags) - 3))
    kept = [d for d in seen if not d.escalated]
    assert any(d.reason == "budget_exhausted" for d in kept)
    assert {d.reason for d in kept} <= {"budget_exhausted", "confident"}
    assert all(d.answered_by == scripted_slm.name for d in kept)


def test_a_fixed_threshold_gets_the_cap_too(scripted_slm: ScriptedLocalModel) -> None:
    router = ConfRouter(scripted_slm, None, threshold=0.9, max_escalation_rate=0.2)
    assert isinstance(router.policy, EscalationCap)
    assert isinstance(router.policy.policy, FixedThreshold) and router.policy.cap.window == 100
    fixed = ConfRouter(
        scripted_slm,
        None,
        escalation_rate=0.3,
        profile=PROFILE,
        adapt_to_traffic=False,
        max_escalation_rate=0.4,
    )
    assert isinstance(fixed.policy, EscalationCap)
    assert isinstance(fixed.policy.policy, TargetEscalationRate)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"escalation_rate": 0.3, "max_escalation_rate": 0.2}, "below escalation_rate"),
        ({"max_escalation_rate": 0.3, "budget_window": 0}, "budget_window must be an integer"),
        ({"max_escalation_rate": 0.001}, "allows no escalation"),
        ({"max_escalation_rate": 1.2}, "max_escalation_rate must be in"),
        ({"policy": FixedThreshold(0.5), "max_escalation_rate": 0.3}, "EscalationCap"),
    ],
)
def test_impossible_budget_settings_are_refused(
    scripted_slm: ScriptedLocalModel, settings: dict[str, object], message: str
) -> None:
    options = dict(settings)
    if "escalation_rate" in options:
        options["profile"] = PROFILE
    with pytest.raises(ConfigurationError, match=message):
        ConfRouter(scripted_slm, None, **options)  # type: ignore[arg-type]


def test_the_default_policy_holds_a_rate_for_a_bundled_model() -> None:
    bundled = ScriptedLocalModel(name=DEFAULT_SLM, fingerprint=BUNDLED_MODELS[DEFAULT_SLM].sha256)
    router = ConfRouter(bundled, None)
    assert isinstance(router.policy, StreamingQuantile)
    assert router.policy.escalation_rate == DEFAULT_ESCALATION_RATE
    assert router.policy.per_format and router.policy.horizon is not None
    # other weights under the bundled name, or an explicit threshold: the fixed threshold
    impostor = ScriptedLocalModel(name=DEFAULT_SLM, fingerprint="other-weights")
    assert repr(ConfRouter(impostor, None).policy) == repr(FixedThreshold(DEFAULT_THRESHOLD))
    assert ConfRouter(bundled, None, threshold=0.5).policy.threshold == 0.5  # type: ignore[attr-defined]


def test_an_unknown_model_keeps_the_fixed_default(scripted_slm: ScriptedLocalModel) -> None:
    policy = ConfRouter(scripted_slm, None).policy
    assert isinstance(policy, FixedThreshold) and policy.threshold == DEFAULT_THRESHOLD


def test_serve_keeps_the_policy_state_across_restarts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import confroute.local
    import confroute.serving.server
    from confroute.serving.cli import add_serve_parser, run_serve

    sha = BUNDLED_MODELS[DEFAULT_SLM].sha256
    served: list[ConfRouter] = []

    def fake_serve(router: ConfRouter, **kwargs: Any) -> None:
        served.append(router)
        for _ in range(30):  # traffic while serving
            router.policy.decide(0.05, answer_format="letter")

    monkeypatch.setattr(
        confroute.local,
        "LocalModel",
        lambda name, **_: ScriptedLocalModel(name=DEFAULT_SLM, fingerprint=sha),
    )
    monkeypatch.setattr(confroute.serving.server, "serve", fake_serve)
    parser = argparse.ArgumentParser(prog="confroute")
    add_serve_parser(parser.add_subparsers(dest="command", required=True))
    path = tmp_path / "policy.json"
    argv = ["serve", "--local-only", "--no-batching", "--escalation-rate", "0.2"]
    argv += ["--slm-backend", "transformers"]  # the patched LocalModel, the profile's engine
    assert run_serve(parser.parse_args([*argv, "--policy-state", str(path)])) == 0
    assert json.loads(path.read_text())["requests"] == 30
    assert run_serve(parser.parse_args([*argv, "--policy-state", str(path)])) == 0
    restarted = served[-1].policy
    assert isinstance(restarted, StreamingQuantile) and restarted.requests == 60
    with pytest.raises(ConfigurationError, match="--policy-state keeps the live state"):
        run_serve(
            parser.parse_args(
                ["serve", "--local-only", "--threshold", "0.5", "--policy-state", str(path)]
            )
        )
