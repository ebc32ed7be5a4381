"""ConfRouteLLM against scripted local generations and a scripted LiteLLM provider (no weights)."""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock
from pydantic import ValidationError

from confroute.errors import ConfigurationError, EscalationError, InvalidRequestError
from confroute.router import ConfRouter
from llamaindex_confroute import ConfRouteLLM, routing_decision
from llamaindex_confroute.convert import to_openai_messages
from llamaindex_confroute.responses import to_logprobs
from tests.fakes import ScriptedLocalModel, ScriptedProvider

SURE = [ChatMessage(role=MessageRole.USER, content="sure?")]
UNSURE = [ChatMessage(role=MessageRole.USER, content="unsure?")]


@pytest.fixture
def llm(scripted_slm: ScriptedLocalModel, provider: ScriptedProvider) -> ConfRouteLLM:
    return ConfRouteLLM(scripted_slm, "scripted/strong", max_retries=0, max_tokens=32)


# -- construction and metadata -------------------------------------------------------------


def test_metadata_is_truthful(llm: ConfRouteLLM, scripted_slm: ScriptedLocalModel) -> None:
    meta = llm.metadata
    assert meta.context_window == scripted_slm.context_window
    assert meta.num_output == 32
    assert meta.is_chat_model is True
    assert meta.is_function_calling_model is True
    assert meta.model_name == "scripted-slm->scripted/strong"
    assert ConfRouteLLM.class_name() == "ConfRouteLLM"
    assert llm.local_model == "scripted-slm"
    assert llm.strong_model == "scripted/strong"


def test_fields_reach_the_router(scripted_slm: ScriptedLocalModel) -> None:
    llm = ConfRouteLLM(
        scripted_slm,
        "scripted/strong",
        threshold=0.42,
        timeout=7.0,
        max_retries=1,
        fallbacks=["scripted/backup"],
        on_escalation_error="raise",
        max_tokens=12,
        temperature=0.3,
    )
    router = llm.router
    assert router.policy.decide(0.41).escalate is True
    assert router.policy.decide(0.43).escalate is False
    assert router.escalation is not None
    assert router.escalation.timeout == 7.0
    assert router.escalation.max_retries == 1
    assert list(router.escalation.fallbacks) == ["scripted/backup"]
    assert router.on_escalation_error == "raise"
    assert router.defaults.max_new_tokens == 12
    assert router.defaults.temperature == 0.3


def test_api_key_is_secret_and_never_serialised(scripted_slm: ScriptedLocalModel) -> None:
    llm = ConfRouteLLM(scripted_slm, "scripted/strong", api_key="sk-very-secret")
    assert "sk-very-secret" not in repr(llm)
    assert "sk-very-secret" not in llm.to_json()
    assert "sk-very-secret" not in str(llm.to_payload())
    assert llm.router.escalation is not None
    assert llm.router.escalation.api_key is not None
    assert llm.router.escalation.api_key.get_secret_value() == "sk-very-secret"


def test_unknown_constructor_field_is_rejected(scripted_slm: ScriptedLocalModel) -> None:
    with pytest.raises(ValidationError, match="max_new_token"):
        ConfRouteLLM(scripted_slm, "scripted/strong", max_new_token=5)


def test_ready_router_is_wrapped_not_changed(scripted_slm: ScriptedLocalModel) -> None:
    seen: list[Any] = []
    router = ConfRouter(scripted_slm, "scripted/strong", threshold=0.5, hooks=[seen.append])
    llm = ConfRouteLLM(router=router)
    assert llm.threshold == 0.5
    assert llm.local_model == "scripted-slm"
    assert llm.strong_model == "scripted/strong"
    assert llm.router is not router
    assert router.hooks == [seen.append]  # the given router gets no adapter hook
    llm.chat(SURE)
    assert len(seen) == 1  # its own hooks still run for adapter calls


def test_router_and_router_options_together_are_refused(
    scripted_slm: ScriptedLocalModel,
) -> None:
    router = ConfRouter(scripted_slm, None)
    with pytest.raises(ConfigurationError, match="either router"):
        ConfRouteLLM(router=router, threshold=0.3)


