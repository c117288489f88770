"""TensorRT's ``MultiscaleDeformableAttnPlugin_TRT``: its documented contract, and a CPU reference of
it for ONNX Runtime (so a plugin graph runs, and is checked, on a machine without a GPU).

What the sources say (NVIDIA/TensorRT, ``plugin/multiscaleDeformableAttnPlugin/``):

* ``README.md``: 5 inputs in this order -- ``value`` [N, S, M, D], ``spatial_shapes`` [L, 2],
  ``level_start_index`` [L], ``sampling_locations`` [N, Lq, M, L, P, 2], ``attention_weights``
  [N, Lq, M, L, P] -- and one output [N, Lq, M, D] (4-D: ``getOutputShapes`` in
  ``multiscaleDeformableAttnPlugin.cpp`` sets d = {N, Lq, M, D}; the heads are not merged).  No
  plugin fields ("does not require any parameters").
* ``multiscaleDeformableAttnPlugin.cpp`` ``supportsFormatCombination``: inputs 1 and 2 INT32; the
  other inputs and the output one float type, FP32 or FP16, equal to ``value``'s; linear layout.
* Versions: "1" (IPluginV2DynamicExt, ``multiscaleDeformableAttnPluginLegacy.cpp``) since 2022, so in
  TensorRT 10.3 (JetPack 6); "2" (IPluginV3) added in TensorRT 10.11 (README changelog Apr 2025, 10.11
  release notes), where "1" became deprecated but "is maintained for backward compatibility".
  TensorRT 11.0's release notes remove a list of deprecated plugins that does not include this one,
  and 11.x deprecates rather than removes the V2 plugin interfaces, so 11.x ships both versions.
* ``multiscaleDeformableIm2ColCuda.cuh`` ``ms_deformable_im2col_gpu_kernel``: per level l,
  ``spatialH, spatialW = spatial_shapes[l]``, the level's tokens start at ``level_start_index[l]``
  (row-major h, w), ``locW, locH = sampling_locations[..., 0], [..., 1]`` (x first), then
  ``hIm = locH * spatialH - 0.5``, ``wIm = locW * spatialW - 0.5``; a point with ``hIm > -1 && wIm > -1
  && hIm < spatialH && wIm < spatialW`` is sampled bilinearly (``ms_deform_attn_im2col_bilinear``:
  corners outside the map read 0), else contributes nothing; the output is the sum over levels and
  points of sample * weight.  That is ``F.grid_sample(align_corners=False, padding_mode="zeros")`` on
  ``2 * loc - 1``: grid_sample maps g to ``((g + 1) * W - 1) / 2 = loc * W - 0.5``, and a point beyond
  -1 / W has all four corners outside, i.e. 0 either way.

How TensorRT's ONNX parser finds it (onnx/onnx-tensorrt): ``ModelImporter.cpp`` ``parseNode`` sends
an op type with no built-in importer to ``FallbackPluginImporter``; ``onnxOpCheckers.cpp`` /
``onnxOpImporters.cpp`` look the plugin creator up by (op type, attribute ``plugin_version`` default
"1", attribute ``plugin_namespace`` default ""), then retry with the node's domain as the namespace;
the remaining attributes become plugin fields (``docs/faq.md`` "Custom Layer Support": inputs,
outputs and attributes must match the plugin's).  TensorRT's own plugins are registered in namespace
"", so the node carries ``plugin_namespace=""``; its ONNX domain (``PLUGIN_DOMAIN``) only keeps the
graph valid ONNX.  From Python the registry is filled by ``trt.init_libnvinfer_plugins`` (trtexec
loads it itself).

The reference below is written from that kernel, in numpy; it does not call segclip's own
``ms_deform_attn`` (the GridSample form it is compared with).  segclip's OpenVINO kernel of the same
op (``segclip.runtime.ov_extension``) is checked against it.
"""
from __future__ import annotations

import functools
from typing import Optional

import numpy as np

from segclip.errors import SegclipError

