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
    spread = 3.0  # std of the mask logits across an image

    model = make_small_model(seed=seed).eval()
    k, dec, pix = len(model.classes), model.decoder, model.pixel_decoder
    x = torch.from_numpy(parity_images(PARITY_MAX) if images is None else images)
    for _ in range(2):  # twice: the new masks change the decoder's masked attention, hence its queries
        p, e, q = _last_stage(model, x, k)
        with torch.no_grad():
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
            _fit_class_head(dec, q, k)
    return model


def _last_stage(model, x, k: int) -> tuple:
    """One forward pass -> (mask-feature input, the first ``k`` queries' mask embeddings, the last
    decoder stage's queries): what the fixture builders fit their heads on."""
    pix, dec = model.pixel_decoder, model.decoder
    feats, emb, qs = [], [], []
    hooks = [pix.mask_features.register_forward_hook(lambda m, i, o: feats.append(i[0])),
             dec.mask_embed.register_forward_hook(lambda m, i, o: emb.append(o)),
             dec.decoder_norm.register_forward_hook(lambda m, i, o: qs.append(o))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return feats[-1], emb[-1][:, :k], qs[-1]


def _fit_class_head(dec, q, k: int) -> None:
    """The class head, fitted (ridge least squares on the last decoder stage's queries ``q``) so that
    query i < k votes for class i and the other queries for "no object"."""
    import torch.nn.functional as F

    nq = q.shape[1]
    target = F.one_hot(torch.tensor([i if i < k else k for i in range(nq)]), k + 1).float() * 8.0
    a = torch.cat([q.reshape(-1, q.shape[-1]), torch.ones(q.shape[0] * nq, 1)], 1)
    sol = torch.linalg.solve(a.T @ a + torch.eye(a.shape[1]), a.T @ target.repeat(q.shape[0], 1))
    dec.class_embed.weight.copy_(sol[:-1].T)
    dec.class_embed.bias.copy_(sol[-1])


def build_margin_model(seed: int = 6, n_fit: int = 16, spread: float = 4.0, cross_attention: float = 0.1):
    """A small-preset model built deterministically whose class maps follow the *labels* of the rendered
    scenes with real decision margins: the INT8 fixture.  The parity fixture (``build_parity_model``) is
    fragile by design -- quantizing its stem conv alone flips 8% of its pixels, 8-bit PTQ 20-25% -- so an
    INT8 threshold on it has to sit near the noise.  Here:

    1. random init, with the image->query cross-attention (CFF and decoder) scaled by ``cross_attention``:
       every part still takes part, but each query's mask embedding varies little from image to image;
    2. the 1x1 mask-feature projection is a ridge linear probe from the pixel decoder's features to the
       labels (+-``spread`` logits for class k in query k's mask): it reads the feature directions that
       carry the scene's structure, which 8-bit noise moves little;
    3. the class head is fitted as in the parity fixture (query k votes for class k).

    Measured on its 8 parity images: 71% pixel accuracy against the labels, 5-7 classes per image; INT8
    agreement with FP32 96-97% for every flavour, the same on a VNNI CPU and (qemu -cpu Haswell) AVX2."""
    import torch.nn.functional as F

    model = make_small_model(seed=seed).eval()
    k, dec, pix = len(model.classes), model.decoder, model.pixel_decoder
    imgs, labs = rendered_scenes(n_fit, 2 * PARITY_SIZE, 11)  # the parity images' scenes, cropped alike
    x = torch.from_numpy(np.ascontiguousarray(imgs[:, 20:20 + PARITY_SIZE, 30:30 + PARITY_SIZE]))
    y = torch.from_numpy(np.ascontiguousarray(labs[:, 20:20 + PARITY_SIZE, 30:30 + PARITY_SIZE]))
    with torch.no_grad():
        for att in [model.cff.cross_attn] + [layer.cross_attn for layer in dec.layers]:
            att.out_proj.weight.mul_(cross_attention)
            att.out_proj.bias.mul_(cross_attention)
    for _ in range(2):  # twice: the new masks change the decoder's masked attention, hence its queries
        p, e, q = _last_stage(model, x, k)
        with torch.no_grad():
            common = e.mean((0, 1))  # the part every query shares (see build_parity_model)
            dec.mask_embed.layers[-1].bias.sub_(common)
            e = (e - common).double()
            # per-pixel targets at the features' stride: +spread inside class k, -spread outside
            valid = y != 255
            onehot = F.one_hot(torch.where(valid, y, 0), k).permute(0, 3, 1, 2).double() * valid[:, None]
            cover = F.adaptive_avg_pool2d(valid[:, None].double(), p.shape[2:])
            target = spread * (2 * F.adaptive_avg_pool2d(onehot, p.shape[2:]) / cover.clamp_min(1e-6) - 1)
            feat = p.permute(0, 2, 3, 1).reshape(-1, p.shape[1]).double()
            tgt = target.permute(0, 2, 3, 1).reshape(-1, k)
            keep = cover.reshape(-1) > 0.5
            feat, tgt = feat[keep], tgt[keep]
            mu = feat.mean(0)
            cov = (feat - mu).T @ (feat - mu)
            probe = torch.linalg.solve(cov + 1e-2 * cov.trace() / len(cov) * torch.eye(len(cov), dtype=cov.dtype),
                                       (feat - mu).T @ tgt).T  # k x C_in
            offset = tgt.mean(0) - probe @ mu
            # A with e_b @ A ~ identity for every image b (ridge): mask logits e_b (W p + b) ~ probe p + offset
            gram = torch.einsum("bkc,bkd->cd", e, e)
            lift = torch.linalg.solve(gram + 1e-3 * gram.trace() / len(gram) * torch.eye(len(gram), dtype=gram.dtype),
                                      e.sum(0).T)
            w = pix.mask_features.weight
            w.copy_((lift @ probe).float().reshape(w.shape))
            pix.mask_features.bias.copy_((lift @ offset).float())
            _fit_class_head(dec, q, k)
    return model


@pytest.fixture(scope="session")
def margin_checkpoint(tmp_path_factory):
    """Path of the MARGIN checkpoint (small preset, LoveDA classes, ``build_margin_model``: class maps that
    follow the rendered scenes' labels with real decision margins), checked like the parity fixture.
    For comparisons that must hold across arithmetic that legitimately differs (INT8 kernels, another
    tool's tiling and resampling), where the parity fixture flips by design."""
    from segclip.checkpoint import atomic_save, checkpoint_dict
    from segclip.modeling import semantic_scores

    model = build_margin_model()
    x = parity_images(PARITY_MAX)
    with torch.no_grad():
        pred = semantic_scores(*model(torch.from_numpy(x))[-1], x.shape[1:3]).argmax(1).numpy()
    problems = parity_problems(pred)
    assert not problems, "margin fixture is degenerate: " + "; ".join(problems)
    path = tmp_path_factory.mktemp("margin_ckpt") / "small_margin.pt"
    atomic_save(checkpoint_dict(model, LOVEDA_PALETTE, dataset="sample", train_config={"crop_size": PARITY_SIZE}), path)
    return path


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


def default_signals() -> None:
    """``preexec_fn`` for a segclip child process: SIGINT and SIGTERM at their defaults, whatever the suite
    inherited (a shell without job control ignores SIGINT, some CI harnesses SIGTERM), so the interrupt
    drills test segclip's handling, not the harness's."""
    import signal

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_DFL)
