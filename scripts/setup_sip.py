"""Create or update the inbound SIP trunk and dispatch rule on livekit-server (idempotent).

Usage: .venv/bin/python scripts/setup_sip.py [--dry-run] [--url URL]

Reads LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET (the dev values of config/livekit.yaml
when unset) and, for a softphone that authenticates, SIP_AUTH_USERNAME and SIP_AUTH_PASSWORD.
Exit codes: 0 done, 2 bad data file, 3 server unreachable, 4 server without Redis, 5 rejected.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.env import read_environment
from provisioning.server_config import DEV_API_KEY, DEV_API_SECRET
from provisioning.sip_setup import (
    RULE_FILE,
    TRUNK_FILE,
    SetupError,
    SetupResult,
    describe_wanted,
    load_rule,
    load_trunk,
    setup_sip,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = read_environment()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default=env.get("LIVEKIT_URL", "http://127.0.0.1:7880"))
    p.add_argument("--api-key", default=env.get("LIVEKIT_API_KEY", DEV_API_KEY))
    p.add_argument("--api-secret", default=env.get("LIVEKIT_API_SECRET", DEV_API_SECRET))
    p.add_argument("--trunk-file", type=Path, default=TRUNK_FILE)
    p.add_argument("--rule-file", type=Path, default=RULE_FILE)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per API call")
    p.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    args = p.parse_args(argv)
    args.auth_username = env.get("SIP_AUTH_USERNAME") or None
    args.auth_password = env.get("SIP_AUTH_PASSWORD") or None
    return args


async def run(args: argparse.Namespace) -> SetupResult:
    if args.dry_run:
        trunk = load_trunk(
            args.trunk_file, auth_username=args.auth_username, auth_password=args.auth_password
        )
        print(describe_wanted(trunk, load_rule(args.rule_file)))
    return await setup_sip(
        args.url,
        args.api_key,
        args.api_secret,
        trunk_file=args.trunk_file,
        rule_file=args.rule_file,
        auth_username=args.auth_username,
        auth_password=args.auth_password,
        dry_run=args.dry_run,
        call_timeout=args.timeout,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = asyncio.run(run(args))
    except SetupError as e:
        print(f"setup_sip: error: {e}", file=sys.stderr)
        return e.exit_code
    prefix = "would " if args.dry_run else ""
    for change in result.changes:
        print(prefix + change.describe())
    print(f"trunk_id={result.trunk_id or '-'} rule_id={result.rule_id or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
