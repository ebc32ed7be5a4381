"""One plan for every call path of ``ChatConfRoute``: invoke and stream, sync and async.

The chat model's ``_generate`` / ``_agenerate`` and ``_stream`` / ``_astream`` only drive a
:class:`CallPlan`. The plan holds what the four share: the resolved request, the batch's answer
when there is one, the run to report the decision to, whether a stream is answered whole, and
what each routed piece becomes (a LangChain chunk and, on the last piece, the decision). The
drivers differ only where the router or LangChain's callbacks are awaited.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from langchain_core.outputs import ChatGenerationChunk

from confroute.decision import RoutingDecision
from confroute.outcome import ItemResult
from confroute.response import RoutedChunk, RoutedResponse
from langchain_confroute.calls import RoutedRequest, take_answer
from langchain_confroute.streaming import RunManager, reporter_for, to_chunk

__all__ = ["CallPlan"]

M = TypeVar("M", bound=RunManager)


@dataclass(frozen=True)
class CallPlan:
    """One call of the chat model, resolved; the sync and async methods drive it.

    Attributes:
        request: The conversation and the router's keyword arguments.
        batched: The batch's answer to this request, or the exception it failed with in the
            batch (None outside a batch).
        reporter: The run the decision is reported to: the call's own, or the run of the
            streamed ``invoke`` in progress (None when there is none).
    """

    request: RoutedRequest
    batched: ItemResult | None
    reporter: RunManager | None

    @classmethod
    def for_call(
        cls, owner: object, request: RoutedRequest, run_manager: RunManager | None
    ) -> CallPlan:
        """The plan of ``owner``'s call of ``request``, reported to ``run_manager``."""
        return cls(request, take_answer(owner, request), reporter_for(owner, run_manager))

    @property
    def ready(self) -> RoutedResponse | None:
        """The batch's answer to this request (None outside a batch).

        Raises:
            Exception: The one this request failed with in the batch (it is not routed again).
        """
        if isinstance(self.batched, Exception):
            raise self.batched
        return self.batched

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The conversation, in the OpenAI shape."""
        return self.request.messages

    @property
    def options(self) -> dict[str, Any]:
        """The router's keyword arguments (``max_new_tokens``, ``temperature``, ...)."""
        return self.request.options

    @property
    def tools(self) -> Sequence[Mapping[str, Any]] | None:
        """The tools offered to both models (None when none)."""
        tools: Sequence[Mapping[str, Any]] | None = self.options["tools"]
        return tools

    @property
    def streams_whole(self) -> bool:
        """Whether a stream is answered whole: the batch answered it, or tools are offered.

        Tool calls are released whole, so such an answer need not be streamed.
        """
        return self.batched is not None or bool(self.tools)

    def reporter_as(self, kind: type[M]) -> M | None:
        """The reporter, when it is a run manager of ``kind`` (sync or async)."""
        return self.reporter if isinstance(self.reporter, kind) else None

    @staticmethod
    def step(piece: RoutedChunk) -> tuple[RoutingDecision | None, ChatGenerationChunk | None]:
        """What a routed piece becomes: the decision to report (last piece) and the chunk.

        The chunk is None for an empty text piece.
        """
        decision = piece.response.decision if piece.response is not None else None
        return decision, to_chunk(piece)
