"""The escalation's retry/fallback driver: its Protocol, its secrets, and a quiet LiteLLM.

The strong model is a port on 127.0.0.1 that nothing listens on (``tests/faultserver.py``'s
:func:`closed_port`), so every call fails with a connection error, fast and without network.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

import litellm
import pytest

from confroute.errors import EscalationError
from confroute.escalation import Escalation
from confroute.settings import RouterSettings
from confroute.target import EscalationTarget
from tests.faultserver import closed_port

CANARY = "sk-CANARY-0123456789"
MESSAGES = [{"role": "user", "content": "What is 17*23?"}]


def failing(**changes: object) -> Escalation:
    """An escalation whose every call is refused, with the canary as its key."""
    settings: dict[str, object] = {
        "api_base": f"http://127.0.0.1:{closed_port()}/v1",
        "api_key": CANARY,
        "timeout": 5.0,
        "max_retries": 0,
        "backoff_s": 0.0,
    }
    settings.update(changes)
    return Escalation("openai/primary", **settings)  # type: ignore[arg-type]


def test_escalation_is_an_escalation_target() -> None:
    assert isinstance(Escalation("openai/x"), EscalationTarget)


def test_defaults_come_from_router_settings() -> None:
    escalation = Escalation("openai/x")
    assert escalation.timeout == RouterSettings().timeout == 120.0
    assert escalation.max_retries == RouterSettings().max_retries == 2


def collect_stream(escalation: Escalation) -> None:
    list(escalation.stream(MESSAGES))


def collect_complete(escalation: Escalation) -> None:
    escalation.complete(MESSAGES)


@pytest.mark.parametrize("call", [collect_complete, collect_stream], ids=["complete", "stream"])
def test_traceback_locals_hold_no_key(call: Callable[[Escalation], None]) -> None:
    escalation = failing(fallbacks=["openai/backup"])
    with pytest.raises(EscalationError) as caught:
        call(escalation)
    assert caught.value.attempts == 2
    formatted = "".join(
        traceback.TracebackException.from_exception(caught.value, capture_locals=True).format()
    )
    assert "Attempt(" in formatted  # the driver's locals were rendered
    assert CANARY not in formatted


async def test_async_traceback_locals_hold_no_key() -> None:
    with pytest.raises(EscalationError) as caught:
        await failing().acomplete(MESSAGES)
    formatted = "".join(
        traceback.TracebackException.from_exception(caught.value, capture_locals=True).format()
    )
    assert CANARY not in formatted


def test_failing_call_prints_nothing(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(litellm, "suppress_debug_info", False)  # as a fresh process has it
    escalation = failing()
    capfd.readouterr()
    with pytest.raises(EscalationError):
        escalation.complete(MESSAGES)
    with pytest.raises(EscalationError):
        Escalation("no-such-provider-model", max_retries=0).complete(MESSAGES)
    out, err = capfd.readouterr()
    assert out == ""
    assert "Give Feedback" not in err and "Provider List" not in err
