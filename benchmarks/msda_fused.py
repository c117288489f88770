"""What a fused CPU deformable-attention kernel would buy: the headroom left behind GridSample.

OpenVINO INT8 spends 28-31% of segclip-r50's time in GridSample (FAST_PATH.md): 12 GridSamples per
encoder layer, each gathering single floats from d x h x w planes.  A fused kernel (what
``MultiscaleDeformableAttnPlugin_TRT`` is on a GPU) reads the value channels-last, so each bilinear
tap is one contiguous d-float row, and it weights and sums in registers.  This script measures one
encoder layer's sampling (segclip-r50 shapes at --size) four ways on this CPU, each checked against
``ms_deform_attn`` (PyTorch, the model's definition):

  torch eager | ONNX Runtime | OpenVINO (both on the ONNX export of the same op) | a fused C++ kernel

The C++ kernel is an experiment compiled here with g++ -O3 -march=native -fopenmp; what segclip ships
grew from it (segclip/runtime/ov_msda.cpp, an OpenVINO extension: model_int8_msda.onnx).
Usage: ``.venv/bin/python benchmarks/msda_fused.py --size 512 --threads 2``.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

KERNEL = r"""
#include <math.h>
#include <string.h>
// value: B x S x H x D (channels-last, levels concatenated); shapes: L x 2 (h, w); starts: L;
// loc: B x Q x H x L x P x 2 in [0, 1] (x, y); attw: B x Q x H x L x P; out: B x Q x H x D.
// grid_sample semantics: align_corners=False (pixel = loc * size - 0.5), zeros outside.
extern "C" void msda(const float* value, const long* shapes, const long* starts, const float* loc,
                     const float* attw, float* out, long B, long S, long Q, long H, long D, long L, long P) {
  #pragma omp parallel for collapse(2) schedule(static)
  for (long b = 0; b < B; ++b)
    for (long q = 0; q < Q; ++q)
      for (long h = 0; h < H; ++h) {
        float acc[256];
        memset(acc, 0, sizeof(float) * D);
        const float* lq = loc + (((b * Q + q) * H + h) * L * P) * 2;
        const float* wq = attw + ((b * Q + q) * H + h) * L * P;
        for (long l = 0; l < L; ++l) {
          const long hl = shapes[2 * l], wl = shapes[2 * l + 1];
          const float* vl = value + ((b * S + starts[l]) * H + h) * D;
          for (long p = 0; p < P; ++p) {
            const float x = lq[2 * (l * P + p)] * wl - 0.5f, y = lq[2 * (l * P + p) + 1] * hl - 0.5f;
            const float a = wq[l * P + p];
            const long x0 = (long)floorf(x), y0 = (long)floorf(y);
            const float fx = x - x0, fy = y - y0;
            const long xs[2] = {x0, x0 + 1}, ys[2] = {y0, y0 + 1};
            const float wx[2] = {1 - fx, fx}, wy[2] = {1 - fy, fy};
            for (int j = 0; j < 2; ++j) {
              if (ys[j] < 0 || ys[j] >= hl) continue;
              for (int i = 0; i < 2; ++i) {
                if (xs[i] < 0 || xs[i] >= wl) continue;
                const float w = a * wy[j] * wx[i];
                const float* row = vl + (ys[j] * wl + xs[i]) * H * D;
                for (long c = 0; c < D; ++c) acc[c] += w * row[c];
              }
            }
          }
        }
        memcpy(out + ((b * Q + q) * H + h) * D, acc, sizeof(float) * D);
      }
}
"""


def build(workdir: Path) -> ctypes.CDLL:
    src, lib = workdir / "msda.cpp", workdir / "libmsda.so"
    src.write_text(KERNEL)
    subprocess.run(["g++", "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    return ctypes.CDLL(str(lib))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=512, help="image size: levels at strides 8, 16, 32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds (each implementation once per round)")
    args = ap.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before the kernel's OpenMP runtime starts

    import onnxruntime as ort
    import openvino as ov
    import torch

    from segclip.benchmarks.timing import measure_interleaved, set_threads
    from segclip.config import get_preset
    from segclip.cpu import cpu_model, int8_isa
    from segclip.modeling.pixel_decoder.msdeformattn import MSDeformAttnPixelDecoder, ms_deform_attn

    set_threads(args.threads)
    cfg = get_preset("segclip-r50").model
    H, P, D, layers = cfg.enc_heads, cfg.enc_points, cfg.hidden_dim // cfg.enc_heads, cfg.enc_layers
    shapes = [(args.size // s, args.size // s) for s in (32, 16, 8)]  # the pixel decoder's level order
    L, S = len(shapes), sum(h * w for h, w in shapes)
    rng = np.random.default_rng(0)
    value = rng.standard_normal((1, S, H, D), dtype=np.float32)
    # as in the model: each query's reference point is its own pixel centre, the sampling points a few
    # pixels of each level around it (so some fall outside: zeros padding), which sets the cache behaviour
    ref = MSDeformAttnPixelDecoder._reference_points(shapes, "cpu").numpy()
    wh = np.array([(w, h) for h, w in shapes], np.float32)[None, None, None, :, None, :]
    off = rng.normal(0.0, 2.0, (1, S, H, L, P, 2)).astype(np.float32)
    loc = (ref[None, :, None, None, None, :] + off / wh).astype(np.float32)
    attw = rng.random((1, S, H, L, P), dtype=np.float32)
    attw /= attw.sum(axis=(3, 4), keepdims=True)

    class Core(torch.nn.Module):
        def forward(self, v, lo, aw):
            return ms_deform_attn(v, shapes, lo, aw)

    t = [torch.from_numpy(a) for a in (value, loc, attw)]
    with torch.inference_mode():
        ref = Core()(*t).numpy()
    fns, diffs = {"torch eager (ms_deform_attn)": lambda _: Core()(*t)}, {}

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        onnx = tmp / "msda.onnx"
        torch.onnx.export(Core(), tuple(t), str(onnx), input_names=["v", "loc", "attw"], output_names=["out"],
                          opset_version=17, dynamo=False)
        feeds = {"v": value, "loc": loc, "attw": attw}
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
        sess = ort.InferenceSession(str(onnx), so, providers=["CPUExecutionProvider"])
        fns["ONNX Runtime (GridSample graph)"] = lambda _: sess.run(None, feeds)[0]
        comp = ov.Core().compile_model(str(onnx), "CPU", {"INFERENCE_NUM_THREADS": args.threads,
                                                          "PERFORMANCE_HINT": "LATENCY"})
        req = comp.create_infer_request()
        fns["OpenVINO (GridSample graph)"] = lambda _: req.infer(feeds)[comp.outputs[0]]

        lib = build(tmp)
        out = np.empty((1, S, H, D), np.float32)
        sh = np.array(shapes, np.int64)
        starts = np.cumsum([0] + [h * w for h, w in shapes[:-1]]).astype(np.int64)
        ptr = lambda a: a.ctypes.data_as(ctypes.c_void_p)  # noqa: E731

        def fused(_):
            lib.msda(ptr(value), ptr(sh), ptr(starts), ptr(loc), ptr(attw), ptr(out),
                     *(ctypes.c_long(n) for n in (1, S, S, H, D, L, P)))
            return out

        fns[f"fused C++ kernel (channels-last, OpenMP {args.threads})"] = fused
        for name, fn in list(fns.items())[1:]:
            diffs[name] = float(np.abs(np.asarray(fn(None)).reshape(ref.shape) - ref).max())
        timings = measure_interleaved(fns, [np.zeros(1)], min_rounds=args.rounds, gap_s=0.1)

    print(f"one encoder layer's deformable sampling, segclip-r50 at {args.size} px: {S} queries x {H} heads x "
          f"{L} levels x {P} points, d={D}; {cpu_model()} ({int8_isa()}), {args.threads} threads, "
          f"p50 of {args.rounds} interleaved rounds")
    print(f"| implementation | ms per layer | x {layers} layers | max abs diff vs torch |\n|---|---:|---:|---:|")
    for name, timing in timings.items():
        ms = timing.stats["p50_ms"]
        print(f"| {name} | {ms:.2f} | {layers * ms:.1f} | {diffs.get(name, 0.0):.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
