"""INT8 export: calibrated Q/DQ graphs, their placement, the held-out parity gate, bad input.

One export of the INT8 fixture (``margin_checkpoint``, ``conftest.build_margin_model``: >= 3 classes with
real boundaries on every parity image, and real decision margins) serves the graph and gate tests; spies
record every image the calibration reader hands to ONNX Runtime and every image a parity runner sees, so
"calibration images never reach the gate" is checked on the pixels themselves, not on the exporter's own
bookkeeping.

The thresholds hold on every CPU: where u8 x s8 products saturate (x86 without VNNI, ``segclip.cpu``)
the CPU flavour is exported with 7-bit weights and the TensorRT flavour is gated without ONNX Runtime's
int8 kernels; both give the same class maps there as on a VNNI CPU (measured under qemu -cpu Haswell).
"""
from __future__ import annotations

import os
import platform
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import segclip.cpu as host_cpu

from conftest import (LOVEDA_CLASSES, PARITY_MAX, PARITY_SIZE, parity_problems,
                      rendered_scenes)
from export_fixtures import assert_one_error

SIZE = PARITY_SIZE

N_CALIB, N_GATE = 4, 4  # together the PARITY_MAX images the fixture is checked on
# The INT8 fixture agrees 96-97% with FP32 after 8-bit PTQ, |dmIoU| < 1 point (measured on a VNNI CPU and
# under AVX2 emulation); the parity fixture, fragile by design, only 77-80%.  The gate is tested at this
# threshold; the default 98% gate must fail on it (exit 1, marked failed).
FIXTURE_AGREEMENT = 0.93
FIXTURE_THRESHOLD = f"{FIXTURE_AGREEMENT}:3"
assert N_CALIB + N_GATE <= PARITY_MAX
QUANT_OPS = ("Conv", "MatMul", "Gemm")
FLOAT_OPS = ("GridSample", "Softmax", "LayerNormalization", "InstanceNormalization", "ReduceMean", "ReduceSum", "ArgMax")


def _cli(*args):
    from segclip.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def int8_data(tmp_path_factory):
    """A labelled ``folder`` dataset of the parity images (64 px crops of rendered scenes, the ones the
    parity fixture separates into several classes, cropped as ``parity_images`` does): calibration and
    gate images both come from it."""
    import yaml
    from PIL import Image

    root = tmp_path_factory.mktemp("int8_folder")
    imgs, labs = rendered_scenes(N_CALIB + N_GATE, 2 * SIZE, seed=11)
    (root / "images" / "val").mkdir(parents=True)
    (root / "masks" / "val").mkdir(parents=True)
    for i, (im, lb) in enumerate(zip(imgs, labs)):
        Image.fromarray(np.ascontiguousarray(im[20:20 + SIZE, 30:30 + SIZE])).save(root / "images" / "val" / f"t{i}.png")
        Image.fromarray(lb[20:20 + SIZE, 30:30 + SIZE].astype(np.uint8)).save(root / "masks" / "val" / f"t{i}.png")
    (root / "classes.yaml").write_text(yaml.safe_dump({"classes": list(LOVEDA_CLASSES), "ignore_index": 255}))
    return f"folder:{root}:val"


@pytest.fixture(scope="module")
def int8_export(margin_checkpoint, int8_data, tmp_path_factory):
    """(dir, manifest, calibration images seen, gate images seen) of one --int8 export at 64x64."""
    from segclip.export import export
    from segclip.export import int8 as q8
    from segclip.inference import compare as parity

    calib_seen, gate_seen = [], []
    get_next, run_all = q8.CalibrationReader.get_next, parity.run_all

    def spy_next(self):
        out = get_next(self)
        if out is not None:
            calib_seen.extend(np.array(x) for x in out["image"])
        return out

    def spy_run_all(runner, images, *args, **kwargs):
        gate_seen.extend(np.array(x) for x in images)
        return run_all(runner, images, *args, **kwargs)

    out = tmp_path_factory.mktemp("int8") / "export"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(q8.CalibrationReader, "get_next", spy_next)
        mp.setattr(parity, "run_all", spy_run_all)
        manifest = export(margin_checkpoint, out, int8=True, data=int8_data, calib_images=N_CALIB, parity_images=N_GATE,
                          batch=(1, 1, 4), int8_threshold=FIXTURE_THRESHOLD, int8_fallback=0, log=lambda *a: None)
    return out, manifest, calib_seen, gate_seen


def _producers(g):
    return {o: n for n in g.node for o in n.output}


