"""Turn the CRM API's payload (or a `user-mapping/num_<n>.json` file) into a `Persona`: pure code.

The payload is read tolerantly: `campaigns[].voiceAgents[].persona`, and each of `personality`,
`fullConfig` and `messages` is looked up on the persona, then the voice agent, then the campaign,
then the top level. Unknown fields are ignored. Campaigns and agents that say they are inactive
are never used.

Whatever the payload holds, the work is linear in its size and the persona bounded: each rendered
section of the instructions and the whole are capped in bytes (cut with a visible marker, the
persona flagged `truncated`), nesting deeper than `MAX_RENDER_DEPTH` is elided, and the short
fields are capped too. Nothing of `fullConfig` but the rendered sections reaches the persona.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from contract.errors import PersonaDispatcherError
from contract.metadata import (
    INSTRUCTIONS_MAX_BYTES,
    SECTION_MAX_BYTES,
    TRUNCATED_MARKER,
    Persona,
)
from contract.transfer import transfer_target


class PersonaPayloadError(PersonaDispatcherError, ValueError):
    """The payload is not a persona payload (garbage, wrong types, no instructions)."""


class PersonaNotInPayload(PersonaDispatcherError, LookupError):
    """The payload is well formed but maps the number to no active voice agent persona."""


# welcome, closing: a line the agent speaks; name, ids, voice, language: a word or two.
LINE_MAX_BYTES = 2_000
WORD_MAX_BYTES = 200
MAX_RENDER_DEPTH = 12


@dataclass(frozen=True)
class PersonaLimits:
    """Byte caps on what a persona carries."""

    instructions_bytes: int = INSTRUCTIONS_MAX_BYTES
    section_bytes: int = SECTION_MAX_BYTES


_ACTIVE_WORDS = frozenset({"active", "live", "running", "enabled", "published", "ongoing"})
_INACTIVE_WORDS = frozenset(
    {
        "inactive",
        "completed",
        "complete",
        "ended",
        "finished",
        "paused",
        "stopped",
        "archived",
        "disabled",
        "draft",
        "deleted",
        "expired",
        "cancelled",
        "canceled",
    }
)
_TRUE_WORDS = frozenset({"true", "yes", "1", "y", "on"})
_FALSE_WORDS = frozenset({"false", "no", "0", "n", "off"})

# The message types a `messages` list may name, compared after `_norm` (case, `_`, `-` and spaces
# ignored): exact words only, so `friendly_reminder` or `weekend_offer` are neither.
WELCOME_TYPES = frozenset(
    {"welcome", "welcomemessage", "greeting", "greet", "opening", "openingmessage", "intro"}
)
CLOSING_TYPES = frozenset(
    {"closing", "closingmessage", "goodbye", "farewell", "ending", "endmessage", "outro"}
)

# fullConfig keys that shape how the agent behaves, rendered into the instructions in this order.
# Everything else (voice, model, ids, timestamps, ...) stays out of the persona.
_BEHAVIOUR_KEYS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Instructions", ("systemprompt", "prompt", "instructions")),
    ("Role", ("role", "agentrole", "designation")),
    ("Goal", ("goal", "goals", "objective", "objectives", "purpose")),
    ("Company", ("company", "companyname", "organisation", "organization", "business")),
    ("Product", ("product", "products", "productdetails", "offering", "services")),
    ("Tone", ("tone", "style", "speakingstyle", "voicetone")),
    ("Language", ("language", "languages")),
    ("Rules", ("rules", "guidelines", "constraints", "dos", "donts", "restrictions")),
    ("Call flow", ("script", "callflow", "flow", "steps", "conversationflow")),
    ("Objection handling", ("objections", "objectionhandling")),
    ("FAQ", ("faq", "faqs")),
    ("Knowledge", ("knowledge", "knowledgebase", "context")),
)


# An explicit field naming the deployment's agent that answers, wherever the payload puts it;
# without one, the voice agent's own `name` says it.
AGENT_NAME_KEYS = ("agentName", "voiceAgentName", "livekitAgent", "dispatchAgent")


# Where the CRM may put the number or SIP URI of a human to transfer the caller to.
TRANSFER_KEYS = ("transferTo", "transferNumber", "humanTransfer", "escalationNumber", "forwardTo")


def _transfer_to(value: Any) -> str | None:
    """A valid transfer target, or None (an invalid one is dropped: the agent offers none)."""
    return transfer_target(value) if isinstance(value, str) and len(value) < 300 else None


def _norm(key: str) -> str:
    return key.replace("_", "").replace("-", "").replace(" ", "").lower()


class _Fields:
    """An object's keys, matched loosely (`_norm`); built once per object, so lookups are cheap."""

    def __init__(self, obj: Any) -> None:
        self.index: dict[str, Any] = {}
        if isinstance(obj, dict):
            for k, v in obj.items():
                if isinstance(k, str):
                    self.index.setdefault(_norm(k), v)

    def get(self, *names: str) -> Any:
        """The first present, non-empty value of `names`."""
        for name in names:
            value = self.index.get(_norm(name))
            if value not in (None, "", [], {}):
                return value
        return None


