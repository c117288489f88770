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


# the storage errors a user fixes by freeing space or choosing another place (not segclip's bugs)
_DISK_FIXES = {"ENOSPC": "no space left on the device; free some space or give --out on another disk",
               "EDQUOT": "disk quota exceeded; free some space or give --out on another disk",
               "EROFS": "read-only file system; give --out on a writable disk",
               "EACCES": "permission denied; check its permissions, or give --out in a folder you can write to",
               "EPERM": "operation not permitted; check its permissions, or give --out in a folder you can write to"}


def disk_error(e: OSError):
    """A ``SegclipError`` for a full disk, a read-only file system or a folder without write
    permission (one line naming the path and the fix), else None (a real bug keeps its traceback)."""
    import errno

    fix = _DISK_FIXES.get(errno.errorcode.get(e.errno or 0, ""))
    if fix is None:
        return None
    return SegclipError(f"{e.filename}: {fix}" if e.filename else f"writing the output: {fix}")
