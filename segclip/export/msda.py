"""The TensorRT form of the deformable attention: ``segclip export --trt --msda plugin|gridsample|auto``.

segclip's MSDeformAttn exports as plain GridSample ops (one per level and layer), which ONNX Runtime,
OpenVINO and the INT8-CPU graph run.  Several TensorRT releases compute that decomposition wrongly
(NVIDIA/TensorRT#4813: 10.14 and 11.1 strongly typed FP32 engines, correct in 10.13;
pytorch/TensorRT#4074: GridSample kept FP32 inside an FP16 network since 10.14.1.48; NVIDIA/TensorRT#4646:
GridSample at opset 20).  The plugin form replaces each deformable-attention core by one
``MultiscaleDeformableAttnPlugin_TRT`` node, NVIDIA's own kernel from ``libnvinfer_plugin`` (nothing to
compile); its contract and a CPU reference live in ``segclip.runtime.msda_plugin``.

The plugin graph is traced from the same model with the core swapped (``msdeformattn.use_core``): an
autograd Function whose ONNX ``symbolic`` is the plugin node, so the rest of the graph is traced as
before.  It is written as ``model_plugin.onnx`` next to the GridSample ``model.onnx`` and gated on the
CPU through the reference op like every other ONNX artifact.
"""
from __future__ import annotations

import functools
from typing import Optional

from segclip.errors import SegclipError
from segclip.runtime.msda_plugin import (META_PLUGINS, OUTPUT_RANK, PLUGIN_DOMAIN, PLUGIN_NAME, PLUGIN_VERSIONS,
                                         plugin_ops, plugin_version_for)

FORMS = ("auto", "plugin", "gridsample")
PLUGIN_KEY = "onnx_plugin"
PLUGIN_ONNX_NAME = "model_plugin.onnx"

__all__ = ["FORMS", "PLUGIN_KEY", "PLUGIN_ONNX_NAME", "PLUGIN_NAME", "PLUGIN_DOMAIN", "PLUGIN_VERSIONS", "META_PLUGINS",
           "check_form", "plugin_version_for", "plugin_core", "traced_in_plugin_form", "annotate", "plugin_ops"]


def check_form(msda: str, *, trt: bool, fp16: bool, int8: bool) -> str:
    """The ``--msda`` choice, checked against the other export options (no I/O)."""
    form = str(msda or "auto").lower()
    if form not in FORMS:
        raise SegclipError(f"--msda {msda}: choose one of {', '.join(FORMS)}")
    if form == "plugin" and not trt:
        raise SegclipError("--msda plugin: the plugin form is for TensorRT only (ONNX Runtime, OpenVINO and the INT8-CPU "
                           "graph use the GridSample form); add --trt or drop --msda")
    if form == "plugin" and (fp16 or int8):
        raise SegclipError(f"--msda plugin with {'--int8' if int8 else '--fp16'}: segclip writes the plugin form for the "
                           f"FP32 TensorRT graph only; drop {'--int8' if int8 else '--fp16'} or use --msda gridsample")
    return form


def auto_form_reason(fp16: bool, int8: bool) -> Optional[str]:
    """Why ``--msda auto`` takes the GridSample form from the start (None: it tries the plugin first)."""
    if fp16 or int8:
        return (f"the TensorRT graph is {'INT8' if int8 else 'FP16'}; segclip writes the plugin form for the FP32 "
                f"TensorRT graph only")
    return None


@functools.lru_cache(maxsize=None)
def _function():
    import torch

    class MSDAPlugin(torch.autograd.Function):
        """Traced as one ``MultiscaleDeformableAttnPlugin_TRT`` node; run eagerly (while tracing) by the
        GridSample form so the rest of the trace sees the same values."""

        @staticmethod
        def forward(ctx, value, spatial_shapes, level_start_index, loc, attw, version):
            from segclip.modeling.pixel_decoder.msdeformattn import ms_deform_attn

            b, _, heads, d = value.shape
            shapes = [tuple(int(x) for x in hw) for hw in spatial_shapes.tolist()]
            return ms_deform_attn(value, shapes, loc, attw).reshape(b, loc.shape[1], heads, d)

        @staticmethod
        def symbolic(g, value, spatial_shapes, level_start_index, loc, attw, version):
            out = g.op(f"{PLUGIN_DOMAIN}::{PLUGIN_NAME}", value, spatial_shapes, level_start_index, loc, attw,
                       plugin_version_s=str(version), plugin_namespace_s="")
            # the output's type and shape [N, Lq, M, D] for torch's own shape inference (else it warns per node)
            v, q = value.type().varyingSizes(), loc.type().varyingSizes()
            if v is not None and q is not None and len(v) == 4 and len(q) == 6:
                out.setType(value.type().with_sizes([v[0], q[1], v[2], v[3]]))
            return out

    return MSDAPlugin


