"""The root of the project's errors: every error raised on purpose derives from it, so that one
place (the webhook middleware, a command's `main`) can tell an expected failure from a bug."""

from __future__ import annotations


class PersonaDispatcherError(Exception):
    """An expected failure with a message fit for a log line or a command's one-line error."""
