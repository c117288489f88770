"""Trainer: checkpoints, bit-exact resume, DDP (2 gloo processes), eval, CLI errors."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import LOVEDA_PALETTE, make_small_model
from segclip.cli import main
from segclip.checkpoint import (atomic_save, checkpoint_dict, load_checkpoint, model_from_checkpoint,
                                       resolve_checkpoint, step_checkpoints)
from segclip.errors import SegclipError

# Tiny training runs: 64 px crops, 2 images per step, few points; random init (offline).
TINY = dict(batch_size=2, crop_size=64, backbone_weights="none", clip_checkpoint="none", device="cpu", progress=False)


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory):
    from segclip.data.sample import generate_sample_dataset

    return generate_sample_dataset(tmp_path_factory.mktemp("sample") / "data", seed=0, num_train=8, num_val=4, size=128)


def _train(root, out, **kw):
    from segclip.cli.train_cmds import run_training

    args = dict(TINY, checkpoint_every=2)
    args.update(kw)
    return run_training("sample", str(root), "segclip-small", str(out), **args)


def _weights(path):
    return load_checkpoint(path)["model"]


def test_checkpoint_round_trip(tmp_path):
    model = make_small_model().eval()
    path = atomic_save(checkpoint_dict(model, LOVEDA_PALETTE, dataset="sample"), tmp_path / "m.pt")
    ckpt = load_checkpoint(path)
    assert ckpt["classes"] == list(model.classes) and ckpt["prompts"] == list(model.prompts)
    assert torch.equal(ckpt["text_embeddings"], model.text_embeddings)
    again = model_from_checkpoint(ckpt)
    x = torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8)
    torch.testing.assert_close(again.predict_scores(x), model.predict_scores(x), rtol=0, atol=0)
    assert not list(tmp_path.glob("*.tmp"))


def test_truncated_checkpoint_gives_one_line_error(tmp_path):
    model = make_small_model()
    path = atomic_save(checkpoint_dict(model, LOVEDA_PALETTE), tmp_path / "m.pt")
    data = path.read_bytes()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(SegclipError, match="truncated") as e:
        load_checkpoint(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(SegclipError, match="no such"):
        resolve_checkpoint(tmp_path / "nope")


@pytest.fixture(scope="module")
def full_run(sample_root, tmp_path_factory):
    """4 steps straight: the reference every interrupted run must end at."""
    out = tmp_path_factory.mktemp("full") / "run"
    _train(sample_root, out, max_steps=4)
    return out


def _steps(run):
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and sum(r.startswith("step,") for r in rows) == 1  # one header across resumes
    return [int(r.split(",")[0]) for r in rows[1:]]


def _same_weights(a, b):
    a, b = _weights(a), _weights(b)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_is_bit_exact(sample_root, tmp_path, full_run):
    """4 steps straight == 2 steps, stop, resume to 4 (same data order, optimizer, schedule, RNG)."""
    _train(sample_root, tmp_path / "split", max_steps=4, stop_after=3)
    assert [p.name for p in step_checkpoints(tmp_path / "split")] == ["step_0000002.pt", "step_0000003.pt"]
    assert not (tmp_path / "split" / "model_final.pt").exists()
    _train(sample_root, tmp_path / "split", max_steps=4, resume=True)
    _same_weights(full_run / "model_final.pt", tmp_path / "split" / "model_final.pt")
    steps = _steps(tmp_path / "split")
    assert steps == sorted(set(steps)) and steps[-1] == 4


def test_killed_after_a_periodic_checkpoint_resumes_without_duplicate_rows(sample_root, tmp_path, full_run):
    """SIGKILL during step 4, after step 3 was logged but with only step 2 checkpointed: resuming
    replays step 3, which must not leave two rows for it, and ends at the uninterrupted weights."""
    run = tmp_path / "killed"
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, sys
        import torch
        torch.set_num_threads({torch.get_num_threads()})  # the reference run's own thread count: same reductions
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import segclip.config as C
        from segclip.engine.trainer import Trainer
        from test_train import _train

        preset = C.get_preset
        def every_step(name):  # log every step, so rows exist past the last checkpoint
            p = preset(name)
            p.train.log_every = 1
            return p
        C.get_preset = every_step
        step = Trainer.train_step
        def train_step(self, *args, **kwargs):
            if self.step == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return step(self, *args, **kwargs)
        Trainer.train_step = train_step
        _train({str(sample_root)!r}, {str(run)!r}, max_steps=4)
    """))
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    assert [p.name for p in step_checkpoints(run)] == ["step_0000002.pt"] and not (run / "model_final.pt").exists()
    assert _steps(run) == [1, 2, 3]
    _train(sample_root, run, max_steps=4, resume=True)
    assert _steps(run) == [1, 2, 3, 4]
    _same_weights(full_run / "model_final.pt", run / "model_final.pt")


