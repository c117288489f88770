"""Shared fixtures.  Models are the small preset (no downloads: CLIP and the backbone are built without
pretrained weights, as a user must ask for explicitly offline).

Two checkpoints:

- ``small_checkpoint``: random init.  It predicts ONE class per image, so it is only for shape, error
  and plumbing tests, never for comparing backends.
- ``trained_checkpoint``: the parity fixture.  Use it (with ``parity_images``) for every comparison
  between backends (ONNX, FP16, INT8, TensorRT, Triton): each of its test images has at least three
  classes with real boundaries, so a broken GridSample, decoder or cast changes many pixels.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

# Fixture modules shared by several test modules (session-wide, so each expensive export, repository
# and tritonserver is built once): export_fixtures (the trained exports), serving_fixtures (the server).
pytest_plugins = ["export_fixtures", "serving_fixtures"]

os.environ.setdefault("OMP_NUM_THREADS", "2")
torch.set_num_threads(2)

LOVEDA_CLASSES = ("background", "building", "road", "water", "barren", "forest", "agriculture")
LOVEDA_PALETTE = ((255, 255, 255), (255, 0, 0), (255, 255, 0), (0, 0, 255), (159, 129, 183), (0, 255, 0), (255, 195, 128))

PARITY_SIZE = 64  # test images are PARITY_SIZE x PARITY_SIZE; the fixture is checked on PARITY_MAX of them
PARITY_MAX = 8
PARITY_MIN_CLASSES = 3  # classes per image, each covering at least PARITY_MIN_SHARE of it
PARITY_MIN_SHARE = 0.02


def small_config():
    from segclip.config import get_preset

    cfg = get_preset("segclip-small").model
    cfg.backbone_weights = "none"
    cfg.clip_pretrained = "none"
    return cfg


def make_small_model(seed: int = 0, classes=LOVEDA_CLASSES):
    from segclip.modeling import build_model

    torch.manual_seed(seed)
    # Random-init text embeddings stand in for CLIP's: no weights can be downloaded here.
    emb = torch.nn.functional.normalize(torch.randn(len(classes), 512), dim=-1)
    return build_model(small_config(), classes, text_embeddings=emb)


SCENES = (("rural",), ("urban",))  # LoveDA's domains: table generic, rural, urban


def make_scene_model(seed: int = 0, classes=LOVEDA_CLASSES):
    """The small model with metadata prompts (scene table generic/rural/urban); random-init
    embeddings stand in for CLIP's, as in ``make_small_model``."""
    from segclip.metadata import SceneTable
    from segclip.modeling import build_model

    torch.manual_seed(seed)
    emb = torch.nn.functional.normalize(torch.randn(len(classes), 512), dim=-1)
    table = SceneTable(("domain",), SCENES)
    scene_emb = torch.nn.functional.normalize(torch.randn(len(table), 512), dim=-1)
    return build_model(small_config(), classes, text_embeddings=emb, scenes=table, scene_embeddings=scene_emb)


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory):
    """Path of an (untrained) small-preset checkpoint on the LoveDA classes: one class per image."""
    from segclip.checkpoint import atomic_save, checkpoint_dict

    path = tmp_path_factory.mktemp("ckpt") / "small.pt"
    atomic_save(checkpoint_dict(make_small_model(), LOVEDA_PALETTE, dataset="sample"), path)
    return path


# ---- the parity fixture ------------------------------------------------------------------------------
def rendered_scenes(n: int, size: int = 128, seed: int = 5):
    """(images N x S x S x 3 uint8, labels N x S x S int64, 255 = ignore) from the sample-data renderer."""
    from segclip.data.sample import render_scene

    imgs, labs = [], []
    for i in range(n):
        im, lb = render_scene(np.random.default_rng([seed, i]), size, urban=i % 2 == 0)
        imgs.append(im)
        labs.append(lb)
    labs = np.stack(labs).astype(np.int64)
    return np.stack(imgs), np.where(labs == 0, 255, labs - 1)


def parity_images(n: int = 4, size: int = PARITY_SIZE, seed: int = 11) -> np.ndarray:
    """The parity fixture's test images: N x size x size x 3 uint8 crops of rendered LoveDA-like scenes.
    With the defaults (size 64, seed 11) the first ``PARITY_MAX`` images are the ones
    ``trained_checkpoint`` is checked on (>= 3 classes each, real boundaries)."""
    imgs, _ = rendered_scenes(n, 2 * size, seed)
    return np.ascontiguousarray(imgs[:, 20:20 + size, 30:30 + size])


