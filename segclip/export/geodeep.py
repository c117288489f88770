"""``export --geodeep``: the model contract of OpenDroneMap's GeoDeep and QGIS Deepness.

What the two readers actually do with an ONNX file (read from their source, not guessed):

* GeoDeep 0.9.13 (uav4geo/GeoDeep, ``geodeep/inference.py`` ``create_session``): refuses a model with
  more than one input; ``tiles_size`` is the input's last dimension (so S must be fixed); reads
  ``custom_metadata_map`` as ``json.loads`` for ``model_type`` (default ``"Detector"``),
  ``class_names`` and ``det_type``, and as plain ``float()`` / ``int()`` of the string for
  ``resolution`` (cm/px, default 10), ``tiles_overlap`` (percent, default 5), ``seg_thresh``
  (default 0.5) and ``seg_small_segment`` (default 11; ``int("0.0")`` would fail: write integers).
  ``geodeep/geodeep.py`` ``run``: input GSD = max(|a|, |e|) of the transform in cm; only an input
  finer than the model is resampled, by the integer factor ``model_res // input_res``, reading
  each window with ``out_shape`` (bilinear, ``boundless`` with fill 0: nodata becomes black pixels);
  the mask is ``height // factor`` x ``width // factor``.  ``geodeep/detection.py`` ``preprocess``:
  NHWC -> NCHW and uint8 / 255 -> float32 0..1.  ``geodeep/segmentation.py``: output 0 [B, K, S, S];
  values below ``seg_thresh`` set to 0, then argmax (all-below pixels become class 0); tiles are
  merged by cropping half the overlap (no blending); then a 5x5 median filter (``utils.median_filter``)
  and ``rasterio.features.sieve`` of (2 x seg_small_segment)^2 pixels; ``class_names`` keys are
  looked up as ``str(int(id))``.
* Deepness (PUTvision/qgis-plugin-deepness, docs ``creators_add_metadata_to_model.rst``: every value
  ``json.dumps``-encoded; ``creators_description_classes.rst``: one input [B, C, S, S], B 1 or dynamic,
  square tiles, zero padding, output 0 [B, K, S, S] softmax probabilities that sum to 1;
  ``src/deepness/processing/models/model_base.py``: ``json.loads`` of every key, ``class_names``
  ``{id: name}`` with consecutive ids, ``tiles_overlap`` as int, the tile size key spelled
  ``tile_size`` in the code but ``tiles_size`` in the docs table; ``preprocessing_utils.py``: x / 255).

So the artifact takes ONE input, float32 NCHW [B, 3, S, S] in 0..1 with S fixed, multiplies it by 255
inside the graph and then runs segclip's own preprocessing (ImageNet mean/std) and model; the scene
of a model with metadata prompts is fixed at export (``--scene``, default generic).  Its one output,
``probabilities`` [B, K, S, S], is segclip's per-class scores divided by their sum over the classes
(they sum to 1, as Deepness asks; the argmax is segclip's class map).  Metadata: the readers' keys,
JSON-encoded as both parse them, plus segclip's own ``segclip.*`` signature keys.
"""
from __future__ import annotations

import json
from typing import Optional

from segclip.contract import FORMATS, META_ARTIFACT, META_PREFIX, META_SCENE
from segclip.data.sliding import OVERLAP

GEODEEP_NAME = FORMATS["geodeep"].file
INPUT = "image"
OUTPUT = "probabilities"
# contract.META_ARTIFACT / META_SCENE without the prefix set_metadata adds: what a runner opening the bare file reads
ARTIFACT_META = META_ARTIFACT[len(META_PREFIX):]
SCENE_META = META_SCENE[len(META_PREFIX):]
# both readers zero the probabilities below seg_thresh before the argmax: 0 keeps segclip's argmax
SEG_THRESH = 0.0
# GeoDeep sieves (2n)^2 px and Deepness median-blurs 2*(n//2)+1 px: 0 = neither (segclip's map has no
# post-filter; GeoDeep's 5x5 median filter runs regardless)
SEG_SMALL_SEGMENT = 0
TILES_OVERLAP = round(100 * OVERLAP)  # percent: segclip's own window overlap (predict's default)


def scene_id(signature, scene) -> tuple:
    """(id, name) of ``--scene`` (a name or id of the model's scene table; None = generic)."""
    if not signature.scenes:
        if scene not in (None, "", "generic", 0, "0"):
            from segclip.errors import SegclipError

            raise SegclipError(f"--scene {scene}: this model was trained without metadata prompts, so it has no "
                               f"scenes; drop --scene")
        return 0, "generic"
    from segclip.metadata import lookup_scene

    i = 0 if scene in (None, "") else lookup_scene(signature.scenes, scene, where="--scene")
    return int(i), signature.scenes[int(i)]


