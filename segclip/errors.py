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


def one_line(e, limit: int = 200) -> str:
    """An exception's message (or a text) as one line for ``error: ...`` -- whole sentences only.

    Backends print long or multi-line dumps; cutting at a character count leaves half a sentence
    (and hides the useful part).  Whitespace is collapsed; text longer than ``limit`` ends at the
    last sentence boundary before it, or after the first sentence when that alone is longer.
    tritonclient's exceptions keep their text in ``message()``.
    """
    text = e.message() if callable(getattr(e, "message", None)) else e
    text = " ".join(str(text).split()) or type(e).__name__
    if len(text) <= limit:
        return text.rstrip(".")
    ends = [i + 1 for i, c in enumerate(text) if c in ".;:" and (i + 1 == len(text) or text[i + 1] == " ")]
    within = [i for i in ends if i <= limit]
    cut = within[-1] if within else (ends[0] if ends else len(text))
    return text[:cut].rstrip(".;: ")
