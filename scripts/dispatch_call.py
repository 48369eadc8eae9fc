"""Dispatch a test call for a number by hand: see operator_tools/manual_dispatch.py."""

from __future__ import annotations

from operator_tools.manual_dispatch import main

if __name__ == "__main__":
    raise SystemExit(main())
