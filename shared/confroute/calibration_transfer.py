"""May a calibration profile made on one engine be used on another? The measured rule.

The same weights give slightly different log-probs on different engines (llama.cpp runs the
GGUF's quantized kernels, transformers a bf16 dequantized copy), so a confidence threshold
taken from a profile made on one engine escalates a slightly different share of requests on
the other. ``benchmarks/profile_transfer.py`` measured the shift on the kit's calibration set
(bundled 0.5B, 1,100 items, greedy, the two engines' shipped profiles): for each estimator,
at the transformers profile's thresholds for escalation rates 0.1 to 0.5, how far the
realised escalation rate moved and how many routing decisions flipped. :data:`MEASURED_SHIFTS`
holds those figures; the rule is

    a profile made on engine A may be used on engine B (A != B) for an estimator only when the
    pair was measured for it and the realised escalation rate moved by at most
    :data:`RATE_TOLERANCE` and at most :data:`FLIP_TOLERANCE` of the decisions flipped, at
    every rate 0.1-0.5;

anything else (an estimator or engine pair not measured, the ``server`` engine, whose weights
and kernels confroute cannot see) is refused with a message that says to recalibrate on the
engine (``confroute calibrate --slm-backend ENGINE``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "FLIP_TOLERANCE",
    "MEASURED_SHIFTS",
    "RATE_TOLERANCE",
    "TransferShift",
    "engine_problem",
    "measured_shift",
    "transfer_allowed",
]

RATE_TOLERANCE = 0.02
"""Largest allowed move of the realised escalation rate (about the sampling error of a
quantile of the 1,100-item shipped profiles at rate 0.3: sqrt(0.3 * 0.7 / 1100) = 0.014)."""
FLIP_TOLERANCE = 0.05
"""Largest allowed share of routing decisions that change engine to engine."""


@dataclass(frozen=True)
class TransferShift:
    """The measured shift of one estimator's confidences between two engines.

    Attributes:
        rate_shift: Largest |realised escalation rate on B - on A| at the thresholds of
            rates 0.1-0.5.
        flip_share: Largest share of items routed differently at one of those thresholds.
        max_abs_diff: Largest |confidence on B - on A| of one item.
        mean_abs_diff: Mean |confidence on B - on A|.
    """

    rate_shift: float
    flip_share: float
    max_abs_diff: float
    mean_abs_diff: float

    @property
    def small(self) -> bool:
        """Whether the shift is within both tolerances."""
        return self.rate_shift <= RATE_TOLERANCE and self.flip_share <= FLIP_TOLERANCE


MEASURED_SHIFTS: dict[frozenset[str], dict[str, TransferShift]] = {
    frozenset({"transformers", "llama.cpp"}): {
        "perplexity": TransferShift(0.0182, 0.0927, 0.4051, 0.0097),
        "avg_token_prob": TransferShift(0.0155, 0.0909, 0.5174, 0.0099),
        "min_token_prob": TransferShift(0.0227, 0.0845, 0.0735, 0.0094),
        "mean_token_entropy": TransferShift(0.0164, 0.0345, 0.3681, 0.0022),
        "p_true": TransferShift(0.0673, 0.1273, 0.3337, 0.0196),
    },
}
"""Engine pair -> estimator -> measured shift: the bundled 0.5B's shipped profiles of both
engines, the same 1,100 calibration items (``benchmarks/profile_transfer.py --from-profiles``;
an earlier 34-item run had given the same verdicts but ``mean_token_entropy``'s). The 1.5B's
profiles gave the same verdicts with every figure at or below these, so the table keeps the
0.5B's, the worst case."""


def measured_shift(made_on: str, used_on: str, estimator: str) -> TransferShift | None:
    """The measured shift of ``estimator`` between two engines (None: never measured)."""
    return MEASURED_SHIFTS.get(frozenset({made_on, used_on}), {}).get(estimator)


def transfer_allowed(made_on: str, used_on: str, estimator: str) -> bool:
    """Whether a profile made on ``made_on`` may be used on ``used_on`` for ``estimator``."""
    if made_on == used_on:
        return True
    shift = measured_shift(made_on, used_on, estimator)
    return shift is not None and shift.small


def engine_problem(
    made_on: str, used_on: str | None, estimator: str, *, adaptive: bool = False
) -> str | None:
    """Why a profile made on ``made_on`` may not be used on ``used_on`` (None: it may).

    ``used_on`` None means the engine is not checked. ``adaptive``: the profile only starts
    a policy that follows the traffic (:func:`~confroute.policies.held_rate`, the default),
    which corrects its threshold from the confidences it sees within its window, as it does
    for a shift between datasets; then any measured engine pair is allowed, and only a pair
    never measured (the ``server`` engine) is refused.
    """
    if used_on is None or transfer_allowed(made_on, used_on, estimator):
        return None
    if adaptive and measured_shift(made_on, used_on, estimator) is not None:
        return None
    shift = measured_shift(made_on, used_on, estimator)
    if shift is None:
        measured = "the confidence shift between them was never measured for this estimator"
    else:
        measured = (
            f"between them the escalation rate moved by up to {shift.rate_shift:.3f} and "
            f"{shift.flip_share:.1%} of routing decisions flipped (allowed: {RATE_TOLERANCE} "
            f"and {FLIP_TOLERANCE:.0%}; benchmarks/profile_transfer.py)"
        )
    return (
        f"engine {used_on!r} vs {made_on!r} (the profile's) for estimator {estimator!r}: {measured}"
    )
