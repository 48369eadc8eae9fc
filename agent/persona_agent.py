"""The voice agent of one call: the persona's instructions, its welcome line, `end_call`, and
`transfer_call` when the persona names a human to transfer to."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from livekit.agents import Agent, RunContext, function_tool, llm
from livekit.agents.voice import SpeechHandle

from agent.transcript import TranscriptLog
from contract.metadata import Persona
from contract.transfer import DEFAULT_TRANSFER_FAILED_LINE, DEFAULT_TRANSFER_LINE
from telemetry.agent_metrics import count_announcement, count_transfer
from telemetry.logs import get_logger

log = get_logger(__name__)

GREETING_INSTRUCTIONS = "Greet the caller in one short sentence and ask how you can help."


@dataclass(frozen=True)
class TransferOutcome:
    """What became of a transfer: done (livekit-sip hangs our leg up), or why not."""

    ok: bool
    detail: str


class CallControl(Protocol):
    """How the agent ends the call it is in, or hands it to a human."""

    async def hang_up(self, reason: str) -> None: ...

    async def transfer(self, to: str) -> TransferOutcome: ...


TRANSFER_TOOL_DESCRIPTION = (
    "Transfer the phone call to a human colleague. Call this when the caller asks to speak to a "
    "person, a human or an agent, or when you cannot help them further."
)


class PersonaAgent(Agent):
    """An agent whose every word comes from the persona resolved before dispatch."""

    def __init__(
        self,
        persona: Persona,
        *,
        call: CallControl,
        transcript: TranscriptLog,
        announce: str | None = None,
    ) -> None:
        tools: list[llm.Tool | llm.Toolset] = (
            [
                function_tool(
                    self._transfer_call,
                    name="transfer_call",
                    description=TRANSFER_TOOL_DESCRIPTION,
                )
            ]
            if persona.transfer_to
            else []
        )
        super().__init__(instructions=persona.instructions, tools=tools)
        self.persona = persona
        self._transferring: asyncio.Task[TransferOutcome] | None = None
        # A caller the CRM does not know, under UNKNOWN_CALLER_POLICY=announce: say this, hang up.
        self.announce = announce
        self._call = call
        self._transcript = transcript
        self._ending: asyncio.Task[None] | None = None

    async def on_enter(self) -> None:
        if self.announce is not None:
            # Verbatim and whole, then the line is cut: no conversation with an unknown caller.
            line = self.say_whole(self.announce)
            self._ending = asyncio.create_task(self._announce_then_hang_up(line), name="announce")
            return
        if self.persona.welcome:
            # A caller's "hello?" at pick-up must not cut the persona's first words.
            self.say_whole(self.persona.welcome)
        else:
            self.session.generate_reply(instructions=GREETING_INSTRUCTIONS)

    def say_whole(self, text: str) -> SpeechHandle:
        """Speak `text` with the caller's audio kept out until it has played out.

        `allow_interruptions=False` alone does not hold on every stack: with a realtime model
        doing server-side turn detection (the default `openai-realtime` stack) livekit-agents
        drops it with a warning, and the model cuts the line at the caller's first sound. With
        the session's input audio off, no stack's turn detection hears the caller until the line
        is done; then it is turned back on.
        """
        session = self.session
        mute = session.input.audio is not None and session.input.audio_enabled
        if mute:
            session.input.set_audio_enabled(False)
        handle = session.say(text, allow_interruptions=False)
        if mute:

            def unmute(_: SpeechHandle) -> None:
                if session.input.audio is not None:  # gone when the session closed first
                    session.input.set_audio_enabled(True)

            handle.add_done_callback(unmute)
        return handle

    @function_tool
    async def end_call(self, context: RunContext[Any]) -> None:
        """End the phone call. Call this when the caller says goodbye or clearly has nothing
        more to ask; do not call it when they ask to hold, wait or be transferred."""
        if self._ending is not None:
            return None
        closing = self.say_whole(self.persona.closing) if self.persona.closing else None
        # Hanging up from inside the tool would cut the closing line (it plays after the tool
        # returns), so a task waits for its playout first.
        self._ending = asyncio.create_task(
            self._hang_up_after(closing, "end_call"), name="end_call"
        )
        return None

    async def _hang_up_after(self, last_line: SpeechHandle | None, reason: str) -> None:
        if last_line is not None:
            await last_line.wait_for_playout()
        log.info(
            "call.ending",
            room=self._transcript.room,
            call_id=self._transcript.call_id,
            reason=reason,
        )
        await self._call.hang_up(reason)

    async def _announce_then_hang_up(self, line: SpeechHandle) -> None:
        await line.wait_for_playout()
        count_announcement("cut" if line.interrupted else "spoken")
        await self._hang_up_after(None, "announce")

    async def _transfer_call(self, context: RunContext[Any]) -> None:
        # None, as end_call: no reply is generated after the tool; the lines are the agent's own.
        if self._transferring is not None and not self._transferring.done():
            return None
        line = self.say_whole(self.persona.transfer_line or DEFAULT_TRANSFER_LINE)
        # As with end_call: the line plays after the tool returns, so a task waits for it.
        self._transferring = asyncio.create_task(self._transfer_after(line), name="transfer_call")
        return None

    async def _transfer_after(self, line: SpeechHandle) -> TransferOutcome:
        await line.wait_for_playout()
        to = self.persona.transfer_to
        assert to is not None, "the tool exists only with a target"
        outcome = await self._call.transfer(to)
        fields = {"room": self._transcript.room, "call_id": self._transcript.call_id, "to": to}
        count_transfer("transferred" if outcome.ok else "failed")
        if outcome.ok:
            log.info("call.transferred", **fields)
            self._transcript.write("call.transferred", to=to)
            return outcome
        log.warning("call.transfer_failed", detail=outcome.detail, **fields)
        self._transcript.write("call.transfer_failed", to=to, detail=outcome.detail)
        # The caller is still on the line with us: say so, and the conversation goes on.
        self.say_whole(DEFAULT_TRANSFER_FAILED_LINE)
        return outcome

    @property
    def transferring(self) -> asyncio.Task[TransferOutcome] | None:
        """The transfer in progress once `transfer_call` ran (tests await it)."""
        return self._transferring

    @property
    def ending(self) -> asyncio.Task[None] | None:
        """The hang-up in progress once `end_call` ran (tests await it)."""
        return self._ending
