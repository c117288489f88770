"""Write a whole output folder or file or nothing: build it beside its destination, then rename.

An interrupted training, export, ``prepare`` or ``sample-data`` must never leave a file or folder
that a later run mistakes for a finished one, so everything is written into a hidden temporary
sibling (same filesystem, so the final ``os.rename`` is atomic), flushed to disk, given ordinary
permissions (``mkstemp`` makes owner-only files; servers such as Triton may read exports as another
user) and only then renamed into place.  Every writer in segclip goes through this module.
"""
from __future__ import annotations

import os
import shutil
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


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


@contextmanager
def atomic_dir(dst, replace: bool = False):
    """Yield a temporary folder; on success it becomes ``dst``.  An existing non-empty ``dst``
    is replaced only with ``replace=True`` (the old one is removed after the swap)."""
    dst = Path(dst)
    if dst.exists() and not is_empty_dir(dst) and not replace:
        raise SegclipError(f"{dst} already exists; pass --force to replace it")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-", dir=dst.parent))
    old = None
    try:
        yield tmp
        public_mode(tmp, directory=True)
        if not replace and dst.exists() and not is_empty_dir(dst):  # appeared while we were working
            raise SegclipError(f"{dst} already exists; pass --force to replace it")
        if dst.exists() or dst.is_symlink():
            old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(dst, old)
        os.rename(tmp, dst)
    except BaseException:
        _remove(tmp)
        if old is not None and not dst.exists():  # put the previous output back
            os.rename(old, dst)
        raise
    if old is not None:
        _remove(old)


@contextmanager
def atomic_file(dst):
    """Yield a temporary path beside ``dst``; on success it replaces ``dst``."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.stem}.partial-", suffix=dst.suffix, dir=dst.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        _fsync(tmp)
        public_mode(tmp)
        os.replace(tmp, dst)
    except BaseException:
        _remove(tmp)
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
