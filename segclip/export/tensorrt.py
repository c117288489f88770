"""ONNX -> TensorRT engine with the TensorRT Python API (strongly typed, TRT 10.x and 11.x).

Precision comes from the ONNX graph itself (``model_fp16.onnx`` for FP16, the Q/DQ ``model_int8.onnx``
for INT8 explicit quantization, ``model_int8_fp16.onnx`` for INT8 with FP16 elsewhere), built with
``NetworkDefinitionCreationFlag.STRONGLY_TYPED``: no weakly typed ``FP16`` builder flag (removed in
TensorRT 11; Jetson's TensorRT 10 supports the same strongly typed build).  One optimisation
profile from ``--batch MIN:OPT:MAX``; the timing cache ``DIR/timing.cache`` is loaded when present
and saved after the build.  TF32 is cleared (TensorRT enables it by default): an FP32 engine -- and the
FP32 islands of the FP16 graph -- then really compute in FP32, as the 99.9% FP32 gate assumes.  Where no NVIDIA GPU or no ``tensorrt`` is available, ``trtexec.sh``
carries the exact equivalent command for the target machine (e.g. a Jetson); no engine is faked.
"""
from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Optional

from segclip.contract import FORMATS, TRTEXEC_NAME, sha256_file, tensorrt_unavailable_reason
from segclip.errors import SegclipError
from segclip.runtime.msda_plugin import init_trt_plugins
from segclip.signature import INPUT_NAME, SCENE_NAME
from segclip.atomic import atomic_write_bytes, atomic_write_text

ENGINE_NAME = FORMATS["tensorrt"].file
TIMING_CACHE_NAME = "timing.cache"


def gpu_info(device: int = 0) -> dict:
    import torch

    cc = torch.cuda.get_device_capability(device)
    return {"gpu": torch.cuda.get_device_name(device), "compute_capability": f"{cc[0]}.{cc[1]}"}


def profile_shapes(batch, size) -> dict:
    h, w = size
    return {k: [b, h, w, 3] for k, b in zip(("min", "opt", "max"), batch)}


def input_profiles(batch, size, scenes: bool = False) -> dict:
    """input name -> {"min","opt","max"} shapes: the image, and the per-image scene_id (N) of a
    model with metadata prompts (its batch follows the image's)."""
    prof = {INPUT_NAME: profile_shapes(batch, size)}
    if scenes:
        prof[SCENE_NAME] = {k: [b] for k, b in zip(("min", "opt", "max"), batch)}
    return prof


def _shape_arg(profiles: dict, key: str) -> str:
    return ",".join(f"{name}:" + "x".join(str(d) for d in p[key]) for name, p in profiles.items())


# Every TensorRT Python name this package uses (tests check they exist wherever tensorrt is importable,
# and that no other ``trt.`` name appears in the code): module attributes and methods of its objects.
TRT_NAMES = (
    "__version__", "init_libnvinfer_plugins", "Logger", "Logger.WARNING", "Logger.ERROR", "Builder", "Builder.create_network",
    "Builder.create_builder_config", "Builder.create_optimization_profile", "Builder.build_serialized_network",
    "NetworkDefinitionCreationFlag", "NetworkDefinitionCreationFlag.STRONGLY_TYPED", "OnnxParser",
    "OnnxParser.parse_from_file", "OnnxParser.num_errors", "OnnxParser.get_error", "BuilderFlag", "BuilderFlag.TF32",
    "IBuilderConfig.clear_flag", "IBuilderConfig.get_flag", "IBuilderConfig.set_memory_pool_limit",
    "IBuilderConfig.add_optimization_profile", "IBuilderConfig.create_timing_cache", "IBuilderConfig.set_timing_cache",
    "IBuilderConfig.get_timing_cache", "ITimingCache.serialize", "MemoryPoolType", "MemoryPoolType.WORKSPACE",
    "IOptimizationProfile.set_shape", "Runtime", "Runtime.deserialize_cuda_engine", "ICudaEngine.create_execution_context",
    "ICudaEngine.num_io_tensors", "ICudaEngine.get_tensor_name", "ICudaEngine.get_tensor_mode",
    "ICudaEngine.get_tensor_dtype", "ICudaEngine.get_tensor_profile_shape", "TensorIOMode", "TensorIOMode.INPUT",
    "TensorIOMode.OUTPUT", "IExecutionContext.set_input_shape", "IExecutionContext.set_tensor_address",
    "IExecutionContext.get_tensor_shape", "IExecutionContext.execute_async_v3", "DataType",
    "DataType.FLOAT", "DataType.HALF", "DataType.BF16", "DataType.INT8", "DataType.INT32", "DataType.INT64",
    "DataType.UINT8", "DataType.BOOL",
)


def trtexec_command(onnx_name: str, engine_name: str, batch, size, workspace_mb: int, scenes: bool = False) -> list:
    prof = input_profiles(batch, size, scenes)
    return [
        # --noTF32: TensorRT enables TF32 by default; FP32 layers must compute in FP32 (see build_engine)
        "trtexec", f"--onnx={onnx_name}", f"--saveEngine={engine_name}", "--stronglyTyped", "--noTF32",
        f"--minShapes={_shape_arg(prof, 'min')}", f"--optShapes={_shape_arg(prof, 'opt')}",
        f"--maxShapes={_shape_arg(prof, 'max')}", f"--timingCacheFile={TIMING_CACHE_NAME}",
        f"--memPoolSize=workspace:{int(workspace_mb)}M",
        # build only: trtexec's own timing run feeds random inputs, and a random scene_id can be out of
        # range for the scene table (segclip's gate and benchmark run the engine on real images)
        "--skipInference",
    ]