def _init(g):
    return {t.name: numpy_helper.to_array(t) for t in g.initializer}


def _dq_inputs(node, prod, inits):
    """For each of the first two inputs of ``node``: (quantized value, scale, zero point) of the
    DequantizeLinear feeding it, directly or through a Cast (value None for an activation), or None when no DQ feeds it."""
    out = []
    for x in node.input[:2]:
        dq = prod.get(x)
        while dq is not None and dq.op_type == "Cast":  # the INT8+FP16 graph: FP32 DequantizeLinear -> Cast to FP16
            dq = prod.get(dq.input[0])
        if dq is None or dq.op_type != "DequantizeLinear":
            out.append(None)
            continue
        zp = inits.get(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
        out.append((inits.get(dq.input[0]), inits[dq.input[1]], zp))
    return out


def _weight_range(model) -> int:
    """The largest |quantized weight| of a Q/DQ graph: 127 with 8-bit weights, 64 with ``reduce_range``'s 7."""
    inits = _init(model.graph)
    return max(int(np.abs(v.astype(np.int32)).max()) for v in inits.values() if v.dtype == np.int8 and v.ndim >= 2)


# ---- the graphs -------------------------------------------------------------------------------------
def test_qdq_symmetric_per_channel_weights_and_float_islands(int8_export):
    out, manifest, _, _ = int8_export
    fp32 = onnx.load(str(out / "model.onnx"))
    n_conv = sum(n.op_type == "Conv" for n in fp32.graph.node)
    for fname, act_dtype in (("model_int8.onnx", np.int8), ("model_int8_cpu.onnx", np.uint8)):
        m = onnx.load(str(out / fname))
        g = m.graph
        prod, inits = _producers(g), _init(g)
        quantized_weights = 0
        for n in g.node:
            if n.op_type not in QUANT_OPS:
                continue
            dq = _dq_inputs(n, prod, inits)
            for q in dq:
                if q is None:
                    continue
                value, scale, zp = q
                assert zp is not None
                if value is not None:  # a weight: int8, symmetric (all zero points 0), per output channel
                    quantized_weights += 1
                    assert value.dtype == np.int8 and zp.dtype == np.int8 and not zp.any(), (fname, n.name)
                    if n.op_type == "Conv":
                        assert scale.shape == (value.shape[0],), (fname, n.name, scale.shape)
                    elif n.op_type == "MatMul" and value.ndim == 2:  # x @ W[K, N]: one scale per output column
                        assert scale.shape == (value.shape[1],), (fname, n.name, scale.shape)
                else:  # an activation
                    assert zp.dtype == act_dtype, (fname, n.name, zp.dtype)
                    if act_dtype == np.int8:
                        assert not zp.any(), (fname, n.name)  # TensorRT: symmetric, zero point 0
        # every Conv weight is quantized except the ones the manifest says stayed float
        float_nodes = set(manifest["artifacts"]["onnx_int8" if "cpu" not in fname else "onnx_int8_cpu"]["int8"]["float_nodes"])
        convs = [n for n in g.node if n.op_type == "Conv"]
        assert len(convs) == n_conv
        for n in convs:
            w = _dq_inputs(n, prod, inits)[1]
            assert (w is not None) or n.name in float_nodes, (fname, n.name)
        assert quantized_weights >= n_conv - len(float_nodes)
        # GridSample, Softmax, norms, reductions and the ArgMax read float tensors
        for n in g.node:
            if n.op_type in FLOAT_OPS:
                p = prod.get(n.input[0])
                assert p is None or p.op_type != "DequantizeLinear", (fname, n.op_type, n.name)
        if act_dtype == np.int8:  # TensorRT placement: Q/DQ only in front of Conv/MatMul/Gemm, float biases
            cons = {}
            for n in g.node:
                for x in n.input:
                    cons.setdefault(x, []).append(n)
            for n in g.node:
                if n.op_type == "DequantizeLinear":  # each DQ exists for a Conv/MatMul/Gemm input (a residual
                    # Add may share it: TensorRT fuses that Add into the Conv), never for a float-only op
                    ops = {c.op_type for c in cons.get(n.output[0], [])}
                    assert ops & set(QUANT_OPS) and not ops & set(FLOAT_OPS), (n.name, ops)
                if n.op_type == "Conv" and len(n.input) > 2 and n.input[2]:
                    assert inits[n.input[2]].dtype == np.float32, n.name
    # about a quarter of the FP32 file
    fp32_size = (out / "model.onnx").stat().st_size
    for key in ("onnx_int8", "onnx_int8_cpu"):
        size = (out / manifest["artifacts"][key]["file"]).stat().st_size
        assert size < 0.4 * fp32_size, (key, size, fp32_size)
        # the weight bits the manifest records (7 for the CPU flavour where u8 x s8 products saturate) are the graph's
        bits = manifest["artifacts"][key]["int8"]["weight_bits"]
        assert _weight_range(onnx.load(str(out / manifest["artifacts"][key]["file"]))) == {8: 127, 7: 64}[bits], key


# ---- the gate ---------------------------------------------------------------------------------------
def test_int8_runs_on_onnxruntime_and_passes_the_gate(int8_export, margin_checkpoint, capsys):
    import segclip.cpu as cpu
    from segclip.export import int8 as q8
    from segclip.runtime import load_runner

    out, manifest, _, gate_seen = int8_export
    assert manifest["status"] == "ok"
    from segclip.runtime import ov_extension

    lib = [ov_extension.LIBRARY_NAME] if ov_extension.compiler() else []  # segclip's OpenVINO kernel, where g++ is
    assert sorted(os.listdir(out)) == sorted(["manifest.json", "model.onnx", "model_int8.onnx", "model_int8_cpu.onnx",
                                              "model_int8_msda.onnx", *lib])
    # independent check: torch on the gate's own images vs each INT8 artifact on ONNX Runtime
    images = np.stack(gate_seen[:N_GATE])
    with load_runner(margin_checkpoint, scores=False) as ref:
        want = ref.infer(images)["mask"]
    assert not parity_problems(want)  # several classes with real boundaries per image, not a one-class model
    isa = cpu.int8_isa()
    for fmt in ("onnx_int8", "onnx_int8_cpu", "onnx_int8_msda"):
        a = manifest["artifacts"][fmt]
        assert a["status"] == "ok" and a["precision"] == "int8"
        assert a["parity"]["threshold"] == FIXTURE_AGREEMENT and a["parity"]["miou_tolerance"] == 3
        assert a["parity"]["per_class_iou_delta"]  # reported per class
        # the CPU it was calibrated and gated on, and what that decided
        rec = a["int8"]
        assert rec["isa"]["isa"] == isa and rec["isa"]["int8_saturates"] == cpu.saturates(isa)
        assert rec["weight_bits"] == (7 if fmt == "onnx_int8_cpu" and cpu.saturates(isa) else 8)
        assert rec["gate_kernels"] == (cpu.GATE_CPU_KERNELS if fmt == "onnx_int8_cpu" else cpu.GATE_DEQUANTIZED)
        # the gate's arithmetic: the CPU flavour as deployed (this CPU's int8 kernels), TensorRT's graph as float
        # on the dequantized values -- the same class maps on a VNNI and an AVX2-only CPU
        level = q8.gate_optimization(rec)
        assert level == (None if fmt == "onnx_int8_cpu" else "basic")
        if fmt == "onnx_int8_msda":  # the plugin graph: gated on ONNX Runtime through the plugin's CPU reference
            from segclip.runtime.onnx_runner import OnnxRunner

            # the same nodes quantized as model_int8.onnx, with onnx_int8's ranges; its cores are plugin nodes
            assert rec["quantized_nodes"] == manifest["artifacts"]["onnx_int8"]["int8"]["quantized_nodes"]
            assert rec["from"] == "model_int8.onnx" and a["plugin_nodes"] > 0 and "GridSample" not in a["ops"]
            runner = OnnxRunner(out / a["file"], providers="cpu", optimization=level, reference_ops=True)
        else:
            runner = load_runner(out, format=fmt, providers="cpu", **({"optimization": level} if level else {}))
        with runner as r:
            got = r.infer(images)["mask"]
        agree = float((got == want).mean())
        assert agree >= FIXTURE_AGREEMENT, (fmt, agree)
        assert abs(agree - a["parity"]["pixel_agreement"]) < 1e-6
    # run as deployed on this CPU's kernels: the 8-bit TensorRT graph saturates where VNNI is missing, and the
    # loader says so in one line; the CPU flavour was gated on what it runs here and is never warned about
    capsys.readouterr()
    load_runner(out, format="onnx_int8_cpu", providers="cpu")
    assert "warning" not in capsys.readouterr().err
    load_runner(out, format="onnx_int8", providers="cpu")
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(err) == (1 if cpu.saturates(isa) else 0), err


def test_vnni_gated_8bit_graph_warns_on_a_cpu_that_saturates(int8_export, int8_data, tmp_path, monkeypatch, capsys):
    """A CPU-flavour graph with 8-bit weights gated on a VNNI CPU, loaded where u8 x s8 products saturate
    (the recorded ISA and this CPU's are faked, not ONNX Runtime): one warning line naming the file, both
    ISAs and the command that re-gates it here; none where the gate's result holds."""
    import json
    import shutil

    import segclip.cpu as cpu
    from segclip.runtime import load_runner

    out = tmp_path / "copied"
    shutil.copytree(int8_export[0], out)
    m = json.loads((out / "manifest.json").read_text())
    rec = m["artifacts"]["onnx_int8_cpu"]["int8"]
    rec.update(weight_bits=8, isa={**rec["isa"], "isa": "avx512_vnni", "int8_saturates": False})
    (out / "manifest.json").write_text(json.dumps(m))

    def warnings_on(host, **opts):
        monkeypatch.setattr(cpu, "int8_isa", lambda flags=None, machine=None: host)
        capsys.readouterr()
        load_runner(out, format="onnx_int8_cpu", **opts)
        return [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]

    # ONNX Runtime only: the format table says OpenVINO does not run this graph (test_choice checks the refusal)
    lines = warnings_on("avx2", providers="cpu")
    assert len(lines) == 1 and lines[0].startswith("warning: model_int8_cpu.onnx"), lines
    for needle in ("8-bit weights", "gated on avx512_vnni", "(avx2, no VNNI)", "saturate",
                   f"segclip export {m['source']['checkpoint']} --int8 --data {int8_data}"):
        assert needle in lines[0], (needle, lines[0])
    assert warnings_on("avx512", providers="cpu")  # AVX-512 without VNNI saturates too
    for host in ("avx512_vnni", "avx_vnni", "amx", "arm_dotprod"):
        assert not warnings_on(host, providers="cpu"), host
    rec["weight_bits"] = 7  # 7-bit weights cannot saturate anywhere
    (out / "manifest.json").write_text(json.dumps(m))
    assert not warnings_on("avx2", providers="cpu")


def test_speed_choice_skips_an_int8_graph_that_saturates_here(int8_export, tmp_path, monkeypatch):
    """``predict``'s default (contract.choose_artifact: the fastest gated artifact measured on this CPU) never
    takes an 8-bit graph whose gate did not measure this CPU's saturating arithmetic, however fast it ran."""
    import json
    import shutil

    import segclip.cpu as cpu
    from segclip import contract

    out = tmp_path / "copied"
    shutil.copytree(int8_export[0], out)
    m = json.loads((out / "manifest.json").read_text())

    def choice_on(host):
        monkeypatch.setattr(cpu, "int8_isa", lambda flags=None, machine=None: host)
        m["speed"] = [{"machine": contract.this_machine(), "measured": "2026-12-07T00:00:00Z", "rows": [
            {"artifact": "onnx", "runtime": "onnxruntime", "device": "cpu", "ms": 100.0},
            {"artifact": "onnx_int8", "runtime": "onnxruntime", "device": "cpu", "ms": 40.0},  # TensorRT's 8-bit graph
            {"artifact": "onnx_int8_cpu", "runtime": "onnxruntime", "device": "cpu", "ms": 50.0}]}]
        return contract.choose_artifact(m, out)

    cpu_rec = m["artifacts"]["onnx_int8_cpu"]["int8"]
    cpu_rec.update(weight_bits=7, isa={"isa": "avx2"})  # as an AVX2-only CPU exports it
    assert (choice_on("avx512_vnni").format, choice_on("avx2").format) == ("onnx_int8", "onnx_int8_cpu")
    cpu_rec.update(weight_bits=8, isa={"isa": "avx512_vnni"})  # as a VNNI CPU exports it
    c = choice_on("avx2")
    assert (c.format, c.how) == ("onnx", "measured")


EMULATED = r"""
import sys, numpy as np, onnxruntime as ort
images = np.load(sys.argv[1])
for path in sys.argv[2:]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    np.save(path + ".masks.npy", np.concatenate([s.run(["mask"], {"image": images[i:i + 1]})[0] for i in range(len(images))]))
"""


@pytest.mark.skipif(not shutil.which("qemu-x86_64") or platform.machine() != "x86_64",
                    reason="needs qemu-user (apt-get install qemu-user) on an x86_64 host to emulate an AVX2-only CPU")
@pytest.mark.skipif(host_cpu.saturates(host_cpu.int8_isa()),
                    reason="this CPU saturates 8-bit products itself: the other INT8 tests run the AVX2 path for real here")
def test_7bit_cpu_graph_gives_the_same_classes_on_an_emulated_avx2_cpu(int8_export, int8_data, tmp_path):
    """The premise of the 7-bit CPU flavour, checked on this machine: ONNX Runtime run under
    ``qemu-x86_64 -cpu Haswell`` (no AVX-512, no VNNI: MLAS picks its AVX2 kernels from cpuid) changes the
    8-bit graph's classes (16-bit saturation) and gives the 7-bit graph's classes as this CPU does."""
    import subprocess
    import sys

    import onnxruntime as ort

    from segclip.export import int8 as q8

    out, manifest, calib_seen, gate_seen = int8_export
    images = np.stack(gate_seen[:N_GATE])
    np.save(tmp_path / "images.npy", images)
    eight = tmp_path / "int8_cpu_8bit.onnx"
    seven = tmp_path / "int8_cpu_7bit.onnx"
    q = q8.quantize(onnx.load(str(out / "model.onnx")), "onnx_int8_cpu", np.stack(calib_seen[:N_CALIB]))
    onnx.save(q, str(eight))
    onnx.save(q8.quantize(onnx.load(str(out / "model.onnx")), "onnx_int8_cpu", np.stack(calib_seen[:N_CALIB]), reduce_range=True),
              str(seven))
    assert (_weight_range(onnx.load(str(eight))), _weight_range(onnx.load(str(seven)))) == (127, 64)
    native = {}
    for p in (eight, seven):
        s = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        native[p] = np.concatenate([s.run(["mask"], {"image": images[i:i + 1]})[0] for i in range(len(images))])
    script = tmp_path / "emulated.py"
    script.write_text(EMULATED)
    r = subprocess.run(["qemu-x86_64", "-cpu", "Haswell", sys.executable, str(script), str(tmp_path / "images.npy"),
                        str(eight), str(seven)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    emulated = {p: np.load(str(p) + ".masks.npy") for p in (eight, seven)}
    assert float((emulated[seven] == native[seven]).mean()) >= 0.999  # 7-bit: exact on both ISAs
    # 8-bit: the emulated AVX2 kernels saturate (otherwise this is not an AVX2 emulation, and proves nothing)
    assert float((emulated[eight] == native[eight]).mean()) < 0.99


@pytest.mark.parametrize("delta, status", [(-0.02, "failed"), (0.02, "failed"), (-0.005, "ok"), (0.01, "ok"), (None, "ok")])
def test_gate_int8_miou_tolerance(delta, status):
    """|dmIoU| beyond the tolerance (1 point) fails the row; within it (or no labels: None) it passes."""
    from segclip.export import int8 as q8

    row = q8.gate_int8({"name": "onnx_int8_cpu", "status": "ok", "miou_delta": delta}, 1.0)
    assert row["status"] == status and row["miou_tolerance"] == 1.0
    if status == "failed":
        assert row["note"] == "onnx_int8_cpu |dmIoU| 2.00 points > 1"


def test_calibration_images_never_reach_the_gate(int8_export):
    out, manifest, calib_seen, gate_seen = int8_export
    assert len(calib_seen) >= N_CALIB and len(gate_seen) >= N_GATE
    calib = {x.tobytes() for x in calib_seen}
    assert len(calib) == N_CALIB  # distinct images
    assert not any(x.tobytes() in calib for x in gate_seen)
    cal = manifest["artifacts"]["onnx_int8"]["int8"]["calibration"]
    assert cal["calibration_images"] == N_CALIB and not set(cal["calibration_files"]) & set(cal["gate_files"])


# ---- bad input --------------------------------------------------------------------------------------
def test_int8_bad_input_exits_2_and_writes_nothing(margin_checkpoint, int8_data, tmp_path):
    from segclip.checkpoint import atomic_save, checkpoint_dict

    from conftest import make_small_model

    out = tmp_path / "e"
    r = _cli("export", margin_checkpoint, "--int8", "--data", f"loveda:{tmp_path / 'nope'}:val", "--out", out)
    assert_one_error(r, 2, "nope")
    r = _cli("export", margin_checkpoint, "--int8", "--data", int8_data, "--calib-images", 2, "--out", out)
    assert_one_error(r, 2, "too few calibration images")
    r = _cli("export", margin_checkpoint, "--int8", "--data", int8_data, "--calib-images", 6, "--out", out)
    assert_one_error(r, 2, "too few images", "--calib-images")
    other = tmp_path / "three.pt"
    atomic_save(checkpoint_dict(make_small_model(classes=("land", "water", "road")), ((0, 0, 0), (0, 0, 255), (255, 255, 0)),
                                dataset="other"), other)
    r = _cli("export", other, "--int8", "--data", int8_data, "--out", out)
    assert_one_error(r, 2, "trained on classes")
    r = _cli("export", other, "--int8", "--out", out)  # no --data: the sample set's classes are not the model's
    assert_one_error(r, 2, "sample set has LoveDA's classes", "--data DATASET:ROOT:SPLIT")
    r = _cli("export", margin_checkpoint, "--int8", "--int8-threshold", "1.5", "--out", out)
    assert_one_error(r, 2, "--int8-threshold")
    assert not out.exists() and not any(p.name.startswith(".e") for p in tmp_path.iterdir())


def test_default_calibration_fits_the_labelled_images_there_are(int8_data):
    """The default --calib-images (16) could not work on the sample set's 16 val images (16 + 8 gate
    images needed): the default now takes what the gate leaves, saying so; an explicit count that
    does not fit is refused naming the count that does."""
    from segclip.data import build_dataset
    from segclip.errors import SegclipError
    from segclip.export import int8 as q8
    from segclip.parsers import parse_data

    name, root, split = parse_data(int8_data)
    ds = build_dataset(name, root, split)
    total = len(ds)
    assert total < q8.DEFAULT_CALIB_IMAGES + 4
    said = []
    got = q8.Int8Images((ds, int8_data), None, 4, SIZE, SIZE, LOVEDA_CLASSES, log=said.append)
    assert len(got.calib) == total - 4 and len(got.gate) == 4 and not set(got.calib_idx) & set(got.gate_idx)
    assert len(said) == 1 and f"calibrating on {total - 4}, gating on 4" in said[0]
    with pytest.raises(SegclipError, match=f"pass --calib-images {total - 4}"):
        q8.Int8Images((ds, int8_data), q8.DEFAULT_CALIB_IMAGES, 4, SIZE, SIZE, LOVEDA_CLASSES, log=said.append)


def test_an_int8_gate_failure_on_a_low_scoring_model_says_it_looks_under_trained():
    from segclip.export.exporter import Exporter

    int8_row, fp16_row = {"name": "onnx_int8", "precision": "int8"}, {"name": "onnx_fp16", "precision": "fp16"}
    hint = Exporter._undertrained_hint([int8_row], {"reference": {"miou": 0.178}})
    assert "mIoU 17.8%" in hint and "looks under-trained" in hint and "\n" not in hint
    assert Exporter._undertrained_hint([int8_row], {"reference": {"miou": 0.81}}) == ""  # a trained model: no hint
    assert Exporter._undertrained_hint([fp16_row], {"reference": {"miou": 0.178}}) == ""  # not an INT8 failure
    assert Exporter._undertrained_hint([int8_row], {"reference": {"miou": None}}) == ""  # no labels: nothing to say


def test_openvino_runner_runs_fp32_and_int8_graphs(int8_export, margin_checkpoint, capsys):
    import segclip.cpu as cpu
    from segclip.runtime import load_runner

    out, _, _, gate_seen = int8_export
    images = np.stack(gate_seen[:N_GATE])
    with load_runner(margin_checkpoint, scores=False) as ref:
        want = ref.infer(images)["mask"]
    isa = cpu.int8_isa()
    masks = {}
    for fmt, need in (("onnx", 0.999), ("onnx_int8", FIXTURE_AGREEMENT), ("onnx_int8_msda", FIXTURE_AGREEMENT)):
        capsys.readouterr()
        with load_runner(out, format=fmt, runtime="openvino", threads=2) as r:
            assert r.backend == "openvino"
            got = np.concatenate([r.infer(images[i:i + 1])["mask"] for i in range(len(images))])  # batch 1 and
            got2 = r.infer(images)["mask"]  # a second compiled shape
        assert np.array_equal(got, got2)
        if fmt == "onnx_int8" and cpu.saturates(isa):
            # OpenVINO's CPU int8 kernels add 8-bit products in saturating 16-bit lanes here too (measured under
            # AVX2 emulation: 45% agreement with 8-bit weights, 97% on VNNI): the loader must have said so
            assert "warning: model_int8.onnx" in capsys.readouterr().err
            pytest.skip(f"OpenVINO INT8 agreement needs a CPU whose 8-bit products do not saturate (VNNI, AMX, Arm); "
                        f"this one is {isa}: checked that the loader warns instead")
        assert float((got == want).mean()) >= need, fmt
        masks[fmt] = got
    # segclip's deformable-attention kernel in place of GridSample: the same INT8 graph otherwise
    assert float((masks["onnx_int8_msda"] == masks["onnx_int8"]).mean()) >= 0.99


def test_default_int8_gate_fails_exit_1_and_marks_failed(margin_checkpoint, int8_data, tmp_path, monkeypatch):
    """The default gate (98%) fails on the fixture (96-97%).  This export runs as on an AVX2-only CPU
    (``segclip.cpu.int8_isa`` faked): its CPU flavour gets 7-bit weights and the manifest says so."""
    import json

    import segclip.cpu as cpu

    monkeypatch.setattr(cpu, "int8_isa", lambda flags=None, machine=None: "avx2")
    out = tmp_path / "e"
    # --fp16 --trt: the INT8+FP16 graph (and the engine, on a GPU) must derive from the graph the fallback kept
    r = _cli("export", margin_checkpoint, "--int8", "--fp16", "--trt", "--data", int8_data, "--calib-images", N_CALIB,
             "--parity-images", N_GATE, "--int8-fallback", 1, "--out", out)
    assert_one_error(r, 1, "parity gate failed", "onnx_int8")
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "failed"
    a = m["artifacts"]["onnx_int8"]
    assert a["status"] == "failed" and a["parity"]["pixel_agreement"] < 0.98
    assert [x["float_nodes"] for x in a["int8"]["fallback_rounds"]] == [1]  # one fallback round, its node listed
    assert len(a["int8"]["fallback_float_nodes"]) == 1 and a["int8"]["fallback_float_nodes"][0]["name"]
    kept = a["int8"]["fallback_float_nodes"][0]["name"]
    for fname in ("model_int8.onnx", "model_int8_fp16.onnx"):
        g = onnx.load(str(out / fname)).graph
        node = next(n for n in g.node if n.name == kept)
        # neither its weight nor its inputs are quantized, also where a quantized node shares an input with it
        assert _dq_inputs(node, _producers(g), _init(g)) == [None, None], (fname, kept)
        quantized = [n.name for n in g.node if n.op_type in QUANT_OPS and _dq_inputs(n, _producers(g), _init(g))[1]]
        assert quantized, fname  # ... while the other layers are
    assert m["artifacts"]["onnx_int8_fp16"]["status"] in ("ok", "failed")  # gated like every artifact
    assert m["artifacts"]["onnx"]["status"] == "ok" and (out / "model_int8.onnx").is_file()
    # nothing derives from a failed graph: the kernel's plugin-form graph is not built, and the manifest says why
    msda = m["artifacts"]["onnx_int8_msda"]
    assert msda["status"] == "not_built" and "model_int8.onnx" in msda["reason"]
    assert not (out / "model_int8_msda.onnx").exists()
    # where u8 x s8 products saturate: 7-bit weights (|q| <= 64) for the CPU flavour, 8-bit for TensorRT's graphs
    for key, bits in (("onnx_int8_cpu", 7), ("onnx_int8", 8), ("onnx_int8_fp16", 8)):
        rec = m["artifacts"][key]["int8"]
        assert rec["isa"]["isa"] == "avx2" and rec["isa"]["int8_saturates"] and rec["weight_bits"] == bits, key
    for fname, bits in (("model_int8_cpu.onnx", 7), ("model_int8.onnx", 8)):
        assert _weight_range(onnx.load(str(out / fname))) == {8: 127, 7: 64}[bits], fname


def test_profiles_of_the_int8_graphs_say_where_the_time_goes(int8_export):
    """run_targets' per-layer profiles of the two INT8 paths (OpenVINO's PERF_COUNT, ONNX Runtime's
    profiler) and the INT8 GEMM rate it divides the model's FLOPs by.  No timing assertions: the
    figures must exist and add up, and the INT8 kernels must be found in the INT8 graph only."""
    from segclip.benchmarks.profiling import ort_profile, ov_profile
    from segclip.benchmarks.timing import int8_gemm_rate

    out, _, _, gate_seen = int8_export
    x = np.stack(gate_seen[:1])
    ov8, ov32 = ov_profile(out / "model_int8.onnx", x, threads=2, iters=1), ov_profile(out / "model.onnx", x, threads=2, iters=1)
    for p in (ov8, ov32):
        assert p["ops"] and p["total_ms"] > 0 and sum(o["ms"] for o in p["ops"]) <= p["total_ms"] * 1.001
    assert any(o["op"].startswith("GridSample") for o in ov8["ops"] + ov32["ops"])  # the deformable sampling stays float
    assert 0 < ov8["int8_ms"] < ov8["total_ms"] and ov32["int8_ms"] == 0
    ort8 = ort_profile(out / "model_int8_cpu.onnx", x, threads=2)
    assert any(o["op"] in ("QLinearConv", "MatMulIntegerToFloat", "ConvInteger", "MatMulInteger") for o in ort8["ops"])
    g = int8_gemm_rate(2, n=256, reps=2)
    assert g["gops_best"] > 0 and g["reps"] == 2 and "MatMulInteger" in g["method"]


def test_ranges_move_to_a_graph_of_the_same_nodes_and_refuse_a_stranger(int8_export, int8_data, tmp_path):
    """``int8.transfer_ranges`` keys the calibrated ranges by node name, so the plugin graph gets the GridSample
    graph's: every Conv/MatMul/Gemm must have its counterpart, or it refuses rather than quantize blind."""
    from segclip.errors import SegclipError
    from segclip.export import int8 as q8

    out, _, calib_seen, _ = int8_export
    model = onnx.load(str(out / "model.onnx"))
    cache = tmp_path / "cache.json"
    q8.quantize(model, "onnx_int8", np.stack(calib_seen[:N_CALIB]), cache=cache)
    n = q8.transfer_ranges(model, model, cache, tmp_path / "same.json")
    import json

    assert n == len(json.loads(cache.read_text())["data"])  # every range finds its node
    stranger = onnx.ModelProto()
    stranger.CopyFrom(model)
    node = next(x for x in stranger.graph.node if x.op_type == "MatMul")
    node.name += "_renamed"
    with pytest.raises(SegclipError, match="no counterpart") as e:
        q8.transfer_ranges(model, stranger, cache, tmp_path / "stranger.json")
    assert node.name in str(e.value) and "\n" not in str(e.value)


def test_default_choice_skips_a_kernel_graph_that_cannot_load_here(int8_export, tmp_path, monkeypatch, capsys):
    """A speed record (from this CPU model, say on another box) ranks model_int8_msda.onnx fastest; where its
    library was built for another OpenVINO and no compiler can rebuild it, the default is the next fastest,
    with one line saying why -- not a runner that fails to load.  An explicit --format still gets the error."""
    import json

    from segclip.contract import SPEED, this_machine
    from segclip.errors import SegclipError
    from segclip.runtime import load_runner

    from segclip.runtime import ov_extension

    if ov_extension.build_problem():
        pytest.skip(f"the export wrote no kernel library here: {ov_extension.build_problem()}")
    src, _, _, _ = int8_export
    d = tmp_path / "export"
    shutil.copytree(src, d)
    m = json.loads((d / "manifest.json").read_text())
    rows = [("onnx_int8_msda", "openvino", 5.0), ("onnx_int8", "openvino", 8.0), ("onnx", "onnxruntime", 20.0)]
    m[SPEED] = [{"machine": this_machine(), "measured": "2026-12-07T00:00:00Z", "window": [64, 64], "calls": 3,
                 "rows": [{"artifact": a, "runtime": rt, "device": "cpu", "batch": 2, "ms": ms} for a, rt, ms in rows]}]
    (d / "manifest.json").write_text(json.dumps(m))
    assert load_runner(d).choice.format == "onnx_int8_msda"
    m["artifacts"]["onnx_int8_msda"]["openvino_extension"]["openvino"] = "2024.0.0"
    (d / "manifest.json").write_text(json.dumps(m))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    capsys.readouterr()
    runner = load_runner(d)
    assert (runner.choice.format, runner.choice.runtime) == ("onnx_int8", "openvino")
    notes = [ln for ln in capsys.readouterr().err.splitlines() if "model_int8_msda.onnx" in ln]
    assert len(notes) == 1 and "left out of the default choice" in notes[0] and "g++" in notes[0]
    monkeypatch.setattr(ov_extension, "_BUILT", {})
    # the graph's own metadata still names the library it was built with, which matches: an explicit choice loads it
    with load_runner(d, format="onnx_int8_msda", runtime="openvino") as r:
        assert r.backend == "openvino"
    with pytest.raises(SegclipError, match="g\\+\\+"):
        (d / ov_extension.LIBRARY_NAME).unlink()
        with load_runner(d, format="onnx_int8_msda", runtime="openvino"):
            pass
