"""Conversation-aware ("sticky") routing: a conversation that escalated stays escalated a while.

Routers that decide each request alone bounce follow-up turns between models, so the answer's
style and context handling change from turn to turn, and an agent run that escalated step 3
loses the strong model's plan when step 4 drops back to the local model.
:class:`ConversationPolicy` wraps any policy and keys its decisions by conversation
(:class:`~confroute.conversation.Turn`):

- After a turn escalates, the next ``turns`` user turns escalate too, with
  ``reason="sticky"``, unless the local answer's confidence on a turn reaches
  ``release_confidence`` (a higher bar than the inner policy's threshold): then the
  conversation is released and the inner policy decides that turn. A sticky turn on which the
  inner policy would have escalated anyway carries the inner reason (``low_confidence``) and
  starts the count again: ``sticky`` marks only the turns stickiness changed.
- Tool steps of one agent run (the requests after one user message that carry tool calls and
  results) stay on the strong model once a step of the run escalated (``tool_steps=
  "same_model"``, the default); the release bar does not apply inside a run. A run answered
  locally so far still escalates when the inner policy says so, and stays escalated from then.
- Every sticky escalation is counted by the inner policy as an escalation it was not asked
  about (:func:`~confroute.policies.forced_verdict`), so a budget or cap policy's spent budget
  stays true.

The local model still answers and is scored on every turn (that is how the release bar is
read), so stickiness changes which answer is returned, not the local work. Thread-safe; memory
is bounded: at most ``max_conversations`` are kept, the least recently seen forgotten first,
and a conversation nobody continued for ``ttl_s`` seconds is forgotten.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from confroute.bounds import check_unit_interval
from confroute.conversation import Turn
from confroute.errors import ConfigurationError
from confroute.policies.base import (
    AdmitsVerdicts,
    Decide,
    ReportsThreshold,
    RoutingPolicy,
    Verdict,
    admitted,
    compare,
    forced_verdict,
)
from confroute.settings import (
    STICKY_CONVERSATIONS,
    STICKY_RELEASE_CONFIDENCE,
    STICKY_TTL_S,
    STICKY_TURNS,
)

__all__ = ["ConversationPolicy", "ToolSteps"]

ToolSteps = Literal["same_model", "independent"]
"""How tool steps of an agent run are decided: on the run's model once it escalated, or each
step alone (still sticky across user turns)."""


@dataclass
class _Conversation:
    """What is remembered of one conversation."""

    turns_left: int = 0
    run_escalated: bool = False
    seen: float = 0.0


class ConversationPolicy:
    """Keep an escalated conversation on the strong model for ``turns`` more user turns.

    Example:
        >>> from confroute.conversation import turn_of
        >>> from confroute.policies import FixedThreshold
        >>> policy = ConversationPolicy(FixedThreshold(0.5), turns=2)
        >>> turn = turn_of([{"role": "user", "content": "hi"}], "chat-1")
        >>> policy.decide_turn(turn, 0.2).reason, policy.decide_turn(turn, 0.7).reason
        ('low_confidence', 'sticky')
    """

    def __init__(
        self,
        inner: RoutingPolicy,
        turns: int = STICKY_TURNS,
        release_confidence: float | None = STICKY_RELEASE_CONFIDENCE,
        *,
        tool_steps: ToolSteps = "same_model",
        max_conversations: int = STICKY_CONVERSATIONS,
        ttl_s: float = STICKY_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Wrap ``inner``.

        Args:
            inner: The policy that decides every turn stickiness does not (any policy).
            turns: User turns that stay escalated after an escalation (0: only the tool steps
                of an escalated agent run stay).
            release_confidence: A turn at least this confident is released to the inner
                policy early; None releases on the turn count only.
            tool_steps: ``"same_model"`` keeps the steps of an escalated agent run escalated;
                ``"independent"`` lets the inner policy decide each step.
            max_conversations: Conversations remembered (least recently seen forgotten first).
            ttl_s: Seconds an idle conversation is remembered.
            clock: Monotonic seconds (tests pass a fake).

        Raises:
            ConfigurationError: A count below its bound, a bar outside [0, 1], an unknown
                ``tool_steps``.
        """
        if isinstance(turns, bool) or not isinstance(turns, int) or turns < 0:
            raise ConfigurationError(f"turns must be an integer >= 0 (user turns), got {turns!r}.")
        if not isinstance(max_conversations, int) or max_conversations < 1:
            raise ConfigurationError(
                f"max_conversations must be an integer >= 1, got {max_conversations!r}."
            )
        if not ttl_s > 0:
            raise ConfigurationError(f"ttl_s must be a number of seconds > 0, got {ttl_s!r}.")
        if tool_steps not in ("same_model", "independent"):
            raise ConfigurationError(
                f"tool_steps must be 'same_model' or 'independent', got {tool_steps!r}."
            )
        self.inner = inner
        self.turns = turns
        self.release_confidence = (
            None
            if release_confidence is None
            else check_unit_interval("release_confidence", release_confidence)
        )
        self.tool_steps: ToolSteps = tool_steps
        self.max_conversations = max_conversations
        self.ttl_s = float(ttl_s)
        self._clock = clock
        self._conversations: OrderedDict[str, _Conversation] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def threshold(self) -> float:
        """The inner policy's current threshold (0.0 if it has none)."""
        return float(getattr(self.inner, "threshold", 0.0))

    def decide(self, confidence: float | None, answer_format: str | None = None) -> Verdict:
        """A request of no known conversation: the inner policy decides."""
        return self.inner.decide(confidence, answer_format=answer_format)

    def forced(self, answer_format: str | None = None) -> Verdict:
        """A request of no known conversation escalated regardless: the inner policy counts it."""
        return forced_verdict(self.inner, answer_format)

    def admit(self, verdict: Verdict, answer_format: str | None = None) -> Verdict:
        """A verdict decided elsewhere: the inner policy holds it to its budget."""
        return admitted(self.inner, verdict, answer_format)

    def decide_turn(
        self,
        turn: Turn,
        confidence: float | None,
        answer_format: str | None = None,
        decide: Decide | None = None,
    ) -> Verdict:
        """Decide one turn of a conversation (the rules are in the module docstring).

        ``decide`` gives the verdict where no sticky rule holds (default: the inner policy's).
        """
        with self._lock:
            state = self._state(turn)
            if turn.tool_step:
                if state.run_escalated and self.tool_steps == "same_model":
                    return self._sticky(state, confidence, answer_format)
            else:
                state.run_escalated = False
                if state.turns_left > 0:
                    state.turns_left -= 1
                    bar = self.release_confidence
                    if bar is None or confidence is None or confidence < bar:
                        return self._sticky(state, confidence, answer_format)
                    state.turns_left = 0
            if decide is None:
                verdict = self.inner.decide(confidence, answer_format=answer_format)
            else:
                verdict = decide(confidence, answer_format)
            if verdict.escalate:
                self._escalated(state)
            return verdict

    def forced_turn(self, turn: Turn, answer_format: str | None = None) -> Verdict:
        """A turn escalated whatever the confidence: it starts the sticky count too."""
        with self._lock:
            state = self._state(turn)
            self._escalated(state)
            return forced_verdict(self.inner, answer_format)

    def turns_left(self, key: str) -> int:
        """User turns the conversation ``key`` stays escalated (0 if it is not remembered)."""
        with self._lock:
            state = self._conversations.get(key)
            return 0 if state is None else state.turns_left

    def remembered(self) -> int:
        """Conversations remembered now (not ``__len__``: an empty policy is still a policy)."""
        with self._lock:
            return len(self._conversations)

    def __repr__(self) -> str:
        """The rule and the inner policy."""
        return (
            f"ConversationPolicy({self.inner!r}, turns={self.turns}, "
            f"release_confidence={self.release_confidence}, tool_steps={self.tool_steps!r})"
        )

    # -- state (callers hold the lock) ---------------------------------------------------------

    def _state(self, turn: Turn) -> _Conversation:
        """The turn's conversation, new when unknown, expired or starting over; LRU-bounded."""
        now = self._clock()
        conversations = self._conversations
        while conversations:
            oldest = next(iter(conversations.values()))
            if now - oldest.seen <= self.ttl_s:
                break
            conversations.popitem(last=False)
        state = conversations.get(turn.key)
        if state is None or turn.starts:
            state = conversations[turn.key] = _Conversation()
        state.seen = now
        conversations.move_to_end(turn.key)
        while len(conversations) > self.max_conversations:
            conversations.popitem(last=False)
        return state

    def _escalated(self, state: _Conversation) -> None:
        state.turns_left = self.turns
        state.run_escalated = True

    def _sticky(
        self, state: _Conversation, confidence: float | None, answer_format: str | None
    ) -> Verdict:
        """Escalate a turn because its conversation is escalated; the inner policy counts it.

        Where the inner threshold would have escalated the turn anyway, the inner reason is
        kept and the count starts again. An inner budget policy that can refuse
        (:class:`~confroute.policies.AdmitsVerdicts`: a cap, a held rate) keeps the turn local
        with ``reason="budget_exhausted"`` when its budget is spent.
        """
        if isinstance(self.inner, ReportsThreshold):  # a held rate's, by format
            threshold = self.inner.threshold_for(answer_format)
        elif isinstance(self.inner, AdmitsVerdicts):
            threshold = self.threshold
        else:
            threshold = forced_verdict(self.inner, answer_format).threshold
        alone = compare(confidence, threshold)
        state.run_escalated = True
        verdict = Verdict(True, threshold, alone.reason if alone.escalate else "sticky")
        if isinstance(self.inner, AdmitsVerdicts):
            verdict = self.inner.admit(verdict, answer_format)
        if alone.escalate and verdict.escalate:
            state.turns_left = self.turns
        return verdict
