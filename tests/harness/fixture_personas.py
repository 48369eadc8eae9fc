"""What the persona files of tests/fixtures/personas/ (and user-mapping/) say, copied from them as
literal strings: tests of the whole chain state the persona the caller must get independently of
`parse_persona_payload`, the code under test."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FixturePersona:
    persona_id: str | None
    name: str | None
    personality: str
    welcome: str | None
    # Lines of the file's `fullConfig` that shape behaviour, which the instructions must carry.
    config_lines: tuple[str, ...] = ()

    def matches_instructions(self, instructions: str) -> bool:
        """Whether `instructions` are this persona's: its personality first, then its config."""
        return instructions.startswith(self.personality) and all(
            line in instructions for line in self.config_lines
        )


# num_8655701159.json (also user-mapping/num_8655701159.json)
PRIYA = FixturePersona(
    persona_id="prs_3001",
    name="Priya",
    personality=(
        "You are Priya, a warm and patient home-loan advisor at Xeny Finance. You speak clearly,"
        " listen carefully, and keep every answer under three sentences."
    ),
    welcome=(
        "Namaste! This is Priya from Xeny Finance. Is this a good time to talk about your home"
        " loan?"
    ),
    config_lines=(
        "Home-loan advisor",
        "Find out whether the caller wants a callback from a loan officer and at what time.",
        "Never quote an interest rate; offer a callback instead.",
        "Confirm the caller's preferred callback time before ending the call.",
    ),
)

# num_9000000002.json: the active campaign's active voice agent
MEERA = FixturePersona(
    persona_id="prs_festive",
    name="Meera",
    personality=(
        "You are Meera from Xeny Bank, telling customers about the festive credit card offer."
    ),
    welcome="Hello! Meera here from Xeny Bank with a festive offer for you.",
    config_lines=(
        "Explain the festive offer and ask whether the caller wants the card.",
        "Mention the zero joining fee.",
        "Do not promise a credit limit.",
    ),
)

# num_9000000003.json: a personality on the campaign, nothing else
ASHA = FixturePersona(
    persona_id=None,
    name="Asha",
    personality="You are a courteous assistant for Xeny's customer support line.",
    welcome=None,
)

BY_NUMBER = {"8655701159": PRIYA, "9000000002": MEERA, "9000000003": ASHA}


def one_number_persona(number: str, voice_agent: str | None = None) -> dict[str, object]:
    """A CRM payload (the API's JSON shape) whose persona belongs to `number` alone: id
    `prs_<number>`, welcome `Hello caller <last four>.`; for tests with many distinct callers.
    `voice_agent`: the voice agent's `name` (which agent answers)."""
    named = {} if voice_agent is None else {"name": voice_agent}
    return {
        "mobileNo": number,
        "campaigns": [
            {
                "status": "active",
                "voiceAgents": [
                    {
                        **named,
                        "persona": {
                            "_id": f"prs_{number}",
                            "name": f"Agent {number[-4:]}",
                            "personality": f"You only serve the caller {number}.",
                            "messages": {"welcome": f"Hello caller {number[-4:]}."},
                        },
                    }
                ],
            }
        ],
    }