PLUGIN_NAME = "MultiscaleDeformableAttnPlugin_TRT"
PLUGIN_DOMAIN = "trt.plugins"
PLUGIN_VERSIONS = ("1", "2")
V2_SINCE = (10, 11)  # IPluginV3 version of the plugin
# (name, rank, element type): "float" is value's type (FP32 or FP16), shared by inputs 0, 3, 4 and the output
INPUTS = (("value", 4, "float"), ("spatial_shapes", 2, "INT32"), ("level_start_index", 1, "INT32"),
          ("sampling_locations", 6, "float"), ("attention_weights", 5, "float"))
FLOAT_TYPES = ("FP32", "FP16")
# ONNX metadata key listing the TensorRT plugin ops of a graph (runners refuse such a graph by name)
META_PLUGINS = "segclip.tensorrt_plugins"
# onnxruntime-extensions registers Python ops in this domain (onnxruntime_extensions default_opset_domain)
_REFERENCE_DOMAIN = "ai.onnx.contrib"


def _version_tuple(v) -> tuple:
    parts = []
    for p in str(v).split(".")[:2]:
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts + [0] * (2 - len(parts)))


def plugin_version_for(trt_version: Optional[str]) -> str:
    """The plugin version to write for a target TensorRT: "2" (IPluginV3) from 10.11, else "1".
    Unknown target (no TensorRT here): "1", the version every TensorRT since 8.x ships (10.3 on JetPack 6,
    still maintained in 10.11+ and 11.x)."""
    if not trt_version:
        return "1"
    return "2" if _version_tuple(trt_version) >= V2_SINCE else "1"


def versions_in(trt_version: str) -> tuple:
    """Plugin versions a TensorRT release ships."""
    return PLUGIN_VERSIONS if _version_tuple(trt_version) >= V2_SINCE else ("1",)


def node_problems(node, types: dict, trt_type, attr, label: str, trt_version: str) -> list:
    """Why TensorRT would reject this plugin node (``types``: {tensor: (ONNX elem type, rank)};
    ``trt_type``: ONNX elem type -> "FP32"...; ``attr(node, name)``); [] when it matches the plugin."""
    out = []
    version = attr(node, "plugin_version", "1")
    if str(version) not in versions_in(trt_version):
        out.append(f"plugin_version={version!r}: {label} ships {PLUGIN_NAME} version(s) {', '.join(versions_in(trt_version))}")
    ns = attr(node, "plugin_namespace", "")
    if ns:
        out.append(f"plugin_namespace={ns!r}: TensorRT registers its own plugins in the empty namespace; drop the attribute")
    extra = sorted(a.name for a in node.attribute if a.name not in ("plugin_version", "plugin_namespace"))
    if extra:
        out.append(f"attributes {extra}: {PLUGIN_NAME} has no plugin fields")
    names = [n for n, _, _ in INPUTS]
    if len(node.input) != len(INPUTS) or not all(node.input):
        out.append(f"{len([i for i in node.input if i])} input(s); {PLUGIN_NAME} takes {len(INPUTS)}: {', '.join(names)}")
        return out
    if len(node.output) != 1:
        out.append(f"{len(node.output)} outputs; {PLUGIN_NAME} has one ([N, Lq, M, D])")
    value_t = None
    for (name, rank, kind), tensor in zip(INPUTS, node.input):
        et, r = types.get(tensor, (None, None))
        t = trt_type(et) if et else None
        if r is not None and r != rank:
            out.append(f"input {name} ('{tensor}') has rank {r}; the plugin takes rank {rank}")
        if t is None:
            continue
        if kind == "float":
            if t not in FLOAT_TYPES:
                out.append(f"input {name} ('{tensor}') is {t}; the plugin takes FP32 or FP16")
            elif value_t is None:
                value_t = t
            elif t != value_t:
                out.append(f"input {name} ('{tensor}') is {t} but value is {value_t}; the plugin needs one float type")
        elif t != kind:
            out.append(f"input {name} ('{tensor}') is {t}; the plugin takes {kind}")
    return out