def test_resume_refuses_changed_options_and_metrics_header_comes_back(sample_root, tmp_path):
    """--resume used to ignore --lr/--batch/... silently; and a run killed before its first log row
    left an empty metrics.csv that the resumed run took as having its header."""
    run = tmp_path / "run"
    _train(sample_root, run, max_steps=4, stop_after=2)
    assert [p.name for p in step_checkpoints(run)] == ["step_0000002.pt"]
    with pytest.raises(SegclipError, match=r"--batch 4 \(the run's: 2\), --lr 0.5 \(the run's: 0.0004\) differ from how .*drop them"):
        _train(sample_root, run, max_steps=4, resume=True, lr=0.5, batch_size=4)
    with pytest.raises(SegclipError, match=r"--no-gtg \(the run's: True\)"):
        _train(sample_root, run, max_steps=4, resume=True, gtg=False)
    (run / "metrics.csv").write_text("")  # what a kill before the first row leaves
    _train(sample_root, run, max_steps=4, resume=True, checkpoint_every=3)
    assert _steps(run) == [4]  # a header, then the resumed run's row
    assert [p.name for p in step_checkpoints(run)] == ["step_0000002.pt", "step_0000003.pt"]  # --checkpoint-every applied


def test_existing_run_is_not_overwritten(sample_root, tmp_path):
    _train(sample_root, tmp_path / "run", max_steps=2)
    before = (tmp_path / "run" / "model_final.pt").read_bytes()
    with pytest.raises(SegclipError, match="--resume"):
        _train(sample_root, tmp_path / "run", max_steps=2)
    assert (tmp_path / "run" / "model_final.pt").read_bytes() == before


def test_warmup_steps_option_shortens_the_warm_up(sample_root, tmp_path):
    base = ["train", "--data", f"sample:{sample_root}", "--preset", "segclip-small", "--max-steps", "2", "--batch", "2",
            "--size", "64", "--backbone-weights", "none", "--clip-checkpoint", "none", "--device", "cpu", "--no-eval"]
    r = CliRunner().invoke(main, base + ["--out", str(tmp_path / "bad"), "--warmup-steps", "-1"])
    assert r.exit_code == 2 and "--warmup-steps -1: must be an integer >= 0" in r.output, r.output
    assert not (tmp_path / "bad" / "model_final.pt").exists()
    r = CliRunner().invoke(main, base + ["--out", str(tmp_path / "run"), "--warmup-steps", "1"])
    assert r.exit_code == 0, r.output
    assert "warm-up" not in r.stderr  # 2 steps >= a 1-step warm-up: the rate reaches --lr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["warmup_steps"] == 1


