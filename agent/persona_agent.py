"""The voice agent of one call: the persona's instructions, its welcome line and `end_call`."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from livekit.agents import Agent, RunContext, function_tool
from livekit.agents.voice import SpeechHandle

from agent.transcript import TranscriptLog
from contract.metadata import Persona
from telemetry.logs import get_logger

log = get_logger(__name__)

GREETING_INSTRUCTIONS = "Greet the caller in one short sentence and ask how you can help."


class CallControl(Protocol):
    """How the agent ends the call it is in."""

    async def hang_up(self, reason: str) -> None: ...


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
        super().__init__(instructions=persona.instructions)
        self.persona = persona
        # A caller the CRM does not know, under UNKNOWN_CALLER_POLICY=announce: say this, hang up.
        self.announce = announce
        self._call = call
        self._transcript = transcript
        self._ending: asyncio.Task[None] | None = None

    async def on_enter(self) -> None:
        if self.announce is not None:
            # Verbatim and whole, then the line is cut: no conversation with an unknown caller.
            line = self.say_whole(self.announce)
            self._ending = asyncio.create_task(
                self._hang_up_after(line, "announce"), name="announce"
            )
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

    @property
    def ending(self) -> asyncio.Task[None] | None:
        """The hang-up in progress once `end_call` ran (tests await it)."""
        return self._ending
