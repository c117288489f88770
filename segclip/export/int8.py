"""INT8 in the graph: calibrated Q/DQ ONNX for TensorRT explicit quantization and for x86 CPUs.

TensorRT 10.1 deprecated implicit INT8 calibration and TensorRT 11 removed it: the scales must be in
the ONNX as QuantizeLinear/DequantizeLinear pairs.  ONNX Runtime's ``quantize_static`` (QDQ format,
per-channel weights) calibrates once on real images and writes two flavours of the FP32 graph:

* ``model_int8.onnx`` (``FLAVOURS["tensorrt"]``): symmetric INT8 everywhere (activations and weights
  int8, zero points 0, weights per output channel), Q/DQ on the *inputs* of Conv/MatMul/Gemm only
  and float biases: the placement TensorRT's explicit quantization fuses (NVIDIA's Q/DQ placement
  guide; ModelOpt places them the same way);
* ``model_int8_cpu.onnx`` (``FLAVOURS["onnx_int8_cpu"]``): uint8 activations (asymmetric) with int8
  per-channel weights, so ONNX Runtime runs its u8 x s8 VNNI kernels (int8 x int8 activations take
  its slow path: 0.88x FP32 here, u8 x s8 1.6x).  Conv outputs are quantized too (QLinearConv);
  MatMul/Gemm outputs stay float (MatMulIntegerToFloat): 8-bit mask and class logits flipped the
  class of most pixels in our measurements (6% agreement) where float logits kept 100%.

The CPU matters (``segclip.cpu``): without VNNI (AVX2, AVX-512 without VNNI) ONNX Runtime and OpenVINO
add u8 x s8 products in 16-bit lanes that saturate.  There the CPU flavour gets 7-bit weights
(``weight_bits``), the manifest records the ISA each INT8 graph was gated on (``int8_record``) and the
runtime loader warns when an 8-bit graph gated elsewhere runs on such a CPU.

Only Conv, MatMul and Gemm are quantized; GridSample (deformable sampling), Softmax, LayerNorm/
GroupNorm, the reductions and the ArgMax stay float (``FLOAT_OPS``): they carry little compute and
most of the quantization error.  When the parity gate fails, ``sensitivity`` ranks the quantized
nodes by the error they *add* (relative L2 error of the node's output minus that of its input,
FP32 graph vs Q/DQ graph, on calibration images -- never the gate's) and the worst ones are kept in
float, in rounds within a budget; the manifest lists them.
"""
from __future__ import annotations

import collections
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from segclip.contract import FORMATS
from segclip.cpu import GATE_CPU_KERNELS, GATE_DEQUANTIZED, isa_info, saturates
from segclip.errors import SegclipError
from segclip.export.activations import exposed_session, image_feeds
from segclip.signature import INPUT_NAME

INT8_NAME = FORMATS["onnx_int8"].file
INT8_CPU_NAME = FORMATS["onnx_int8_cpu"].file
INT8_FP16_NAME = FORMATS["onnx_int8_fp16"].file
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")  # kept FP32 (scales too) in the INT8 + FP16 graph: see with_fp16
QUANT_OPS = ("Conv", "MatMul", "Gemm")
FLOAT_OPS = ("GridSample", "Softmax", "LayerNormalization", "InstanceNormalization", "ReduceMean", "ReduceSum",
             "ReduceMax", "ArgMax")
CALIB_METHODS = ("minmax", "entropy", "percentile")
MIN_CALIB_IMAGES = 4
DEFAULT_CALIB_IMAGES = 16  # the exporter's and the CLI's default (fewer when --data holds fewer: Int8Images)
UNDERTRAINED_MIOU = 0.5  # an INT8 gate failure on a model whose own mIoU is below this says it looks under-trained
DEFAULT_AGREEMENT, DEFAULT_MIOU_POINTS = 0.98, 1.0
FALLBACK_BUDGET = 12  # at most this many quantized nodes go back to float, over FALLBACK_ROUNDS
FALLBACK_ROUNDS = 3
SENSITIVITY_IMAGES = 4

