"""User-facing errors: one line naming the thing and the fix, and the exit code the CLI returns.

Anything raised as a ``SegclipError`` is printed by the CLI as ``error: <message>`` without a
traceback.  Exit code 2 means "bad input or environment" (usage-like), 1 means "ran, but the result
failed a gate" (e.g. the export parity gate).
"""
from __future__ import annotations


class SegclipError(Exception):
    """Bad input, missing file, wrong environment: the user can fix it."""

    exit_code = 2


class GateFailed(SegclipError):
    """The work ran but its result failed a quality gate (parity, accuracy)."""

    exit_code = 1


def one_line(e: BaseException, limit: int = 200) -> str:
    """First meaningful line of an exception message, shortened (backends print multi-line dumps)."""
    text = str(e).strip() or type(e).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    msg = lines[0] if lines else type(e).__name__
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."
