"""The first-word benchmark's order of batches (bench/first_word.py): no route always runs first
on a fresh chain or last on a tired one, and returning callers call right after their first
call."""

from __future__ import annotations

import pytest

from bench.first_word import parse_args, schedule, warm_up

pytestmark = pytest.mark.unit


def names(argv: list[str]) -> list[tuple[int, str]]:
    args = parse_args(argv)
    return [(r, s.name) for r, s, _ in [*warm_up(args), *schedule(args)]]


def test_each_route_is_warmed_up_unreported_then_the_floor_takes_turns() -> None:
    assert names(["--rounds", "2", "--concurrency", "20", "--crm-ms", "300"]) == [
        (-1, "ours/0ms/new/x1"),
        (-1, "fetch/0ms/any/x1"),
        (-1, "floor/-/any/x1"),
        (0, "ours/300ms/new/x20"),
        (0, "ours/300ms/returning/x20"),
        (0, "fetch/300ms/any/x20"),
        (0, "floor/-/any/x20"),
        (1, "floor/-/any/x20"),
        (1, "ours/300ms/new/x20"),
        (1, "ours/300ms/returning/x20"),
        (1, "fetch/300ms/any/x20"),
    ]


def test_returning_callers_are_the_new_ones_again_and_no_batch_shares_a_warm_up_number() -> None:
    args = parse_args(["--rounds", "2", "--concurrency", "1", "--crm-ms", "300"])
    runs = schedule(args)
    for (_, scenario, callers), (_, before, earlier) in zip(runs[1:], runs, strict=False):
        if scenario.callers == "returning":
            assert before.callers == "new"
            assert callers == earlier
    warm = {n for _, _, callers in warm_up(args) for n in callers}
    assert len(warm) == 3 * args.warmup_calls
    assert warm.isdisjoint(n for _, _, callers in runs for n in callers)


def test_no_warm_up_when_asked() -> None:
    assert warm_up(parse_args(["--warmup-calls", "0"])) == []
