"""``segclip doctor --gpu``: the first GPU day in one command, one JSON and one Markdown verdict.

On a machine with an NVIDIA GPU it trains the quickstart model (or takes ``--model``), then checks
every GPU path segclip has, each as one step with a status (``ok`` / ``failed`` / ``skipped`` and
why):

* ``gpu``: what torch sees (name, compute capability, bfloat16);
* ``train-amp``: a short AMP training run of the small preset on the sample set (``--amp bf16``
  where the GPU has it), which also makes the model the other steps use;
* ``torch-cuda``: the PyTorch runner on ``cuda:0`` against the PyTorch CPU reference (pixel
  agreement on the parity images) and its eager latency, the baseline of every speed-up below;
* ``ort-cuda``: ONNX Runtime's CUDA provider on the FP32 ONNX, when onnxruntime-gpu is installed
  (an error, not a CPU run, when the provider does not load: ``onnx_runner.check_providers``);
* ``engine-fp32`` / ``engine-fp16`` / ``engine-int8``: ``segclip export --trt`` of each precision
  (each behind its own parity gate against PyTorch on the parity images and the sample set), the
  engine loaded through ``TensorRTRunner`` and timed against eager PyTorch on CUDA.

Without ``tensorrt`` the engine steps are skipped with that reason and the rest still runs; without
a GPU nothing runs and the verdict is "no GPU", listing the steps.  Budgeted for <= 10 minutes on one
data-centre GPU (the training steps and timing budgets below).
"""
from __future__ import annotations

import importlib.util
import json
import platform
import shutil
import time
import traceback
from pathlib import Path
from typing import Callable, Optional

from segclip.errors import SegclipError, one_line
from segclip.parsers import split_device

STEPS = {
    "gpu": "what torch sees: GPU name, compute capability, bfloat16 support",
    "train-amp": "train the quickstart model (segclip-small on the sample set) with AMP on cuda:0 (or load --model)",
    "torch-cuda": "PyTorch runner on cuda:0 vs the PyTorch CPU reference (pixel agreement), eager CUDA latency",
    "ort-cuda": "ONNX Runtime CUDA provider on model.onnx (onnxruntime-gpu): agreement and latency, no CPU fallback",
    "engine-fp32": "export --trt (FP32 engine, parity gate vs PyTorch), load through TensorRTRunner, time vs eager CUDA",
    "engine-fp16": "export --fp16 --trt (FP16 engine, gate on masks and scores), load through TensorRTRunner, time vs eager CUDA",
    "engine-int8": "export --int8 --trt (INT8 Q/DQ engine, calibrated and gated on the sample set), load, time vs eager CUDA",
}
ENGINES = {"engine-fp32": {}, "engine-fp16": {"fp16": True}, "engine-int8": {"int8": True}}
JSON_NAME, MD_NAME = "gpu_acceptance.json", "gpu_acceptance.md"
TRAIN_STEPS = 300  # the small preset on an H100: about a minute
BATCH = 4
TIME_BUDGET_S = 5.0  # per latency measurement


def no_gpu_reason() -> Optional[str]:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"no NVIDIA GPU visible to torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'})"
    return None


def _step(name: str, status: str, **info) -> dict:
    return {"step": name, "what": STEPS[name], "status": status, **info}