def _flag(value: Any) -> bool | None:
    """A boolean, however the CRM spells it (true, "false", "Yes", 0); None when it is not one."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    return None


def _is_active(fields: _Fields) -> bool | None:
    """True/False when the object says whether it is active, None when it does not say.

    An explicit flag wins; then the status word. Inactive if either says so.
    """
    says: list[bool] = []
    for key in ("isActive", "active", "enabled"):
        flag = _flag(fields.get(key))
        if flag is not None:
            says.append(flag)
            break
    status = fields.get("status", "state")
    if isinstance(status, str):
        word = status.strip().lower()
        if word in _INACTIVE_WORDS:
            says.append(False)
        elif word in _ACTIVE_WORDS:
            says.append(True)
    if not says:
        return None
    return all(says)


def _pick(items: Iterable[Any]) -> tuple[list[_Fields], bool]:
    """Objects not inactive, active ones first (stable); and whether any were left out."""
    ranked: list[tuple[int, _Fields]] = []
    left_out = False
    for item in items:
        if not isinstance(item, dict):
            continue
        fields = _Fields(item)
        active = _is_active(fields)
        if active is False:
            left_out = True
            continue
        ranked.append((0 if active else 1, fields))
    ranked.sort(key=lambda r: r[0])
    return [f for _, f in ranked], left_out


def _cut(text: str, max_bytes: int) -> tuple[str, bool]:
    """`text` within `max_bytes` of UTF-8, cut with the marker when over; and whether it was."""
    if len(text) * 4 <= max_bytes or len(text.encode()) <= max_bytes:
        return text, False
    room = max(0, max_bytes - len(TRUNCATED_MARKER.encode()) - 1)
    head = text[:room].encode()[:room].decode(errors="ignore")
    return f"{head}\n{TRUNCATED_MARKER}", True


def _text(value: Any, max_bytes: int = LINE_MAX_BYTES) -> str | None:
    if isinstance(value, str) and value.strip():
        return _cut(value.strip(), max_bytes)[0]
    if isinstance(value, dict):
        return _text(_Fields(value).get("text", "message", "content", "value"), max_bytes)
    return None


def _messages(value: Any) -> tuple[str | None, str | None]:
    welcome = closing = None
    if isinstance(value, dict):
        fields = _Fields(value)
        welcome = _text(fields.get("welcome", "welcomeMessage", "greeting", "opening", "intro"))
        closing = _text(fields.get("closing", "closingMessage", "goodbye", "ending", "outro"))
    elif isinstance(value, list):
        for item in value:
            kind = _Fields(item).get("type", "kind", "name")
            if not isinstance(kind, str):
                continue
            kind = _norm(kind)
            if welcome is None and kind in WELCOME_TYPES:
                welcome = _text(item)
            elif closing is None and kind in CLOSING_TYPES:
                closing = _text(item)
    return welcome, closing


def _scalar(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool | int | float):
        return str(value)
    return None


def render_lines(value: Any, max_items: int | None = None) -> Iterator[str]:
    """`value` as indented text lines, produced lazily (a reader that stops early stops the
    work): `key: value`, `- item`, nesting by two spaces; deeper than `MAX_RENDER_DEPTH` is
    shown as `…`, and past `max_items` values (empty ones count: they cost work, not text)
    the rest is cut with `TRUNCATED_MARKER`. No recursion, so any depth is safe."""
    seen = 0
    stack: list[tuple[int, Iterator[tuple[str, Any]]]] = [(0, iter((("", value),)))]
    lead = ""  # a list item's "- ", put before the first line of its nested object
    while stack:
        depth, items = stack[-1]
        item = next(items, None)
        if item is None:
            stack.pop()
            lead = ""
            continue
        label, v = item
        seen += 1
        if max_items is not None and seen > max_items:
            yield TRUNCATED_MARKER
            return
        indent = "  " * depth
        if lead:
            indent, lead = indent[:-2] + lead, ""
        # The root's own items are not indented; a labelled value's are, one step.
        inner = depth + 1 if label else depth
        text = _scalar(v)
        if text is not None:
            yield f"{indent}{label}{text}"
        elif isinstance(v, dict | list) and v:
            if len(stack) > MAX_RENDER_DEPTH:
                yield f"{indent}{label}…"
            elif isinstance(v, list):
                if label:
                    yield f"{indent}{label.rstrip()}"
                stack.append((inner, (("- ", x) for x in v)))
            elif label == "- ":
                lead = "- "
                stack.append((inner, ((f"{k}: ", x) for k, x in v.items())))
            else:
                if label:
                    yield f"{indent}{label.rstrip()}"
                stack.append((inner, ((f"{k}: ", x) for k, x in v.items())))


def render_capped(value: Any, max_bytes: int) -> tuple[str, bool]:
    """`render_lines(value)` joined, within `max_bytes` (cut with the marker); whether it was cut.

    Stops rendering once the cap is reached: the work is bounded by the cap, not the value."""
    lines: list[str] = []
    used = 0
    # A value yields at least a byte of text unless it is empty: one value per byte of budget.
    for line in render_lines(value, max_items=max_bytes):
        # A line longer than the cap in characters is over it in bytes too: slice before encoding.
        line = line[: max_bytes + 1]
        size = len(line.encode()) + 1
        if used + size > max_bytes:
            lines.append(line)
            return _cut("\n".join(lines).strip(), max_bytes)[0], True
        lines.append(line)
        used += size
    cut = bool(lines) and lines[-1] == TRUNCATED_MARKER
    return "\n".join(lines).strip(), cut


def compose_instructions(
    personality: str | None, full_config: dict[str, Any], limits: PersonaLimits = PersonaLimits()
) -> tuple[str, bool]:
    """The agent's system prompt: the personality, then the behaviour-shaping config sections,
    each within `limits.section_bytes` and the whole within `limits.instructions_bytes`; and
    whether anything was cut."""
    truncated = False
    parts: list[str] = []
    own = (personality or "").strip()
    if own:
        own, truncated = _cut(own, limits.section_bytes)
        parts.append(own)
    used: set[str] = set()
    index: dict[str, str] = {}
    for k in full_config:
        if isinstance(k, str):
            index.setdefault(_norm(k), k)
    for title, names in _BEHAVIOUR_KEYS:
        sections = []
        for name in names:
            key = index.get(name)
            if key is None or key in used:
                continue
            used.add(key)
            rendered, cut = render_capped(full_config[key], limits.section_bytes)
            truncated |= cut
            if rendered and rendered != own:
                sections.append(rendered)
        if sections:
            section, cut = _cut(f"## {title}\n" + "\n".join(sections), limits.section_bytes)
            truncated |= cut
            parts.append(section)
    whole, cut = _cut("\n\n".join(parts), limits.instructions_bytes)
    return whole, truncated or cut


def _voice(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return _cut(value.strip(), WORD_MAX_BYTES)[0]
    if isinstance(value, dict):
        v = _Fields(value).get("id", "voiceId", "name")
        return _cut(str(v), WORD_MAX_BYTES)[0] if isinstance(v, str | int) else None
    return None


def _word(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        return None
    return _cut(str(value).strip(), WORD_MAX_BYTES)[0]


def parse_persona_payload(data: Any, limits: PersonaLimits = PersonaLimits()) -> Persona:
    """The persona for the payload's chosen campaign and voice agent.

    Raises `PersonaPayloadError` for garbage and `PersonaNotInPayload` when no active persona is
    mapped.
    """
    chosen = _choose_persona(data)
    layers = _Layers([chosen.persona, chosen.agent, chosen.campaign, chosen.top])
    full_config = _full_config(layers)
    instructions, truncated = _instructions(layers, full_config, chosen.found, limits)
    name = _text(
        chosen.persona.get("name", "personaName") or chosen.agent.get("name"), WORD_MAX_BYTES
    )
    welcome, closing = _lines(layers)
    # Speech settings may sit in fullConfig as well as on the persona or its voice agent.
    speech = _Layers(
        [chosen.persona, _Fields(full_config), chosen.agent, chosen.campaign, chosen.top]
    )
    language = speech.first("language")
    return Persona(
        instructions=instructions,
        persona_id=_word(
            chosen.persona.get("id", "_id", "personaId") or chosen.agent.get("personaId")
        ),
        name=name,
        welcome=welcome,
        closing=closing,
        voice=_voice(speech.first("voice", "voiceId", "ttsVoice")),
        language=_word(language) if isinstance(language, str) else None,
        truncated=truncated,
        voice_agent=_word(speech.first(*AGENT_NAME_KEYS) or chosen.agent.get("name")),
        transfer_to=_transfer_to(speech.first(*TRANSFER_KEYS)),
        transfer_line=_text(speech.first("transferMessage", "transferLine")),
    )


@dataclass(frozen=True)
class _Chosen:
    """The payload's top level, and its chosen campaign, voice agent and persona (empty when none
    was found, `found` False)."""

    top: _Fields
    campaign: _Fields
    agent: _Fields
    persona: _Fields
    found: bool


class _Layers:
    """The persona's objects from the most to the least specific: a field missing on one is looked
    up on the next."""

    def __init__(self, layers: list[_Fields]) -> None:
        self.layers = layers

    def first(self, *names: str) -> Any:
        for layer in self.layers:
            value = layer.get(*names)
            if value is not None:
                return value
        return None


def _choose_persona(data: Any) -> _Chosen:
    """The first active campaign's first active voice agent with a persona; raises
    `PersonaNotInPayload` when every campaign or agent is inactive."""
    if not isinstance(data, dict):
        raise PersonaPayloadError(f"payload is a {type(data).__name__}, not an object")
    top = _Fields(data)
    campaigns_raw = top.get("campaigns")
    if campaigns_raw is not None and not isinstance(campaigns_raw, list):
        raise PersonaPayloadError("campaigns is not a list")
    campaigns, left_out = _pick(campaigns_raw or [])
    for c in campaigns:
        agents = c.get("voiceAgents", "voiceAgent", "agents")
        if isinstance(agents, dict):
            agents = [agents]
        picked, agents_left_out = _pick(agents if isinstance(agents, list) else [])
        left_out |= agents_left_out
        for a in picked:
            p = a.get("persona")
            if isinstance(p, dict):
                return _Chosen(top, c, a, _Fields(p), found=True)
    if left_out:
        raise PersonaNotInPayload("only inactive campaigns or voice agents")
    none = _Fields(None)
    return _Chosen(top, none, none, none, found=False)


def _full_config(layers: _Layers) -> dict[str, Any]:
    full_config = layers.first("fullConfig")
    if full_config is not None and not isinstance(full_config, dict):
        raise PersonaPayloadError("fullConfig is not an object")
    return full_config or {}


def _instructions(
    layers: _Layers, full_config: dict[str, Any], found: bool, limits: PersonaLimits
) -> tuple[str, bool]:
    """The system prompt from the personality and the behaviour config, within its budget."""
    personality = layers.first("personality")
    personality = personality.strip() if isinstance(personality, str) else None
    if not found and not personality and not full_config:
        raise PersonaNotInPayload("no campaign maps a voice agent persona")
    instructions, truncated = compose_instructions(personality, full_config, limits)
    if not instructions:
        raise PersonaPayloadError("persona has neither personality nor behaviour config")
    return instructions, truncated


def _lines(layers: _Layers) -> tuple[str | None, str | None]:
    """The welcome and closing lines: from `messages`, else from their own fields."""
    welcome, closing = _messages(layers.first("messages"))
    if welcome is None:
        welcome = _text(layers.first("welcomeMessage", "greeting"))
    if closing is None:
        closing = _text(layers.first("closingMessage"))
    return welcome, closing


def parse_persona_body(body: bytes, limits: PersonaLimits = PersonaLimits()) -> Persona:
    """`parse_persona_payload` of a JSON body; a body that is not JSON (or nested deeper than
    the JSON reader goes) is a `PersonaPayloadError`."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise PersonaPayloadError(f"payload is not JSON: {str(e)[:120]}") from None
    return parse_persona_payload(data, limits)
