"""Every writer in segclip/atomic.py (and the checkpoint/report writers built on it) leaves the old
file or folder untouched, and no temporary sibling behind, when an exception is raised mid-write."""
from __future__ import annotations

import errno
import json
import os

import pytest
import torch

from segclip import atomic
from segclip.atomic import atomic_dir, atomic_file, atomic_write_bytes, atomic_write_json, atomic_write_text
from segclip.checkpoint import atomic_save
from segclip.errors import SegclipError

OLD = b'{"old": true}\n'


def _old_file(tmp_path):
    p = tmp_path / "out" / "thing.json"
    p.parent.mkdir()
    p.write_bytes(OLD)
    return p


def _siblings(p):
    return sorted(x.name for x in p.parent.iterdir())


@pytest.fixture
def fsync_fails(monkeypatch):
    """The disk fails after the new bytes were written to the temp file, before the rename."""
    def boom(path):
        raise OSError(errno.EIO, "Input/output error", str(path))

    monkeypatch.setattr(atomic, "_fsync", boom)


def _write_csv(p):
    from segclip.benchmarks.report import write_csv

    write_csv([{"a": 1, "b": 2}], p, ["a", "b"])


@pytest.mark.parametrize("write", [
    lambda p: atomic_write_bytes(p, b"new" * 100_000),
    lambda p: atomic_write_text(p, "new"),
    lambda p: atomic_write_json(p, {"new": 1}),
    lambda p: atomic_save({"w": torch.ones(1000)}, p),
    _write_csv,
], ids=["bytes", "text", "json", "checkpoint", "csv"])
def test_failure_after_writing_keeps_the_old_file(tmp_path, fsync_fails, write):
    p = _old_file(tmp_path)
    with pytest.raises(OSError, match="Input/output error"):
        write(p)
    assert p.read_bytes() == OLD and _siblings(p) == ["thing.json"]


def test_exception_inside_atomic_file_keeps_the_old_file(tmp_path):
    p = _old_file(tmp_path)
    with pytest.raises(RuntimeError, match="half way"):
        with atomic_file(p) as tmp:
            tmp.write_bytes(b'{"new": ')  # half of the new content
            raise RuntimeError("half way")
    assert p.read_bytes() == OLD and _siblings(p) == ["thing.json"]
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C is not an Exception: still cleaned up
        with atomic_file(p) as tmp:
            tmp.write_bytes(b"x")
            raise KeyboardInterrupt
    assert p.read_bytes() == OLD and _siblings(p) == ["thing.json"]


def test_unserialisable_json_and_checkpoint_keep_the_old_file(tmp_path):
    p = _old_file(tmp_path)
    with pytest.raises(TypeError, match="not JSON serializable"):
        atomic_write_json(p, {"new": object()})
    assert p.read_bytes() == OLD and _siblings(p) == ["thing.json"]
    ck = tmp_path / "out" / "model.pt"
    atomic_save({"step": 1, "w": torch.zeros(3)}, ck)
    before = ck.read_bytes()
    with pytest.raises(Exception, match="pickle|lambda"):  # the tensor is written first, then pickling fails
        atomic_save({"w": torch.ones(100_000), "f": lambda: 0}, ck)
    assert ck.read_bytes() == before and torch.load(ck, weights_only=True)["step"] == 1
    assert _siblings(ck) == ["model.pt", "thing.json"]


def test_success_replaces_and_is_readable_by_others(tmp_path):
    p = _old_file(tmp_path)
    atomic_write_json(p, {"new": 1})
    assert json.loads(p.read_text()) == {"new": 1} and _siblings(p) == ["thing.json"]
    assert p.stat().st_mode & 0o044  # not mkstemp's owner-only mode: servers may read exports as another user


def _old_dir(tmp_path):
    d = tmp_path / "exp"
    d.mkdir()
    (d / "manifest.json").write_bytes(OLD)
    (d / "model.onnx").write_bytes(b"old model")
    return d


def _tree(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("exc", [RuntimeError("parity data unreadable"), KeyboardInterrupt()])
def test_exception_inside_atomic_dir_keeps_the_old_folder(tmp_path, exc):
    d = _old_dir(tmp_path)
    before = _tree(d)
    with pytest.raises(type(exc)):
        with atomic_dir(d, replace=True) as stage:
            (stage / "model.onnx").write_bytes(b"new model")
            raise exc
    assert _tree(d) == before and sorted(x.name for x in tmp_path.iterdir()) == ["exp"]


def test_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    """The old folder is moved aside, then moving the new one in fails: the old one returns."""
    d = _old_dir(tmp_path)
    before = _tree(d)
    real = os.rename

    def rename(src, dst):
        if ".partial-" in str(src):
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))
        return real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="cross-device"):
        with atomic_dir(d, replace=True) as stage:
            (stage / "manifest.json").write_text("{}")
    monkeypatch.undo()
    assert _tree(d) == before and sorted(x.name for x in tmp_path.iterdir()) == ["exp"]


def test_atomic_dir_refuses_an_existing_folder_without_replace(tmp_path):
    d = _old_dir(tmp_path)
    before = _tree(d)
    with pytest.raises(SegclipError, match="already exists; pass --force"):
        with atomic_dir(d) as stage:
            (stage / "x").write_text("new")
    assert _tree(d) == before and sorted(x.name for x in tmp_path.iterdir()) == ["exp"]
    with atomic_dir(d, replace=True) as stage:
        (stage / "x").write_text("new")
    assert _tree(d) == {"x": b"new"} and sorted(x.name for x in tmp_path.iterdir()) == ["exp"]


def test_partial_file_is_named_for_the_sweep(tmp_path):
    """Writers outside atomic_* (predict's class-map raster) name their temporaries so a later run sweeps them."""
    import os

    from segclip.atomic import _TEMP_RE, partial_file

    p = partial_file(tmp_path / "scene_mask.png", suffix=".tif")
    m = _TEMP_RE.match(p.name)
    assert p.is_file() and p.parent == tmp_path and p.suffix == ".tif"
    assert m and m["kind"] == "partial" and int(m["pid"]) == os.getpid() and m["name"] == "scene_mask"