# manifest key -> how the flavour is quantized.  "gate": how the parity gate runs it on ONNX Runtime --
# the CPU flavour on this CPU's int8 kernels (what a CPU deployment runs), the TensorRT ones as float on
# the dequantized values (``gate_optimization``), TensorRT's arithmetic, the same on every CPU
FLAVOURS = {
    "onnx_int8": {
        "file": INT8_NAME, "target": "tensorrt", "gate": GATE_DEQUANTIZED, "activations": "int8 symmetric",
        "activation_type": "QInt8", "extra": {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                                              "OpTypesToExcludeOutputQuantization": list(QUANT_OPS)},
    },
    "onnx_int8_cpu": {
        "file": INT8_CPU_NAME, "target": "cpu", "gate": GATE_CPU_KERNELS, "activations": "uint8 asymmetric",
        "activation_type": "QUInt8", "extra": {"WeightSymmetric": True, "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]},
    },
}


def weight_bits(flavour: str, isa: str) -> int:
    """8, or 7 (ONNX Runtime's ``reduce_range``) for the CPU flavour on a CPU whose u8 x s8 products
    saturate in 16 bits (``segclip.cpu``): 255 * 64 * 2 < 2**15, so its kernels are exact there.  Measured
    under AVX2 emulation (qemu -cpu Haswell, the INT8 test fixture): 8-bit weights 87% agreement (97% on
    VNNI), 7-bit 97% on both, the same class maps.  The TensorRT flavours keep 8 bits (no GPU saturates)."""
    return 7 if FLAVOURS[flavour]["target"] == "cpu" and saturates(isa) else 8


def int8_record(flavour: str, isa: dict | None = None) -> dict:
    """What the manifest records of the CPU an INT8 flavour was calibrated and gated on: its ISA
    (``segclip.cpu.isa_info``), the weight bits chosen for it and how the gate ran the graph --
    the runtime loader warns from these (``segclip.cpu.int8_warning``)."""
    isa = isa or isa_info()
    gate = FLAVOURS[flavour]["gate"] if flavour in FLAVOURS else GATE_DEQUANTIZED
    bits = weight_bits(flavour, isa["isa"]) if flavour in FLAVOURS else 8
    return {"isa": isa, "weight_bits": bits, "gate_kernels": gate}


def gate_optimization(record: dict):
    """ONNX Runtime graph optimization level for the gate of an INT8 graph with this manifest record:
    "basic" runs a TensorRT graph without ONNX Runtime's Q/DQ fusions (extended-level transformers), so
    DequantizeLinear feeds a float Conv/MatMul -- no 16-bit saturation on any CPU (measured: the same
    class maps under AVX2 emulation as on VNNI, 97% agreement, where the fused int8 kernels gave 82%);
    None (the default level) for graphs gated on this CPU's int8 kernels."""
    return "basic" if record.get("gate_kernels") == GATE_DEQUANTIZED else None


def parse_int8_threshold(value) -> tuple:
    """"0.98" | "0.98:1.0" | (0.98, 1.0) | None -> (min pixel agreement, max |dmIoU| in points)."""
    if value is None:
        return DEFAULT_AGREEMENT, DEFAULT_MIOU_POINTS
    try:
        parts = [float(x) for x in value.split(":")] if isinstance(value, str) else \
            [float(value)] if isinstance(value, (int, float)) else [float(x) for x in value]
        if len(parts) == 1:
            parts.append(DEFAULT_MIOU_POINTS)
        if len(parts) != 2:
            raise ValueError
    except (TypeError, ValueError):
        raise SegclipError(f"--int8-threshold {value!r}: expected AGREEMENT[:MIOU_POINTS], e.g. 0.98:1.0") from None
    agree, points = parts
    if not 0.0 < agree <= 1.0 or points < 0:
        raise SegclipError(f"--int8-threshold {value!r}: agreement must be in (0, 1] and the mIoU tolerance >= 0 points")
    return agree, points


def check_calibration_args(calib_images: Optional[int], calib_method: str) -> None:
    """``calib_images`` None: the default, fitted to the data (``Int8Images``)."""
    if calib_method not in CALIB_METHODS:
        raise SegclipError(f"--calib-method {calib_method!r}: choose one of {', '.join(CALIB_METHODS)}")
    if calib_images is not None and int(calib_images) < MIN_CALIB_IMAGES:
        raise SegclipError(f"--calib-images {calib_images}: too few calibration images (need >= {MIN_CALIB_IMAGES}); "
                           f"give --calib-images 16 or more")


# ---- calibration / held-out split -------------------------------------------------------------------
def split_indices(total: int, n_calib: int, n_gate: int, seed: int = 0) -> tuple:
    """Disjoint (calibration, gate) index arrays of a dataset of ``total`` items: a fixed shuffle,
    calibration first, the gate's held-out images spread over the rest."""
    if total < n_calib + n_gate:
        fit = (f"pass --calib-images {total - n_gate}" if total - n_gate >= MIN_CALIB_IMAGES else
               f"pass --calib-images {MIN_CALIB_IMAGES} --parity-images {total - MIN_CALIB_IMAGES}"
               if total - MIN_CALIB_IMAGES >= 1 else "give a larger --data split")
        raise SegclipError(f"too few images for INT8: the dataset has {total}, calibration needs {n_calib} and the "
                           f"parity gate {n_gate} more (held out); {fit}, or give a larger --data split")
    perm = np.random.default_rng(seed).permutation(total)
    calib = np.sort(perm[:n_calib])
    rest = np.sort(perm[n_calib:])
    gate = rest[np.unique(np.linspace(0, len(rest) - 1, n_gate).round().astype(int))]
    assert not set(calib.tolist()) & set(gate.tolist())
    return calib, gate


class Int8Images:
    """Calibration images and the parity gate's held-out labelled images, drawn from one dataset
    (``--data``, default: a rendered sample set) with disjoint indices (``split_indices``).

    Built before anything is written, so a missing dataset, a class list that differs from the
    checkpoint's or too few images fail with one line and leave nothing behind."""

    def __init__(self, data, n_calib: Optional[int], n_gate: int, h: int, w: int, classes, log=print):
        """``data``: (dataset, description) from ``parity_images.parity_dataset`` (it checked the
        dataset exists and has the checkpoint's classes), or None for a rendered sample set.
        ``n_calib`` None: ``DEFAULT_CALIB_IMAGES``, or what the data leaves after the gate's images
        (at least ``MIN_CALIB_IMAGES``; said in one line) -- the sample set's 16 val images give 8 + 8."""
        import shutil
        import tempfile

        from segclip.export.parity_images import SAMPLE_SOURCE, _from_dataset, sample_dataset, windows

        tmp = None
        try:
            if data is None:
                log("warning: int8: calibrating on the rendered sample set; calibrate on imagery like the deployment's "
                    "with --data DATASET:ROOT:SPLIT")
                tmp = Path(tempfile.mkdtemp(prefix="segclip-calib-"))
                n_calib = n_calib or DEFAULT_CALIB_IMAGES  # rendered to measure: no shortage to fit
                ds, self.source = sample_dataset(tmp, n_calib + n_gate, h, w), SAMPLE_SOURCE
                if tuple(ds.classes) != tuple(classes):  # --data was checked by parity_dataset already
                    raise SegclipError(f"--int8: the sample set has LoveDA's classes {list(ds.classes)}, this model "
                                       f"{list(classes)}; calibrate on your own labelled data with --data DATASET:ROOT:SPLIT")
            else:
                ds, self.source = data
            if not getattr(ds, "has_labels", True):
                raise SegclipError(f"--data {self.source}: has no labels; the INT8 parity gate needs a labelled split (e.g. val)")
            if n_calib is None:  # the default, fitted to the labelled images there are
                n_calib = DEFAULT_CALIB_IMAGES
                if MIN_CALIB_IMAGES <= len(ds) - n_gate < n_calib:
                    n_calib = len(ds) - n_gate
                    log(f"int8: --data {self.source} has {len(ds)} labelled images: calibrating on {n_calib}, gating "
                        f"on {n_gate} held out (--calib-images N sets it)")
            self.calib_idx, self.gate_idx = split_indices(len(ds), n_calib, n_gate)
            # calibration needs the graph's input size: one window per image; the gate takes images whole
            self.calib = np.stack(windows(_from_dataset(ds, n_calib, classes, indices=self.calib_idx)[0], h, w))
            self.gate, self.labels = _from_dataset(ds, n_gate, classes, indices=self.gate_idx)
            self.calib_files = [_item_name(ds, i) for i in self.calib_idx]
            self.gate_files = [_item_name(ds, i) for i in self.gate_idx]
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    def describe(self) -> dict:
        return {"source": self.source, "calibration_images": len(self.calib), "gate_images": len(self.gate),
                "calibration_files": self.calib_files, "gate_files": self.gate_files}


def _item_name(ds, i) -> str:
    try:
        p = Path(ds.records[int(i)][0])
        return f"{p.parent.parent.name}/{p.parent.name}/{p.name}"
    except (AttributeError, IndexError, TypeError):  # e.g. a tiled view: no per-item file
        return f"#{int(i)}"


class CalibrationReader:
    """ONNX Runtime ``CalibrationDataReader`` over N x H x W x 3 uint8 images, one image per call
    (with its ``scene_ids`` entry for a graph with a scene_id input)."""

    def __init__(self, images: np.ndarray, scene_ids=None):
        self.images, self.scene_ids = images, scene_ids
        self.rewind()

    def get_next(self) -> Optional[dict]:
        return next(self._feeds, None)

    def rewind(self) -> None:
        self._feeds = image_feeds(self.images, self.scene_ids)

    def __len__(self) -> int:
        return len(self.images)


# ---- quantization ------------------------------------------------------------------------------------
def ranges_reusable() -> bool:
    """Whether this ONNX Runtime quantizes from calibrated ranges saved earlier (``quantize_static``'s
    ``calibration_cache_path``, onnxruntime >= 1.31): the other flavours reuse the first calibration, and the
    plugin-form graph (``transfer_ranges``) can only be quantized that way."""
    import inspect

    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def quantize(twin_fp32, flavour: str, calib_images: np.ndarray, method: str = "minmax",
             exclude: Sequence[str] = (), cache=None, scene_ids=None, reduce_range: bool = False):
    """FP32 ModelProto -> Q/DQ ModelProto of ``flavour`` (a ``FLAVOURS`` key), calibrated on ``calib_images``
    (``scene_ids``: one per image when the graph has a scene_id input).

    ``cache``: a JSON file of calibrated tensor ranges (ONNX Runtime's calibration cache): written by
    the first call, reused by the next ones (the other flavour, the fallback rounds) -- the ranges of
    every Conv/MatMul/Gemm tensor do not depend on the flavour or on which nodes are excluded.
    ``reduce_range``: 7-bit weights (``weight_bits``), for CPUs whose u8 x s8 products saturate."""
    import logging
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    spec = FLAVOURS[flavour]
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    root = logging.getLogger()
    level = root.level
    with tempfile.TemporaryDirectory(prefix="segclip-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        m = onnx.ModelProto()
        m.CopyFrom(twin_fp32)
        del m.metadata_props[:]
        onnx.save(m, str(src))
        extra = dict(spec["extra"])
        if method == "percentile":
            extra["CalibPercentile"] = 99.999
        cache_kw = {}  # onnxruntime >= 1.31; older ones calibrate each time
        if cache is not None and ranges_reusable():
            cache_kw["calibration_cache_path"] = str(cache)
        root.setLevel(logging.ERROR)  # "consider pre-processing": onnxslim already simplified the graph
        try:
            quantize_static(
                str(src), str(dst), CalibrationReader(calib_images, scene_ids), quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANT_OPS), per_channel=True, reduce_range=bool(reduce_range),
                activation_type=getattr(QuantType, spec["activation_type"]), weight_type=QuantType.QInt8,
                nodes_to_exclude=list(exclude), calibrate_method=methods[method], extra_options=extra,
                **cache_kw,
            )
        finally:
            root.setLevel(level)
        out = onnx.load(str(dst))
    if exclude:
        float_inputs(out, set(exclude))
    return out


def transfer_ranges(src_model, dst_model, src_cache: Path, dst_cache: Path) -> int:
    """Calibrated ranges of ``src_model`` (its calibration cache) re-keyed for ``dst_model``, a graph traced
    from the same module with another form of some ops (the plugin form of the deformable attention):
    each Conv/MatMul/Gemm of ``dst_model`` takes the ranges of the same-named node's inputs and outputs in
    ``src_model`` -- node names follow the module path, tensor names shift with the traced ops around
    them.  So the plugin graph is quantized with the ranges the GridSample graph was calibrated with, and
    calibration never has to run an op ONNX Runtime lacks.  Returns the number of tensors written."""
    import json

    raw = json.loads(Path(src_cache).read_text())
    data, out = raw["data"], {}
    src_nodes = {n.name: n for n in src_model.graph.node}
    weights = {t.name for t in dst_model.graph.initializer}
    for n in dst_model.graph.node:
        if n.op_type not in QUANT_OPS:
            continue
        m = src_nodes.get(n.name)
        if m is None or m.op_type != n.op_type or len(m.input) != len(n.input) or len(m.output) != len(n.output):
            raise SegclipError(f"INT8 ranges: node {n.name} ({n.op_type}) has no counterpart in the calibrated graph")
        for a, b in zip(n.input, m.input):  # every activation input must have a range; weights need none
            if b in data:
                out[a] = data[b]
            elif a and a not in weights:
                raise SegclipError(f"INT8 ranges: {n.name}'s input {a} has no calibrated range ({b})")
        out.update({a: data[b] for a, b in zip(n.output, m.output) if b in data})  # outputs: where calibrated
    Path(dst_cache).write_text(json.dumps({**raw, "data": out}))
    return len(out)


def float_inputs(model, names) -> None:
    """Feed the nodes kept in float (``names``) from the float tensors in front of their Q/DQ pairs, in place.
    ONNX Runtime quantizes an activation once for all its consumers, so a kept node whose input also feeds a
    quantized node (e.g. the mask-features tensor every decoder stage's MatMul reads) would still read it
    through QuantizeLinear/DequantizeLinear, and keeping it in float would not remove that error."""
    g = model.graph
    prod = {o: n for n in g.node for o in n.output}
    for n in g.node:
        if n.name not in names:
            continue
        for i, x in enumerate(n.input):
            dq = prod.get(x)
            q = prod.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                n.input[i] = q.input[0]


def qdq_summary(model) -> dict:
    """What got quantized: counts of Q/DQ nodes and of quantized / float Conv-MatMul-Gemm nodes."""
    g = model.graph
    prod = {o: n for n in g.node for o in n.output}
    ops = collections.Counter(n.op_type for n in g.node)
    quantized, floating = [], []
    for n in g.node:
        if n.op_type not in QUANT_OPS:
            continue
        fed = [prod.get(i) for i in n.input[:2]]
        (quantized if any(p is not None and p.op_type == "DequantizeLinear" for p in fed) else floating).append(n.name)
    return {"quantize_linear": ops.get("QuantizeLinear", 0), "dequantize_linear": ops.get("DequantizeLinear", 0),
            "quantized_nodes": len(quantized), "float_nodes": sorted(floating)}


def with_fp16(qdq_twin, images: np.ndarray, output_dtypes=None, scene_ids=None):
    """The symmetric Q/DQ graph with its float parts in FP16 (``segclip.export.fp16``: norms, softmax,
    reductions and overflowing activations stay FP32), for a strongly typed INT8 + FP16 TensorRT
    engine.  The QuantizeLinear/DequantizeLinear nodes keep FP32 scales (the converter casts FP16
    activations to FP32 in front of a QuantizeLinear and a DequantizeLinear's FP32 output to FP16
    behind it): TensorRT's operator reference documents the Dequantize scale as ``T2: float32``
    (docs.nvidia.com/deeplearning/tensorrt/operators/docs/Dequantize.html, and the 8.6.1 archive's
    page), while later pages of the same reference type it like the output (float16/bfloat16/float32);
    no TensorRT 10.3 document (JetPack 6, the Jetson target) says FP16 scales are accepted, FP32 ones
    are accepted by every version segclip builds for (10.x, 11.x).  The opset is left as it is.
    Returns (ModelProto, fp16 report)."""
    import onnx

    from segclip.export import fp16 as f16

    m = onnx.ModelProto()
    m.CopyFrom(qdq_twin)
    del m.metadata_props[:]
    twin16, _, _, report = f16.make_fp16(m, images, output_dtypes=output_dtypes, scene_ids=scene_ids, extra_ops=QDQ_OPS)
    return twin16, report


def qdq_scale_types(model) -> set:
    """ONNX element types of the scales of every QuantizeLinear/DequantizeLinear node (initializers)."""
    inits = {t.name: t.data_type for t in model.graph.initializer}
    return {inits.get(n.input[1]) for n in model.graph.node if n.op_type in QDQ_OPS and len(n.input) > 1}


# ---- sensitivity -------------------------------------------------------------------------------------
def sensitivity(twin_fp32, qdq, images: np.ndarray, scene_ids=None) -> list:
    """[(node name, added relative error)], worst first, for every quantized Conv/MatMul/Gemm of ``qdq``.

    The added error of a node is rel_err(its output) - max rel_err(its float inputs): what quantizing
    this node contributes on top of the error it receives."""
    summary = qdq_summary(qdq)
    float_nodes = set(summary["float_nodes"])
    nodes = [n for n in twin_fp32.graph.node if n.op_type in QUANT_OPS and n.name not in float_nodes]
    inits = {t.name for t in twin_fp32.graph.initializer}
    tensors = sorted({t for n in nodes for t in list(n.input[:2]) + [n.output[0]] if t and t not in inits and t != INPUT_NAME})
    num, den = dict.fromkeys(tensors, 0.0), dict.fromkeys(tensors, 0.0)
    # one image at a time, one session per graph (segclip.export.activations: why not grouped)
    ref_sess, got_sess = exposed_session(twin_fp32, tensors), exposed_session(qdq, tensors)
    for feed in image_feeds(images, scene_ids):
        for t, r, g in zip(tensors, ref_sess.run(tensors, feed), got_sess.run(tensors, feed)):
            r, g = np.asarray(r, np.float32), np.asarray(g, np.float32)
            num[t] += float(np.sum(np.square(g - r), dtype=np.float64))
            den[t] += float(np.sum(np.square(r), dtype=np.float64))
    err = {t: (num[t] / (den[t] or 1e-30)) ** 0.5 for t in tensors}
    ranked = []
    for n in nodes:
        inp = max((err.get(t, 0.0) for t in n.input[:2]), default=0.0)
        ranked.append((n.name, round(err[n.output[0]] - inp, 6)))
    ranked.sort(key=lambda x: -x[1])
    return ranked


def fallback_schedule(budget: int = FALLBACK_BUDGET, rounds: int = FALLBACK_ROUNDS) -> list:
    """Cumulative number of float-kept nodes per retry, e.g. budget 12, 3 rounds -> [3, 6, 12]."""
    if budget <= 0 or rounds <= 0:
        return []
    steps = sorted({max(1, round(budget * f)) for f in ([2 ** -(rounds - 1 - i) for i in range(rounds)])})
    return steps


def gate_int8(row: dict, miou_points: float) -> dict:
    """Add the mIoU-delta part of the INT8 gate to a parity row (agreement is checked by ``compare``)."""
    d = row.get("miou_delta")
    row["miou_tolerance"] = miou_points
    if d is not None and abs(d) > miou_points / 100.0 + 1e-12:
        row["status"] = "failed"
        row["note"] = f"{row['name']} |dmIoU| {100 * abs(d):.2f} points > {miou_points:g}"
    return row


__all__ = ["INT8_NAME", "INT8_CPU_NAME", "FLAVOURS", "weight_bits", "int8_record", "gate_optimization", "QUANT_OPS", "FLOAT_OPS", "CALIB_METHODS", "quantize", "sensitivity",
           "qdq_summary", "split_indices", "CalibrationReader", "parse_int8_threshold", "fallback_schedule"]
