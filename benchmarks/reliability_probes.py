"""Run the reliability probes of RELIABILITY.md and print (or write) their outcome table.

Each probe is a minimal reproduction, run against the test fakes: ``tests.fakes.ScriptedLocalModel``
as the local model and ``tests.faultserver.FaultServer`` on 127.0.0.1 as the strong model; the
server probes start confroute's own server in-process on a free 127.0.0.1 port. No network, no
weights. Every probe runs in its own thread under its own deadline, so a probe that hangs is
reported as failing instead of stopping the run (about a minute and a half on 2 shared cores).
The checks themselves are in ``reliability_checks.py`` (library) and
``reliability_server_checks.py`` (server, raw sockets); a probe's name is its check's name and
its description the check's docstring.

Usage:
    python benchmarks/reliability_probes.py                      # print the markdown table
    python benchmarks/reliability_probes.py --write RELIABILITY.md
    python benchmarks/reliability_probes.py --only abandoned_stream api_key_in_locals

``--write`` replaces the text between ``<!-- probes:start -->`` and ``<!-- probes:end -->``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
START = "<!-- probes:start -->"
END = "<!-- probes:end -->"
COMMAND = "python benchmarks/reliability_probes.py --write RELIABILITY.md"
MAX_OBSERVED = 220
"""Characters of an observed value kept in the table."""


@dataclass(frozen=True)
class Outcome:
    """What one probe found: whether the property held, and what was seen."""

    holds: bool
    observed: str = ""


@dataclass(frozen=True)
class Result:
    """One row of the table."""

    name: str
    does: str
    outcome: Outcome
    seconds: float


# -- pure parts: rendering and marker replacement ------------------------------------------


def _cell(text: str) -> str:
    """One markdown table cell: no line breaks, pipes escaped, long text cut."""
    flat = " ".join(text.split())
    if len(flat) > MAX_OBSERVED:
        flat = flat[: MAX_OBSERVED - 3] + "..."
    return flat.replace("|", "\\|")


def render_outcome(outcome: Outcome) -> str:
    """``holds`` (with what was seen, if anything), or ``FAILS: <observed>``."""
    if outcome.holds:
        return f"holds ({outcome.observed})" if outcome.observed else "holds"
    return f"**FAILS**: {outcome.observed}" if outcome.observed else "**FAILS**"


def render_table(results: Sequence[Result]) -> str:
    """The markdown table of ``results``, one row per probe, in the order given."""
    lines = ["| Probe | What it does | Outcome |", "|---|---|---|"]
    for result in results:
        outcome = _cell(render_outcome(result.outcome))
        lines.append(f"| `{result.name}` | {_cell(result.does)} | {outcome} |")
    return "\n".join(lines)


def render_block(results: Sequence[Result], commit: str, date: str) -> str:
    """The generated section body: provenance line, table, tally."""
    failing = sum(not r.outcome.holds for r in results)
    return "\n".join(
        [
            f"Generated on commit `{commit}` ({date}) by `{COMMAND}`: "
            f"{len(results) - failing} of {len(results)} probes hold, {failing} fail.",
            "",
            render_table(results),
        ]
    )


def replace_between_markers(text: str, block: str) -> str:
    """``text`` with everything between the probe markers replaced by ``block``.

    Raises:
        ValueError: The markers are missing, repeated or out of order.
    """
    if text.count(START) != 1 or text.count(END) != 1:
        raise ValueError(f"expected exactly one {START} and one {END}")
    if text.index(END) < text.index(START):
        raise ValueError(f"{END} comes before {START}")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{block}\n{END}{tail}"


# -- running ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """A named check with a deadline."""

    name: str
    does: str
    check: Callable[[], Outcome]
    deadline_s: float = 30.0


def run_probe(probe: Probe) -> Result:
    """Run one probe in a daemon thread; an exception or a missed deadline is a failure."""
    box: list[Outcome] = []

    def target() -> None:
        try:
            box.append(probe.check())
        except BaseException as error:  # a probe that crashes is a finding, not a stop
            box.append(Outcome(False, f"probe raised {type(error).__name__}: {error}"))

    started = time.perf_counter()
    thread = threading.Thread(target=target, name=f"probe-{probe.name}", daemon=True)
    thread.start()
    thread.join(probe.deadline_s)
    seconds = time.perf_counter() - started
    if not box:
        outcome = Outcome(False, f"no result within {probe.deadline_s:.0f} s (hang)")
    else:
        outcome = box[0]
    return Result(probe.name, probe.does, outcome, seconds)


def all_probes() -> tuple[list[Probe], Callable[[], None]]:
    """Every probe in table order, and how to stop the servers they share.

    Each probe's name is its check's name and its description the check's docstring.
    """
    import reliability_checks as lib
    import reliability_server_checks as srv

    env = lib.Env()
    table: list[tuple[Callable[[Any], Outcome], float]] = [
        (lib.api_key_in_locals, 30),
        (lib.userinfo_key, 30),
        (lib.abandoned_stream, 30),
        (srv.server_stream_disconnect, srv.DISCONNECT_S + 10),
        (lib.batch_under_raise, 30),
        (lib.route_batch_keeps_answers, 30),
        (lib.tool_call_text, 30),
        (srv.server_read_timeout, srv.STALL_S + 10),
        (srv.server_bad_values, 30),
        (lib.library_bad_values, 30),
        (lib.silent_wrong_answers, 30),
        (lib.import_order, 110),
        (lib.documentation, 10),
        (lib.escalation_wall_time, 20),
        (lib.concurrent_mixed, 90),
        (lib.canary_key, 30),
        (srv.malformed_bodies, 20),
        (srv.path_traversal, 20),
        (srv.huge_body, 30),
    ]

    def bound(check: Callable[[Any], Outcome]) -> Callable[[], Outcome]:
        return lambda: check(env)

    probes = [
        Probe(check.__name__, " ".join((check.__doc__ or "").split()), bound(check), deadline)
        for check, deadline in table
    ]
    return probes, env.close


def _commit(written: Path | None) -> str:
    """HEAD's short hash, marked when tracked files other than ``written`` are changed."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    skip = written.resolve() if written is not None else None
    dirty = [line for line in changed if (ROOT / line[3:]).resolve() != skip]
    return f"{head} + uncommitted changes" if dirty else head


def main(argv: Sequence[str] | None = None) -> int:
    """Run the probes; print the table or write it into a file between the markers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="file whose probe section is rewritten")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these probes")
    args = parser.parse_args(argv)
    for name, value in {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "TRANSFORMERS_VERBOSITY": "error",
    }.items():
        os.environ.setdefault(name, value)
    for path in (ROOT / "shared", ROOT):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    probes, close = all_probes()
    try:
        chosen = [p for p in probes if not args.only or p.name in args.only]
        results = []
        for probe in chosen:
            result = run_probe(probe)
            print(
                f"{result.name}: {render_outcome(result.outcome)} [{result.seconds:.1f} s]",
                file=sys.stderr,
            )
            results.append(result)
    finally:
        close()
    date = datetime.date.today().isoformat()
    block = render_block(results, _commit(args.write), date)
    if args.write is None:
        print(block)
    else:
        args.write.write_text(replace_between_markers(args.write.read_text(), block))
        print(f"wrote {len(results)} probe rows into {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
