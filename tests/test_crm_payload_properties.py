"""Property: whatever the CRM answers, the set-up through the service answers 200 with exactly one
dispatch, and room metadata that is a JSON object within METADATA_BUDGET_BYTES carrying a valid
persona, within the persona deadline.

Payloads are arbitrary JSON in the persona payload's shape, with wrong types at every level,
nesting up to 1,200 levels (past what orjson reads), huge strings, many keys, unicode; and bodies
that are not JSON at all. Profiles: tests/conftest.py ("ci" seeded and bounded; "deep" by hand).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from contract.metadata import decode_persona_metadata
from tests.conftest import Client, LogCapture, post
from tests.harness.fake_livekit import FakeLiveKit
from tests.harness.fake_persona_api import FakeState
from tests.harness.signing import participant_joined

pytestmark = pytest.mark.service

BUDGET = 60_000  # METADATA_BUDGET_BYTES' default
DEADLINE_MS = 2_000  # PERSONA_DEADLINE_S as the client fixture sets it


@dataclass(frozen=True)
class Deep:
    """`inner` wrapped in `levels` lists or objects, written by `encode` (orjson writes ~250)."""

    levels: int
    inner: Any
    objects: bool


def encode(value: Any) -> bytes:
    """JSON for `value`, `Deep` parts included."""
    if isinstance(value, Deep):
        if value.objects:
            return b'{"a":' * value.levels + encode(value.inner) + b"}" * value.levels
        return b"[" * value.levels + encode(value.inner) + b"]" * value.levels
    if isinstance(value, list):
        return b"[" + b",".join(encode(v) for v in value) + b"]"
    if isinstance(value, dict):
        return b"{" + b",".join(orjson.dumps(k) + b":" + encode(v) for k, v in value.items()) + b"}"
    return orjson.dumps(value)


# Any unicode a JSON document can carry (lone surrogates are not valid UTF-8).
TEXT = st.characters(exclude_categories=["Cs"])


def text(min_size: int = 0, max_size: int | None = None) -> st.SearchStrategy[str]:
    return st.text(TEXT, min_size=min_size, max_size=max_size)


KEYS = st.sampled_from(
    [
        "campaigns", "voiceAgents", "persona", "personality", "fullConfig", "messages", "status",
        "isActive", "type", "text", "welcome", "closing", "name", "_id", "voice", "language",
        "faq", "knowledge", "rules", "role", "script", "context", "llm",
    ]
) | text(max_size=12)  # fmt: skip

LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text(max_size=40)
    | st.sampled_from(["true", "false", "completed", "active", "closing", "friendly_reminder"])
)

HUGE_STRING = st.builds(
    lambda piece, times: piece * times, text(min_size=1, max_size=8), st.integers(1, 300_000)
)

MANY_KEYS = st.builds(
    lambda n, leaf: {f"field{i}": leaf for i in range(n)}, st.integers(0, 20_000), LEAVES
)


def json_values(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(KEYS, children, max_size=4)
            | st.builds(Deep, st.integers(1, 1200), children, st.booleans())
        ),
        max_leaves=12,
    )


ANY = json_values(LEAVES | HUGE_STRING | MANY_KEYS)


def either(shaped: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the right shape, sometimes anything at all in its place."""
    return st.one_of(shaped, shaped, shaped, shaped, ANY)


MESSAGES = either(
    st.dictionaries(st.sampled_from(["welcome", "closing", "greeting"]), either(text()))
    | st.lists(st.fixed_dictionaries({"type": either(KEYS), "text": either(text())}))
)
PERSONA = either(
    st.fixed_dictionaries(
        {"personality": either(text(min_size=1) | HUGE_STRING)},
        optional={
            "_id": ANY,
            "name": either(text()),
            "fullConfig": either(st.dictionaries(KEYS, ANY, max_size=6) | MANY_KEYS),
            "messages": MESSAGES,
            "voice": ANY,
            "language": ANY,
        },
    )
)
AGENT = either(
    st.fixed_dictionaries({"persona": PERSONA}, optional={"isActive": LEAVES, "status": LEAVES})
)
CAMPAIGN = either(
    st.fixed_dictionaries(
        {"voiceAgents": either(st.lists(AGENT, min_size=1, max_size=3))},
        optional={"status": LEAVES, "isActive": LEAVES, "messages": MESSAGES},
    )
)
PAYLOAD = either(
    st.fixed_dictionaries(
        {"campaigns": either(st.lists(CAMPAIGN, min_size=1, max_size=3))},
        optional={"personality": ANY, "fullConfig": ANY, "messages": MESSAGES},
    )
)
# The right types down to the persona, anything inside: most of these give a persona.
WELL_TYPED = st.fixed_dictionaries(
    {
        "campaigns": st.lists(
            st.fixed_dictionaries(
                {
                    "voiceAgents": st.lists(
                        st.fixed_dictionaries(
                            {
                                "persona": st.fixed_dictionaries(
                                    {
                                        "personality": text(min_size=1) | HUGE_STRING,
                                        "fullConfig": st.dictionaries(KEYS, ANY, max_size=6)
                                        | MANY_KEYS,
                                        "messages": MESSAGES,
                                    },
                                    optional={"_id": ANY, "name": ANY, "voice": ANY},
                                )
                            },
                            optional={"isActive": LEAVES},
                        ),
                        min_size=1,
                        max_size=2,
                    )
                },
                optional={"status": LEAVES},
            ),
            min_size=1,
            max_size=2,
        )
    }
)
JSON_BODIES = st.builds(encode, WELL_TYPED) | st.builds(encode, PAYLOAD)
BODIES = st.one_of(JSON_BODIES, JSON_BODIES, JSON_BODIES, JSON_BODIES, st.binary(max_size=200))

_numbers = itertools.count(9100000000)


# Huge bodies make huge reprs, which hypothesis warns about: expected here.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
@given(body=BODIES)
async def test_any_crm_answer_gives_one_dispatch_and_valid_bounded_metadata(
    client: Client, fake_lk: FakeLiveKit, persona_state: FakeState, logs: LogCapture, body: bytes
) -> None:
    number = str(next(_numbers))  # a new number each time: every example is fetched
    room = f"call_{number}"
    persona_state.extra[number] = body
    fake_lk.add_room(room)
    resolved_before = len(logs.named("persona.resolved"))
    status, answer = await post(client, participant_joined(room, number="+91" + number))
    assert status == 200, answer
    assert len(fake_lk.agent_dispatches(room, "friday")) == 1
    raw = fake_lk.rooms[room]
    assert len(raw.encode()) <= BUDGET
    assert isinstance(orjson.loads(raw), dict)
    meta = decode_persona_metadata(raw)
    fallbacks = logs.named("persona.fallback")
    why = fallbacks[-1]["reason"] if meta.status == "default" and fallbacks else "-"
    event(f"persona {meta.status} ({why})")
    event(f"body {'over 256 KiB' if len(body) > 256 * 1024 else 'small'}")
    # A persona without a welcome line is valid: the agent then generates its greeting.
    assert meta.persona.welcome is None or meta.persona.welcome.strip()
    assert meta.persona.instructions.strip()
    resolved = logs.named("persona.resolved")[resolved_before:]
    assert len(resolved) == 1
    assert resolved[0]["duration_ms"] <= DEADLINE_MS + 100
    del persona_state.extra[number], fake_lk.rooms[room]  # keep the fakes small across examples
