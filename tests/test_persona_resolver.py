"""The resolver against the fake persona API: what it remembers and what it asks again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from config.settings import Settings
from dispatcher.caller import DetectedNumber
from dispatcher.service import open_resolver
from tests.harness.fake_persona_api import FakeState

pytestmark = pytest.mark.service

UNKNOWN = "9111111111"  # no fixture file: the fake API answers 404


def caller(number: str) -> list[DetectedNumber]:
    return [DetectedNumber(number, "caller", "attribute")]


@pytest.mark.parametrize("answer", ["404", "no persona in the payload"])
async def test_a_number_without_persona_is_remembered_within_the_negative_ttl(
    make_settings: Callable[..., Settings], persona_state: FakeState, answer: str
) -> None:
    """A second call within PERSONA_NEGATIVE_TTL_S makes no request: the API is not asked
    about an unknown number on every ring."""
    if answer != "404":
        persona_state.extra[UNKNOWN] = {"mobileNo": UNKNOWN, "campaigns": []}
    async with open_resolver(make_settings(PERSONA_NEGATIVE_TTL_S="30")) as resolver:
        first = await resolver.resolve(caller(UNKNOWN))
        second = await resolver.resolve(caller(UNKNOWN))
    assert (first.status, first.fallback_reason) == ("default", "not_found")
    assert (second.status, second.fallback_reason) == ("default", "not_found")
    assert persona_state.per_number == {UNKNOWN: 1}


async def test_a_remembered_404_is_asked_again_once_the_negative_ttl_is_over(
    make_settings: Callable[..., Settings], persona_state: FakeState
) -> None:
    async with open_resolver(make_settings(PERSONA_NEGATIVE_TTL_S="0.05")) as resolver:
        await resolver.resolve(caller(UNKNOWN))
        await asyncio.sleep(0.1)
        await resolver.resolve(caller(UNKNOWN))
    assert persona_state.per_number == {UNKNOWN: 2}


async def test_an_invalid_payload_falls_back_to_the_last_good_copy_and_is_not_cached(
    make_settings: Callable[..., Settings], persona_state: FakeState
) -> None:
    number = "8655701159"
    async with open_resolver(
        make_settings(PERSONA_CACHE_TTL_S="0.05", PERSONA_REVALIDATE_S="0")
    ) as resolver:
        assert (await resolver.resolve(caller(number))).status == "loaded"
        await asyncio.sleep(0.1)  # past the TTL: the next call asks the CRM
        persona_state.extra[number] = {"campaigns": "oops"}
        bad = await resolver.resolve(caller(number))
        again = await resolver.resolve(caller(number))
    assert (bad.status, bad.fallback_reason, bad.persona.persona_id) == (
        "stale",
        "invalid_payload",
        "prs_3001",
    )
    assert (again.status, again.fallback_reason) == ("stale", "invalid_payload")
    assert persona_state.per_number == {number: 3}