# ---- the CPU reference -------------------------------------------------------------------------------
def reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights) -> np.ndarray:
    """The plugin's forward in numpy, following ``ms_deformable_im2col_gpu_kernel`` (see above):
    returns [N, Lq, M, D] in value's dtype (accumulated in float32 like the FP32 kernel)."""
    value = np.asarray(value)
    dtype = value.dtype
    v_all = value.astype(np.float32)
    loc = np.asarray(sampling_locations, dtype=np.float32)
    attw = np.asarray(attention_weights, dtype=np.float32)
    shapes = np.asarray(spatial_shapes).astype(np.int64).reshape(-1, 2)
    starts = np.asarray(level_start_index).astype(np.int64).reshape(-1)
    n, s, m, d = v_all.shape
    _, lq, _, levels, points, _ = loc.shape
    if len(shapes) != levels or len(starts) != levels or attw.shape != loc.shape[:-1]:
        raise SegclipError(f"{PLUGIN_NAME} reference: inconsistent inputs (spatial_shapes {shapes.shape}, level_start_index "
                           f"{starts.shape}, sampling_locations {loc.shape}, attention_weights {attw.shape})")
    out = np.zeros((n, lq, m, d), np.float32)
    bi = np.arange(n)[:, None, None, None]
    mi = np.arange(m)[None, None, :, None]
    for lvl in range(levels):
        h, w = (int(x) for x in shapes[lvl])
        start = int(starts[lvl])
        if start < 0 or start + h * w > s:
            raise SegclipError(f"{PLUGIN_NAME} reference: level {lvl} ({h}x{w} from token {start}) runs past value's {s} tokens")
        v = v_all[:, start:start + h * w].reshape(n, h, w, m, d)
        him = loc[:, :, :, lvl, :, 1] * h - 0.5  # N, Lq, M, P
        wim = loc[:, :, :, lvl, :, 0] * w - 0.5
        inside = (him > -1) & (wim > -1) & (him < h) & (wim < w)
        h0, w0 = np.floor(him), np.floor(wim)
        lh, lw = him - h0, wim - w0
        h0, w0 = h0.astype(np.int64), w0.astype(np.int64)
        sampled = np.zeros((n, lq, m, points, d), np.float32)
        for dh, dw, wt in ((0, 0, (1 - lh) * (1 - lw)), (0, 1, (1 - lh) * lw), (1, 0, lh * (1 - lw)), (1, 1, lh * lw)):
            hh, ww = h0 + dh, w0 + dw
            ok = (hh >= 0) & (hh <= h - 1) & (ww >= 0) & (ww <= w - 1)
            corner = v[bi, np.clip(hh, 0, h - 1), np.clip(ww, 0, w - 1), mi]  # N, Lq, M, P, D
            sampled += corner * (wt * ok)[..., None]
        weight = attw[:, :, :, lvl, :] * inside  # N, Lq, M, P
        out += np.einsum("nqmpd,nqmp->nqmd", sampled, weight)
    return out.astype(dtype)


@functools.lru_cache(maxsize=None)
def register_reference() -> str:
    """Register ``reference`` as an onnxruntime-extensions Python op (once per process); returns the
    custom-op library to load into an ``ort.SessionOptions``."""
    try:
        from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op
    except ImportError:
        raise SegclipError(f"the CPU reference of {PLUGIN_NAME} needs onnxruntime-extensions: "
                           f"pip install onnxruntime-extensions (in segclip's dev extra)") from None
    f32, i32, s = PyCustomOpDef.dt_float, PyCustomOpDef.dt_int32, PyCustomOpDef.dt_string

    @onnx_op(op_type=PLUGIN_NAME, inputs=[f32, i32, i32, f32, f32], outputs=[f32],
             attrs={"plugin_version": s, "plugin_namespace": s})
    def _msda(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, **_attrs):
        return reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)

    return get_library_path()


def plugin_ops(model) -> list:
    """Sorted op types of ``model``'s nodes that are TensorRT plugins segclip writes."""
    return sorted({n.op_type for n in model.graph.node if n.op_type == PLUGIN_NAME})


