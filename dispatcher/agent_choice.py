"""Which of the deployment's agents answers a call: the one the CRM's voice agent names, matched
without regard to case, else `AGENT_NAME`. Pure code: the dispatch itself is in call_setup."""

from __future__ import annotations

from dataclasses import dataclass, replace

from contract.metadata import AgentReason, PersonaMetadata


@dataclass(frozen=True)
class AgentRoster:
    """The agents a deployment runs: `default` (AGENT_NAME) and the others (AGENT_NAMES)."""

    default: str
    names: tuple[str, ...] = ()

    @property
    def all(self) -> tuple[str, ...]:
        """Every name, the default first, each once."""
        return tuple(dict.fromkeys((self.default, *self.names)))

    def choose(self, voice_agent: str | None) -> tuple[str, AgentReason]:
        """The agent for a persona whose CRM voice agent is `voice_agent`, and why."""
        if not voice_agent or not voice_agent.strip():
            return self.default, "default"
        wanted = voice_agent.strip().casefold()
        for name in self.all:
            if name.casefold() == wanted:
                return name, "crm"
        return self.default, "unknown"

    def assign(self, meta: PersonaMetadata) -> PersonaMetadata:
        """`meta` saying which agent answers and why."""
        agent, reason = self.choose(meta.persona.voice_agent)
        return replace(meta, agent=agent, agent_reason=reason)

    def agent_of(self, meta: PersonaMetadata) -> str:
        """The agent `meta` names, or the default for metadata written before agents were chosen
        (or naming one this deployment no longer runs)."""
        return meta.agent if meta.agent in self.all else self.default