class Acceptance:
    """``train_fn``: ``segclip.cli.train_cmds.run_training`` (the CLI layer hands it in: one training entry)."""

    def __init__(self, out, model=None, device: str = "cuda:0", train_steps: int = TRAIN_STEPS, log: Callable = print,
                 train_fn: Optional[Callable] = None):
        self.out, self.model, self.device, self.train_steps, self.log = Path(out), model, device, int(train_steps), log
        self.train_fn = train_fn
        self.steps: list = []
        self.eager = None  # eager PyTorch CUDA latency (ms, p50), the baseline of the speed-ups

    # ---- one step ------------------------------------------------------------------------------------
    def run_step(self, name: str, fn: Callable) -> dict:
        t0 = time.perf_counter()
        try:
            rec = fn()
            rec = rec if isinstance(rec, dict) and "status" in rec else _step(name, "ok", **(rec or {}))
        except SegclipError as e:
            rec = _step(name, "failed", reason=str(e))
        except Exception as e:  # the verdict records what broke; the other steps still run
            rec = _step(name, "failed", reason=f"{type(e).__name__}: {one_line(e)}", traceback=traceback.format_exc()[-4000:])
        rec["seconds"] = round(time.perf_counter() - t0, 1)
        self.steps.append(rec)
        self.log(f"{name:12s} {rec['status'].upper():7s} {rec.get('reason') or rec.get('summary') or ''}".rstrip())
        return rec

    # ---- the steps ------------------------------------------------------------------------------------
    def gpu(self) -> dict:
        import torch

        i = torch.device(self.device).index or 0
        cc = torch.cuda.get_device_capability(i)
        return {"gpu": torch.cuda.get_device_name(i), "compute_capability": f"{cc[0]}.{cc[1]}",
                "bf16": bool(torch.cuda.is_bf16_supported()), "torch": torch.__version__, "cuda": torch.version.cuda,
                "summary": f"{torch.cuda.get_device_name(i)} (sm {cc[0]}.{cc[1]})"}

    def train(self) -> dict:
        from segclip.checkpoint import is_run_dir, resolve_checkpoint

        if self.model is not None:
            self.checkpoint = resolve_checkpoint(self.model)
            return {"checkpoint": str(self.checkpoint), "summary": f"loaded {self.checkpoint}"}
        import torch

        from segclip.data.sample import generate_sample_dataset

        self.data = generate_sample_dataset(self.out / "data", seed=0, force=True)
        run = self.out / "run"
        # an earlier acceptance's own run (its verdict beside it) is trained again: the default --out is
        # one folder, and the trainer refuses a run with checkpoints unless resumed
        if (self.out / JSON_NAME).is_file() and is_run_dir(run):
            shutil.rmtree(run)
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        _, res = self.train_fn("sample", str(self.data), "segclip-small", str(run), max_steps=self.train_steps,
                              device=self.device, progress=False, backbone_weights="none", clip_checkpoint="none", amp=amp)
        self.checkpoint = resolve_checkpoint(run)
        loss = (res.get("last") or {}).get("loss")
        return {"amp": amp, "steps": res["step"], "skipped_steps": res.get("skipped_steps"), "last_loss": loss,
                "train_seconds": round(res["train_seconds"], 1),
                "summary": f"{res['step']} steps, --amp {amp}, last loss {loss}"}

    def _images(self):
        from segclip.checkpoint import load_checkpoint
        from segclip.export.parity_images import parity_dataset, parity_images

        ckpt = load_checkpoint(self.checkpoint)
        size = int((ckpt.get("train_config") or {}).get("crop_size") or 512)
        imgs, _, _ = parity_images(parity_dataset(self._data_spec(), ckpt), 8, size, size, ckpt["classes"], log=lambda *a: None)
        return imgs, size

    def _data_spec(self):
        return f"sample:{self.data}:val" if getattr(self, "data", None) else None

    def _latency(self, runner, size: int) -> float:
        from segclip.benchmarks.timing import measure, random_batches

        with runner:
            t = measure(runner.infer, random_batches(BATCH, size, size), warmup=3, min_reps=10, budget_s=TIME_BUDGET_S)
        return t.stats["p50_ms"]

    def torch_cuda(self) -> dict:
        from segclip.inference.compare import agreement, run_all
        from segclip.runtime.torch_runner import TorchRunner

        imgs, size = self._images()
        cpu = run_all(TorchRunner(self.checkpoint, device="cpu"), imgs, BATCH)["mask"]
        gpu_runner = TorchRunner(self.checkpoint, device=self.device)
        agree = agreement(run_all(gpu_runner, imgs, BATCH)["mask"], cpu)
        self.eager = self._latency(gpu_runner, size)
        status = "ok" if agree >= 0.999 else "failed"
        return _step("torch-cuda", status, pixel_agreement=round(agree, 6), p50_ms=self.eager, batch=BATCH, size=size,
                     summary=f"agreement {100 * agree:.3f}% vs CPU, eager {self.eager} ms / batch {BATCH}",
                     **({} if status == "ok" else {"reason": f"cuda vs cpu agreement {100 * agree:.3f}% < 99.9%"}))

    def ort_cuda(self) -> dict:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return _step("ort-cuda", "skipped", reason=f"onnxruntime {ort.__version__} has no CUDA provider (pip install 'segclip[gpu]')")
        from segclip.export import export
        from segclip.inference.compare import agreement, run_all
        from segclip.runtime.onnx_runner import OnnxRunner
        from segclip.runtime.torch_runner import TorchRunner

        imgs, size = self._images()
        d = self.out / "export-onnx"
        export(self.checkpoint, d, force=True, device=self.device, data=self._data_spec(), log=lambda *a: None, tune=False)
        r = OnnxRunner(d / "model.onnx", providers="cuda", device_id=torch_index(self.device))
        agree = agreement(run_all(r, imgs, BATCH)["mask"], run_all(TorchRunner(self.checkpoint, device=self.device), imgs, BATCH)["mask"])
        ms = self._latency(r, size)
        return {"pixel_agreement": round(agree, 6), "p50_ms": ms, "providers": r._providers(),
                "summary": f"agreement {100 * agree:.3f}%, {ms} ms / batch {BATCH}"}

    def engine(self, name: str) -> dict:
        from segclip.contract import tensorrt_unavailable_reason

        why = tensorrt_unavailable_reason()
        if why:
            return _step(name, "skipped", reason=why)
        from segclip.errors import GateFailed
        from segclip.export import export
        from segclip.runtime import load_runner

        d = self.out / f"export-{name}"
        try:
            m = export(self.checkpoint, d, trt=True, force=True, batch=(1, BATCH, 2 * BATCH), device=self.device,
                       data=self._data_spec(), require_engine=True, log=lambda *a: None, tune=False, **ENGINES[name])
        except GateFailed as e:
            return _step(name, "failed", reason=str(e), gate=_gate(d))
        gate = _gate(d)
        r = load_runner(d, format="tensorrt", device=self.device)
        ms = self._latency(r, int(m["input"]["height"]))
        speedup = round(self.eager / ms, 2) if self.eager and ms else None
        return {"gate": gate, "p50_ms": ms, "speedup_vs_eager": speedup, "tensorrt_version": m["artifacts"]["tensorrt"].get("tensorrt_version"),
                "summary": f"gate {gate.get('pixel_agreement')} (max|dscore| {gate.get('max_abs_diff')}), {ms} ms / batch {BATCH}"
                           + (f", {speedup}x eager CUDA" if speedup else "")}

    # ---- the driver -------------------------------------------------------------------------------------
    def run(self) -> dict:
        from segclip.atomic import holds_own

        # writes its verdict, data, run and exports into --out: refused in a folder it did not make
        holds_own(self.out, lambda d: (d / JSON_NAME).is_file(), "a segclip GPU acceptance folder", f"no {JSON_NAME}")
        t0 = time.perf_counter()
        reason = no_gpu_reason()
        if reason:
            verdict = {"verdict": "no GPU", "reason": reason, "would_run": [{"step": k, "what": v} for k, v in STEPS.items()]}
        else:
            self.run_step("gpu", self.gpu)
            if self.run_step("train-amp", self.train)["status"] == "ok":
                self.run_step("torch-cuda", self.torch_cuda)
                self.run_step("ort-cuda", self.ort_cuda)
                for name in ENGINES:
                    self.run_step(name, lambda n=name: self.engine(n))
            ran = {s["step"] for s in self.steps}
            self.steps += [_step(k, "skipped", reason="training failed") for k in STEPS if k not in ran]
            failed = [s["step"] for s in self.steps if s["status"] == "failed"]
            skipped = [s["step"] for s in self.steps if s["status"] == "skipped"]
            verdict = {"verdict": "failed" if failed else "passed" + (" (with skips)" if skipped else ""),
                       "failed": failed, "skipped": skipped, "steps": self.steps}
        verdict.update(seconds=round(time.perf_counter() - t0, 1), host=platform.node(),
                       tensorrt=_version("tensorrt"), onnxruntime=_version("onnxruntime"))
        write_verdict(self.out, verdict)
        return verdict


