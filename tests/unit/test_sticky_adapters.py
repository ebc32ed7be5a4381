"""The adapters hand the conversation key to a sticky router (LangChain thread_id, LlamaIndex)."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from llama_index.core.llms import ChatMessage

from confroute import ConfRouter
from langchain_confroute import ChatConfRoute
from llamaindex_confroute import ConfRouteLLM
from tests.fakes import ScriptedLocalModel, ScriptedProvider


def sticky(slm: ScriptedLocalModel) -> ConfRouter:
    return ConfRouter(
        slm,
        "scripted/strong",
        threshold=0.5,
        max_retries=0,
        sticky_turns=2,
        sticky_release_confidence=None,
    )


def reason_of(message: Any) -> str:
    reason: str = message.response_metadata["confroute"]["reason"]
    return reason


def test_langchain_reads_thread_id_from_the_run_metadata(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    llm = ChatConfRoute(router=sticky(scripted_slm))
    thread = {"metadata": {"thread_id": "t1"}}
    assert reason_of(llm.invoke("unsure?", config=thread)) == "low_confidence"
    assert reason_of(llm.invoke("sure?", config=thread)) == "sticky"
    assert reason_of(llm.invoke("sure?", config={"metadata": {"thread_id": "t2"}})) == "confident"
    streamed = list(llm.stream("sure?", config=thread))
    assert reason_of(streamed[-1]) == "sticky"


def test_langchain_conversation_id_option_and_langgraph_thread(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    from langgraph.graph import START, MessagesState, StateGraph

    llm = ChatConfRoute(router=sticky(scripted_slm))
    assert reason_of(llm.invoke("unsure?", conversation_id="c")) == "low_confidence"
    assert reason_of(llm.invoke("sure?", conversation_id="c")) == "sticky"

    def answer(state: MessagesState) -> dict[str, list[AIMessage]]:
        return {"messages": [llm.invoke(state["messages"][-1:])]}

    graph = StateGraph(MessagesState)
    graph.add_node("answer", answer)
    graph.add_edge(START, "answer")
    app = graph.compile()
    config: Any = {"configurable": {"thread_id": "graph-1"}}
    app.invoke({"messages": [HumanMessage("unsure?")]}, config)
    out = app.invoke({"messages": [HumanMessage("sure?")]}, config)
    assert reason_of(out["messages"][-1]) == "sticky"


async def test_llamaindex_takes_conversation_id_per_call(
    scripted_slm: ScriptedLocalModel, provider: ScriptedProvider
) -> None:
    llm = ConfRouteLLM(router=sticky(scripted_slm))

    def ask(text: str) -> list[ChatMessage]:
        return [ChatMessage(role="user", content=text)]

    first = llm.chat(ask("unsure?"), conversation_id="s1")
    assert first.message.additional_kwargs["confroute"]["reason"] == "low_confidence"
    second = await llm.achat(ask("sure?"), conversation_id="s1")
    assert second.message.additional_kwargs["confroute"]["reason"] == "sticky"
    other = llm.chat(ask("sure?"), conversation_id="s2")
    assert other.message.additional_kwargs["confroute"]["reason"] == "confident"
