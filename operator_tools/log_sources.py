"""Where the log inspector's lines come from: files, globs, `.gz` or stdin, read or followed."""

from __future__ import annotations

import glob
import gzip
import os
import sys
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import IO, cast

from contract.errors import PersonaDispatcherError

STDIN = "-"
_CHUNK = 1 << 20


class LogSourceError(PersonaDispatcherError):
    """An input named on the command line cannot be read."""


def expand(inputs: list[str]) -> list[str]:
    """Files named or matched by globs, in the order given; `-` stands for stdin."""
    paths: list[str] = []
    for item in inputs:
        if item == STDIN:
            paths.append(item)
        elif glob.has_magic(item):
            matched = sorted(glob.glob(item))
            if not matched:
                raise LogSourceError(f"no file matches {item}")
            paths.extend(matched)
        else:
            paths.append(item)
    for path in paths:
        if path != STDIN and not Path(path).is_file():
            what = "is not a file" if Path(path).exists() else "no such file"
            raise LogSourceError(f"{path}: {what}")
    return paths


def _stdin() -> IO[bytes]:
    return sys.stdin.buffer


def _open(path: str) -> IO[bytes]:
    try:
        if path.endswith(".gz"):
            return cast(IO[bytes], gzip.open(path, "rb"))
        return open(path, "rb")
    except OSError as exc:
        raise LogSourceError(f"{path}: {exc.strerror or exc}") from None


def read_lines(paths: list[str]) -> Iterator[bytes]:
    """Every line of every input, one input after the other."""
    for path in paths:
        if path == STDIN:
            yield from _stdin()
            continue
        with _open(path) as stream:
            yield from stream


class _Tail:
    """One followed file: reads what was appended, survives truncation and rotation.

    As with `tail -f`, truncation is seen when the file became shorter than what was read; a file
    truncated and rewritten longer between two polls reads as an append.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.stream = _open(path)
        self.inode = os.fstat(self.stream.fileno()).st_ino
        self.partial = b""

    def read(self) -> list[bytes]:
        data = self.stream.read(_CHUNK)
        if not data:
            self._check_replaced()
            return []
        data = self.partial + data
        lines = data.split(b"\n")
        # The last piece has no newline yet: a writer is mid-line, keep it for the next poll.
        self.partial = lines.pop()
        return [line + b"\n" for line in lines]

    def _check_replaced(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return  # rotated away, not yet recreated
        if st.st_ino != self.inode:
            self.stream.close()
            self.stream = _open(self.path)
            self.inode = st.st_ino
            self.partial = b""
        elif st.st_size < self.stream.tell():
            self.stream.seek(0)
            self.partial = b""

    def close(self) -> None:
        self.stream.close()


def follow_lines(paths: list[str], poll_s: float = 0.25) -> Generator[bytes | None, None, None]:
    """Like `tail -f`: existing lines, then appended ones; yields None each time it caught up.

    Stdin is read to its end first and cannot be followed further. Never ends on its own.
    """
    if STDIN in paths:
        yield from _stdin()
    tails = [_Tail(p) for p in paths if p != STDIN]
    try:
        while True:
            got = False
            for tail in tails:
                lines = tail.read()
                if lines:
                    got = True
                    yield from lines
            if not got:
                yield None
                time.sleep(poll_s)
    finally:
        for tail in tails:
            tail.close()