def gis_metadata(signature, size: int, overlap_percent: int) -> dict:
    """The GIS readers' keys, each value a JSON string as Deepness writes and both tools parse it."""
    meta = {
        "model_type": json.dumps("Segmentor"),
        "class_names": json.dumps({str(i): str(c) for i, c in enumerate(signature.classes)}),
        "tiles_overlap": json.dumps(int(overlap_percent)),
        "tile_size": json.dumps(int(size)),  # Deepness' code reads tile_size ...
        "tiles_size": json.dumps(int(size)),  # ... and its docs list tiles_size
        "seg_thresh": json.dumps(SEG_THRESH),
        "seg_small_segment": json.dumps(SEG_SMALL_SEGMENT),
    }
    if signature.gsd is not None:  # cm/px; without it GeoDeep assumes 10 cm/px, Deepness asks the user
        meta["resolution"] = json.dumps(round(signature.gsd * 100, 6))
    return meta


def make_module(inference_module, scene: int):
    """torch module: float32 NCHW 0..1 -> class probabilities NCHW, around ``SegCLIPInference``."""
    import torch
    from torch import nn

    class GeoDeepModule(nn.Module):
        def __init__(self, inner, scene_id: int):
            super().__init__()
            self.inner = inner
            self.scene = int(scene_id)
            self.has_scenes = inner.metadata is not None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            image = (x * 255.0).permute(0, 2, 3, 1)  # back to segclip's 0..255 NHWC; preprocess normalises
            ids = None
            if self.has_scenes:
                ids = torch.zeros_like(x[:, 0, 0, 0], dtype=torch.int64) + self.scene
            _, scores = self.inner(image, ids)
            scores = scores.float()
            return scores / scores.sum(1, keepdim=True).clamp_min(1e-12)

    return GeoDeepModule(inference_module, scene).eval()


def export_graph(inference_module, scene: int, size: tuple, opset: int):
    """Trace, simplify and check the GeoDeep graph; returns (onnx model, info)."""
    import io
    import time
    import warnings

    import onnx
    import torch

    from segclip.export import onnx_export as ox

    t0 = time.perf_counter()
    module = make_module(inference_module, scene)
    h, w = size
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings, as in onnx_export.trace_to_onnx
        torch.onnx.export(module, (torch.zeros(1, 3, h, w),), buf, input_names=[INPUT], output_names=[OUTPUT],
                          opset_version=opset, dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                          do_constant_folding=True, dynamo=False)
    model = ox.slim(onnx.load_from_string(buf.getvalue()))
    # a static [batch, K, S, S] output: the traced division leaves its dims symbolic, and Deepness refuses
    # an output whose last two dims are not equal (segmentor.py check_loaded_model_outputs)
    dims = model.graph.output[0].type.tensor_type.shape.dim
    del dims[:]
    for i, d in enumerate(("batch", len(inference_module.classes), h, w)):
        dims.add()
        if i == 0:
            dims[i].dim_param = d
        else:
            dims[i].dim_value = int(d)
    ox.ensure_node_names(model)
    ops = ox.check_graph(model, GEODEEP_NAME)
    return model, {"ops": ops, "nodes": len(model.graph.node), "export_seconds": round(time.perf_counter() - t0, 3)}


def stamp(model, signature, *, size: int, overlap_percent: int, scene: tuple, source_sha256: Optional[str]) -> str:
    """Write the GIS keys and segclip's signature keys into the model; returns the graph hash."""
    from segclip.export import onnx_export as ox

    extra = {ARTIFACT_META: "geodeep", SCENE_META: json.dumps({"id": scene[0], "name": scene[1]}),
             "normalization": json.dumps({"mean": list(signature.pixel_mean), "std": list(signature.pixel_std),
                                          "scale": "0..1 x 255 inside the graph", "inside_graph": True,
                                          "input": "float32 RGB NCHW 0..1"})}
    h = ox.set_metadata(model, signature, precision="fp32", source_sha256=source_sha256, extra=extra)
    keep = [p for p in model.metadata_props if p.key not in GIS_KEYS]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in gis_metadata(signature, size, overlap_percent).items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    model.doc_string = (f"SegCLIP for GeoDeep / QGIS Deepness ({len(signature.classes)} classes, scene {scene[1]}): "
                        f"float32 RGB NCHW 0..1 '{INPUT}' -> '{OUTPUT}' [B, K, S, S]; see metadata segclip.signature")
    return h


GIS_KEYS = ("model_type", "class_names", "resolution", "tiles_overlap", "tile_size", "tiles_size", "seg_thresh",
            "seg_small_segment")


def manifest_entry(signature, size: tuple, overlap_percent: int, scene: tuple) -> dict:
    h, w = size
    return {"input": {"name": INPUT, "dtype": "float32", "layout": "NCHW", "shape": [-1, 3, h, w], "scale": "0..1"},
            "output": {"name": OUTPUT, "dtype": "float32", "layout": "NCHW", "shape": [-1, signature.num_classes, h, w],
                       "what": "segclip scores / their sum over classes (argmax = segclip's class map)"},
            "scene": {"id": scene[0], "name": scene[1]},
            "gis_metadata": {k: json.loads(v) for k, v in gis_metadata(signature, h, overlap_percent).items()},
            "readers": ["GeoDeep >= 0.9.13 (geodeep.run / segment)", "QGIS Deepness (Segmentor)"]}
