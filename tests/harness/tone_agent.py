"""Run the native floor's bare agent as a worker process (see `tests.harness.native_floor`):

AGENT_NAME=floor-tone AGENT_STACK=fake python -m tests.harness.tone_agent
"""

from __future__ import annotations

import sys

from agent.__main__ import main
from tests.harness.native_floor import floor_server

if __name__ == "__main__":
    sys.exit(main(floor_server))
