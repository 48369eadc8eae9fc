"""Create or update the inbound SIP trunk and dispatch rule from the data files in `config/sip/`.

The plan (what to create, update or delete) is a pure function of the wanted objects and what the
server lists; `apply_setup` sequences the calls. Objects are matched by `name`, so running the
set-up twice changes nothing, and duplicates a race left behind are deleted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message
from livekit import api
from livekit.protocol.sip import (
    CreateSIPDispatchRuleRequest,
    CreateSIPInboundTrunkRequest,
    DeleteSIPDispatchRuleRequest,
    DeleteSIPTrunkRequest,
    ListSIPDispatchRuleRequest,
    ListSIPInboundTrunkRequest,
    SIPDispatchRuleInfo,
    SIPInboundTrunkInfo,
)

from contract.errors import PersonaDispatcherError
from dispatcher.livekit_api import LiveKitRejected, LiveKitUnreachable, livekit_call

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
TRUNK_FILE = CONFIG_DIR / "sip" / "inbound_trunk.json"
RULE_FILE = CONFIG_DIR / "sip" / "dispatch_rule.json"

# Stamped by the server, never part of what we want.
SERVER_FIELDS = frozenset({"sip_trunk_id", "sip_dispatch_rule_id", "created_at", "updated_at"})
NEW_TRUNK = "<new trunk>"

Kind = Literal["create", "update", "delete", "keep"]
What = Literal["trunk", "rule"]
M = TypeVar("M", bound=Message)
T = TypeVar("T")


class SetupError(PersonaDispatcherError):
    """A set-up failure with a one-line message and the exit code scripts/setup_sip.py uses."""

    exit_code = 1


class DataFileError(SetupError):
    """A data file is missing, is not JSON, or does not describe what we need."""

    exit_code = 2


class ServerUnreachable(SetupError):
    """No answer from livekit-server (refused, timed out)."""

    exit_code = 3


class SipNotConnected(SetupError):
    """livekit-server answered, but runs without Redis: its SIP API is off."""

    exit_code = 4


class ServerRejected(SetupError):
    """livekit-server refused a request (bad credentials, invalid trunk or rule, conflict)."""

    exit_code = 5


@dataclass(frozen=True)
class Change:
    """One step of the plan; `fields` names what an update changes."""

    kind: Kind
    what: What
    name: str
    object_id: str | None = None
    fields: tuple[str, ...] = ()

    def describe(self) -> str:
        target = f"{self.what} {self.name!r}" + (f" ({self.object_id})" if self.object_id else "")
        if self.kind == "update":
            return f"update {target}: {', '.join(self.fields)}"
        return f"{self.kind} {target}"


@dataclass
class SetupResult:
    changes: list[Change] = field(default_factory=list)
    trunk_id: str | None = None
    rule_id: str | None = None

    @property
    def changed(self) -> bool:
        return any(c.kind != "keep" for c in self.changes)


def _parse(path: Path, message: M) -> M:
    try:
        text = path.read_text()
    except OSError as e:
        raise DataFileError(f"cannot read {path}: {e.strerror}") from None
    try:
        json_format.Parse(text, message)
    except json_format.ParseError as e:
        raise DataFileError(f"{path}: {e}") from None
    return message


def load_trunk(
    path: Path = TRUNK_FILE,
    *,
    auth_username: str | None = None,
    auth_password: str | None = None,
) -> SIPInboundTrunkInfo:
    """The wanted inbound trunk; credentials come from the environment, not the file."""
    trunk = _parse(path, SIPInboundTrunkInfo())
    if not trunk.name:
        raise DataFileError(f"{path}: the trunk needs a name (set-up matches trunks by name)")
    if not trunk.numbers:
        raise DataFileError(f"{path}: the trunk needs at least one number")
    if trunk.sip_trunk_id:
        raise DataFileError(f"{path}: sip_trunk_id is assigned by the server; remove it")
    if auth_username is not None:
        trunk.auth_username = auth_username
    if auth_password is not None:
        trunk.auth_password = auth_password
    if bool(trunk.auth_username) != bool(trunk.auth_password):
        raise DataFileError("SIP auth needs both a username and a password, or neither")
    return trunk


def load_rule(path: Path = RULE_FILE) -> SIPDispatchRuleInfo:
    """The wanted dispatch rule: individual, and without agents (the dispatcher dispatches)."""
    rule = _parse(path, SIPDispatchRuleInfo())
    if not rule.name:
        raise DataFileError(f"{path}: the rule needs a name (set-up matches rules by name)")
    if rule.rule.WhichOneof("rule") != "dispatch_rule_individual":
        raise DataFileError(f"{path}: the rule must be dispatch_rule_individual")
    if not rule.rule.dispatch_rule_individual.room_prefix:
        raise DataFileError(f"{path}: the individual rule needs a room_prefix")
    if rule.room_config.agents:
        raise DataFileError(
            f"{path}: room_config.agents must be empty: the dispatcher creates the dispatch"
        )
    if rule.sip_dispatch_rule_id or rule.trunk_ids:
        raise DataFileError(f"{path}: ids are filled in by the set-up; remove them")
    return rule


def rule_for_trunk(rule: SIPDispatchRuleInfo, trunk_id: str) -> SIPDispatchRuleInfo:
    """The wanted rule, bound to the trunk it serves."""
    bound = SIPDispatchRuleInfo()
    bound.CopyFrom(rule)
    del bound.trunk_ids[:]
    bound.trunk_ids.append(trunk_id)
    return bound


def differing_fields(wanted: Message, existing: Message) -> tuple[str, ...]:
    """Names of the fields (server-stamped ones aside) whose values differ."""
    names = [f.name for f in wanted.DESCRIPTOR.fields if f.name not in SERVER_FIELDS]
    return tuple(n for n in names if getattr(wanted, n) != getattr(existing, n))


def _plan(
    what: What,
    wanted: Message,
    existing: Sequence[Message],
    id_field: str,
    preferred: Collection[str] = (),
) -> list[Change]:
    name = str(getattr(wanted, "name"))  # noqa: B009 (both message types have it)
    same = [e for e in existing if getattr(e, "name", None) == name]
    if not same:
        return [Change("create", what, name)]

    # Which duplicate stays must not depend on the server's list order: the one in use, then the
    # one closest to what we want, then the smallest id.
    def rank(e: Message) -> tuple[bool, int, str]:
        object_id = str(getattr(e, id_field))
        return (object_id not in preferred, len(differing_fields(wanted, e)), object_id)

    keep, *extra = sorted(same, key=rank)
    keep_id = str(getattr(keep, id_field))
    changed = differing_fields(wanted, keep)
    # Duplicates go first: the server would refuse an update that conflicts with one of them.
    steps = [Change("delete", what, name, str(getattr(e, id_field))) for e in extra]
    return [*steps, Change("update" if changed else "keep", what, name, keep_id, changed)]


def plan_trunk(
    wanted: SIPInboundTrunkInfo,
    existing: Sequence[SIPInboundTrunkInfo],
    in_use: Collection[str] = (),
) -> list[Change]:
    """Create, update or keep the trunk named like `wanted`; delete its duplicates.

    Of several trunks of that name, one in `in_use` (bound to our rule) is the one kept.
    """
    return _plan("trunk", wanted, existing, "sip_trunk_id", in_use)


def plan_rule(wanted: SIPDispatchRuleInfo, existing: Sequence[SIPDispatchRuleInfo]) -> list[Change]:
    """Create, update or keep the rule named like `wanted`; delete its duplicates."""
    return _plan("rule", wanted, existing, "sip_dispatch_rule_id")


def _redact(trunk: SIPInboundTrunkInfo) -> SIPInboundTrunkInfo:
    shown = SIPInboundTrunkInfo()
    shown.CopyFrom(trunk)
    if shown.auth_password:
        shown.auth_password = "********"
    return shown


def describe_wanted(trunk: SIPInboundTrunkInfo, rule: SIPDispatchRuleInfo) -> str:
    """The wanted objects as JSON, password masked, for `--dry-run`."""
    parts = (
        json_format.MessageToJson(_redact(trunk), preserving_proto_field_name=True, indent=2),
        json_format.MessageToJson(rule, preserving_proto_field_name=True, indent=2),
    )
    return "trunk: " + parts[0] + "\nrule: " + parts[1]


class SipSetup:
    """Applies the plan through `LiveKitAPI.sip`; every call is bounded by `timeout` seconds."""

    def __init__(self, lkapi: api.LiveKitAPI, *, timeout: float = 10.0) -> None:
        self._sip = lkapi.sip
        self._timeout = timeout

    async def _call(self, what: str, request: Awaitable[T]) -> T:
        try:
            return await livekit_call(what, request, self._timeout)
        except LiveKitUnreachable as e:
            if e.timeout_s is not None:
                raise ServerUnreachable(f"{what}: no answer within {e.timeout_s:g}s") from None
            cause = e.__cause__ or e.detail
            raise ServerUnreachable(f"{what}: cannot reach livekit-server ({cause})") from None
        except LiveKitRejected as e:
            if "sip not connected" in e.message:
                raise SipNotConnected(
                    "livekit-server has no Redis: sip not connected (add redis to its config)"
                ) from None
            raise ServerRejected(f"{what}: {e.detail}") from None

    async def list_trunks(self) -> list[SIPInboundTrunkInfo]:
        resp = await self._call(
            "list trunks", self._sip.list_inbound_trunk(ListSIPInboundTrunkRequest())
        )
        return list(resp.items)

    async def list_rules(self) -> list[SIPDispatchRuleInfo]:
        resp = await self._call(
            "list dispatch rules", self._sip.list_dispatch_rule(ListSIPDispatchRuleRequest())
        )
        return list(resp.items)

    async def apply(
        self, trunk: SIPInboundTrunkInfo, rule: SIPDispatchRuleInfo, *, dry_run: bool = False
    ) -> SetupResult:
        """Bring the server in line with `trunk` and `rule`; with `dry_run`, only plan."""
        result = SetupResult()
        rules = await self.list_rules()
        in_use = {t for r in rules if r.name == rule.name for t in r.trunk_ids}
        trunk_steps = plan_trunk(trunk, await self.list_trunks(), in_use)
        result.changes += trunk_steps
        for step in trunk_steps:
            result.trunk_id = await self._apply_trunk(step, trunk, dry_run) or result.trunk_id
        wanted_rule = rule_for_trunk(rule, result.trunk_id or NEW_TRUNK)
        rule_steps = plan_rule(wanted_rule, rules)
        result.changes += rule_steps
        for step in rule_steps:
            result.rule_id = await self._apply_rule(step, wanted_rule, dry_run) or result.rule_id
        return result

    async def _apply_trunk(
        self, step: Change, trunk: SIPInboundTrunkInfo, dry_run: bool
    ) -> str | None:
        """Run one trunk step; returns the id of the trunk that stays, if this step decides it."""
        if step.kind == "delete":
            if not dry_run:
                req = DeleteSIPTrunkRequest(sip_trunk_id=step.object_id)
                await self._call("delete trunk", self._sip.delete_trunk(req))
            return None
        if step.kind == "keep":
            return step.object_id
        if dry_run:
            return step.object_id
        if step.kind == "create":
            created = await self._call(
                "create trunk",
                self._sip.create_inbound_trunk(CreateSIPInboundTrunkRequest(trunk=trunk)),
            )
            return created.sip_trunk_id
        assert step.object_id is not None
        await self._call("update trunk", self._sip.update_inbound_trunk(step.object_id, trunk))
        return step.object_id

    async def _apply_rule(
        self, step: Change, rule: SIPDispatchRuleInfo, dry_run: bool
    ) -> str | None:
        if step.kind == "delete":
            if not dry_run:
                req = DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=step.object_id)
                await self._call("delete dispatch rule", self._sip.delete_dispatch_rule(req))
            return None
        if step.kind == "keep" or dry_run:
            return step.object_id
        if step.kind == "create":
            created = await self._call(
                "create dispatch rule",
                self._sip.create_dispatch_rule(CreateSIPDispatchRuleRequest(dispatch_rule=rule)),
            )
            return created.sip_dispatch_rule_id
        assert step.object_id is not None
        await self._call(
            "update dispatch rule", self._sip.update_dispatch_rule(step.object_id, rule)
        )
        return step.object_id


async def setup_sip(
    url: str,
    api_key: str,
    api_secret: str,
    *,
    trunk_file: Path = TRUNK_FILE,
    rule_file: Path = RULE_FILE,
    auth_username: str | None = None,
    auth_password: str | None = None,
    dry_run: bool = False,
    call_timeout: float = 10.0,
) -> SetupResult:
    """Load the data files and bring the server at `url` in line with them."""
    trunk = load_trunk(trunk_file, auth_username=auth_username, auth_password=auth_password)
    rule = load_rule(rule_file)
    async with api.LiveKitAPI(url, api_key, api_secret) as lkapi:
        return await SipSetup(lkapi, timeout=call_timeout).apply(trunk, rule, dry_run=dry_run)
