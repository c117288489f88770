"""Shared workspace for the command-line tests: one small checkpoint (run directory), one real
export, a tiny sample dataset and the odd files users point segclip at by mistake, built once per
session.  Every bad-input case runs against it and must leave it exactly as it was."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import LOVEDA_PALETTE, default_signals, make_small_model

REPO = Path(__file__).resolve().parents[2]
SIZE = 64  # training crop / export size of the shared checkpoint (a multiple of 32)


def fingerprint(root: Path) -> dict:
    """Every path under ``root`` -> (kind, size, mtime_ns, inode, sha256 of files under 1 MB).
    Large files (checkpoints, ONNX) are caught by size/mtime/inode: every writer in segclip
    replaces files by rename (new inode) or rewrites them (new mtime)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_dir() and not p.is_symlink():
                out[rel] = ("dir",)
                continue
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if st.st_size < 2**20 and p.is_file() else None
            out[rel] = ("file", st.st_size, st.st_mtime_ns, st.st_ino, digest)
    return out


def tree_diff(before: dict, after: dict) -> list:
    return ([f"new: {k}" for k in sorted(set(after) - set(before))]
            + [f"gone: {k}" for k in sorted(set(before) - set(after))]
            + [f"changed: {k}" for k in sorted(set(before) & set(after)) if before[k] != after[k]])


def error_line(output: str, code: int, exit_code: int) -> str:
    """The one ``error:`` line of a failed command; asserts the rest of the contract."""
    assert "Traceback" not in output, output
    assert exit_code == code, f"exit {exit_code} != {code}:\n{output}"
    lines = [l for l in output.splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("error:")]
    assert len(errors) == 1, f"want exactly one error line:\n{output}"
    others = [l for l in lines if not l.startswith(("error:", "note:", "warning:"))]
    assert not others, f"unexpected output besides the error line:\n{output}"
    what, sep, fix = errors[0][len("error:"):].partition("; ")
    assert what.strip() and sep and fix.strip(), f"the error line must say what, then '; ' and what to do:\n{errors[0]}"
    return errors[0]


def segclip_subprocess(args, cwd, timeout=300, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    kw.setdefault("preexec_fn", default_signals)
    return subprocess.Popen([sys.executable, "-m", "segclip", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.fixture(scope="session")
def cli_ws(tmp_path_factory):
    """The shared workspace (see the module docstring); returns a dict of named paths."""
    from segclip.config import get_preset
    from segclip.data.sample import generate_sample_dataset
    from segclip.checkpoint import atomic_save, checkpoint_dict
    from segclip.export import export

    root = tmp_path_factory.mktemp("cli")
    ws = {"root": root}
    ws["data"] = generate_sample_dataset(root / "data", seed=0, num_train=4, num_val=2, size=SIZE)
    run = root / "run"
    tcfg = get_preset("segclip-small").train
    tcfg.crop_size, tcfg.eval_size = SIZE, SIZE
    atomic_save(checkpoint_dict(make_small_model(), LOVEDA_PALETTE, dataset="sample", train_config=asdict(tcfg)),
                run / "model_final.pt")
    (run / "eval_val.json").write_text(json.dumps({"miou": 0.5, "note": "the full evaluation"}) + "\n")
    ws["run"], ws["ckpt"] = run, run / "model_final.pt"
    ws["export"] = root / "export"
    export(run, ws["export"], size=SIZE, parity_images=1, data=f"sample:{ws['data']}:val", log=lambda *a: None)

    img = sorted((Path(ws["data"]) / "Val").rglob("images_png/*.png"))[0]
    ws["img"] = root / "img.png"
    shutil.copy(img, ws["img"])
    for sub in ("a", "b"):  # two inputs with the same stem
        (root / sub).mkdir()
        shutil.copy(img, root / sub / "x.png")
    ws["corrupt_img"] = root / "corrupt.png"
    ws["corrupt_img"].write_bytes(img.read_bytes()[:200])
    ws["file"] = root / "afile.txt"
    ws["file"].write_text("not a folder\n")
    ws["occupied"] = root / "occupied"
    (root / "occupied").mkdir()
    (root / "occupied" / "keep.txt").write_text("someone's file\n")
    ws["trunc"] = root / "trunc.pt"
    ws["trunc"].write_bytes(ws["ckpt"].read_bytes()[:100_000])
    import torch

    ws["plain"] = root / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, ws["plain"])
    ws["other"] = root / "other_classes.pt"
    atomic_save(checkpoint_dict(make_small_model(classes=("a", "b", "c")), [(0, 0, 0), (1, 1, 1), (2, 2, 2)]), ws["other"])
    # an earlier predict's output, an earlier benchmark's results
    ws["preds"] = root / "preds"
    (root / "preds").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "preds" / "img_mask.png")
    ws["bench"] = root / "bench"
    (root / "bench").mkdir()
    (root / "bench" / "benchmark.json").write_text("{}\n")
    # an export whose FP32 artifact failed its parity gate (the model file is a hard link)
    failed = root / "failed_export"
    failed.mkdir()
    os.link(ws["export"] / "model.onnx", failed / "model.onnx")
    m = json.loads((ws["export"] / "manifest.json").read_text())
    m["status"] = m["artifacts"]["onnx"]["status"] = "failed"
    (failed / "manifest.json").write_text(json.dumps(m, indent=2))
    ws["failed_export"] = failed
    # a labelled dataset with other classes than the checkpoint's (the 'folder' layout)
    ws["folder_data"] = root / "folder_data"
    for split in ("train", "val"):
        for sub in ("images", "masks"):
            (root / "folder_data" / sub / split).mkdir(parents=True)
        shutil.copy(img, root / "folder_data" / "images" / split / "t.png")
        Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(root / "folder_data" / "masks" / split / "t.png")
    (root / "folder_data" / "classes.yaml").write_text("classes: [field, forest]\n")
    return ws
