"""The exported model's signature: the one place that says what goes in and what comes out.

Export writes it into ONNX metadata and the manifest, Triton configs are generated from it, and
every runner/client checks its inputs against it.  Nothing else hard-codes tensor names or dtypes.

Input  ``image``:  UINT8, N x H x W x 3, RGB, 0..255 (normalisation happens inside the graph).
Input  ``scene_id``: INT32, N, one id per image into the scene table (``scenes``: names, id = index;
                   ``scene_keys``: the metadata keys the names' values stand for)
                   of a model trained with metadata prompts (``segclip.metadata``); absent otherwise.
                   Optional for callers: the default is scene 0, ``generic`` (metadata unknown).
Output ``mask``:   UINT8 N x H x W class map (INT32 when there are more than 255 classes).
Output ``scores``: optional, FP32 or FP16, N x K x H x W per-class semantic scores.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Optional, Protocol, Sequence

import numpy as np

from segclip.errors import SegclipError

INPUT_NAME = "image"
SCENE_NAME = "scene_id"
SCENE_DTYPE = "int32"  # what ONNX Gather, TensorRT and Triton (TYPE_INT32) all take without casts
DEFAULT_SCENE = 0  # the generic scene: what a request without scene_id gets
MASK_NAME = "mask"
SCORES_NAME = "scores"

# ImageNet statistics on the 0..255 scale (what the backbone was pretrained with).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

# numpy dtype name -> (ONNX TensorProto enum name, Triton config type, Triton wire datatype)
_DTYPES = {
    "uint8": ("UINT8", "TYPE_UINT8", "UINT8"),
    "int32": ("INT32", "TYPE_INT32", "INT32"),
    "int64": ("INT64", "TYPE_INT64", "INT64"),
    "float16": ("FLOAT16", "TYPE_FP16", "FP16"),
    "float32": ("FLOAT", "TYPE_FP32", "FP32"),
}


def triton_config_type(dtype: str) -> str:
    return _DTYPES[dtype][1]


def triton_wire_type(dtype: str) -> str:
    return _DTYPES[dtype][2]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name
    shape: tuple  # -1 = dynamic; the first axis is always the batch
    layout: str  # "NHWC", "NHW", "NCHW"

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "layout": self.layout}


@dataclass(frozen=True)
class Signature:
    classes: tuple
    palette: tuple  # RGB triple per class
    height: Optional[int] = None  # None = dynamic spatial size
    width: Optional[int] = None
    scores: bool = False
    scores_dtype: str = "float32"
    max_batch: int = 8
    pixel_mean: tuple = PIXEL_MEAN
    pixel_std: tuple = PIXEL_STD
    scenes: tuple = ()  # scene names (id = index; 0 = generic); () = no scene_id input
    scene_keys: tuple = ()  # the metadata keys a scene name's values stand for, in order (e.g. ("domain",))
    # 16-bit / float imagery: the (low, high) stretched to 0..255 at training (train --range), which
    # predict and eval apply too; () = each image by its own p2-p98 stretch (segclip.data.raster)
    value_range: tuple = ()
    # ground sampling distance the model was trained at, metres per pixel (train --gsd; LoveDA 0.3);
    # predict resamples georeferenced inputs to it.  None = unknown (segclip.data.gsd)
    gsd: Optional[float] = None
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "scenes", tuple(str(s) for s in (self.scenes or ())))
        object.__setattr__(self, "scene_keys", tuple(str(s) for s in (self.scene_keys or ())))
        object.__setattr__(self, "palette", tuple(tuple(int(c) for c in p) for p in self.palette))
        object.__setattr__(self, "value_range", tuple(float(v) for v in (self.value_range or ())))
        # 0 is an error, not "unknown": only None (or an empty entry) means the GSD was never given
        object.__setattr__(self, "gsd", None if self.gsd in (None, "") else float(self.gsd))
        if self.gsd is not None and not (self.gsd > 0 and math.isfinite(self.gsd)):
            raise SegclipError(f"signature: ground sampling distance {self.gsd!r} m is not a positive number")
        if len(self.palette) != len(self.classes):
            raise SegclipError(
                f"signature: {len(self.classes)} classes but {len(self.palette)} palette colours; give one RGB colour per class"
            )
        if self.scores_dtype not in ("float32", "float16"):
            raise SegclipError(f"signature: scores dtype {self.scores_dtype!r} is not float32 or float16")

    # ---- derived -------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def mask_dtype(self) -> str:
        return "uint8" if self.num_classes <= 255 else "int32"

    @property
    def dynamic_size(self) -> bool:
        return self.height is None or self.width is None

    def _hw(self):
        return (-1, -1) if self.dynamic_size else (self.height, self.width)

    @property
    def inputs(self) -> list:
        h, w = self._hw()
        ins = [TensorSpec(INPUT_NAME, "uint8", (-1, h, w, 3), "NHWC")]
        if self.scenes:
            ins.append(TensorSpec(SCENE_NAME, SCENE_DTYPE, (-1,), "N"))
        return ins

    @property
    def outputs(self) -> list:
        h, w = self._hw()
        outs = [TensorSpec(MASK_NAME, self.mask_dtype, (-1, h, w), "NHW")]
        if self.scores:
            outs.append(TensorSpec(SCORES_NAME, self.scores_dtype, (-1, self.num_classes, h, w), "NCHW"))
        return outs

    # ---- checks --------------------------------------------------------------------------------
    def check_input(self, images, where: str = "input") -> np.ndarray:
        """Validate a batch of images; returns it as a C-contiguous uint8 array.

        Raises a one-line ``SegclipError`` naming what is wrong and what was expected.
        """
        arr = np.asarray(images)
        if arr.dtype != np.uint8:
            raise SegclipError(
                f"{where}: '{INPUT_NAME}' must be uint8 RGB 0..255, got dtype {arr.dtype}; convert with "
                f"np.asarray(img, dtype=np.uint8) (do not normalise: the model does it)"
            )
        if arr.ndim == 3:
            raise SegclipError(
                f"{where}: '{INPUT_NAME}' must be a batch N x H x W x 3, got one image of shape {arr.shape}; use img[None]"
            )
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise SegclipError(
                f"{where}: '{INPUT_NAME}' must be N x H x W x 3 (NHWC, RGB), got shape {tuple(arr.shape)}"
            )
        if arr.shape[0] < 1:
            raise SegclipError(f"{where}: empty batch")
        if not self.dynamic_size and arr.shape[1:3] != (self.height, self.width):
            raise SegclipError(
                f"{where}: this model was exported for {self.height}x{self.width} images, got "
                f"{arr.shape[1]}x{arr.shape[2]}; resize/tile the input or re-export with --size {arr.shape[1]}x{arr.shape[2]}"
            )
        return np.ascontiguousarray(arr)

    def check_scene_ids(self, scene_ids, n: int, where: str = "input"):
        """Scene ids for a batch of ``n`` images -> int32 array (N,), or None for a model without
        scenes.  Accepts None (the default scene), one id or name for the whole batch, or one per
        image (ints or names).  One-line ``SegclipError`` for anything else."""
        if not self.scenes:
            if scene_ids is not None:
                raise SegclipError(f"{where}: this model was exported without metadata prompts, so it takes no "
                                   f"'{SCENE_NAME}'; drop the scene (or re-train/export with --metadata)")
            return None
        if scene_ids is None:
            return np.full(n, DEFAULT_SCENE, np.int32)
        from segclip.metadata import lookup_scene

        raw = np.asarray(scene_ids, dtype=object if isinstance(scene_ids, str) else None)
        if raw.ndim == 0:
            raw = np.full(n, raw.item(), dtype=object)
        raw = raw.reshape(-1) if raw.ndim == 2 and raw.shape[1] == 1 else raw
        if raw.ndim != 1 or len(raw) != n:
            raise SegclipError(f"{where}: '{SCENE_NAME}' must hold one id per image ({n}), got shape {tuple(np.shape(scene_ids))}")
        if raw.dtype.kind in "fcb" or (raw.dtype.kind == "O" and any(isinstance(v, (float, bool)) for v in raw)):
            raise SegclipError(f"{where}: '{SCENE_NAME}' must be integers (or scene names), got {raw.dtype}")
        ids = np.array([lookup_scene(self.scenes, v, where=f"{where}: '{SCENE_NAME}'") for v in raw.tolist()], np.int32)
        return ids

    def scene_of(self, meta) -> int:
        """Scene id of an image's metadata (a dataset item's ``meta``, e.g. {"domain": "rural"});
        0 (generic) when unknown or for a model without scenes."""
        from segclip.metadata import scene_of

        return scene_of(self.scenes, self.scene_keys, meta) if self.scenes else 0

    # ---- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["classes"] = list(self.classes)
        d["palette"] = [list(p) for p in self.palette]
        d["pixel_mean"] = list(self.pixel_mean)
        d["pixel_std"] = list(self.pixel_std)
        d["scenes"] = list(self.scenes)
        d["scene_keys"] = list(self.scene_keys)
        d["inputs"] = [t.to_dict() for t in self.inputs]
        d["outputs"] = [t.to_dict() for t in self.outputs]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Signature":
        keys = {"classes", "palette", "height", "width", "scores", "scores_dtype", "max_batch",
                "pixel_mean", "pixel_std", "scenes", "scene_keys", "value_range", "gsd", "extra"}
        kw = {k: v for k, v in d.items() if k in keys}
        for k in ("pixel_mean", "pixel_std"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> "Signature":
        return cls.from_dict(json.loads(s))


def triton_dims(spec: TensorSpec) -> tuple:
    """(dims, reshape) of a tensor in a batched Triton config: the batch axis is implicit, and a
    per-image scalar (``scene_id``: N) is sent as N x 1 and reshaped to N for the model (Triton
    wants at least one dim); reshape None = none needed."""
    dims = list(spec.shape[1:])
    return ([1], []) if not dims else (dims, None)


def default_palette(n: int) -> list:
    """A deterministic, well-spread palette for classes that come without colours."""
    rng = np.random.default_rng(0)
    base = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)]
    out = list(base[:n])
    while len(out) < n:
        out.append(tuple(int(x) for x in rng.integers(0, 256, 3)))
    return out


def palette_table(palette: Sequence) -> np.ndarray:
    """256 x 3 uint8 colour table: class i -> palette[i], ignore (255) -> white."""
    pal = np.zeros((256, 3), np.uint8)
    pal[255] = (255, 255, 255)
    for i, c in enumerate(list(palette)[:255]):
        pal[i] = c
    return pal


def colorize(mask: np.ndarray, palette: Sequence) -> np.ndarray:
    """Class map (H x W, ints) -> RGB image using the palette; ignore (255) stays white."""
    return palette_table(palette)[np.clip(mask, 0, 255).astype(np.int64)]


class Scorer(Protocol):
    """What code that drives a model needs of it (``segclip.runtime.base.Runner`` has it for every backend):
    its ``signature``, the largest batch it takes (None: any) and ``infer`` of a uint8 N x H x W x 3 batch
    (with the scene ids of a model with metadata prompts) -> ``{"mask": ..., ["scores": ...]}``.  Here, at
    the signature's layer, so code below the runtime can name the type it takes without importing it."""

    signature: "Signature"
    max_batch: Optional[int]

    def infer(self, images: np.ndarray, scene_ids=None) -> dict: ...
