"""The one check that a setting lies in the unit interval [0, 1]."""

from __future__ import annotations

import math

from confroute.errors import ConfigurationError

__all__ = ["check_unit_interval"]


def check_unit_interval(
    name: str, value: float, *, error: type[ConfigurationError] = ConfigurationError
) -> float:
    """Return ``value`` as a float if it lies in [0, 1], else raise.

    Args:
        name: The setting's name, for the message.
        value: The value to check.
        error: The :class:`~confroute.errors.ConfigurationError` subclass to raise (a
            calibration setting raises :class:`~confroute.errors.CalibrationError`).

    Returns:
        The value as a float.

    Raises:
        ConfigurationError: ``value`` is not a number, is NaN or lies outside [0, 1] (as
            ``error``).
    """
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise error(f"{name} must be a number in [0, 1], got {value!r}.") from exc
    if math.isnan(number) or not 0.0 <= number <= 1.0:
        raise error(f"{name} must be in [0, 1], got {value!r}.")
    return number
