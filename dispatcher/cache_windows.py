"""How long a persona is served without asking the CRM, served while it is asked in the
background, and kept for when the CRM fails (RFC 9111 freshness, RFC 5861's
`stale-while-revalidate` / `stale-if-error`): pure functions of the settings and of the CRM's
`Cache-Control`, tested without I/O."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Phase = Literal["fresh", "revalidate", "stale"]


@dataclass(frozen=True)
class Windows:
    """The three windows of one persona, in seconds after the CRM last vouched for it; `keep`
    is False when the CRM said `no-store`."""

    fresh_s: float
    revalidate_s: float
    stale_if_error_s: float
    keep: bool = True


@dataclass(frozen=True)
class Validators:
    """What the CRM gave to ask "has it changed?" with: sent back as `If-None-Match` /
    `If-Modified-Since`."""

    etag: str | None = None
    last_modified: str | None = None

    def headers(self) -> dict[str, str]:
        """The conditional request headers these validators make (none when there are none)."""
        headers: dict[str, str] = {}
        if self.etag is not None:
            headers["If-None-Match"] = self.etag
        if self.last_modified is not None:
            headers["If-Modified-Since"] = self.last_modified
        return headers

    def updated(self, newer: Validators) -> Validators:
        """These validators with whatever a later answer (a 304 may repeat or renew them) says."""
        return Validators(newer.etag or self.etag, newer.last_modified or self.last_modified)


def phase_at(
    now: float, fresh_until: float, revalidate_until: float, stale_until: float
) -> Phase | None:
    """Where `now` falls among an entry's windows; None once the last has ended."""
    if now < fresh_until:
        return "fresh"
    if now < revalidate_until:
        return "revalidate"
    if now < stale_until:
        return "stale"
    return None


def parse_cache_control(header: str | None) -> dict[str, str | None]:
    """`max-age=30, no-store` -> {"max-age": "30", "no-store": None}; names lower-cased, quotes
    dropped, malformed parts ignored."""
    directives: dict[str, str | None] = {}
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        name = name.strip().lower()
        if name:
            directives[name] = value.strip().strip('"') if value else None
    return directives


def _delta_seconds(value: str | None) -> float | None:
    """A `delta-seconds` value (RFC 9111 1.2.2: digits only), else None."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    return float(value)


def windows_for(cache_control: str | None, default: Windows) -> Windows:
    """The windows for an answer: the CRM's `Cache-Control` where it says (`max-age`,
    `stale-while-revalidate`, `stale-if-error`, `no-cache` = fresh for no time, `no-store` = keep
    nothing), the settings for the rest."""
    directives = parse_cache_control(cache_control)
    if "no-store" in directives:
        return replace(default, keep=False)
    fresh = _delta_seconds(directives.get("max-age"))
    if "no-cache" in directives:
        fresh = 0.0
    revalidate = _delta_seconds(directives.get("stale-while-revalidate"))
    stale = _delta_seconds(directives.get("stale-if-error"))
    return Windows(
        fresh_s=default.fresh_s if fresh is None else fresh,
        revalidate_s=default.revalidate_s if revalidate is None else revalidate,
        stale_if_error_s=default.stale_if_error_s if stale is None else stale,
    )
