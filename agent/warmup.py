"""Side-effect module: what livekit-agents builds lazily at a process's first call, built once.

The worker lists this module for its forkserver to import (`agent.worker.new_agent_server`), so
each job process is forked with it done instead of doing it while its caller rings: a job
process serves one call, so every call would pay it. Fork-safe, like livekit-agents' own
`ipc._preload`: imports and pure-Python tables only; no thread, event loop or I/O (an
`AgentSession` is not built here, as building one creates an event loop).
"""

from __future__ import annotations

import importlib

from livekit.agents import llm
from livekit.agents.tokenize import basic
from livekit.agents.utils import http_context

# Modules livekit-agents imports inside a call, so in every job process: the session's tool
# set-up at its start (~5 ms), the session report at its end.
IMPORTED_IN_A_CALL = ("livekit.agents.llm.async_toolset", "livekit.agents.voice.report")
for _module in IMPORTED_IN_A_CALL:
    importlib.import_module(_module)

# The hyphenation patterns the transcript synchroniser uses on the agent's first line: ~100 ms
# of CPU to build on an idle machine, on the job's event loop while its first audio is due.
basic.hyphenate_word("warming")

# Pydantic's first validation of chat messages (the session's instructions, the welcome line).
llm.ChatContext.empty().add_message(role="system", content="warming")

# The session's first configuration record: pydantic inspects the signature of its private
# attribute's default factory on the first instance of each process, then keeps the answer.
llm.AgentConfigUpdate(instructions="warming", tools_added=[])

# The TLS context of a job's http session, parsed from the whole CA bundle: ~40 ms of CPU. Every
# job pays it, as livekit-agents builds the session at the job's end only to close it; the
# context is cached per process (`functools.cache`), so building it here shares it with all.
# livekit-agents has no public call for it: its private builder is looked up, and skipped if it
# moved (the warm-up is an optimisation); tests/agent/test_warmup.py fails loudly when it does.
SSL_CONTEXT_BUILDER = "_create_ssl_context"
_build_ssl_context = getattr(http_context, SSL_CONTEXT_BUILDER, None)
if _build_ssl_context is not None:
    _build_ssl_context()