def for_reference(model):
    """A copy of ``model`` whose plugin nodes sit in the domain the reference op is registered in."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for n in m.graph.node:
        if n.op_type == PLUGIN_NAME:
            n.domain = _REFERENCE_DOMAIN
    if not any(o.domain == _REFERENCE_DOMAIN for o in m.opset_import):
        m.opset_import.append(onnx.helper.make_opsetid(_REFERENCE_DOMAIN, 1))
    return m


def reference_session(model, so=None, providers=("CPUExecutionProvider",)):
    """An ONNX Runtime CPU session of a plugin graph (ModelProto or path) with the reference op."""
    import onnx
    import onnxruntime as ort

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    so = so or ort.SessionOptions()
    so.register_custom_ops_library(register_reference())
    return ort.InferenceSession(for_reference(model).SerializeToString(), so, providers=list(providers))


def refusal(path, backend: str, ops) -> SegclipError:
    """The one-line error for a plugin graph given to a backend without the reference op."""
    return SegclipError(f"{path}: uses the TensorRT plugin op {', '.join(ops)} (deformable attention through "
                        f"libnvinfer_plugin), which {backend} has no kernel for; run it with TensorRT, or use the "
                        f"GridSample form of the same export (model.onnx / model_fp16.onnx)")


_TRT_PLUGINS_LOADED = []


def init_trt_plugins(trt, logger) -> None:
    """Fill TensorRT's plugin registry with ``libnvinfer_plugin`` (this plugin among them) once per
    process: trtexec does it itself, the Python API only through ``trt.init_libnvinfer_plugins``.  Both
    the build (the ONNX parser looks the plugin up) and deserialising an engine that holds it need it."""
    if not _TRT_PLUGINS_LOADED:
        trt.init_libnvinfer_plugins(logger, "")
        _TRT_PLUGINS_LOADED.append(True)


@functools.lru_cache(maxsize=None)
def register_onnx_schema() -> None:
    """Teach the ``onnx`` package the plugin op (``PLUGIN_DOMAIN`` version 1): onnx.checker then checks its
    inputs' types (INT32 shapes and start indices, one float type for the rest) and shape inference runs
    through it (output [N, Lq, M, D] of value's type), as the FP16 converter and trt-check need."""
    import onnx
    from onnx.defs import OpSchema

    if onnx.defs.has(PLUGIN_NAME, PLUGIN_DOMAIN):
        return
    param = OpSchema.FormalParameter
    kinds = {"float": "T", "INT32": "tensor(int32)"}
    schema = OpSchema(
        PLUGIN_NAME, PLUGIN_DOMAIN, 1,
        doc="TensorRT's multi-scale deformable attention plugin (NVIDIA/TensorRT plugin/multiscaleDeformableAttnPlugin)",
        inputs=[param(name, kinds[kind]) for name, _, kind in INPUTS], outputs=[param("output", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "value, sampling_locations, attention_weights, output")],
        attributes=[OpSchema.Attribute("plugin_version", OpSchema.AttrType.STRING, "plugin version ('1' or '2')"),
                    OpSchema.Attribute("plugin_namespace", OpSchema.AttrType.STRING, "plugin registry namespace ('')")],
    )

    def infer(ctx):
        value, loc = ctx.get_input_type(0), ctx.get_input_type(3)
        out = onnx.TypeProto()
        out.tensor_type.elem_type = value.tensor_type.elem_type
        vs, ls = value.tensor_type.shape.dim, loc.tensor_type.shape.dim
        if value.tensor_type.HasField("shape") and loc.tensor_type.HasField("shape") and len(vs) == 4 and len(ls) == 6:
            for d in (vs[0], ls[1], vs[2], vs[3]):
                out.tensor_type.shape.dim.add().CopyFrom(d)
        ctx.set_output_type(0, out)

    schema.set_type_and_shape_inference_function(infer)
    onnx.defs.register_schema(schema)
