"""LlamaIndex engines and agents on ConfRouteLLM with the bundled models and embedding model."""

from __future__ import annotations

import pytest
from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult

from confroute import LocalModel
from llamaindex_confroute import ConfRouteLLM, TransformersEmbedding
from tests.integration.li_fixtures import STRONG, DecisionRecorder, load_example

pytest_plugins = ["tests.integration.li_fixtures"]


def test_embedding_ranks_the_relevant_document_first(li_embedding: TransformersEmbedding) -> None:
    query = li_embedding.get_query_embedding("When does the bakery open?")
    docs = li_embedding.get_text_embedding_batch(
        ["The bakery opens at 6:30.", "Bus line 42 goes to the airport."]
    )
    scores = [sum(q * d for q, d in zip(query, doc, strict=True)) for doc in docs]
    assert len(query) == 384
    assert scores[0] > scores[1] + 0.2
    assert sum(v * v for v in query) == pytest.approx(1.0, abs=1e-4)


async def test_query_engine_answers_from_the_documents(
    li_slm: LocalModel, li_embedding: TransformersEmbedding, li_recorder: DecisionRecorder
) -> None:
    rag = load_example("llamaindex_rag")
    llm = ConfRouteLLM(li_slm, STRONG, threshold=0.0, max_tokens=24)
    engine = rag.build_query_engine(llm, li_embedding)
    response = engine.query("At what time does the Harbor Street bakery open?")
    assert "6:30" in str(response)
    assert "Harbor Street bakery" in response.source_nodes[0].node.get_content()
    aresponse = await engine.aquery("How many books can I borrow from the city library?")
    assert "12" in str(aresponse)
    assert "library" in aresponse.source_nodes[0].node.get_content()
    assert [e.escalated for e in li_recorder.events] == [False, False]


async def test_function_agent_calls_a_tool_and_uses_its_result(
    li_slm: LocalModel, li_recorder: DecisionRecorder
) -> None:
    agent_example = load_example("llamaindex_agent")
    # tool_threshold=0.0 keeps the 0.5B's call local, as threshold=0.0 keeps its text
    llm = ConfRouteLLM(li_slm, STRONG, threshold=0.0, tool_threshold=0.0, max_tokens=48)
    agent = FunctionAgent(
        tools=agent_example.TOOLS, llm=llm, system_prompt=agent_example.SYSTEM_PROMPT
    )
    handler = agent.run(user_msg="How many pears are in stock?", max_iterations=3)
    results = [e async for e in handler.stream_events() if isinstance(e, ToolCallResult)]
    answer = await handler
    assert [(r.tool_name, r.tool_kwargs) for r in results] == [("stock_level", {"fruit": "pears"})]
    assert results[0].tool_output.raw_output == 17
    assert "17" in str(answer)
    # the 0.5B made the call; after the result it does not answer, so the 1.5B does
    decisions = [e.decision for e in li_recorder.events]
    assert [(d.escalated, d.answered_by) for d in decisions] == [
        (False, li_slm.name),
        (True, STRONG),
    ]
    assert decisions[1].reason in ("repeated_tool_call", "malformed_tool_call")
    # the call was decided by the tool estimator, on the same generation, beside perplexity
    call = decisions[0]
    assert call.estimator == "tool_call" and call.threshold == 0.0
    assert set(call.confidences) == {"perplexity", "tool_call"}
    assert call.confidence == call.confidences["tool_call"]
    assert call.confidence is not None and 0.0 < call.confidence <= 1.0