def test_train_and_eval_cli(sample_root, tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", "--data", f"sample:{sample_root}", "--preset", "segclip-small",
                                  "--out", str(out), "--max-steps", "3", "--batch", "2", "--size", "64",
                                  "--backbone-weights", "none", "--clip-checkpoint", "none", "--device", "cpu",
                                  "--prompt", "road=an asphalt road seen from above"])
    assert r.exit_code == 0, r.output
    assert "warning: --max-steps 3 is shorter than the 50-step learning-rate warm-up" in r.stderr  # small preset
    assert "give e.g. --warmup-steps 1" in r.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["prompts"][2] == "an asphalt road seen from above"
    metrics = json.loads((out / "eval_val.json").read_text())
    assert 0.0 <= metrics["miou"] <= 1.0 and set(metrics["per_class_iou"]) == set(cfg["classes"])
    r = CliRunner().invoke(main, ["eval", str(out), "--data", f"sample:{sample_root}:val",
                                  "--out", str(tmp_path / "m.json"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    again = json.loads((tmp_path / "m.json").read_text())
    assert again["miou"] == pytest.approx(metrics["miou"])
    assert {"miou", "mf1", "overall_accuracy", "per_class_iou", "per_class_f1"} <= set(again)


@pytest.mark.parametrize("args,needle", [
    (["--preset", "segclip-r51"], "unknown preset"),
    (["--data", "loveda:/nonexistent/segclip-data"], "/nonexistent/segclip-data"),
    (["--prompt", "roads=x"], "unknown class"),
])
def test_train_bad_input_exits_2_with_one_line(sample_root, tmp_path, args, needle):
    base = {"--data": f"sample:{sample_root}", "--preset": "segclip-small", "--out": str(tmp_path / "r")}
    for k, v in zip(args[::2], args[1::2]):
        if k in base:
            base[k] = v
    extra = [a for pair in zip(args[::2], args[1::2]) if pair[0] not in base for a in pair]
    cmd = ["train"] + [x for kv in base.items() for x in kv] + extra + ["--max-steps", "1", "--backbone-weights", "none", "--clip-checkpoint", "none"]
    r = CliRunner().invoke(main, cmd)
    assert r.exit_code == 2, r.output
    lines = [l for l in r.output.strip().splitlines() if l]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.output
    assert "Traceback" not in r.output


def test_eval_checkpoint_from_other_class_list(tmp_path, sample_root):
    model = make_small_model(classes=("a", "b", "c"))
    path = atomic_save(checkpoint_dict(model, [(0, 0, 0)] * 3), tmp_path / "other.pt")
    r = CliRunner().invoke(main, ["eval", str(path), "--data", f"sample:{sample_root}"])
    assert r.exit_code == 2 and "trained on classes" in r.output and "Traceback" not in r.output


def test_ddp_two_gloo_processes_take_a_step(sample_root, tmp_path):
    """torchrun-style launch with 2 CPU processes: both take the step and the weights stay in sync."""
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from segclip.cli.train_cmds import run_training
        trainer, res = run_training("sample", {str(sample_root)!r}, "segclip-small", {str(tmp_path / 'ddp')!r},
            max_steps=1, batch_size=2, crop_size=64, backbone_weights="none", clip_checkpoint="none",
            device="cpu", progress=False)
        assert trainer.world == 2, trainer.world
        w = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
        gathered = [torch.zeros_like(w) for _ in range(2)]
        torch.distributed.all_gather(gathered, w)
        assert torch.equal(gathered[0], gathered[1]), "replicas diverged"
        print("RANK_OK", trainer.rank, res["step"])
    """))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with socket.socket() as s:  # torchrun's static rendezvous needs a concrete free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                             "--master_port", str(port), str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)
    finally:  # never leave worker processes behind, even on a hang
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, out[-2000:] + err[-4000:]
    assert out.count("RANK_OK") == 2
    ckpt = load_checkpoint(tmp_path / "ddp")
    assert ckpt["step"] == 1 and ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2


def test_offline_named_weights_fail_at_once_naming_all(sample_root, tmp_path, monkeypatch):
    """Named weights that are not cached and cannot be fetched: one line naming every one, before any download."""
    monkeypatch.setenv("SEGCLIP_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # nothing cached
    r = CliRunner().invoke(main, ["train", "--data", f"sample:{sample_root}", "--preset", "segclip-small",
                                  "--out", str(tmp_path / "r"), "--max-steps", "1", "--device", "cpu",
                                  "--backbone-weights", "imagenet", "--clip-checkpoint", "openai"])
    assert r.exit_code == 2, r.output
    errs = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errs) == 1 and "Traceback" not in r.output, r.output
    for needle in ("backbone resnet18 'imagenet'", "CLIP ViT-B-16 'openai'", "SEGCLIP_OFFLINE=1",
                   "--backbone-weights PATH --clip-checkpoint PATH", "--backbone-weights none --clip-checkpoint none"):
        assert needle in errs[0], (needle, errs[0])
    assert not (tmp_path / "torch").exists() or not any((tmp_path / "torch").rglob("*.pth"))


def test_cached_weights_need_no_network(tmp_path, monkeypatch):
    from segclip.modeling.weights import check_pretrained_available

    monkeypatch.setenv("SEGCLIP_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(SegclipError, match=r"backbone resnet18 'imagenet'"):
        check_pretrained_available("resnet18", "imagenet")
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth").write_bytes(b"cached")  # torchvision's file name
    check_pretrained_available("resnet18", "imagenet")
    check_pretrained_available("resnet18", "none", "ViT-B-16", "none")


def test_explicit_random_clip_has_no_missing_weights_notice(caplog):
    from segclip.modeling.text import load_clip

    with caplog.at_level("INFO"):
        load_clip("RN50", "none")
    assert not [r for r in caplog.records if "no pretrained weights" in r.getMessage().lower()], caplog.text


def _to_16bit(src: Path, dst: Path) -> None:
    """A copy of a LoveDA-format set whose images are 16-bit PNGs holding 16 x the 8-bit values
    (0..4080): ``--range 0,4080`` must give back exactly the 8-bit pixels."""
    import rasterio
    from PIL import Image

    shutil.copytree(src, dst)
    for p in dst.rglob("images_png/*.png"):
        a = np.asarray(Image.open(p).convert("RGB")).astype(np.uint16) * 16
        p.unlink()
        with rasterio.open(p, "w", driver="PNG", width=a.shape[1], height=a.shape[0], count=3, dtype="uint16") as ds:
            ds.write(np.moveaxis(a, -1, 0))


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_train_range_is_recorded_and_applied_by_eval_and_predict(sample_root, tmp_path, trained_checkpoint):
    """train --range LOW,HIGH: the datasets read 16-bit images stretched from it, the checkpoint (and
    so every export's signature) records it, predict and eval apply it by default, and a resume with
    another range is refused.  The reference is the 8-bit set the 16-bit one was made from."""
    from segclip.contract import signature_from_checkpoint
    from segclip.data import build_dataset

    root16 = tmp_path / "data16"
    _to_16bit(sample_root, root16)
    plain, ranged = build_dataset("loveda", sample_root, "val"), build_dataset("loveda", root16, "val", value_range=(0, 4080))
    for i in range(len(plain)):
        np.testing.assert_array_equal(ranged[i]["image"], plain[i]["image"])
    per_image = build_dataset("loveda", root16, "val")[0]["image"]  # the default p2-p98 stretch differs
    assert not np.array_equal(per_image, plain[0]["image"])

    run = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", "--data", f"loveda:{root16}", "--preset", "segclip-small", "--out", str(run),
                                  "--max-steps", "2", "--batch", "2", "--size", "64", "--backbone-weights", "none",
                                  "--clip-checkpoint", "none", "--device", "cpu", "--no-eval", "--range", "0,4080"])
    assert r.exit_code == 0, r.output
    ckpt = load_checkpoint(run / "model_final.pt")
    assert ckpt["train_config"]["value_range"] == [0.0, 4080.0]
    assert signature_from_checkpoint(ckpt).value_range == (0.0, 4080.0)
    with pytest.raises(SegclipError, match="trained with --range 0,4080, this call gives no --range"):
        _train(root16, run, max_steps=3, resume=True)

    # predict applies the recorded range: compared on the varied parity model (several classes with real
    # boundaries per image; the 2-step model above predicts nearly one class, which proves little)
    import rasterio

    from conftest import PARITY_SIZE, parity_images, parity_problems

    ck = load_checkpoint(trained_checkpoint)
    ck["train_config"] = {**(ck.get("train_config") or {}), "value_range": [0.0, 4080.0]}
    varied = atomic_save(ck, tmp_path / "varied_range.pt")
    x8 = parity_images(1)[0]
    img8, img16 = tmp_path / "v8.png", tmp_path / "v16.png"
    Image.fromarray(x8).save(img8)
    with rasterio.open(img16, "w", driver="PNG", width=PARITY_SIZE, height=PARITY_SIZE, count=3, dtype="uint16") as ds:
        ds.write(np.moveaxis(x8.astype(np.uint16) * 16, -1, 0))
    outs = {}
    for name, img, extra in (("p16", img16, []), ("p8", img8, []), ("p16own", img16, ["--range", "0,65535"])):
        r = CliRunner().invoke(main, ["predict", "--model", str(varied), str(img), "--out", str(tmp_path / name), "--device",
                                      "cpu", "--size", str(PARITY_SIZE), *extra])
        assert r.exit_code == 0, r.output
        outs[name] = np.asarray(Image.open(next((tmp_path / name).glob("*_mask.png"))))
    assert not parity_problems(outs["p8"][None]), "the comparison needs a varied prediction"
    np.testing.assert_array_equal(outs["p16"], outs["p8"])  # the 16-bit file predicted as the 8-bit one it holds
    assert not np.array_equal(outs["p16own"], outs["p8"])  # another range gives another prediction: the range matters
    stats = json.loads(next((tmp_path / "p16").glob("*.json")).read_text())
    assert "range [0,4080]" in json.dumps(stats), stats
    assert "scaled to 8 bits (uint16 range [0,65535]" in r.output  # said on screen, not only in _counts.json

    r = CliRunner().invoke(main, ["eval", str(run), "--data", f"loveda:{root16}:val", "--device", "cpu",
                                  "--out", str(tmp_path / "e16.json")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["eval", str(run), "--data", f"loveda:{sample_root}:val", "--device", "cpu",
                                  "--out", str(tmp_path / "e8.json")])
    assert r.exit_code == 0, r.output
    e16, e8 = (json.loads((tmp_path / f).read_text()) for f in ("e16.json", "e8.json"))
    assert e16["miou"] == e8["miou"] and e16["per_class_iou"] == e8["per_class_iou"]
