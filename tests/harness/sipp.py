"""Run sipp (the real SIP client that plays Zoiper in our tests) and read back what happened.

`SippRun` starts `sipp_scenarios/uac_call.xml` against a livekit-sip address with one injection
line per call (caller; dialled number), and parses sipp's files when it ends: the overall
statistics (-trace_stat) and, per call, the INVITE -> 200 OK time from the scenario's log lines.
"""

from __future__ import annotations

import csv
import signal
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devstack.processes import ManagedProcess, free_port, require_system_binary

SCENARIOS = Path(__file__).resolve().parent / "sipp_scenarios"
SCENARIO = SCENARIOS / "uac_call.xml"
CALLERS_CSV = Path(__file__).resolve().parent / "sipp_scenarios" / "callers.csv"
# Shipped by Debian's sip-tester; uac_call.xml plays it after ACK (236 packets: ~4.7 s of audio).
RTP_PCAP = Path("/usr/share/sip-tester/g711a.pcap")
TEST_CALLER = "8655701159"


@dataclass(frozen=True)
class Call:
    """One line of the injection file: who calls, and which number they dial."""

    caller: str
    dialled: str


@dataclass(frozen=True)
class CallTiming:
    """One call as the scenario logged it (sipp's millisecond clock)."""

    caller: str
    call_id: str
    invite_ms: int
    answered_ms: int | None = None
    ended_ms: int | None = None

    @property
    def ring_ms(self) -> int | None:
        """INVITE sent -> 200 OK received."""
        return None if self.answered_ms is None else self.answered_ms - self.invite_ms


@dataclass
class SippResult:
    returncode: int
    stats: dict[str, str]
    calls: list[CallTiming]
    output: str
    errors: str = ""
    workdir: Path | None = None

    def stat(self, name: str) -> int:
        """An integer counter of the final statistics line, e.g. `SuccessfulCall(C)`."""
        return int(self.stats.get(name, "0") or 0)

    @property
    def successful(self) -> int:
        return self.stat("SuccessfulCall(C)")

    @property
    def failed(self) -> int:
        return self.stat("FailedCall(C)")

    def ring_times_ms(self) -> list[int]:
        return [c.ring_ms for c in self.calls if c.ring_ms is not None]

    def summary(self) -> str:
        """A few lines to put in an assertion message."""
        tail = "\n".join(self.output.strip().splitlines()[-15:])
        return (
            f"sipp rc={self.returncode} successful={self.successful} failed={self.failed} "
            f"answered={len(self.ring_times_ms())}/{len(self.calls)}\n{self.errors[-2000:]}\n{tail}"
        )


PLAY_AUDIO = f'<exec play_pcap_audio="{RTP_PCAP}"/>'


def scenario_text(scenario: Path = SCENARIO, play_audio: bool = True) -> str:
    """A scenario of sipp_scenarios/ (uac_call.xml by default), without its RTP when not
    `play_audio`."""
    text = scenario.read_text()
    if play_audio:
        return text
    if PLAY_AUDIO not in text:
        raise RuntimeError(f"{scenario.name} no longer plays {RTP_PCAP}")
    return text.replace(PLAY_AUDIO, "")


def write_injection(path: Path, calls: Sequence[Call]) -> Path:
    """sipp's -inf file: SEQUENTIAL, then `caller;dialled;` per call (field0, field1)."""
    lines = ["SEQUENTIAL"] + [f"{c.caller};{c.dialled};" for c in calls]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_injection(path: Path = CALLERS_CSV) -> list[Call]:
    """The calls of an injection file (the committed one by default)."""
    rows = path.read_text().splitlines()[1:]
    return [Call(r.split(";")[0], r.split(";")[1]) for r in rows if r.strip()]


def parse_stat_file(path: Path) -> dict[str, str]:
    """The last line of a -trace_stat file, keyed by its header."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def parse_log_lines(text: str) -> list[CallTiming]:
    """The scenario's `invite;caller;call_id;ms` / `answered;...` / `ended;...` lines, per call."""
    found: dict[str, dict[str, str | int]] = {}
    for line in text.splitlines():
        parts = line.strip().split(";")
        if len(parts) != 4 or parts[0] not in ("invite", "answered", "ended"):
            continue
        step, caller, call_id, ms = parts
        call = found.setdefault(call_id, {"caller": caller})
        call[step] = int(ms)
    timings = []
    for call_id, c in found.items():
        if "invite" not in c:
            continue
        answered = c.get("answered")
        ended = c.get("ended")
        timings.append(
            CallTiming(
                caller=str(c["caller"]),
                call_id=call_id,
                invite_ms=int(c["invite"]),
                answered_ms=None if answered is None else int(answered),
                ended_ms=None if ended is None else int(ended),
            )
        )
    return sorted(timings, key=lambda t: t.invite_ms)