def write_trtexec_script(directory, onnx_name: str, batch, size, workspace_mb: int, engine_name: str = ENGINE_NAME,
                         scenes: bool = False, msda_note: str = "") -> Path:
    """``msda_note``: comment lines saying which deformable-attention form the engine takes (segclip.export.msda)."""
    cmd = trtexec_command(onnx_name, engine_name, batch, size, workspace_mb, scenes)
    args = [shlex.quote(c) for c in cmd[1:]]
    # ONNX=other.onnx sh trtexec.sh builds another graph of the export (e.g. the GridSample form)
    args = [f'"--onnx=${{ONNX:-{onnx_name}}}"' if c == f"--onnx={onnx_name}" else a for c, a in zip(cmd[1:], args)]
    text = (
        "#!/bin/sh\n"
        "# Build the TensorRT engine of this segclip export on the machine that will run it (GPU or Jetson,\n"
        "# TensorRT >= 10): engines are tied to the GPU architecture and the TensorRT version.\n"
        "# Strongly typed: the precision comes from the ONNX graph (model_fp16.onnx is FP16 with FP32 islands;\n"
        "# model_int8.onnx carries calibrated INT8 Q/DQ pairs: explicit quantization, float elsewhere;\n"
        "# model_int8_fp16.onnx the same with FP16 elsewhere).  Jetson / JetPack 6 (TensorRT 10) builds it as is.\n"
        + (f"# TensorRT 8.6 (JetPack 5) has no strongly typed INT8 build: add --int8{' --fp16' if 'fp16' in onnx_name else ''} "
           f"and drop --stronglyTyped there.\n" if "int8" in onnx_name else "")
        + "".join(f"# {line}\n" for line in msda_note.splitlines())
        + "set -e\n"
        'cd "$(dirname "$0")"\n'
        "# JetPack installs trtexec outside PATH; TRTEXEC=/path/to/trtexec overrides\n"
        'TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"\n'
        + " \\\n    ".join(['"$TRTEXEC"'] + args) + "\n"
    )
    path = atomic_write_text(Path(directory) / TRTEXEC_NAME, text)
    path.chmod(0o755)
    return path


def build_engine(onnx_path, engine_path, *, batch, size, workspace_mb: int = 4096,
                 timing_cache: Optional[Path] = None, log=print, scenes: bool = False) -> dict:
    """Build a strongly typed engine; returns the manifest entry fields."""
    reason = tensorrt_unavailable_reason()
    if reason:
        raise SegclipError(f"--trt: {reason}")
    import tensorrt as trt
    import torch

    from segclip.runtime.tensorrt_runner import trt_logger

    logger = trt_logger()  # one per process, shared with the runners that gate the engine
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    init_trt_plugins(trt, logger)  # the plugin form's MultiscaleDeformableAttnPlugin_TRT is looked up by the parser
    parser = trt.OnnxParser(network, logger)
    t0 = time.perf_counter()
    if not parser.parse_from_file(str(onnx_path)):
        def _desc(e):
            text = e.desc() if hasattr(e, "desc") else str(e)
            node = e.node_name() if hasattr(e, "node_name") else ""
            return (f"{node}: " if node else "") + (text.strip().splitlines() or ["?"])[0]

        errs = "; ".join(_desc(parser.get_error(i)) for i in range(min(parser.num_errors, 3)))
        raise SegclipError(f"{onnx_path}: TensorRT {trt.__version__} cannot parse the ONNX graph ({errs})")
    config = builder.create_builder_config()
    # TF32 is on by default and rounds FP32 convolution/GEMM inputs to 10-bit mantissas: off, so FP32 means FP32
    config.clear_flag(trt.BuilderFlag.TF32)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    prof = profile_shapes(batch, size)  # the image's: the manifest entry and the runner's max batch read it
    profile = builder.create_optimization_profile()
    for name, p in input_profiles(batch, size, scenes).items():
        profile.set_shape(name, p["min"], p["opt"], p["max"])
    config.add_optimization_profile(profile)
    cache_bytes = b""
    if timing_cache is not None and Path(timing_cache).is_file():
        cache_bytes = Path(timing_cache).read_bytes()
    cache = config.create_timing_cache(cache_bytes)
    # False: TensorRT rejected the cache (another GPU or TensorRT version); the build times from scratch
    cache_reused = bool(cache_bytes) and bool(config.set_timing_cache(cache, False))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SegclipError(f"{onnx_path}: TensorRT {trt.__version__} failed to build an engine (see the TensorRT log above)")
    atomic_write_bytes(engine_path, bytes(serialized))
    if timing_cache is not None:
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    info = {
        "tensorrt_version": trt.__version__,
        **gpu_info(torch.cuda.current_device()),  # the caller's device (the exporter builds under torch.cuda.device)
        "onnx": Path(onnx_path).name,
        "onnx_sha256": sha256_file(onnx_path),
        "profile": prof,
        "workspace_mb": int(workspace_mb),
        "strongly_typed": True,
        "tf32": bool(config.get_flag(trt.BuilderFlag.TF32)),  # False: FP32 layers run in FP32
        "timing_cache": TIMING_CACHE_NAME if timing_cache is not None else None,
        "timing_cache_reused": cache_reused,
        "build_seconds": round(time.perf_counter() - t0, 2),
    }
    log(f"tensorrt: built {Path(engine_path).name} in {info['build_seconds']} s (TensorRT {trt.__version__}, {info['gpu']})")
    return info
