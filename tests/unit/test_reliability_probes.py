"""The pure parts of benchmarks/reliability_probes.py: the table and the marker replacement."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.scripts import load_benchmark


@pytest.fixture(scope="module")
def probes() -> ModuleType:
    return load_benchmark("reliability_probes")


def test_a_table_has_one_row_per_probe_in_order(probes: ModuleType) -> None:
    results = [
        probes.Result("first", "does one thing", probes.Outcome(True), 0.1),
        probes.Result("second", "does another", probes.Outcome(False, "got 8, want 4"), 2.0),
        probes.Result("third", "measures", probes.Outcome(True, "1.04 s"), 1.0),
    ]
    assert probes.render_table(results).splitlines() == [
        "| Probe | What it does | Outcome |",
        "|---|---|---|",
        "| `first` | does one thing | holds |",
        "| `second` | does another | **FAILS**: got 8, want 4 |",
        "| `third` | measures | holds (1.04 s) |",
    ]


def test_cells_stay_on_one_line_with_pipes_escaped_and_long_values_cut(
    probes: ModuleType,
) -> None:
    observed = "a | b\nc   d " + "x" * 500
    [_, _, row] = probes.render_table(
        [probes.Result("p", "x|y", probes.Outcome(False, observed), 0.0)]
    ).splitlines()
    assert row.startswith("| `p` | x\\|y | **FAILS**: a \\| b c d xxx")
    assert row.endswith("... |")
    assert "\n" not in row
    outcome = row.split(" | ")[-1]
    assert len(outcome.replace("\\|", "|")) == probes.MAX_OBSERVED + len(" |")


def test_the_block_names_the_commit_and_the_tally(probes: ModuleType) -> None:
    results = [
        probes.Result("a", "x", probes.Outcome(True), 0.0),
        probes.Result("b", "y", probes.Outcome(False, "no"), 0.0),
    ]
    first, blank, header, *_ = probes.render_block(results, "abc1234", "2026-01-02").splitlines()
    assert first == (
        "Generated on commit `abc1234` (2026-01-02) by "
        "`python benchmarks/reliability_probes.py --write RELIABILITY.md`: "
        "1 of 2 probes hold, 1 fail."
    )
    assert (blank, header) == ("", "| Probe | What it does | Outcome |")


def test_only_the_text_between_the_markers_is_replaced(probes: ModuleType) -> None:
    page = f"# Title\n\nbefore\n{probes.START}\nold table\nold line\n{probes.END}\nafter\n"
    assert probes.replace_between_markers(page, "NEW") == (
        f"# Title\n\nbefore\n{probes.START}\nNEW\n{probes.END}\nafter\n"
    )
    again = probes.replace_between_markers(probes.replace_between_markers(page, "NEW"), "NEW")
    assert again == probes.replace_between_markers(page, "NEW")  # idempotent


@pytest.mark.parametrize(
    "page",
    [
        "no markers at all",
        "<!-- probes:start --> only the start",
        "<!-- probes:end --> then <!-- probes:start -->",
        "<!-- probes:start --><!-- probes:end --><!-- probes:start --><!-- probes:end -->",
    ],
    ids=["none", "no-end", "reversed", "twice"],
)
def test_missing_or_broken_markers_are_refused(probes: ModuleType, page: str) -> None:
    with pytest.raises(ValueError, match="probes:"):
        probes.replace_between_markers(page, "NEW")


def test_a_probe_that_raises_or_hangs_is_a_failing_row(probes: ModuleType) -> None:
    import threading

    def crash() -> object:
        raise KeyError("boom")

    release = threading.Event()

    def hang() -> object:
        release.wait(5)
        return probes.Outcome(True)

    crashed = probes.run_probe(probes.Probe("crash", "raises", crash))
    assert crashed.outcome == probes.Outcome(False, "probe raised KeyError: 'boom'")
    hung = probes.run_probe(probes.Probe("hang", "hangs", hang, deadline_s=0.2))
    release.set()
    assert hung.outcome == probes.Outcome(False, "no result within 0 s (hang)")