def plugin_core(version: str):
    """A drop-in for ``ms_deform_attn`` (B x Q x (H*d)) that traces as the plugin node of ``version``."""
    import torch

    def core(value, shapes, sampling_locations, attention_weights):
        # fixed sizes (a TensorRT export has a fixed --size): both index tensors become INT32 initializers
        hw = [(int(h), int(w)) for h, w in shapes]
        spatial = torch.tensor(hw, dtype=torch.int32, device=value.device)
        starts, acc = [], 0
        for h, w in hw:
            starts.append(acc)
            acc += h * w
        level_start = torch.tensor(starts, dtype=torch.int32, device=value.device)
        out = _function().apply(value, spatial, level_start, sampling_locations, attention_weights, version)
        return out.flatten(2)  # [N, Lq, M, D] -> [N, Lq, M*D], head-major like ms_deform_attn

    return core


def traced_in_plugin_form(module, version: str):
    """Context manager: ``module`` (a SegCLIPInference) traces with the plugin form of its MSDeformAttn."""
    from segclip.modeling.pixel_decoder.msdeformattn import use_core

    if version not in PLUGIN_VERSIONS:
        raise SegclipError(f"{PLUGIN_NAME} version {version!r}: TensorRT ships versions {', '.join(PLUGIN_VERSIONS)}")
    return use_core(plugin_core(version))


def annotate(model) -> int:
    """Give every plugin output its type and shape ([N, Lq, M, D], value's float type) as value_info,
    so ONNX shape inference runs through the op it does not know.  Returns the number of plugin nodes."""
    from onnx import helper, shape_inference

    g = model.graph
    inferred = shape_inference.infer_shapes(model).graph
    known = {vi.name: vi for vi in list(inferred.value_info) + list(g.input) + list(g.output)}
    inits = {t.name: list(t.dims) for t in g.initializer}
    n = 0
    for node in g.node:
        if node.op_type != PLUGIN_NAME:
            continue
        n += 1
        value, loc = known.get(node.input[0]), known.get(node.input[3])
        if value is None or node.input[0] in inits:
            raise SegclipError(f"{node.name}: {PLUGIN_NAME} input value has no inferred type; cannot annotate the plugin graph")

        def dims(vi):
            return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in vi.type.tensor_type.shape.dim]

        vd = dims(value)
        ld = dims(loc) if loc is not None else []
        shape = [vd[0], ld[1] if len(ld) > 1 else None, vd[2], vd[3]][:OUTPUT_RANK]
        keep = [vi for vi in g.value_info if vi.name != node.output[0]]
        del g.value_info[:]
        g.value_info.extend(keep + [helper.make_tensor_value_info(node.output[0], value.type.tensor_type.elem_type, shape)])
    return n


def local_trt_version() -> Optional[str]:
    """The TensorRT version importable here (the one the engine is built with), else None."""
    try:
        import tensorrt
    except Exception:
        return None
    return str(getattr(tensorrt, "__version__", "")) or None


def trtexec_note(record: dict) -> str:
    """The lines ``trtexec.sh`` carries about the form its engine takes (``record``: the manifest's)."""
    if record["form"] == "plugin":
        return (f"Deformable attention: plugin form. {record['onnx']} computes each deformable-attention core with\n"
                f"TensorRT's own {PLUGIN_NAME} (version {record['plugin_version']}, in libnvinfer_plugin; version 2\n"
                f"needs TensorRT >= 10.11, version 1 is in every TensorRT 10.x/11.x) instead of GridSample, which some\n"
                f"TensorRT releases compute wrongly (NVIDIA/TensorRT#4813, #4646; pytorch/TensorRT#4074).\n"
                f"If this engine fails its check on the target, build the GridSample form: ONNX={record['fallback_onnx']} sh trtexec.sh")
    alt = f" The plugin form: ONNX={record['plugin_onnx']} sh trtexec.sh" if record.get("plugin_onnx") else ""
    return f"Deformable attention: GridSample form ({record['reason']}).{alt}"
