"""Turn the CRM API's payload (or a `user-mapping/num_<n>.json` file) into a `Persona`: pure code.

The payload is read tolerantly: `campaigns[].voiceAgents[].persona`, and each of `personality`,
`fullConfig` and `messages` is looked up on the persona, then the voice agent, then the campaign,
then the top level. Unknown fields are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from contract.errors import PersonaDispatcherError
from contract.metadata import Persona


class PersonaPayloadError(PersonaDispatcherError, ValueError):
    """The payload is not a persona payload (garbage, wrong types, no instructions)."""


class PersonaNotInPayload(PersonaDispatcherError, LookupError):
    """The payload is well formed but maps the number to no voice agent persona."""


_ACTIVE_WORDS = {"active", "live", "running", "enabled", "published", "ongoing"}

# fullConfig keys that shape how the agent behaves, rendered into the instructions in this order.
# Everything else (voice, model, ids, timestamps, ...) stays in `config` only.
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


def _norm(key: str) -> str:
    return key.replace("_", "").replace("-", "").replace(" ", "").lower()


def _get(obj: Any, *names: str) -> Any:
    """The first present, non-empty value of `names` in `obj`, matching keys loosely."""
    if not isinstance(obj, dict):
        return None
    index = {_norm(k): v for k, v in obj.items() if isinstance(k, str)}
    for name in names:
        value = index.get(_norm(name))
        if value not in (None, "", [], {}):
            return value
    return None


def _is_active(obj: Any) -> bool | None:
    """True/False when the object says whether it is active, None when it does not say."""
    if not isinstance(obj, dict):
        return None
    for key in ("isActive", "active", "enabled"):
        value = _get(obj, key)
        if isinstance(value, bool):
            return value
    status = _get(obj, "status", "state")
    if isinstance(status, str):
        return status.strip().lower() in _ACTIVE_WORDS
    return None


def _pick(items: Iterable[Any]) -> list[Any]:
    """Items that are objects, active ones first (stable), inactive ones last."""
    objs = [i for i in items if isinstance(i, dict)]
    return sorted(objs, key=lambda o: {True: 0, None: 1, False: 2}[_is_active(o)])


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, dict):
        return _text(_get(value, "text", "message", "content", "value"))
    return None


def _messages(value: Any) -> tuple[str | None, str | None]:
    welcome = closing = None
    if isinstance(value, dict):
        welcome = _text(_get(value, "welcome", "welcomeMessage", "greeting", "opening", "intro"))
        closing = _text(_get(value, "closing", "closingMessage", "goodbye", "ending", "outro"))
    elif isinstance(value, list):
        for item in value:
            kind = _get(item, "type", "kind", "name")
            if not isinstance(kind, str):
                continue
            kind = kind.lower()
            if welcome is None and any(w in kind for w in ("welcome", "greet", "open")):
                welcome = _text(item)
            elif closing is None and any(w in kind for w in ("clos", "goodbye", "end")):
                closing = _text(item)
    return welcome, closing


def _render(value: Any, indent: str = "") -> str:
    if isinstance(value, str):
        return indent + value.strip()
    if isinstance(value, bool | int | float):
        return indent + str(value)
    if isinstance(value, list):
        lines = []
        for item in value:
            rendered = _render(item, indent + "  ").strip()
            if rendered:
                lines.append(f"{indent}- {rendered}")
        return "\n".join(lines)
    if isinstance(value, dict):
        lines = []
        for k, v in value.items():
            rendered = _render(v, indent + "  ").strip()
            if rendered:
                lines.append(f"{indent}{k}: {rendered}")
        return "\n".join(lines)
    return ""


def compose_instructions(personality: str | None, full_config: dict[str, Any]) -> str:
    """The agent's system prompt: the personality, then the behaviour-shaping config sections."""
    parts: list[str] = []
    if personality:
        parts.append(personality.strip())
    used: set[str] = set()
    index = {_norm(k): k for k in full_config if isinstance(k, str)}
    for title, names in _BEHAVIOUR_KEYS:
        sections = []
        for name in names:
            key = index.get(name)
            if key is None or key in used:
                continue
            used.add(key)
            rendered = _render(full_config[key]).strip()
            if rendered and rendered != (personality or "").strip():
                sections.append(rendered)
        if sections:
            parts.append(f"## {title}\n" + "\n".join(sections))
    return "\n\n".join(parts)


def _voice(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, dict):
        v = _get(value, "id", "voiceId", "name")
        return str(v) if isinstance(v, str | int) else None
    return None


def _scalar_id(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int) and str(value) else None


def parse_persona_payload(data: Any) -> Persona:
    """The persona for the payload's chosen campaign and voice agent.

    Raises `PersonaPayloadError` for garbage and `PersonaNotInPayload` when no persona is mapped.
    """
    if not isinstance(data, dict):
        raise PersonaPayloadError(f"payload is a {type(data).__name__}, not an object")
    campaigns_raw = _get(data, "campaigns")
    if campaigns_raw is not None and not isinstance(campaigns_raw, list):
        raise PersonaPayloadError("campaigns is not a list")
    campaign: dict[str, Any] = {}
    agent: dict[str, Any] = {}
    persona: dict[str, Any] = {}
    for c in _pick(campaigns_raw or []):
        agents = _get(c, "voiceAgents", "voiceAgent", "agents")
        if isinstance(agents, dict):
            agents = [agents]
        for a in _pick(agents if isinstance(agents, list) else []):
            p = _get(a, "persona")
            if isinstance(p, dict):
                campaign, agent, persona = c, a, p
                break
        if persona:
            break
    layers = [persona, agent, campaign, data]

    def first(*names: str) -> Any:
        for layer in layers:
            value = _get(layer, *names)
            if value is not None:
                return value
        return None

    personality = _text(first("personality"))
    full_config = first("fullConfig")
    if full_config is not None and not isinstance(full_config, dict):
        raise PersonaPayloadError("fullConfig is not an object")
    full_config = full_config or {}
    if not persona and not personality and not full_config:
        raise PersonaNotInPayload("no campaign maps a voice agent persona")
    instructions = compose_instructions(personality, full_config)
    if not instructions:
        raise PersonaPayloadError("persona has neither personality nor behaviour config")
    welcome, closing = _messages(first("messages"))
    if welcome is None:
        welcome = _text(first("welcomeMessage", "greeting"))
    if closing is None:
        closing = _text(first("closingMessage"))
    # Speech settings may sit in fullConfig as well as on the persona or its voice agent.
    layers.insert(1, full_config)
    language = first("language")
    return Persona(
        instructions=instructions,
        persona_id=_scalar_id(_get(persona, "id", "_id", "personaId") or _get(agent, "personaId")),
        name=_text(_get(persona, "name", "personaName") or _get(agent, "name")),
        welcome=welcome,
        closing=closing,
        voice=_voice(first("voice", "voiceId", "ttsVoice")),
        language=language.strip() if isinstance(language, str) and language.strip() else None,
        config=full_config,
    )
