"""The micro-batcher's worker thread: collect concurrent calls, run them as one batch, answer each.

Kept apart from :class:`~confroute.serving.batcher.MicroBatcher` (the public face) so that each
module holds one concept. Nothing here holds a reference to the batcher, so an unused batcher is
collected and its finalizer stops the thread.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

from confroute.backend import LocalBackend
from confroute.generation import Generation, GenerationConfig

__all__ = ["STOP", "BatchStats", "Request", "serve"]

logger = logging.getLogger("confroute.serving.batcher")


@dataclass
class BatchStats:
    """What the batcher has done so far (read it for monitoring and tests).

    Attributes:
        requests: Calls received.
        batches: Calls made to the wrapped model.
        rows: Prompts generated (samples counted), over all batches.
        recent: Rows of the most recent batches, oldest first (the last 1,000).
    """

    requests: int = 0
    batches: int = 0
    rows: int = 0
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=1000))

    @property
    def mean_batch(self) -> float:
        """Mean rows per batch (0 before the first batch)."""
        return self.rows / self.batches if self.batches else 0.0


@dataclass
class Request:
    """One caller's prompts, waiting for a batch."""

    prompts: list[list[int]]
    config: GenerationConfig
    future: Future[list[Generation]]
    arrived: float

    @property
    def rows(self) -> int:
        """Rows this call adds to a batch (samples counted)."""
        return len(self.prompts) * self.config.num_samples

    @property
    def mergeable(self) -> bool:
        """Whether it may share a batch (seeded sampling runs alone, to stay reproducible)."""
        return not (self.config.temperature > 0 and self.config.seed is not None)


STOP = None


def serve(
    requests: queue.SimpleQueue[Request | None],
    model: LocalBackend,
    window_s: float,
    max_batch: int,
    stats: BatchStats,
) -> None:
    """The batching thread: collect a batch, run it, repeat until told to stop.

    It holds no reference to the :class:`MicroBatcher`, so an unused batcher is collected and
    its finalizer stops this thread.
    """
    carried: deque[Request] = deque()
    stopping = False
    while not (stopping and not carried):
        if carried:
            first = carried.popleft()
        else:
            item = requests.get()
            if item is None:
                return
            first = item
        batch, rows = [first], first.rows
        deadline = first.arrived + window_s
        while rows < max_batch and not stopping:
            if carried:
                item = carried.popleft()
            else:
                remaining = deadline - time.monotonic()
                try:
                    item = (
                        requests.get(timeout=remaining) if remaining > 0 else requests.get_nowait()
                    )
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
            if rows + item.rows > max_batch:
                carried.appendleft(item)
                break
            batch.append(item)
            rows += item.rows
        try:
            run_batch(model, batch, stats)
        except BaseException as error:  # never leave a caller waiting for ever
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(error)
            if not isinstance(error, Exception):
                raise


def run_batch(model: LocalBackend, batch: list[Request], stats: BatchStats) -> None:
    """Generate for a collected batch: one call per group of equal configs."""
    live = [r for r in batch if r.future.set_running_or_notify_cancel()]
    groups: list[list[Request]] = []
    for request in live:
        for group in groups:
            if request.mergeable and group[0].mergeable and group[0].config == request.config:
                group.append(request)
                break
        else:
            groups.append([request])
    for group in groups:
        try:
            generate_group(model, group, stats)
        except Exception as error:
            if len(group) == 1:
                group[0].future.set_exception(error)
                continue
            logger.warning(
                "A merged batch of %d calls failed (%s); retrying each call alone.",
                len(group),
                error,
            )
            for request in group:
                try:
                    generate_group(model, [request], stats)
                except Exception as single_error:
                    request.future.set_exception(single_error)


def generate_group(model: LocalBackend, group: list[Request], stats: BatchStats) -> None:
    """One call of the backend for a group of equal-config calls; each gets its own rows."""
    prompts = [p for request in group for p in request.prompts]
    config = group[0].config
    rows = len(prompts) * config.num_samples
    logger.debug("micro-batch: %d calls, %d rows", len(group), rows)
    generations = model.generate_from_ids(prompts, config)
    stats.batches += 1
    stats.rows += rows
    stats.recent.append(rows)
    start = 0
    for request in group:
        end = start + request.rows
        request.future.set_result(generations[start:end])
        start = end