def parity_problems(masks: np.ndarray, min_classes: int = PARITY_MIN_CLASSES, min_share: float = PARITY_MIN_SHARE) -> list:
    """Why a batch of class maps (N x H x W) is too degenerate for a parity test; [] when it is fine.
    Each map needs ``min_classes`` classes of at least ``min_share`` of its pixels, and boundaries that
    are region edges: between 0.5% and 30% of neighbouring pixel pairs differ (noise would be ~80%)."""
    out = []
    for i, m in enumerate(np.asarray(masks)):
        counts = np.bincount(m.ravel().astype(np.int64))
        big = int((counts >= min_share * m.size).sum())
        edges = ((m[1:] != m[:-1]).mean() + (m[:, 1:] != m[:, :-1]).mean()) / 2
        if big < min_classes:
            out.append(f"image {i}: {big} classes cover >= {min_share:.0%} each (counts {counts.tolist()})")
        elif not 0.005 <= edges <= 0.3:
            out.append(f"image {i}: {edges:.1%} of neighbouring pixels differ (not region boundaries)")
    return out


def build_parity_model(seed: int = 6, images=None):
    """A small-preset model built deterministically (no training: it costs seconds, not minutes, on a
    loaded 2-core machine) so that its class maps have several classes with boundaries:

    1. random init (backbone, pixel decoder, decoder all take part in every output pixel);
    2. the 1x1 mask-feature projection is centred on these images and scaled so that each query's mask
       logits vary by about 1 across an image (the argmax then follows image structure instead of one
       per-image offset, and sigmoids stay out of saturation, so there are few near-ties);
    3. the class head is fitted (ridge least squares on the last decoder stage) so that query k votes
       for class k and the other queries for "no object".
    """
    import torch.nn.functional as F

    spread = 3.0  # std of the mask logits across an image

    model = make_small_model(seed=seed).eval()
    k, dec, pix = len(model.classes), model.decoder, model.pixel_decoder
    x = torch.from_numpy(parity_images(PARITY_MAX) if images is None else images)
    for _ in range(2):  # twice: the new masks change the decoder's masked attention, hence its queries
        feats, emb, qs = [], [], []
        hooks = [pix.mask_features.register_forward_hook(lambda m, i, o: feats.append(i[0])),
                 dec.mask_embed.register_forward_hook(lambda m, i, o: emb.append(o)),
                 dec.decoder_norm.register_forward_hook(lambda m, i, o: qs.append(o))]
        with torch.no_grad():
            model(x)
            for h in hooks:
                h.remove()
            p, e, q = feats[-1], emb[-1][:, :k], qs[-1]
            # the embedding every query shares: masks alike in every query make near-ties, and FP16 rounding
            # of a dot product dominated by a shared part would swamp the small differences that decide
            common = e.mean((0, 1))
            dec.mask_embed.layers[-1].bias.sub_(common)
            e = e - common
            # keep only the mask-feature directions the queries read: what no query reads would only add
            # large terms that cancel in each mask logit (and FP16 would round them before they cancel)
            mean_e = e.mean(0)
            w = pix.mask_features.weight[:, :, 0, 0]
            w.copy_(torch.linalg.pinv(mean_e) @ mean_e @ w)
            pix.mask_features.bias.copy_(-(w @ p.mean((0, 2, 3))))
            logits = e @ (torch.einsum("oc,bchw->bohw", w, p) + pix.mask_features.bias[:, None, None]).flatten(2)
            scale = spread / logits.std(-1).mean()
            pix.mask_features.weight.mul_(scale)
            pix.mask_features.bias.mul_(scale)
            nq = q.shape[1]
            target = F.one_hot(torch.tensor([i if i < k else k for i in range(nq)]), k + 1).float() * 8.0
            a = torch.cat([q.reshape(-1, q.shape[-1]), torch.ones(q.shape[0] * nq, 1)], 1)
            sol = torch.linalg.solve(a.T @ a + torch.eye(a.shape[1]), a.T @ target.repeat(q.shape[0], 1))
            dec.class_embed.weight.copy_(sol[:-1].T)
            dec.class_embed.bias.copy_(sol[-1])
    return model


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory):
    """Path of the PARITY checkpoint (small preset, LoveDA classes, built by ``build_parity_model``).

    Compare backends on ``parity_images(n)`` (n <= PARITY_MAX, 64 x 64): the fixture asserts here that
    PyTorch gives every one of those images >= 3 classes with real boundaries, so an agreement check is
    thousands of pixel decisions, not one per image.  Session-scoped; about 20 s on 2 busy cores."""
    from segclip.checkpoint import atomic_save, checkpoint_dict
    from segclip.modeling import semantic_scores

    model = build_parity_model()
    x = parity_images(PARITY_MAX)
    with torch.no_grad():
        logits, masks = model(torch.from_numpy(x))[-1]
        pred = semantic_scores(logits, masks, x.shape[1:3]).argmax(1).numpy()
    problems = parity_problems(pred)
    assert not problems, "parity fixture is degenerate: " + "; ".join(problems)
    path = tmp_path_factory.mktemp("parity") / "small_parity.pt"
    atomic_save(checkpoint_dict(model, LOVEDA_PALETTE, dataset="sample", train_config={"crop_size": PARITY_SIZE}), path)
    return path
