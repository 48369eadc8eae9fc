"""`POST /personas/invalidate`: a signed request makes the next call for its numbers ask the CRM,
on every replica; anything else (no secret set, a forged or missing signature, a signature of
another body, an oversized or malformed body) changes nothing. The signature is computed here
with `hmac` and, once, with `openssl dgst` as the README's curl example does."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.settings import Settings
from contract.metadata import decode_persona_metadata
from tests import test_shared_persona_store as shared_store
from tests.conftest import Client, LogCapture, post
from tests.harness.fake_livekit import FakeLiveKit
from tests.harness.fake_persona_api import FakeState
from tests.harness.signing import participant_joined
from webhooks.app import create_app

pytestmark = pytest.mark.service
redis_server = shared_store.redis_server
redis_url = shared_store.redis_url

PATH = "/personas/invalidate"
SECRET = "crm-webhook-secret-0123456789"
NUMBER = "8655701159"
HEADER = "X-Persona-Signature-256"
_rooms = iter(range(1, 1_000_000))


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {HEADER: f"sha256={digest}", "Content-Type": "application/json"}


def numbers_body(*numbers: str) -> bytes:
    return orjson.dumps({"numbers": list(numbers)})


async def call(client: Client, fake_lk: FakeLiveKit, number: str = NUMBER) -> Any:
    """A call from `number` through the webhook: the persona metadata its room got."""
    room = f"call_{next(_rooms)}"
    fake_lk.add_room(room)
    status, answer = await post(client, participant_joined(room, number=number))
    assert status == 200, answer
    return decode_persona_metadata(fake_lk.rooms.pop(room))


@pytest.fixture
async def service(
    aiohttp_client: Any, make_settings: Callable[..., Settings], logs: LogCapture
) -> Client:
    """The service with the endpoint on, a long fresh window (every second call is cached)."""
    settings = make_settings(PERSONA_INVALIDATE_SECRET=SECRET, PERSONA_CACHE_TTL_S="3600")
    c: Client = await aiohttp_client(create_app(settings))
    return c


async def chunks(body: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(body), 4096):
        yield body[i : i + 4096]


async def invalidations_counted(client: Client) -> bool:
    text = await (await client.get("/metrics")).text()
    return "persona_dispatcher_persona_invalidations_total{" in text


async def test_without_a_secret_the_endpoint_is_not_there(
    client: Client, fake_lk: FakeLiveKit
) -> None:
    body = numbers_body(NUMBER)
    resp = await client.post(PATH, data=body, headers=signed(body))
    assert resp.status == 404


async def test_a_signed_invalidation_makes_the_next_call_have_the_edit(
    service: Client, fake_lk: FakeLiveKit, persona_state: FakeState, logs: LogCapture
) -> None:
    assert (await call(service, fake_lk)).persona.name == "Priya"
    persona_state.edit_persona(NUMBER, name="Asha")
    assert (await call(service, fake_lk)).status == "cached"  # not yet told
    body = numbers_body("+91 86557 01159", "8655701159")  # the same number twice, written two ways
    for _ in range(2):  # idempotent
        resp = await service.post(PATH, data=body, headers=signed(body))
        assert resp.status == 200
        assert (await resp.json())["numbers"] == 1
    after = await call(service, fake_lk)
    assert (after.status, after.persona.name) == ("loaded", "Asha")
    assert [e["source"] for e in logs.named("persona.invalidated")] == ["http", "http"]
    text = await (await service.get("/metrics")).text()
    assert 'persona_dispatcher_persona_invalidations_total{source="http"} 2.0' in text


def test_the_readme_signature_recipe_matches() -> None:
    """`openssl dgst -sha256 -hmac SECRET` over the body, as the README's curl example signs."""
    body = numbers_body(NUMBER)
    done = subprocess.run(
        ["openssl", "dgst", "-sha256", "-hmac", SECRET, "-r"],
        input=body,
        capture_output=True,
        check=True,
        timeout=10,
    )
    assert f"sha256={done.stdout.split()[0].decode()}" == signed(body)[HEADER]