def test_unknown_call_option_is_rejected(llm: ConfRouteLLM) -> None:
    with pytest.raises(InvalidRequestError, match="top_k"):
        llm.chat(SURE, top_k=3)


# -- chat and completion: stay local / escalate ----------------------------------------------


def test_confident_chat_stays_local(llm: ConfRouteLLM, provider: ScriptedProvider) -> None:
    response = llm.chat(SURE)
    decision = routing_decision(response)
    assert response.message.content == "391"
    assert response.message.role == MessageRole.ASSISTANT
    assert decision.escalated is False
    assert decision.reason == "confident"
    assert decision.answered_by == "scripted-slm"
    assert provider.calls == []
    assert response.message.additional_kwargs["confroute"]["confidence"] == pytest.approx(
        math.exp((math.log(0.99) + math.log(0.98) + math.log(0.97)) / 3)
    )
    assert response.raw == {
        "model": "scripted-slm",
        "usage": response.additional_kwargs,
    }
    assert response.additional_kwargs["completion_tokens"] == 3


def test_local_logprobs_in_llamaindex_shape(llm: ConfRouteLLM) -> None:
    response = llm.chat(SURE)
    assert response.logprobs is not None
    assert [[lp.token for lp in step] for step in response.logprobs] == [["3"], ["9"], ["1"]]
    assert [step[0].logprob for step in response.logprobs] == pytest.approx(
        [math.log(0.99), math.log(0.98), math.log(0.97)]
    )
    assert response.logprobs[0][0].bytes == [ord("3")]


def test_unsure_chat_escalates(llm: ConfRouteLLM, provider: ScriptedProvider) -> None:
    response = llm.chat(UNSURE)
    decision = routing_decision(response)
    assert response.message.content == "strong answer"
    assert decision.escalated is True
    assert decision.reason == "low_confidence"
    assert decision.answered_by == "scripted/strong"
    assert response.additional_kwargs == {
        "prompt_tokens": 11,
        "completion_tokens": 3,
        "total_tokens": 14,
    }
    [call] = provider.calls
    assert call["messages"][-1]["content"] == "unsure?"
    assert call["optional_params"]["max_tokens"] == 32


def test_conversation_reaches_the_strong_model_in_openai_shape(
    llm: ConfRouteLLM, provider: ScriptedProvider
) -> None:
    llm.chat(
        [
            ChatMessage(role=MessageRole.SYSTEM, content="Be brief."),
            ChatMessage(role=MessageRole.USER, content="hi"),
            ChatMessage(role=MessageRole.ASSISTANT, content="hello"),
            *UNSURE,
        ]
    )
    [call] = provider.calls
    assert [(m["role"], m["content"]) for m in call["messages"]] == [
        ("system", "Be brief."),
        ("user", "hi"),
        ("assistant", "hello"),
        ("user", "unsure?"),
    ]


def test_complete_stays_local_and_escalates(llm: ConfRouteLLM, provider: ScriptedProvider) -> None:
    local = llm.complete("sure?")
    remote = llm.complete("unsure?")
    assert local.text == "391"
    assert local.additional_kwargs["confroute"]["escalated"] is False
    assert local.logprobs is not None and len(local.logprobs) == 3
    assert remote.text == "strong answer"
    assert routing_decision(remote).escalated is True
    assert remote.logprobs is None  # the scripted provider returns none
    assert len(provider.calls) == 1


def test_per_call_options_reach_both_models(llm: ConfRouteLLM, provider: ScriptedProvider) -> None:
    llm.chat(UNSURE, max_tokens=5, temperature=0.0, stop=["\n"])
    [call] = provider.calls
    assert call["optional_params"]["max_tokens"] == 5
    assert call["optional_params"]["stop"] == ["\n"]


def test_escalation_failure_returns_local_answer(
    llm: ConfRouteLLM, provider: ScriptedProvider
) -> None:
    provider.answers = [RuntimeError("provider down")]
    response = llm.chat(UNSURE)
    decision = routing_decision(response)
    assert response.message.content == "maybe 12"
    assert decision.escalated is True
    assert decision.answered_by == "scripted-slm"
    assert decision.error is not None and "provider down" in decision.error