@dataclass
class SippRun:
    """One sipp process placing `calls` to livekit-sip at `host:port`, started in the background.

    `concurrent` calls at most at once, started at `rate` per second; each call plays RTP for
    `rtp_seconds` after the answer, then hangs up (`play_audio=False`: the call stays silent for
    that time; then sipp sends nothing to the media address livekit-sip announces, which is the
    host's LAN address when livekit-sip listens on every interface). `timeout` bounds the whole
    run (sipp's own -timeout, and the wait here). `nice` runs sipp at that scheduling priority: a
    real phone is another device, but sipp shares the machine, and starved of CPU in a burst its
    watchdog trips and it misses the 200 OK it should ACK (negative values need root).
    """

    host: str
    port: int
    calls: Sequence[Call]
    concurrent: int = 1
    rate: float = 10.0
    rtp_seconds: float = 5.0
    timeout: float = 240.0
    workdir: Path | None = None
    nice: int | None = None
    play_audio: bool = True
    # Another call flow of sipp_scenarios/ (a busy answer expected, a BYE from our side...).
    scenario: Path = SCENARIO
    process: ManagedProcess | None = None
    _started: float = 0.0
    _out: Path | None = field(default=None, repr=False)

    def start(self) -> SippRun:
        sipp = require_system_binary("sipp", package="sip-tester")
        if not RTP_PCAP.is_file():
            raise RuntimeError(f"{RTP_PCAP} is missing: it comes with Debian's sip-tester")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="sipp-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        scenario = self.workdir / self.scenario.name
        scenario.write_text(scenario_text(self.scenario, self.play_audio))
        inf = write_injection(self.workdir / "calls.csv", self.calls)
        self._out = self.workdir / "sipp.out"
        # Only loopback: -i and -mi pin the SIP and RTP addresses sipp announces and binds.
        cmd = [
            sipp,
            f"{self.host}:{self.port}",
            "-sf", str(scenario),
            "-inf", str(inf),
            "-m", str(len(self.calls)),
            "-l", str(self.concurrent),
            "-r", f"{self.rate:g}",
            "-i", "127.0.0.1",
            "-mi", "127.0.0.1",
            "-p", str(free_port(socket.SOCK_DGRAM)),
            "-mp", str(free_port(socket.SOCK_DGRAM)),
            "-d", str(int(self.rtp_seconds * 1000)),
            "-timeout", f"{int(self.timeout)}s",
            "-timeout_error",
            "-max_recv_loops", "1000",
            "-aa",
            "-nostdin",
            "-trace_stat", "-stf", "stats.csv", "-fd", "1",
            "-trace_logs", "-log_file", "calls.log",
            "-trace_err", "-error_file", "errors.log",
        ]  # fmt: skip
        if self.nice is not None:
            cmd = ["nice", "-n", str(self.nice), *cmd]
        self._out.unlink(missing_ok=True)
        self.process = ManagedProcess(
            "sipp", cmd, self._out, cwd=self.workdir, stop_signal=signal.SIGKILL, stop_grace_s=5
        ).start()
        self._started = time.monotonic()
        return self

    def wait(self) -> SippResult:
        """Wait for sipp to end (killing it past `timeout` + 30 s) and parse its files."""
        remaining = self.timeout + 30 - (time.monotonic() - self._started)
        self._process().wait(max(remaining, 1))
        return self.result()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def call_id(self, n: int = 1) -> str:
        """The SIP Call-ID of the `n`th call (1-based): sipp's default `[call_id]` pattern."""
        return f"{n}-{self._process().pid}@127.0.0.1"

    def _process(self) -> ManagedProcess:
        if self.process is None:
            raise RuntimeError("sipp was not started")
        return self.process

    def result(self) -> SippResult:
        proc = self._process().proc
        assert proc is not None
        assert self.workdir is not None
        assert self._out is not None
        stat_file = self.workdir / "stats.csv"
        log_file = self.workdir / "calls.log"
        err_file = self.workdir / "errors.log"
        return SippResult(
            returncode=proc.returncode if proc.returncode is not None else -1,
            stats=parse_stat_file(stat_file) if stat_file.is_file() else {},
            calls=parse_log_lines(log_file.read_text()) if log_file.is_file() else [],
            output=self._out.read_text(errors="replace"),
            errors=err_file.read_text(errors="replace") if err_file.is_file() else "",
            workdir=self.workdir,
        )


def run_sipp(host: str, port: int, calls: Sequence[Call], **kwargs: object) -> SippResult:
    """Place `calls` and wait for the result (see `SippRun` for the options)."""
    return SippRun(host, port, calls, **kwargs).start().wait()  # type: ignore[arg-type]
