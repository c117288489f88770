"""segclip's OpenVINO CPU kernel of TensorRT's ``MultiscaleDeformableAttnPlugin_TRT`` (``ov_msda.cpp``).

Why: OpenVINO runs the GridSample form of the deformable attention as one GridSample per level and point
(28-31% of segclip-r50's INT8 time, ``benchmarks/FAST_PATH.md``).  The same graph traced in the plugin
form (``segclip.export.msda``: one plugin node per encoder layer, the contract of NVIDIA's kernel, with a
CPU reference in ``segclip.runtime.msda_plugin``) runs on OpenVINO through this extension: an op with an
``evaluate`` that OpenVINO's CPU plugin calls in its own threads, and an ONNX frontend conversion that
maps the plugin node to it.  ``model_int8_msda.onnx`` (``contract.FORMATS``) is that graph quantized.

The library is compiled here against the installed ``openvino`` wheel's headers (it ships them, and its
CMake config says ``OV_THREAD=OV_THREAD_TBB_ADAPTIVE``), with the C++ compiler of ``$CXX`` or ``g++``;
about 2 s.  OpenVINO does not promise a stable extension ABI across releases, so a library is tied to
the OpenVINO version it was built against (``stamp``):

* ``segclip export`` writes it next to the graph (``LIBRARY_NAME``) and records its stamp in the graph's
  metadata (``META_EXTENSION``) and the manifest;
* a runner loads that library when its stamp matches this machine, else builds one for the process in a
  temporary folder (removed at exit), and says so; with no compiler it refuses in one line.

Linux x86-64 (the kernel dispatches AVX-512 / AVX2 / baseline code at load time, so one build runs on any
x86-64 CPU).
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional

from segclip.errors import SegclipError, one_line

SOURCE = Path(__file__).with_name("ov_msda.cpp")
LIBRARY_NAME = "libsegclip_ov_msda.so"
META_EXTENSION = "segclip.openvino_extension"  # ONNX metadata: json of ``stamp()`` (+ the library's sha256)
OP_NAME = "MultiscaleDeformableAttn"  # the OpenVINO op (opset "segclip") the plugin node becomes
BUILD_TIMEOUT_S = 300
ONE_ISA_FLAGS = {"avx2": ("-mavx2", "-mfma"), "baseline": ()}  # build(isa=...): one code path
_BUILT: dict = {}  # stamp key -> a library built for this process


@functools.lru_cache(maxsize=None)  # asked on every load; the source does not change under a running process
def source_sha256() -> str:
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()


def openvino_version() -> str:
    import openvino

    return str(openvino.__version__)


def stamp() -> dict:
    """What a library must have been built from to load here: this source, this OpenVINO."""
    return {"file": LIBRARY_NAME, "op": OP_NAME, "openvino": openvino_version(), "source_sha256": source_sha256()}


def matches(record: Optional[dict]) -> bool:
    here = stamp()
    return bool(record) and all(record.get(k) == here[k] for k in ("openvino", "source_sha256"))


def compiler() -> Optional[str]:
    """The C++ compiler: ``$CXX`` (a name on PATH or a path), else g++, else None."""
    cxx = os.environ.get("CXX")
    if cxx:
        return shutil.which(cxx)
    return shutil.which("g++")


def _openvino_paths() -> tuple:
    import openvino

    root = Path(openvino.__file__).parent
    include, libs = root / "include", root / "libs"
    wanted = ("libopenvino.so", "libopenvino_onnx_frontend.so", "libtbb.so")
    found = [sorted(libs.glob(name + "*")) for name in wanted]
    if not (include / "openvino" / "op" / "op.hpp").is_file() or not all(found):
        raise SegclipError(f"segclip's OpenVINO kernel: the openvino {openvino_version()} package at {root} has no C++ "
                           f"headers or libraries to build against; pip install --force-reinstall openvino")
    return include, libs, [f[0] for f in found]


def build_problem() -> Optional[str]:
    """None when the kernel can be built here, else why not (one line, with what to do): Linux, the
    openvino package with its headers, a C++ compiler.  ``segclip doctor`` prints it."""
    if not sys.platform.startswith("linux"):
        return (f"segclip's OpenVINO deformable-attention kernel is built on Linux only (this is {sys.platform}); "
                f"use model_int8.onnx (--format onnx_int8)")
    try:
        _openvino_paths()
    except ImportError:
        return "the openvino package is not installed (pip install 'segclip[openvino]')"
    except SegclipError as e:
        return str(e)
    if compiler() is None:
        return ("segclip's OpenVINO deformable-attention kernel needs a C++ compiler to build and none was found "
                "(g++, or $CXX); install g++ (apt install g++), or use model_int8.onnx (--format onnx_int8)")
    return None


def build(dest: Path, log: Callable = lambda s: None, isa: Optional[str] = None) -> Path:
    """Compile ``ov_msda.cpp`` into ``dest`` (a library path), atomically (a temporary name in the same
    folder, then renamed).  Raises a one-line SegclipError when it cannot (``build_problem``).
    ``isa``: None, every x86 path dispatched at load time; "avx2" or "baseline", that path alone (what
    an AVX2-only or an older CPU runs, checked on any x86-64 machine by the tests)."""
    problem = build_problem()
    if problem:
        raise SegclipError(problem)
    cxx = compiler()
    include, libs, link = _openvino_paths()
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    cmd = [cxx, "-O3", "-std=c++17", "-shared", "-fPIC", "-DOV_THREAD=OV_THREAD_TBB_ADAPTIVE",
           "-D_GLIBCXX_USE_CXX11_ABI=1", f"-I{include}", str(SOURCE), "-o", tmp, *map(str, link), f"-Wl,-rpath,{libs}"]
    if isa is not None:
        cmd[1:1] = ["-DSEGCLIP_ONE_ISA", *ONE_ISA_FLAGS[isa]]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        if done.returncode != 0:
            err = next((ln for ln in done.stderr.splitlines() if "error" in ln), done.stderr.strip()[-300:])
            raise SegclipError(f"segclip's OpenVINO kernel did not compile with {cxx} against openvino "
                               f"{openvino_version()}: {one_line(err, 300)}")
        os.replace(tmp, dest)
    except subprocess.TimeoutExpired:
        raise SegclipError(f"segclip's OpenVINO kernel: {cxx} ran past {BUILD_TIMEOUT_S} s") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log(f"built segclip's OpenVINO deformable-attention kernel ({dest.name}, openvino {openvino_version().split('-')[0]}, "
        f"{Path(cxx).name})")
    return dest


def write_library(folder: Path, log: Callable = lambda s: None) -> dict:
    """Build the library into ``folder`` (an export's staging folder) -> its record for the graph's
    metadata and the manifest (``stamp`` plus the file's sha256)."""
    from segclip.contract import sha256_file

    path = build(Path(folder) / LIBRARY_NAME, log)
    return {**stamp(), "sha256": sha256_file(path)}


def _own_library(folder, record: Optional[dict]) -> Optional[Path]:
    """The library an export wrote in ``folder`` when its ``record`` matches this machine, else None."""
    path = Path(folder) / ((record or {}).get("file") or LIBRARY_NAME)
    return path if matches(record) and path.is_file() else None


def loads_here(record: Optional[dict], folder) -> Optional[str]:
    """None when a graph in ``folder`` whose library record (manifest ``openvino_extension``) is ``record``
    gets its kernel on this machine -- its own library matches this OpenVINO, or one can be built --
    else why not.  The default choice skips an artifact that would not load (``runtime.loader``)."""
    try:
        if _own_library(folder, record) is not None:
            return None
    except ImportError:
        return "the openvino package is not installed"
    return build_problem()


def read_record(meta: dict) -> Optional[dict]:
    raw = meta.get(META_EXTENSION)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def library_for(onnx_path, record: Optional[dict], log: Callable = lambda s: None) -> Path:
    """The extension library to load for the graph at ``onnx_path``: the one written next to it when its
    ``record`` (from the graph's metadata) matches this machine's OpenVINO and segclip's source, else one
    built for this process."""
    own = _own_library(Path(onnx_path).parent, record)
    if own is not None:
        return own
    path = Path(onnx_path).parent / ((record or {}).get("file") or LIBRARY_NAME)
    why = ("it has none next to it" if not path.is_file() else
           f"its library was built against openvino {(record or {}).get('openvino')}, this machine has {openvino_version()}"
           if (record or {}).get("openvino") != openvino_version() else "its library was built from another segclip version")
    return _process_library(f"{Path(onnx_path).name}: {why}", log)


def add_to(core, onnx_path, record: Optional[dict], log: Callable = lambda s: None) -> Path:
    """Load the kernel for the graph at ``onnx_path`` into the OpenVINO ``core`` (``library_for``) before the
    graph is read: what segclip's OpenVINO runner and the per-layer profiler both do."""
    lib = library_for(onnx_path, record, log)
    try:
        core.add_extension(str(lib))
    except Exception as e:  # OpenVINO's own error types
        raise SegclipError(f"{lib}: OpenVINO {openvino_version()} cannot load it ({one_line(e)}); delete it and rerun "
                           f"(segclip rebuilds it), or use model_int8.onnx (--format onnx_int8)") from None
    return lib


def _process_library(why: str, log: Callable) -> Path:
    key = (openvino_version(), source_sha256())
    if key not in _BUILT:
        folder = Path(tempfile.mkdtemp(prefix="segclip-ov-"))
        atexit.register(shutil.rmtree, folder, True)
        try:
            _BUILT[key] = build(folder / LIBRARY_NAME)
        except SegclipError as e:
            raise SegclipError(f"{why}, and {e}") from None
        log(f"{why}; built segclip's OpenVINO kernel for this process")
    return _BUILT[key]
