"""Shared fixtures of the export/runtime tests (a pytest plugin, loaded by conftest's ``pytest_plugins``).

``export_dir``: one FP32 + FP16 export at 64x64 of the parity fixture ``trained_checkpoint`` (conftest),
shared.  Backends are compared on ``parity_images`` (conftest), where that model gives every image
several classes with region boundaries.  ``trained_scene_ckpt`` / ``scene_export_dir``: a model with
metadata prompts (the scene_id input).
"""
from __future__ import annotations

import pytest
import torch

from conftest import PARITY_SIZE as SIZE
from conftest import parity_images as images  # noqa: F401  (the parity fixture's test images)
from conftest import rendered_scenes

# FP16 agreement asked of the parity fixture.  Below the default gate (0.995, for trained models): this
# random-body model is deliberately fragile -- 5e-4 relative noise on its stride-4 backbone features
# alone flips ~0.8% of its pixels (measured) -- so FP16 rounding flips ~1.4%.  A broken op flips far more.
FP16_AGREEMENT = 0.98


def finetune(model, steps: int = 20, size: int = SIZE, seed: int = 0, scenes: int = 0):
    """A few steps of per-pixel cross-entropy on the semantic scores;
    ``scenes``: a model with metadata prompts sees random scene ids of its table."""
    import torch.nn.functional as F

    from segclip.modeling import semantic_scores

    imgs, labs = rendered_scenes(16)
    imgs, labs = torch.from_numpy(imgs), torch.from_numpy(labs)
    g = torch.Generator().manual_seed(seed)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(imgs), (4,), generator=g)
        y0, x0 = torch.randint(0, imgs.shape[1] - size + 1, (2,), generator=g).tolist()
        x, y = imgs[idx, y0:y0 + size, x0:x0 + size], labs[idx, y0:y0 + size, x0:x0 + size]
        ids = torch.randint(0, scenes, (len(idx),), generator=g) if scenes else None
        logits, masks = model(x, scene_ids=ids)[-1]
        sc = semantic_scores(logits, masks, x.shape[1:3])
        p = sc.clamp_min(1e-6) / sc.sum(1, keepdim=True).clamp_min(1e-6)
        loss = F.nll_loss(torch.log(p), y, ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def trained_scene_ckpt(tmp_path_factory):
    """A small model with metadata prompts (scenes generic, rural, urban), fine-tuned a few steps."""
    from conftest import LOVEDA_PALETTE, make_scene_model
    from segclip.checkpoint import atomic_save, checkpoint_dict

    path = tmp_path_factory.mktemp("trained_scene") / "small_scene.pt"
    model = finetune(make_scene_model(seed=1), scenes=3)
    atomic_save(checkpoint_dict(model, LOVEDA_PALETTE, dataset="sample", train_config={"crop_size": SIZE}), path)
    return path


@pytest.fixture(scope="session")
def scene_export_dir(trained_scene_ckpt, tmp_path_factory):
    """FP32 + FP16 export (64x64, batch 1..4, with scores) of ``trained_scene_ckpt``: the scene_id input."""
    from segclip.export import export

    out = tmp_path_factory.mktemp("scene_export") / "export"
    manifest = export(trained_scene_ckpt, out, fp16=True, batch=(1, 2, 4), parity_images=4, scores=True, log=lambda *a: None,
                      tune=False)
    return out, manifest


@pytest.fixture(scope="session")
def export_dir(trained_checkpoint, tmp_path_factory):
    """FP32 + FP16 export (64x64, dynamic batch 1..4) of ``trained_checkpoint``, not timed (``tune=False``: the
    default runner stays the fallback, ONNX Runtime FP32, whichever path happens to be faster); returns (dir, manifest)."""
    from segclip.export import export

    out = tmp_path_factory.mktemp("export") / "export"
    manifest = export(trained_checkpoint, out, fp16=True, batch=(1, 2, 4), parity_images=4, fp16_threshold=FP16_AGREEMENT,
                      log=lambda *a: None, tune=False)  # no speed record: the default is ONNX Runtime FP32 (contract.FALLBACK)
    return out, manifest


def assert_one_error(result, code: int, *needles: str) -> str:
    """A CLI failure: the exit code, exactly one ``error:`` line, no traceback; returns the line."""
    out = result.output
    assert result.exit_code == code, (result.exit_code, out, result.exception)
    assert "Traceback" not in out, out
    errs = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(errs) == 1, out
    for n in needles:
        assert n in errs[0], errs[0]
    return errs[0]
