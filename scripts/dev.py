"""Run the service on its embedded default: a local dev livekit-server on 127.0.0.1:7880 whose
webhooks go to the dispatcher on 127.0.0.1:8080, personas from `user-mapping/`, in-memory cache.

Usage: scripts/dev.sh  (installs what is missing, then runs this until Ctrl-C)
"""

from __future__ import annotations

import argparse
import os
import signal
import time

from devstack.agent_worker import AgentWorker, start_agent_worker
from devstack.processes import ROOT, ManagedProcess, tail
from devstack.services import start_dispatcher, start_livekit_server
from provisioning.server_config import DEV_API_KEY, DEV_API_SECRET


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8080, help="dispatcher port")
    parser.add_argument(
        "--persona-api",
        default=os.environ.get("PERSONA_API_BASE", "off"),
        help="persona API base URL, or 'off' for file personas only (default)",
    )
    parser.add_argument(
        "--agent-stack",
        default=os.environ.get("AGENT_STACK", "fake"),
        choices=("fake", "openai-realtime", "pipeline", "none"),
        help="the agent worker's model stack; 'fake' (default) speaks the persona's lines as a "
        "tone and needs no API key, 'none' starts no agent",
    )
    args = parser.parse_args()
    logs = ROOT / "var" / "log" / "dev"
    dispatcher_url = f"http://127.0.0.1:{args.port}"
    livekit = start_livekit_server(
        webhook_urls=(dispatcher_url + "/webhooks/livekit",),
        log_path=logs / "livekit-server.log",
        fixed_ports=True,
    )
    env = {
        "LIVEKIT_URL": livekit.ws_url,
        "LIVEKIT_API_KEY": os.environ.get("LIVEKIT_API_KEY", DEV_API_KEY),
        "LIVEKIT_API_SECRET": os.environ.get("LIVEKIT_API_SECRET", DEV_API_SECRET),
        "PERSONA_API_BASE": args.persona_api,
    }
    # The operator tools read the same settings from this file (`--env-file`).
    env_file = ROOT / "var" / "dev.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    processes: list[ManagedProcess] = []
    worker: AgentWorker | None = None
    try:
        processes.append(start_dispatcher(args.port, env, logs / "dispatcher.log"))
        if args.agent_stack != "none":
            worker = start_agent_worker(
                livekit,
                logs,
                AGENT_STACK=args.agent_stack,
                AGENT_MAX_JOBS="0",
                TRANSCRIPT_PATH=str(ROOT / "conversations" / "transcripts.jsonl"),
            )
        print(
            f"livekit-server  {livekit.ws_url}  (key {DEV_API_KEY}, secret {DEV_API_SECRET})\n"
            f"dispatcher      {dispatcher_url}/webhooks/livekit  persona API: {args.persona_api}\n"
            f"agent           {args.agent_stack} stack, "
            f"{'registered' if worker else 'not started'}\n"
            f"logs            {logs}/\n"
            f"Try: .venv/bin/python -m scripts.dispatch_call --env-file {env_file} "
            "--number 8655701159\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        signal.signal(signal.SIGTERM, _interrupt)
        while all(p.alive() for p in processes) and livekit.process and livekit.process.alive():
            time.sleep(0.5)
        for p in processes:
            if not p.alive():
                print(f"{p.name} exited; its log ends with:\n{tail(p.log_path)}")
    except KeyboardInterrupt:
        pass
    finally:
        if worker is not None:
            worker.stop()
        for p in processes:
            p.stop()
        livekit.stop()


if __name__ == "__main__":
    main()