@pytest.mark.parametrize(
    "case",
    ["forged", "no signature", "another body's signature", "not hex", "oversized", "chunked"],
)
async def test_a_bad_request_changes_nothing(
    service: Client, fake_lk: FakeLiveKit, persona_state: FakeState, case: str
) -> None:
    assert (await call(service, fake_lk)).status == "loaded"
    body = numbers_body(NUMBER)
    headers = {
        "forged": signed(body, secret="not-the-secret-but-long-enough"),
        "no signature": {},
        "another body's signature": signed(numbers_body("9111111111")),
        "not hex": {HEADER: "sha256=zz"},
    }.get(case, {})
    data: Any = body
    if case in ("oversized", "chunked"):
        body = orjson.dumps({"numbers": [NUMBER] * 6000})  # over 64 KiB, validly signed
        headers = signed(body)
        data = body if case == "oversized" else chunks(body)  # chunked: no Content-Length
    resp = await service.post(PATH, data=data, headers=headers)
    assert resp.status == (413 if case in ("oversized", "chunked") else 401)
    assert (await call(service, fake_lk)).status == "cached"
    assert persona_state.requests == 1
    assert not await invalidations_counted(service)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"numbers": []}',
        b'{"numbers": "8655701159"}',
        b'{"numbers": ["8655701159", "12"]}',
        b'{"numbers": [true]}',
        orjson.dumps({"numbers": [f"9{n:09d}" for n in range(1001)]}),
    ],
    ids=["empty", "garbage", "list", "none", "not a list", "a bad number", "bool", "1001"],
)
async def test_a_malformed_signed_body_is_400_and_changes_nothing(
    service: Client, fake_lk: FakeLiveKit, persona_state: FakeState, body: bytes
) -> None:
    assert (await call(service, fake_lk)).status == "loaded"
    resp = await service.post(PATH, data=body, headers=signed(body))
    assert resp.status == 400
    assert (await call(service, fake_lk)).status == "cached"
    assert not await invalidations_counted(service)


async def test_an_invalidation_on_one_replica_reaches_the_other(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    fake_lk: FakeLiveKit,
    persona_state: FakeState,
    redis_url: str,
) -> None:
    """Two replicas on one Redis both serve the cached persona; the CRM tells one of them of the
    edit; the next call on either has it."""
    settings = make_settings(
        PERSONA_INVALIDATE_SECRET=SECRET, PERSONA_CACHE_TTL_S="3600", PERSONA_CACHE_URL=redis_url
    )
    a = await aiohttp_client(create_app(settings))
    b = await aiohttp_client(create_app(settings))
    assert (await call(a, fake_lk)).status == "loaded"
    assert (await call(b, fake_lk)).status == "cached"
    persona_state.edit_persona(NUMBER, name="Asha")
    body = numbers_body(NUMBER)
    assert (await a.post(PATH, data=body, headers=signed(body))).status == 200
    on_b = await call(b, fake_lk)
    on_a = await call(a, fake_lk)
    assert [(m.status, m.persona.name) for m in (on_b, on_a)] == [
        ("loaded", "Asha"),
        ("cached", "Asha"),
    ]
    assert persona_state.requests == 2


SIGNATURES = st.one_of(
    st.none(),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80),
    st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: f"sha256={h}"),
)
BODIES = st.one_of(
    st.binary(max_size=300),
    st.lists(st.text(max_size=20), max_size=5).map(lambda ns: orjson.dumps({"numbers": ns})),
    st.just(numbers_body(NUMBER)),
    st.integers(64 * 1024 + 1, 80 * 1024).map(lambda n: b" " * n),
)


@given(body=BODIES, signature=SIGNATURES)
async def test_any_unsigned_request_is_refused_without_a_side_effect(
    service: Client, fake_lk: FakeLiveKit, persona_state: FakeState, body: bytes, signature: Any
) -> None:
    """Whatever the body and the signature header (short of the secret's), the answer is 401 or
    413, never 5xx, and the next call is still a cache hit."""
    await call(service, fake_lk)  # cached from the first example on
    headers = {} if signature is None else {HEADER: signature}
    resp = await service.post(PATH, data=body, headers=headers)
    assert resp.status in (401, 413)
    assert (await call(service, fake_lk)).status == "cached"
    assert persona_state.requests == 1
    assert not await invalidations_counted(service)


@given(body=BODIES)
async def test_any_signed_body_is_answered_200_or_400_or_413(
    service: Client, fake_lk: FakeLiveKit, body: bytes
) -> None:
    """A validly signed request of any body: 200 (invalidated), 400 (malformed) or 413, never
    5xx."""
    resp = await service.post(PATH, data=body, headers=signed(body))
    assert resp.status in (200, 400, 413)
