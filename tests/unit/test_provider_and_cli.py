"""The in-process ``confroute/`` LiteLLM provider and ``confroute ask`` on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import litellm
import pytest

from confroute import provider as local_provider
from confroute.escalation import Escalation
from confroute.local import LocalModel
from tests.fakes import ScriptedLocalModel, ScriptedProvider

MESSAGES = [{"role": "user", "content": "What is 17*23?"}]


@pytest.fixture(scope="module")
def served(tiny_lm: LocalModel) -> str:
    local_provider.register_provider()
    local_provider.set_local_model("tiny-test", tiny_lm)
    return "confroute/tiny-test"


def test_provider_answers_through_litellm(served: str, tiny_lm: LocalModel) -> None:
    response = litellm.completion(model=served, messages=MESSAGES, max_tokens=4)
    [expected] = tiny_lm.generate([MESSAGES])
    assert response.choices[0].message.content == tiny_lm.tokenizer.decode(
        list(expected.token_ids[:4])
    )
    assert response.usage.completion_tokens == 4


async def test_provider_async_and_stream(served: str) -> None:
    sync = litellm.completion(model=served, messages=MESSAGES, max_tokens=5)
    asynchronous = await litellm.acompletion(model=served, messages=MESSAGES, max_tokens=5)
    assert asynchronous.choices[0].message.content == sync.choices[0].message.content
    pieces = [
        c.choices[0].delta.content or ""
        for c in litellm.completion(model=served, messages=MESSAGES, max_tokens=5, stream=True)
    ]
    assert "".join(pieces) == sync.choices[0].message.content


@pytest.mark.parametrize("tool_choice", ["auto", "none"])
def test_provider_honours_tool_choice_none(tool_choice: str) -> None:
    call = '<tool_call>{"name": "lookup", "arguments": {"q": "x"}}</tool_call>'
    local_provider.register_provider()
    local_provider.set_local_model(
        "scripted-tools", ScriptedLocalModel(script={"Look it up.": (call, (0.9,) * 3)})
    )
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    response = litellm.completion(
        model="confroute/scripted-tools",
        messages=[{"role": "user", "content": "Look it up."}],
        tools=[tool],
        tool_choice=tool_choice,
    )
    message = response.choices[0].message
    if tool_choice == "auto":
        assert [c.function.name for c in message.tool_calls] == ["lookup"]
    else:  # no tools offered: the text is the answer, nothing is parsed as a call
        assert not message.tool_calls
        assert message.content == call


def test_escalation_to_provider_costs_nothing(served: str) -> None:
    result = Escalation(served).complete(MESSAGES, max_tokens=3)
    assert result.cost_usd == 0.0
    assert result.model == served
    assert result.completion_tokens == 3


def test_unknown_price_is_none(provider: ScriptedProvider) -> None:
    assert Escalation("scripted/x").complete(MESSAGES).cost_usd is None


def test_escalation_stream_yields_text_then_result(provider: ScriptedProvider) -> None:
    provider.default = "a b c"
    deltas = list(Escalation("scripted/x").stream(MESSAGES))
    assert "".join(d.text for d in deltas) == "a b c"
    assert deltas[-1].result is not None and deltas[-1].result.text == "a b c"


def test_not_retryable_errors_skip_to_fallback(provider: ScriptedProvider) -> None:
    provider.answers = [litellm.AuthenticationError("no", "scripted", "x"), "ok"]
    escalation = Escalation("scripted/x", fallbacks=["scripted/y"], max_retries=3, backoff_s=0)
    result = escalation.complete(MESSAGES)
    assert (result.text, result.model, result.attempts) == ("ok", "scripted/y", 2)


@pytest.mark.parametrize(("temperature", "local_calls"), [(None, 1), (0.0, 1), (0.7, 3)])
def test_empty_greedy_local_answer_is_not_retried(
    monkeypatch: pytest.MonkeyPatch, temperature: float | None, local_calls: int
) -> None:
    """A greedy in-process model answers the same every time: an empty answer goes straight to
    the fallback; a sampled one is retried."""
    calls: list[str] = []

    def completion(**params: object) -> litellm.ModelResponse:
        model = str(params["model"])
        calls.append(model)
        content = "" if model.startswith("confroute/") else "ok"
        return litellm.ModelResponse(
            choices=[{"message": {"role": "assistant", "content": content}}]
        )

    monkeypatch.setattr(litellm, "completion", completion)
    escalation = Escalation(
        "confroute/tiny-test", fallbacks=["scripted/y"], max_retries=2, backoff_s=0
    )
    result = escalation.complete(MESSAGES, temperature=temperature)
    assert result.text == "ok"
    assert calls == ["confroute/tiny-test"] * local_calls + ["scripted/y"]
    assert result.attempts == local_calls + 1
    assert all("empty" in error for error in result.errors)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, tiny_lm: LocalModel) -> Path:
    directory = tmp_path_factory.mktemp("tiny-model")
    tiny_lm.model.save_pretrained(directory)
    tiny_lm.tokenizer.save_pretrained(directory)
    return directory


@pytest.mark.parametrize(("threshold", "escalated"), [("0.0", False), ("1.0", True)])
def test_cli_ask_json(
    tiny_dir: Path,
    provider: ScriptedProvider,
    capsys: pytest.CaptureFixture[str],
    threshold: str,
    escalated: bool,
) -> None:
    from confroute import cli

    args = ["ask", "What is 17*23?", "--slm", str(tiny_dir), "--llm", "scripted/strong"]
    assert cli.main([*args, "--threshold", threshold, "--json", "--max-new-tokens", "4"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["escalated"] is escalated
    assert payload["threshold"] == float(threshold)
    assert payload["estimator"] == "perplexity"
    assert payload["model"] == ("scripted/strong" if escalated else str(tiny_dir))
    assert (payload["answer"] == "strong answer") is escalated
    assert {
        "answer",
        "model",
        "escalated",
        "confidence",
        "threshold",
        "estimator",
        "reason",
    } <= set(payload)


def test_cli_ask_text_output(
    tiny_dir: Path, provider: ScriptedProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    from confroute import cli

    args = ["ask", "hi", "--slm", str(tiny_dir), "--llm", "scripted/strong", "--threshold", "1.0"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("strong answer\n")
    assert "answered by : scripted/strong (escalated)" in out
    assert "reason      : low_confidence" in out


def test_cli_env_overrides(
    tiny_dir: Path,
    provider: ScriptedProvider,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from confroute import cli

    monkeypatch.setenv("CONFROUTE_SLM", str(tiny_dir))
    monkeypatch.setenv("CONFROUTE_LLM", "scripted/from-env")
    assert cli.main(["ask", "hi", "--threshold", "1.0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "scripted/from-env"


def test_cli_calibrate_and_profile_show(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from confroute import cli
    from confroute.calibration import CalibrationProfile

    prompts = tmp_path / "prompts.jsonl"
    rows = [{"id": str(i), "prompt": f"What is {i}+{i}?", "correct": i % 2 == 0} for i in range(6)]
    prompts.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "profile.json"
    args = ["calibrate", str(prompts), "-o", str(out), "--slm", str(tiny_dir)]
    assert cli.main([*args, "--max-new-tokens", "3", "--batch-size", "4"]) == 0
    profile = CalibrationProfile.load(out)
    assert profile.size == 6
    assert profile.correct is not None and sum(profile.correct) == 3
    assert profile.fingerprint.model_fingerprint == str(tiny_dir)
    assert {e.item_id for e in profile.manifest} == {str(i) for i in range(6)}
    capsys.readouterr()
    pytest.importorskip("matplotlib", reason="profile plots need the bench extra")
    assert cli.main(["profile", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "items            6" in shown
    assert out.with_suffix(".png").stat().st_size > 1000


def test_cli_calibrate_empty_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from confroute import cli

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert cli.main(["calibrate", str(empty), "-o", str(tmp_path / "p.json")]) == 2
    assert "empty" in capsys.readouterr().err
