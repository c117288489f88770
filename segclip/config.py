"""Model and training configuration: named presets are plain data resolved by one factory.

A preset gives explicit sizes for every part, so ``segclip-r50`` (the paper's shape) and the small
CPU preset are the same code.  Configs round-trip through dicts so checkpoints and manifests carry
them verbatim.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from typing import Optional

from segclip.errors import SegclipError


@dataclass
class ModelConfig:
    # backbone
    backbone: str = "resnet50"
    backbone_weights: Optional[str] = "imagenet"  # "imagenet" (by name, online), a file path, or "none"
    # pixel decoder
    pixel_decoder: str = "msdeformattn"  # or "fpn" for edge devices
    hidden_dim: int = 256
    mask_dim: int = 256
    enc_layers: int = 6
    enc_heads: int = 8
    enc_ffn: int = 1024
    enc_points: int = 4
    # transformer decoder (Mask2Former masked attention)
    dec_layers: int = 9
    dec_heads: int = 8
    dec_ffn: int = 2048
    num_queries: int = 100  # N text queries; must be >= number of classes
    # TMP (text mapping prompts) with a frozen open_clip text encoder
    clip_model: str = "ViT-B-16"
    clip_pretrained: Optional[str] = "openai"  # a tag (online), a file path, or "none"
    prompt_template: str = "a photo with a {}"
    # CFF (cross-modal feature fusion)
    cff_heads: int = 8
    # Metadata prompts (MetaSegNet, segclip/metadata.py): scene text cross-attended by the image features.
    # "auto" = on when the dataset provides metadata (LoveDA's Urban/Rural, a --metadata sidecar).
    metadata: str = "auto"
    metadata_prefix: str = "a remote sensing image"  # the generic prompt (scene 0, metadata unknown)
    metadata_templates: dict = field(default_factory=dict)  # key -> phrase with {} for the value (over the defaults)
    metadata_tokens: int = 4  # scene tokens per prompt the features attend to
    # GTG (ground-truth text guidance; training only)
    gtg: bool = True
    # criterion (Mask2Former defaults)
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    train_num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75

    def validate(self):
        if self.backbone not in BACKBONES:
            raise SegclipError(f"config: unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if self.pixel_decoder not in ("msdeformattn", "fpn"):
            raise SegclipError(f"config: unknown pixel decoder {self.pixel_decoder!r}; choose msdeformattn or fpn")
        for name in ("hidden_dim", "enc_heads", "dec_heads", "cff_heads"):
            if getattr(self, name) <= 0:
                raise SegclipError(f"config: {name} must be positive")
        if self.metadata not in ("auto", "on", "off"):
            raise SegclipError(f"config: metadata {self.metadata!r} must be auto, on or off")
        if not isinstance(self.metadata_templates, dict) or any("{}" not in str(t) for t in self.metadata_templates.values()):
            raise SegclipError("config: metadata_templates must map each key to a phrase with '{}' for the value, e.g. {'climate': 'in a {} climate zone'}")
        if self.metadata_tokens < 1:
            raise SegclipError("config: metadata_tokens must be >= 1")
        if self.hidden_dim % self.dec_heads or self.hidden_dim % self.enc_heads or self.hidden_dim % self.cff_heads:
            raise SegclipError("config: hidden_dim must be divisible by every attention head count")
        return self


@dataclass
class TrainConfig:
    crop_size: int = 512
    batch_size: int = 8
    max_steps: int = 80000
    lr: float = 1e-4
    weight_decay: float = 0.05
    backbone_lr_mult: float = 0.1
    warmup_steps: int = 1500
    poly_power: float = 0.9
    grad_clip: float = 0.01  # full-model L2 norm clip, as in Mask2Former
    amp: object = True  # True/"fp16", "bf16" or False/"off"; used on CUDA only (segclip.engine.stability.amp_dtype)
    checkpoint_every: int = 5000
    log_every: int = 20
    eval_size: Optional[int] = None  # sliding-window size at eval (None = crop_size)
    seed: int = 0
    num_workers: int = 2
    metadata_dropout: float = 0.1  # share of training images shown as the generic scene, so the default scene_id 0 is trained
    value_range: Optional[list] = None  # train --range LOW,HIGH: 16-bit/float imagery stretched from it (None: per image)
    gsd: Optional[float] = None  # train --gsd: metres per pixel of the training images (None: the dataset's, else unknown)

    def validate(self):
        """Checked before a run starts (nothing written yet): a bad value must not surface as a
        traceback after step 1, or as a trained model that ``export`` then refuses."""
        for name, flag, low in (("max_steps", "--max-steps", 1), ("batch_size", "--batch", 1),
                                ("checkpoint_every", "--checkpoint-every", 1), ("log_every", "log_every", 1),
                                ("warmup_steps", "--warmup-steps", 0), ("num_workers", "num_workers", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or v < low:
                raise SegclipError(f"{flag} {v}: must be an integer >= {low}; give e.g. {flag} {max(low, 1) * 100 if name == 'max_steps' else max(low, 1)}")
        if not self.lr > 0 or self.lr != self.lr or self.lr == float("inf"):
            raise SegclipError(f"--lr {self.lr}: the learning rate must be a positive number; give e.g. --lr 1e-4")
        for name, flag in (("crop_size", "--size"), ("eval_size", "eval_size")):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 32 or v % 32):
                ok = max(32, (int(v) + 16) // 32 * 32) if isinstance(v, (int, float)) else 512
                raise SegclipError(f"{flag} {v}: must be a positive multiple of 32 (the backbone's stride, which export "
                                   f"and the runtimes require); give e.g. {flag} {ok}")
        if self.gsd is not None and not (0 < float(self.gsd) < float("inf")):
            raise SegclipError(f"--gsd {self.gsd}: the ground sampling distance must be a positive number of metres "
                               f"per pixel; give e.g. --gsd 0.3")
        return self


@dataclass
class Preset:
    name: str
    description: str
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# backbone name -> channels of the C2..C5 outputs
BACKBONES = {
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
    "resnet101": (256, 512, 1024, 2048),
}

PRESETS = {
    "segclip-r50": Preset(
        "segclip-r50",
        "The paper's shape: ResNet-50, 6-layer MSDeformAttn pixel decoder, 9-layer masked-attention decoder.",
        ModelConfig(),
        TrainConfig(),
    ),
    "segclip-r50-fpn": Preset(
        "segclip-r50-fpn",
        "ResNet-50 with the light FPN pixel decoder, for edge/UAV GPUs.",
        ModelConfig(pixel_decoder="fpn"),
        TrainConfig(),
    ),
    "segclip-small": Preset(
        "segclip-small",
        "CPU preset for the quickstart and tests: ResNet-18, 2 deformable layers, 3 decoder layers, 128 px crops.",
        ModelConfig(
            backbone="resnet18",
            hidden_dim=128,
            mask_dim=128,
            enc_layers=2,
            enc_heads=4,
            enc_ffn=512,
            dec_layers=3,
            dec_heads=4,
            dec_ffn=512,
            num_queries=16,
            cff_heads=4,
            train_num_points=4096,
        ),
        TrainConfig(
            crop_size=128,
            batch_size=8,
            max_steps=300,
            lr=4e-4,
            backbone_lr_mult=1.0,  # no pretrained backbone to protect on the offline quickstart
            warmup_steps=50,
            grad_clip=1.0,
            checkpoint_every=300,
            log_every=10,
            eval_size=256,
            num_workers=0,
        ),
    ),
}


def _from_dict(cls, d: dict):
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise SegclipError(f"config: unknown {cls.__name__} keys {sorted(unknown)}; valid keys: {sorted(names)}")
    return cls(**d)


def model_config_from_dict(d: dict) -> ModelConfig:
    return _from_dict(ModelConfig, d).validate()


def train_config_from_dict(d: dict) -> TrainConfig:
    return _from_dict(TrainConfig, d)


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise SegclipError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def to_dict(cfg) -> dict:
    return asdict(cfg)
