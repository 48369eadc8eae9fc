"""Read calls back from the dispatcher's and agent's JSON-line logs: `persona-logs` from a checkout.

Usage: python scripts/inspect_logs.py {calls,show,stats} ... (see --help)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from operator_tools.log_inspector_cli import main

if __name__ == "__main__":
    sys.exit(main())
