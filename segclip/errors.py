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
