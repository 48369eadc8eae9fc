"""The `fake` model stack: a recording LLM and a tone TTS, for tests and local runs offline.

Both append what they are asked to a JSON-lines file (setting `AGENT_FAKE_LLM_LOG`) so that a test
in another process can read every request; in-process tests read `RecordingLLM.requests`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from livekit.agents import APIConnectOptions, get_job_context, llm, tts, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

from agent.transcript import append_jsonl

FAKE_REPLY = "I am a fake model; tell me more."
HANG_UP_WORDS = ("bye", "goodbye", "hang up")
TRANSFER_WORDS = ("human", "a person", "transfer me")


@dataclass(frozen=True)
class FakeReply:
    """What the fake LLM answers: text, or a call of one tool."""

    text: str = ""
    tool: str | None = None
    arguments: str = "{}"


def scripted_reply(chat_ctx: llm.ChatContext) -> FakeReply:
    """Transfers the call when the caller's last words ask for a person, ends it when they say
    goodbye, else a fixed line."""
    last_user = next((m for m in reversed(chat_ctx.messages()) if m.role == "user"), None)
    text = (last_user.text_content or "").lower() if last_user else ""
    if any(w in text for w in TRANSFER_WORDS):
        return FakeReply(tool="transfer_call")
    if any(w in text for w in HANG_UP_WORDS):
        return FakeReply(tool="end_call")
    return FakeReply(text=FAKE_REPLY)


class FirstTool:
    """A `reply_fn` whose first answer calls `tool`, then as `scripted_reply`: how a test with
    no speech recognition (a real call from sipp) has the agent use a tool."""

    def __init__(self, tool: str) -> None:
        self.tool = tool
        self.called = False

    def __call__(self, chat_ctx: llm.ChatContext) -> FakeReply:
        if self.called:
            return scripted_reply(chat_ctx)
        self.called = True
        return FakeReply(tool=self.tool)


def _job_room() -> str | None:
    ctx = get_job_context(required=False)
    return ctx.job.room.name if ctx is not None else None


def describe_request(chat_ctx: llm.ChatContext, tools: list[llm.Tool]) -> dict[str, Any]:
    """One LLM request as plain data: its system prompt, every message and the tool names."""
    messages = [
        {"role": m.role, "text": m.text_content or "", "id": m.id} for m in chat_ctx.messages()
    ]
    system = next((m["text"] for m in messages if m["role"] in ("system", "developer")), None)
    return {
        "kind": "llm",
        "room": _job_room(),
        "pid": os.getpid(),
        "instructions": system,
        "messages": messages,
        "tools": sorted(t.id for t in tools),
    }


class RecordingLLM(llm.LLM[Any]):
    """An LLM that records each request and answers from `reply_fn` (default `scripted_reply`)."""

    def __init__(
        self,
        *,
        record_path: Path | None = None,
        reply_fn: Callable[[llm.ChatContext], FakeReply] = scripted_reply,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.record_path = record_path
        self.reply_fn = reply_fn
        self.extra = extra or {}
        self.requests: list[dict[str, Any]] = []

    @property
    def model(self) -> str:
        return "recording-fake"

    @property
    def provider(self) -> str:
        return "fake"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        tools = tools or []
        record = {**describe_request(chat_ctx, tools), **self.extra}
        self.requests.append(record)
        if self.record_path is not None:
            append_jsonl(self.record_path, record)
        return _ReplyStream(
            self,
            reply=self.reply_fn(chat_ctx),
            chat_ctx=chat_ctx,
            tools=tools,
            conn_options=conn_options,
        )


class _ReplyStream(llm.LLMStream):
    def __init__(
        self,
        fake: RecordingLLM,
        *,
        reply: FakeReply,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
    ) -> None:
        super().__init__(fake, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._reply = reply

    async def _run(self) -> None:
        calls = []
        if self._reply.tool is not None:
            calls.append(
                llm.FunctionToolCall(
                    name=self._reply.tool,
                    arguments=self._reply.arguments,
                    call_id=utils.shortuuid("call_"),
                )
            )
        self._event_ch.send_nowait(
            llm.ChatChunk(
                id=utils.shortuuid("fake_"),
                delta=llm.ChoiceDelta(
                    role="assistant", content=self._reply.text or None, tool_calls=calls
                ),
            )
        )


class ToneTTS(tts.TTS[Any]):
    """Speaks every line as a quiet 440 Hz tone (about 20 ms per character, at most 1.5 s).

    Real audio frames, so a session in a room publishes a track whose frames a test can receive.
    """

    SAMPLE_RATE = 24000

    def __init__(
        self,
        *,
        record_path: Path | None = None,
        voice: str | None = None,
        language: str | None = None,
        seconds_per_char: float = 0.02,
        max_seconds: float = 1.5,
    ) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=self.SAMPLE_RATE,
            num_channels=1,
        )
        self.record_path = record_path
        self.voice = voice
        self.language = language
        self.seconds_per_char = seconds_per_char
        self.max_seconds = max_seconds
        self.spoken: list[str] = []

    @property
    def model(self) -> str:
        return "tone-fake"

    @property
    def provider(self) -> str:
        return "fake"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        self.spoken.append(text)
        if self.record_path is not None:
            append_jsonl(
                self.record_path,
                {
                    "kind": "tts",
                    "room": _job_room(),
                    "pid": os.getpid(),
                    "text": text,
                    "voice": self.voice,
                    "language": self.language,
                },
            )
        return _ToneStream(tts=self, input_text=text, conn_options=conn_options)

    def tone(self, text: str) -> bytes:
        seconds = min(max(len(text) * self.seconds_per_char, 0.1), self.max_seconds)
        return tone_pcm(seconds, self.SAMPLE_RATE)


def tone_pcm(seconds: float, sample_rate: int = ToneTTS.SAMPLE_RATE) -> bytes:
    """A quiet 440 Hz tone, 16-bit mono PCM: what the fake TTS speaks a line as."""
    t = np.arange(int(sample_rate * seconds), dtype=np.float32) / sample_rate
    wave = 0.2 * np.sin(2 * math.pi * 440.0 * t) * 32767
    return wave.astype(np.int16).tobytes()


class _ToneStream(tts.ChunkedStream):
    def __init__(self, *, tts: ToneTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._tone_tts = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id=utils.shortuuid("tone_"),
            sample_rate=ToneTTS.SAMPLE_RATE,
            num_channels=1,
            mime_type="audio/pcm",
        )
        output_emitter.push(self._tone_tts.tone(self.input_text))
        output_emitter.flush()
