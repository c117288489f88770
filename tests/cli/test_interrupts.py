"""Kill -9 and SIGTERM drills: a real ``segclip`` process is killed in the middle of writing a
checkpoint or an export; the next run must clean up what it left (saying so), resume to exactly
the weights an uninterrupted run reaches, and never lose the export that was there before."""
from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from segclip.atomic import sweep_partials
from segclip.checkpoint import load_checkpoint

from .support import SIZE, segclip_subprocess

PARTIAL = re.compile(r"\.partial-\d+-")


def _partials(d: Path) -> list:
    return sorted(p for p in d.rglob("*") if PARTIAL.search(p.name) or ".old-" in p.name)


def _wait_for(pred, proc, timeout=240.0, what="condition"):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        found = pred()
        if found:
            return found
        if proc.poll() is not None:
            out = proc.stdout.read()
            pytest.fail(f"the process ended (code {proc.returncode}) before {what}:\n{out}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def _hashes(d: Path) -> dict:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


def _train_args(ws, out, *extra):
    return ["train", "--data", f"sample:{ws['data']}", "--preset", "segclip-small", "--out", out, "--size", SIZE,
            "--batch", 2, "--max-steps", 3, "--checkpoint-every", 1, "--backbone-weights", "none",
            "--clip-checkpoint", "none", "--device", "cpu", "--no-eval", *extra]


def test_train_kill9_during_checkpoint_write_then_resume(cli_ws, tmp_path):
    """kill -9 while the checkpoint of step 2 or the final model (drawn at random) is being
    written: the partial file is left, the next run removes it with a note, and the resumed run
    ends bit-identical to an uninterrupted one."""
    from segclip.cli.train_cmds import run_training

    final = random.Random().random() < 0.5
    print(f"killing during the write of {'model_final.pt' if final else 'checkpoints/step_0000002.pt'}")
    run = tmp_path / "run"
    proc = segclip_subprocess(_train_args(cli_ws, run), cwd=tmp_path)
    where, name = (run, "model_final") if final else (run / "checkpoints", "step_0000002")
    target = re.compile(rf"^\.{name}\.partial-{proc.pid}-")
    _wait_for(lambda: where.is_dir() and [p for p in where.iterdir() if target.match(p.name)], proc,
              what=f"the partial {name}")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    left = _partials(run)
    # the rename may just have won the race; the usual outcome is a partial of the killed process
    assert all(str(proc.pid) in p.name for p in left)
    nxt = segclip_subprocess(_train_args(cli_ws, run, "--resume"), cwd=tmp_path)
    out, _ = nxt.communicate(timeout=600)
    assert nxt.returncode == 0, out
    assert "Traceback" not in out
    if left:
        notes = [l for l in out.splitlines() if l.startswith("note: removed")]
        assert len(notes) == 1 and str(proc.pid) in notes[0], out
    assert _partials(run) == []

    ref = tmp_path / "ref"
    run_training("sample", str(cli_ws["data"]), "segclip-small", str(ref), max_steps=3, batch_size=2, crop_size=SIZE,
                 checkpoint_every=1, backbone_weights="none", clip_checkpoint="none", device="cpu", progress=False)
    a, b = load_checkpoint(run / "model_final.pt"), load_checkpoint(ref / "model_final.pt")
    assert a["step"] == b["step"] == 3
    for key in b["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def _export_args(ws, out):
    return ["export", ws["run"], "--out", out, "--force", "--size", SIZE, "--parity-images", 1,
            "--data", f"sample:{ws['data']}:val"]


@pytest.fixture
def old_export(cli_ws, tmp_path):
    """A finished export (hard links of the shared one) that an interrupted --force must not lose."""
    d = _link_export(cli_ws, tmp_path / "exp")
    return d, _hashes(d)


def _link_export(ws, d: Path) -> Path:
    d.mkdir()
    for p in ws["export"].iterdir():
        os.link(p, d / p.name)
    return d


def test_export_kill9_keeps_old_export_and_next_run_cleans(cli_ws, tmp_path, old_export):
    d, before = old_export
    proc = segclip_subprocess(_export_args(cli_ws, d), cwd=tmp_path)
    mine = re.compile(rf"^\.exp\.partial-{proc.pid}-")
    _wait_for(lambda: [p for p in tmp_path.iterdir() if mine.match(p.name)], proc, what="the export staging folder")
    delay = random.Random().uniform(0.0, 4.0)  # somewhere inside the ONNX export / parity run
    print(f"kill -9 after {delay:.2f} s")
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    assert _hashes(d) == before  # the old export is intact
    left = [p for p in tmp_path.iterdir() if PARTIAL.search(p.name) or ".old-" in p.name]
    assert left and all(str(proc.pid) in p.name for p in left)

    nxt = segclip_subprocess(_export_args(cli_ws, d), cwd=tmp_path)
    out, _ = nxt.communicate(timeout=600)
    assert nxt.returncode == 0, out
    notes = [l for l in out.splitlines() if l.startswith("note: removed")]
    assert len(notes) == 1 and str(proc.pid) in notes[0], out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert (d / "manifest.json").is_file() and (d / "model.onnx").is_file()


def test_export_sigterm_cleans_its_own_partial(cli_ws, tmp_path, old_export):
    """SIGTERM at a random moment of an export --force: one line, exit 143, its staging folder gone and
    the previous export untouched.  A signal that lands after the export has printed its last line
    tests nothing (a slow moment of the machine outran the draw): that drill is run again with no delay."""
    d, before = old_export
    for delay in (random.Random().uniform(0.0, 2.0), 0.0):
        proc = segclip_subprocess(_export_args(cli_ws, d), cwd=tmp_path)
        mine = re.compile(rf"^\.exp\.partial-{proc.pid}-")
        _wait_for(lambda: [p for p in tmp_path.iterdir() if mine.match(p.name)], proc, what="the export staging folder")
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()
        time.sleep(delay)
        late = any(ln.startswith("export: ") for ln in list(lines))
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        reader.join(timeout=30)
        out = "".join(lines)
        if not late:
            break
        print(f"the signal came {delay:.2f} s after the staging folder, when the export had finished; again")
        shutil.rmtree(d)
        _link_export(cli_ws, d)
    assert not late, out
    assert proc.returncode == 128 + signal.SIGTERM, f"exit {proc.returncode}, SIGTERM {delay:.2f} s after staging:\n{out}"
    assert "Traceback" not in out and out.strip().splitlines()[-1] == "terminated (SIGTERM)", out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert _hashes(d) == before


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_sweep_removes_only_dead_owners_and_restores_a_swapped_out_folder(tmp_path):
    dead, me = _dead_pid(), os.getpid()
    (tmp_path / f".model_final.partial-{dead}-abc123.pt").write_bytes(b"half")
    (tmp_path / f".export.partial-{dead}-x1y2z3").mkdir()
    (tmp_path / f".model_final.partial-{me}-abc123.pt").write_bytes(b"being written")  # a live writer
    old = tmp_path / f".export2.old-{dead}-0a1b2c3d"  # killed between the two renames of a swap
    old.mkdir()
    (old / "manifest.json").write_text("{}")
    (tmp_path / ".hidden-unrelated").write_text("x")
    lines = []
    sweep_partials(tmp_path, log=lines.append)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([f".model_final.partial-{me}-abc123.pt", "export2", ".hidden-unrelated"])
    assert (tmp_path / "export2" / "manifest.json").is_file()
    assert len(lines) == 1 and str(dead) in lines[0] and "removed 2" in lines[0] and "restored" in lines[0]


def test_quickstart_force_sigterm_keeps_the_previous_quickstart(tmp_path):
    """quickstart --force used to rmtree the previous result first: SIGTERM 20 s later left no
    model_final.pt, no export/, no summary.json.  Now it builds beside and swaps at the end."""
    import json

    from .support import fingerprint, tree_diff

    qs = tmp_path / "qs"
    (qs / "run").mkdir(parents=True)
    (qs / "run" / "model_final.pt").write_bytes(b"the previous model")
    (qs / "export").mkdir()
    (qs / "export" / "manifest.json").write_text("{}\n")
    (qs / "summary.json").write_text(json.dumps({"preset": "segclip-small", "dataset": "sample", "artifacts": {}}) + "\n")
    before = fingerprint(qs)
    proc = segclip_subprocess(["quickstart", "--out", qs, "--force", "--max-steps", 100, "--no-export", "--no-benchmark",
                               "--device", "cpu"], cwd=tmp_path)
    staged = re.compile(rf"^\.qs\.partial-{proc.pid}-")
    _wait_for(lambda: [p for p in tmp_path.iterdir() if staged.match(p.name) and (p / "run" / "config.json").is_file()],
              proc, what="training in the staging folder")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "Traceback" not in out
    assert tree_diff(before, fingerprint(qs)) == []  # the previous quickstart, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qs"]  # and its partial removed on the way out
