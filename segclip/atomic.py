"""Write a whole output folder or file or nothing: build it beside its destination, then rename.

An interrupted training, export, ``prepare`` or ``sample-data`` must never leave a file or folder
that a later run mistakes for a finished one, so everything is written into a hidden temporary
sibling (same filesystem, so the final ``os.rename`` is atomic), flushed to disk, given ordinary
permissions (``mkstemp`` makes owner-only files; servers such as Triton may read exports as another
user) and only then renamed into place.  Every writer in segclip goes through this module.

Temporary names carry the writer's PID (``.model_final.partial-<pid>-<rand>.pt``,
``.export.partial-<pid>-<rand>``, ``.export.old-<pid>-<rand>``).  A kill -9 can still leave one
behind, so :func:`sweep_partials` -- run by every command at start on the folders it writes, and by
every atomic write on its own folder -- removes those whose process is gone (a ``.old-`` folder
whose destination vanished in the middle of a swap is put back instead).  SIGTERM and Ctrl-C
unwind through the ``except BaseException`` below and remove their own partials (the CLI turns
SIGTERM into an exception).  A PID reused by an unrelated process only delays the clean-up.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

from segclip.errors import SegclipError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def public_mode(path, directory: bool = False) -> None:
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def is_empty_dir(p: Path) -> bool:
    return p.is_dir() and not any(p.iterdir())


def holds_own(dst, is_own, what: str, lacks: str, flag: str = "--out") -> bool:
    """Whether the output folder ``dst`` already holds something (a non-empty folder).  A non-empty
    folder that is not segclip's own ``what`` (``is_own(dst)`` false; ``lacks`` says what tells it,
    e.g. "no manifest.json") is refused whatever --force/--resume say: segclip writes into,
    replaces or deletes only what it recognisably wrote.  A file where a folder belongs is refused too."""
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise SegclipError(f"{flag} {dst}: exists and is not a folder; choose another {flag}")
    if not dst.is_dir() or is_empty_dir(dst):
        return False
    if not is_own(dst):
        raise SegclipError(f"{dst} is not empty and is not {what} ({lacks}); segclip never writes into or replaces "
                           f"a folder it did not make: choose another {flag} (a new or empty folder)")
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


# .<name>.partial-<pid>-<rand>[suffix] and .<name>.old-<pid>-<rand>
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)-[0-9a-z_]+(?P<suffix>\.[^.]*)?$")


def _tag(kind: str) -> str:
    return f"{kind}-{os.getpid()}-"


def process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    try:  # a killed but not yet reaped child is a zombie: gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


_swept: set = set()  # folders already swept by this process (predict writes thousands of files into one)


def sweep_partials(*directories, log=None, once: bool = False) -> list:
    """Remove temporaries left in ``directories`` by segclip processes that no longer run; say so
    in one line (``log``, default stderr).  Returns the removed/restored paths.  ``once``: skip a
    folder this process has swept before."""
    removed, restored, pids = [], [], set()
    for d in directories:
        d = Path(d)
        if once and d.resolve() in _swept:
            continue
        if not d.is_dir():
            continue
        _swept.add(d.resolve())
        try:
            entries = sorted(d.iterdir())
        except OSError:
            continue
        for p in entries:
            m = _TEMP_RE.match(p.name)
            if not m or process_alive(int(m["pid"])):
                continue
            pids.add(int(m["pid"]))
            if m["kind"] == "old":
                dst = d / m["name"]
                if not dst.exists() and not dst.is_symlink():  # killed mid-swap: the previous output comes back
                    os.rename(p, dst)
                    restored.append(dst)
                    continue
            _remove(p)
            removed.append(p)
    if removed or restored:
        what = [f"removed {len(removed)} partial file(s)/folder(s)"] if removed else []
        what += [f"restored {', '.join(str(r) for r in restored)}"] if restored else []
        names = ", ".join(p.name for p in removed[:3]) + (f" (+{len(removed) - 3} more)" if len(removed) > 3 else "")
        msg = (f"note: {' and '.join(what)} left by interrupted segclip process(es) "
               f"{', '.join(map(str, sorted(pids)))} in {', '.join(sorted({str(p.parent) for p in removed + restored}))}"
               + (f": {names}" if names else ""))
        (log or (lambda m: print(m, file=sys.stderr)))(msg)
    return removed + restored


def check_not_being_written(dst) -> None:
    """Refuse ``dst`` while another live segclip process builds it (its partial sits beside it):
    said at the start, not as "already exists" when the second run ends minutes later."""
    dst = Path(dst)
    try:
        entries = list(dst.parent.iterdir())
    except OSError:
        return
    for p in entries:
        m = _TEMP_RE.match(p.name)
        if m and m["kind"] == "partial" and m["name"] == dst.name and int(m["pid"]) != os.getpid() \
                and process_alive(int(m["pid"])):
            raise SegclipError(f"{dst}: segclip process {m['pid']} is writing it now; wait for it to finish "
                               f"or choose another --out")


def _named(e: OSError, tmp, dst) -> OSError:
    """A write error as the user reads it: about ``dst`` (what they named), not the hidden partial
    it happened in (a full disk's write() names no file at all)."""
    if e.filename is None or (tmp is not None and str(e.filename).startswith(str(tmp))) or tmp is None:
        return type(e)(e.errno, e.strerror, str(dst))
    return e


@contextmanager
def atomic_dir(dst, replace: bool = False):
    """Yield a temporary folder; on success it becomes ``dst``.  An existing non-empty ``dst``
    is replaced only with ``replace=True`` (the old one is removed after the swap)."""
    dst = Path(dst)
    if dst.exists() and not is_empty_dir(dst) and not replace:
        raise SegclipError(f"{dst} already exists; pass --force to replace it")
    check_not_being_written(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    sweep_partials(dst.parent, once=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.{_tag('partial')}", dir=dst.parent))
    except OSError as e:
        raise _named(e, None, dst) from None
    old = None
    try:
        yield tmp
        public_mode(tmp, directory=True)
        if not replace and dst.exists() and not is_empty_dir(dst):  # appeared while we were working
            raise SegclipError(f"{dst} already exists; pass --force to replace it")
        if dst.exists() or dst.is_symlink():
            old = dst.with_name(f".{dst.name}.{_tag('old')}{uuid.uuid4().hex[:8]}")
            os.rename(dst, old)
        os.rename(tmp, dst)
    except BaseException as e:
        _remove(tmp)
        if old is not None and not dst.exists():  # put the previous output back
            os.rename(old, dst)
        if isinstance(e, OSError):
            raise _named(e, tmp, dst) from None
        raise
    if old is not None:
        _remove(old)


def partial_file(dst, suffix=None) -> Path:
    """A new empty temporary file beside ``dst``, named so that ``sweep_partials`` removes it once
    its process is gone (``suffix``: default ``dst``'s, e.g. ".tif" for a GDAL driver)."""
    dst = Path(dst)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.stem}.{_tag('partial')}", suffix=dst.suffix if suffix is None else suffix,
                               dir=dst.parent)
    os.close(fd)
    return Path(tmp)


@contextmanager
def atomic_file(dst):
    """Yield a temporary path beside ``dst``; on success it replaces ``dst``."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    sweep_partials(dst.parent, once=True)
    try:
        tmp = partial_file(dst)
    except OSError as e:
        raise _named(e, None, dst) from None
    try:
        yield tmp
        _fsync(tmp)
        public_mode(tmp)
        os.replace(tmp, dst)
    except BaseException as e:
        _remove(tmp)
        if isinstance(e, OSError):
            raise _named(e, tmp, dst) from None
        raise


def atomic_write_bytes(path, data: bytes) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj, **dumps_kw) -> Path:
    import json

    return atomic_write_text(path, json.dumps(obj, **{"indent": 2, **dumps_kw}) + "\n")
