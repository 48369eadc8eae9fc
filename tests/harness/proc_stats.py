"""What processes use, read from Linux's /proc: a process tree's memory, and the CPU time the
rest of the machine used meanwhile (how quiet it was while a benchmark measured)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    return text[text.rindex(")") + 2 :].split()


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def descendants(root: int) -> set[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


@dataclass(frozen=True)
class Memory:
    """A process tree's memory in MiB: PSS counts pages shared between processes once in all
    (a forked job process shares most of its pages), RSS counts them in each."""

    pss_mib: float
    rss_mib: float
    processes: int


def tree_memory(root: int) -> Memory:
    pss = rss = 0
    count = 0
    for pid in descendants(root):
        try:
            lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        count += 1
        for line in lines:
            if line.startswith("Pss:"):
                pss += int(line.split()[1])
            elif line.startswith("Rss:"):
                rss += int(line.split()[1])
    return Memory(round(pss / 1024, 1), round(rss / 1024, 1), count)


class PeakMemory:
    """Samples a process tree's memory in a thread; `peak()` is the largest PSS seen so far."""

    def __init__(self, root: int, every_s: float = 0.2) -> None:
        self._root = root
        self._every_s = every_s
        self._peak: Memory | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            m = tree_memory(self._root)
            if self._peak is None or m.pss_mib > self._peak.pss_mib:
                self._peak = m

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self) -> Memory | None:
        return self._peak


def cpu_seconds_by_process() -> dict[int, float]:
    """User + system CPU time of every process now (seconds), with that of its children that
    have exited (a job process ends with its call, before a batch does): summed over a tree,
    each CPU second counts once."""
    used = {}
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields is not None:
            used[pid] = sum(int(f) for f in fields[11:15]) / CLOCK_TICKS
    return used


def foreign_cpu_seconds(before: dict[int, float], after: dict[int, float], ours: int) -> float:
    """CPU time used between two readings by processes outside `ours`' tree (and alive at the
    second reading): the machine's other work while we measured."""
    mine = descendants(ours)
    return round(sum(t - before.get(pid, 0.0) for pid, t in after.items() if pid not in mine), 2)


def cpu_seconds_by_tree(
    before: dict[int, float], after: dict[int, float], roots: dict[str, int]
) -> dict[str, float]:
    """CPU time used between two readings by each named process tree (its root's pid)."""
    used = {}
    for name, root in roots.items():
        tree = descendants(root)
        used[name] = round(
            sum(t - before.get(pid, 0.0) for pid, t in after.items() if pid in tree), 2
        )
    return used