def test_escalation_failure_raises_when_asked(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    llm = ConfRouteLLM(scripted_slm, "scripted/strong", max_retries=0, on_escalation_error="raise")
    provider.answers = [RuntimeError("provider down")]
    with pytest.raises(EscalationError, match="provider down"):
        llm.chat(UNSURE)


def test_local_only_never_escalates(scripted_slm: ScriptedLocalModel) -> None:
    llm = ConfRouteLLM(scripted_slm, None)
    response = llm.chat(UNSURE)
    assert response.message.content == "maybe 12"
    assert routing_decision(response).reason == "local_only"
    assert llm.metadata.model_name == "scripted-slm"


def test_non_text_block_is_refused(llm: ConfRouteLLM) -> None:
    message = ChatMessage(
        role=MessageRole.USER,
        blocks=[TextBlock(text="what is this?"), ImageBlock(url="https://example.com/x.png")],
    )
    with pytest.raises(InvalidRequestError, match="'image' block"):
        llm.chat([message])


def test_routing_decision_needs_a_decision() -> None:
    from llama_index.core.base.llms.types import ChatResponse

    with pytest.raises(InvalidRequestError, match="no routing decision"):
        routing_decision(ChatResponse(message=ChatMessage(content="x")))


# -- streaming -------------------------------------------------------------------------------


def test_stream_chat_local_is_one_final_chunk(
    llm: ConfRouteLLM, provider: ScriptedProvider
) -> None:
    chunks = list(llm.stream_chat(SURE))
    assert [c.delta for c in chunks] == ["391"]
    assert chunks[-1].message.content == "391"
    assert routing_decision(chunks[-1]).escalated is False
    assert chunks[-1].logprobs is not None
    assert provider.calls == []


def test_stream_chat_escalated_streams_strong_tokens(
    llm: ConfRouteLLM, provider: ScriptedProvider
) -> None:
    provider.answers = ["one two three"]
    chunks = list(llm.stream_chat(UNSURE))
    assert [c.delta for c in chunks] == ["one ", "two ", "three"]
    assert [c.message.content for c in chunks] == ["one ", "one two ", "one two three"]
    assert "confroute" not in chunks[0].message.additional_kwargs
    decision = routing_decision(chunks[-1])
    assert decision.escalated is True
    assert decision.answered_by == "scripted/strong"


def test_stream_complete_both_branches(llm: ConfRouteLLM, provider: ScriptedProvider) -> None:
    local = list(llm.stream_complete("sure?"))
    remote = list(llm.stream_complete("unsure?"))
    assert [c.text for c in local] == ["391"]
    assert routing_decision(local[-1]).reason == "confident"
    assert remote[-1].text == "strong answer"
    assert [c.delta for c in remote] == ["strong ", "answer"]
    assert routing_decision(remote[-1]).reason == "low_confidence"


# -- async: same decisions, never on the event loop ------------------------------------------


async def test_async_forms_match_sync(llm: ConfRouteLLM, provider: ScriptedProvider) -> None:
    for messages, prompt in ((SURE, "sure?"), (UNSURE, "unsure?")):
        sync = routing_decision(llm.chat(messages))
        achat = routing_decision(await llm.achat(messages))
        acomplete = routing_decision(await llm.acomplete(prompt))
        astream = [c async for c in await llm.astream_chat(messages)]
        astream_complete = [c async for c in await llm.astream_complete(prompt)]
        for other in (
            achat,
            acomplete,
            routing_decision(astream[-1]),
            routing_decision(astream_complete[-1]),
        ):
            assert (other.escalated, other.reason, other.answered_by) == (
                sync.escalated,
                sync.reason,
                sync.answered_by,
            )
            assert other.confidence == pytest.approx(sync.confidence)
    assert (await llm.achat(UNSURE)).message.content == "strong answer"


async def test_async_local_generation_runs_off_the_event_loop(
    llm: ConfRouteLLM, scripted_slm: ScriptedLocalModel
) -> None:
    threads: list[int] = []
    original = scripted_slm.generate_from_ids

    def record(prompts: Any, config: Any) -> Any:
        threads.append(threading.get_ident())
        return original(prompts, config)

    scripted_slm.generate_from_ids = record  # type: ignore[method-assign]
    loop_thread = threading.get_ident()
    await llm.achat(SURE)
    await asyncio.gather(llm.acomplete("sure?"), llm.acomplete("unsure?"))
    [c async for c in await llm.astream_chat(SURE)]
    assert len(threads) == 4
    assert loop_thread not in threads


# -- conversions -------------------------------------------------------------------------------


def test_tool_messages_convert_to_openai_shape() -> None:
    assistant = ChatMessage(
        role=MessageRole.ASSISTANT,
        content="",
        additional_kwargs={
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a": 1}'},
                }
            ]
        },
    )
    tool = ChatMessage(
        role=MessageRole.TOOL, content="2", additional_kwargs={"tool_call_id": "call_1"}
    )
    converted = to_openai_messages([ChatMessage(content="add"), assistant, tool])
    assert converted == [
        {"role": "user", "content": "add"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a": 1}'},
                }
            ],
        },
        {"role": "tool", "content": "2", "tool_call_id": "call_1"},
    ]