def torch_index(device: str) -> int:
    return split_device(device)[1] or 0


def _gate(d: Path) -> dict:
    try:
        a = json.loads((d / "manifest.json").read_text())["artifacts"]["tensorrt"]
    except (OSError, KeyError, ValueError):
        return {}
    p = a.get("parity") or {}
    return {"status": a.get("status"), "precision": a.get("precision"), "pixel_agreement": p.get("pixel_agreement"),
            "threshold": p.get("threshold"), "max_abs_diff": p.get("max_abs_diff"),
            "public_twin_agreement": p.get("public_twin_agreement")}


def _version(module: str) -> Optional[str]:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return getattr(__import__(module), "__version__", "?")
    except Exception as e:  # a package that fails to import (missing libnvinfer) says so
        return f"unimportable ({one_line(e, 80)})"


def markdown(v: dict) -> str:
    lines = [f"# segclip GPU acceptance: {v['verdict']}", ""]
    if v["verdict"] == "no GPU":
        lines += [f"Nothing was run: {v['reason']}.", "", "On a machine with an NVIDIA GPU this command runs:", ""]
        lines += [f"1. `{s['step']}`: {s['what']}" for s in v["would_run"]]
    else:
        lines += ["| step | status | result |", "|---|---|---|"]
        lines += [f"| {s['step']} | {s['status']} | {(s.get('reason') or s.get('summary') or '').replace('|', '/')} |"
                  for s in v["steps"]]
    lines += ["", f"tensorrt {v.get('tensorrt') or 'not installed'}, onnxruntime {v.get('onnxruntime')}, {v['seconds']} s"]
    return "\n".join(lines) + "\n"


def write_verdict(out: Path, verdict: dict) -> tuple:
    from segclip.atomic import atomic_write_json, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(out / JSON_NAME, verdict), atomic_write_text(out / MD_NAME, markdown(verdict))
