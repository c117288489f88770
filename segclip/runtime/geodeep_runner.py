"""The runner of a ``export --geodeep`` artifact (``model_geodeep.onnx``), behind the same interface as
every other: uint8 NHWC images in, ``{"mask", "scores"}`` out, so the parity gate, ``predict
--format geodeep`` and the benchmark run it like any artifact.

The file itself takes what GeoDeep and QGIS Deepness feed it (``segclip.export.geodeep``): one
float32 NCHW input in 0..1 -- made here exactly as GeoDeep's ``detection.preprocess`` makes it,
``(uint8 / 255.0).astype(float32)`` -- and returns class probabilities [N, K, S, S].  Their argmax is
the class map; the probabilities are the ``scores`` (segclip's scores divided by their sum over the
classes).  The scene is baked in at export: a call for another scene is refused.
"""
from __future__ import annotations

import json
from typing import Optional

import numpy as np

from segclip.contract import META_SCENE
from segclip.errors import SegclipError
from segclip.runtime.onnx_runner import OnnxRunner


class GeoDeepRunner(OnnxRunner):
    """``OnnxRunner`` options; the signature is the export's (classes, size, scenes), with scores."""

    def __init__(self, path, **opts):
        import dataclasses

        super().__init__(path, **opts)
        self.signature = dataclasses.replace(self.signature, scores=True)
        scene = json.loads(self.meta.get(META_SCENE) or '{"id": 0}')
        self.scene = int(scene.get("id", 0))
        if self.name.startswith("onnx-"):
            self.name = "geodeep"

    def _check_io(self, sess) -> list:
        ins, outs = sess.get_inputs(), sess.get_outputs()
        h, w, k = self.signature.height, self.signature.width, self.signature.num_classes
        if (len(ins) != 1 or ins[0].type != "tensor(float)" or list(ins[0].shape[1:]) != [3, h, w]
                or len(outs) != 1 or list(outs[0].shape[1:]) != [k, h, w]):
            raise SegclipError(f"{self.path}: not a GeoDeep artifact of this signature (one float input [N, 3, {h}, {w}], "
                               f"one output [N, {k}, {h}, {w}]); re-export with segclip export --geodeep")
        self._input = ins[0].name
        return [outs[0].name]

    def _infer(self, images: np.ndarray, scene_ids: Optional[np.ndarray] = None) -> dict:
        if scene_ids is not None and np.any(scene_ids != self.scene):
            other = int(scene_ids[scene_ids != self.scene][0])
            raise SegclipError(f"{self.name}: this GeoDeep artifact was exported for scene "
                               f"{self.signature.scenes[self.scene]!r}, not {self.signature.scenes[other]!r}; "
                               f"re-export with segclip export --geodeep --scene {self.signature.scenes[other]}")
        x = (images.transpose(0, 3, 1, 2) / 255.0).astype(np.float32)  # GeoDeep's detection.preprocess
        probs = self._session.run(self._outputs, {self._input: x})[0]
        mask = probs.argmax(1).astype(self.signature.mask_dtype)
        return {"mask": mask, "scores": probs}

    def _expected(self) -> str:
        return f"uint8 Nx{self.signature.height}x{self.signature.width}x3 (NHWC; fed as float32 NCHW 0..1)"
