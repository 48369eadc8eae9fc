"""A real MongoDB wire-protocol server for the call-store tests: FerretDB v1 over an embedded
SQLite store, built by scripts/install_deps.sh (scripts/build_ferretdb.sh) and started here on a
free loopback port, as the harness starts Redis. Its data lives in a directory of its own that
outlives a kill, so a test can stop it hard and start it again on the same port."""

from __future__ import annotations

import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from devstack.processes import ROOT, ManagedProcess, free_port, require_binary
from provisioning.server_config import FERRETDB_VERSION


def mongo_ping(uri: str) -> bool:
    """Whether a MongoDB server answers `ping` at `uri` (a readiness probe)."""
    try:
        client: MongoClient[dict[str, object]]
        with MongoClient(uri, serverSelectionTimeoutMS=500, connectTimeoutMS=500) as client:
            return bool(client.admin.command("ping").get("ok"))
    except PyMongoError:
        return False


@dataclass
class FerretDB:
    """`ferretdb --handler=sqlite` on 127.0.0.1:`port`, its SQLite files in `data_dir`."""

    port: int
    data_dir: Path
    log_path: Path
    process: ManagedProcess | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 30.0) -> FerretDB:
        binary = require_binary("ferretdb", FERRETDB_VERSION)
        argv = [
            str(binary),
            "--handler=sqlite",
            f"--sqlite-url=file:{self.data_dir}/",
            f"--listen-addr=127.0.0.1:{self.port}",
            "--state-dir=-",
            "--telemetry=disable",
            "--debug-addr=-",
        ]
        self.process = ManagedProcess(
            "ferretdb", argv, self.log_path, ready=lambda: mongo_ping(self.uri)
        )
        self.process.start(timeout)
        return self

    def kill(self) -> None:
        """SIGKILL: the server dies mid-whatever, as a crashed database does."""
        if self.process is not None:
            self.process.stop_signal = signal.SIGKILL
            self.process.stop(grace_s=5)
            self.process.stop_signal = signal.SIGTERM

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def start_ferretdb(log_path: Path | None = None) -> FerretDB:
    """FerretDB on a free loopback port with an empty store of its own (`stop_ferretdb` removes
    it)."""
    data_dir = Path(tempfile.mkdtemp(prefix="ferretdb-"))
    log = log_path or ROOT / "var" / "log" / "ferretdb.log"
    try:
        return FerretDB(free_port(), data_dir, log).start()
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise


def stop_ferretdb(db: FerretDB) -> None:
    db.stop()
    shutil.rmtree(db.data_dir, ignore_errors=True)