def test_to_logprobs_puts_the_chosen_token_first() -> None:
    logprobs = to_logprobs(
        {
            "content": [
                {
                    "token": "b",
                    "logprob": -0.7,
                    "bytes": [98],
                    "top_logprobs": [
                        {"token": "a", "logprob": -0.5, "bytes": [97]},
                        {"token": "b", "logprob": -0.7, "bytes": [98]},
                    ],
                }
            ]
        }
    )
    assert logprobs is not None
    assert [(lp.token, lp.logprob) for lp in logprobs[0]] == [("b", -0.7), ("a", -0.5)]
    assert to_logprobs(None) is None
    assert to_logprobs({"content": []}) is None


def test_escalation_rate_reaches_the_router_with_its_profile(
    scripted_slm: ScriptedLocalModel, tmp_path: Any
) -> None:
    from confroute.calibration import CalibrationProfile, PoolItem, ProfileFingerprint
    from confroute.policies import StreamingQuantile

    fingerprint = ProfileFingerprint(
        model_name="scripted-slm", model_fingerprint="scripted-sha", estimator="perplexity"
    )
    items = [PoolItem(dataset="d", item_id=str(i), confidence=i / 10) for i in range(11)]
    path = tmp_path / "profile.json"
    CalibrationProfile.from_pool(items, fingerprint).save(path)
    llm = ConfRouteLLM(
        scripted_slm, None, escalation_rate=0.5, calibration_profile=str(path), max_tokens=8
    )
    policy = llm.router.policy
    assert isinstance(policy, StreamingQuantile) and policy.escalation_rate == 0.5
    assert policy.threshold == pytest.approx(0.55)
    decision = llm.complete("unsure?").additional_kwargs["confroute"]
    assert decision["threshold"] == pytest.approx(0.55) and decision["reason"] == "local_only"
    with pytest.raises(ConfigurationError, match="only used with escalation_rate"):
        ConfRouteLLM(scripted_slm, None, calibration_profile=str(path))
    with pytest.raises(ConfigurationError, match="one of threshold"):
        ConfRouteLLM(scripted_slm, None, escalation_rate=0.5, threshold=0.3)


def test_named_model_settings_contradictions_fail_at_construction_without_loading() -> None:
    from confroute.errors import ConfigurationError
    from confroute.policies import FixedThreshold
    from llamaindex_confroute import ConfRouteLLM

    # a name that would fail to load: the error must be the contradiction, raised before loading
    with pytest.raises(ConfigurationError, match="one of threshold"):
        ConfRouteLLM("no-such-model-anywhere", threshold=0.5, policy=FixedThreshold(0.3))
    with pytest.raises(ConfigurationError, match="only used with escalation_rate"):
        ConfRouteLLM("no-such-model-anywhere", calibration_profile="p.json")
