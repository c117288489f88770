"""The TensorRT form of the deformable attention: ``segclip export --trt --msda plugin|gridsample|auto``.

segclip's MSDeformAttn exports as plain GridSample ops (one per level, sampling point and layer), which ONNX Runtime,
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
from segclip.runtime.msda_plugin import (META_PLUGINS, PLUGIN_DOMAIN, PLUGIN_NAME, PLUGIN_VERSIONS,
                                         plugin_ops, plugin_version_for, register_onnx_schema)

FORMS = ("auto", "plugin", "gridsample")
PLUGIN_KEY = "onnx_plugin"
PLUGIN_ONNX_NAME = "model_plugin.onnx"
PLUGIN_FP16_KEY = "onnx_plugin_fp16"
PLUGIN_FP16_ONNX_NAME = "model_plugin_fp16.onnx"
# the TensorRT source graph (artifact key) -> its plugin form
PLUGIN_KEYS = {"onnx": PLUGIN_KEY, "onnx_fp16": PLUGIN_FP16_KEY}
# In the FP16 graph the plugin stays FP32 (casts around it): its FP16 kernel computes the sampling position
# loc * H - 0.5 in half precision (the __half specialisation in multiscaleDeformableIm2ColCuda.cuh), about
# 1/16 px at a 128-px level, and the CPU reference the gate runs is the FP32 kernel.
FP16_REASON = ("TensorRT plugin kept FP32: its FP16 kernel computes sampling positions in half precision "
               "(segclip.export.msda)")

__all__ = ["FORMS", "PLUGIN_KEY", "PLUGIN_ONNX_NAME", "PLUGIN_FP16_KEY", "PLUGIN_FP16_ONNX_NAME", "PLUGIN_KEYS", "PLUGIN_NAME", "PLUGIN_DOMAIN", "PLUGIN_VERSIONS", "META_PLUGINS",
           "check_form", "plugin_version_for", "plugin_core", "traced_in_plugin_form", "plugin_nodes", "plugin_ops"]


def check_form(msda: str, *, trt: bool, fp16: bool, int8: bool) -> str:
    """The ``--msda`` choice, checked against the other export options (no I/O)."""
    form = str(msda or "auto").lower()
    if form not in FORMS:
        raise SegclipError(f"--msda {msda}: choose one of {', '.join(FORMS)}")
    if form == "plugin" and not trt:
        raise SegclipError("--msda plugin: the plugin form is for TensorRT only (ONNX Runtime, OpenVINO and the INT8-CPU "
                           "graph use the GridSample form); add --trt or drop --msda")
    if form == "plugin" and int8:
        raise SegclipError("--msda plugin with --int8: segclip writes the plugin form for the FP32 and FP16 TensorRT "
                           "graphs only; drop --int8 or use --msda gridsample")
    return form


def auto_form_reason(int8: bool) -> Optional[str]:
    """Why ``--msda auto`` takes the GridSample form from the start (None: it tries the plugin first)."""
    if int8:
        return "the TensorRT graph is INT8; segclip writes the plugin form for the FP32 and FP16 TensorRT graphs only"
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
    register_onnx_schema()  # the export's checks and shape inference go through the plugin node
    return use_core(plugin_core(version))


def plugin_nodes(model) -> list:
    """The plugin nodes of ``model`` (their ONNX schema registered, so onnx's checker and shape inference
    go through them: ``msda_plugin.register_onnx_schema``)."""
    register_onnx_schema()
    return [n for n in model.graph.node if n.op_type == PLUGIN_NAME]


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
