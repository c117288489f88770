"""Model parts: shapes, masks, GTG, matcher vs brute force, losses, inference module, text prompts."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from conftest import LOVEDA_CLASSES, make_small_model, small_config
from segclip.config import PRESETS, get_preset
from segclip.errors import SegclipError
from segclip.modeling import SegCLIPInference, semantic_targets
from segclip.prompts import make_prompts
from segclip.modeling.backbone import ResNetBackbone
from segclip.modeling.criterion import SetCriterion
from segclip.modeling.matcher import HungarianMatcher
from segclip.modeling.pixel_decoder import build_pixel_decoder
from segclip.modeling.pixel_decoder.msdeformattn import ms_deform_attn
from segclip.engine.trainer import build_criterion


def _images(b=2, s=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, s, s, 3), dtype=torch.uint8, generator=g)


def _masks(b=2, s=64):
    m = torch.zeros(b, s, s, dtype=torch.int64)
    m[:, : s // 2] = 1
    m[:, s // 2 :, : s // 2] = 3
    m[1, -8:, -8:] = 255
    return m


def test_backbone_strides_and_channels():
    bb = ResNetBackbone("resnet18", "none").eval()
    feats = bb(torch.zeros(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert [f.shape[1] for f in feats] == list(bb.channels)


def test_backbone_weights_from_file(tmp_path):
    import torchvision

    torch.manual_seed(1)
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    bb = ResNetBackbone("resnet18", str(path))
    assert torch.equal(bb.layer1[0].conv1.weight, ref.layer1[0].conv1.weight)
    with pytest.raises(SegclipError, match="not found"):
        ResNetBackbone("resnet18", str(tmp_path / "missing.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SegclipError, match="cannot read"):
        ResNetBackbone("resnet18", str(bad))


@pytest.mark.parametrize("kind", ["msdeformattn", "fpn"])
def test_pixel_decoder_shapes(kind):
    cfg = small_config()
    cfg.pixel_decoder = kind
    pd = build_pixel_decoder(cfg, (64, 128, 256, 512))
    feats = [torch.randn(2, c, 64 // s, 64 // s) for c, s in zip((64, 128, 256, 512), (4, 8, 16, 32))]
    mask_features, ms = pd(feats)
    assert mask_features.shape == (2, cfg.mask_dim, 16, 16)
    assert [tuple(f.shape) for f in ms] == [(2, cfg.hidden_dim, 2, 2), (2, cfg.hidden_dim, 4, 4), (2, cfg.hidden_dim, 8, 8)]


def test_ms_deform_attn_samples_the_right_place():
    # One level, one head, one point with weight 1 at a pixel centre returns that pixel's value.
    v = torch.arange(12, dtype=torch.float32).reshape(1, 12, 1, 1)  # 3 x 4 grid, d = 1
    loc = torch.tensor([(2 + 0.5) / 4, (1 + 0.5) / 3]).view(1, 1, 1, 1, 1, 2)
    out = ms_deform_attn(v, [(3, 4)], loc, torch.ones(1, 1, 1, 1, 1))
    assert out.item() == pytest.approx(1 * 4 + 2)


def test_semantic_targets_skip_ignore():
    t = semantic_targets(_masks(), 7)
    assert t[1]["labels"].tolist() == [0, 1, 3]
    assert t[1]["masks"].shape == (3, 64, 64)
    assert not t[1]["masks"][:, -8:, -8:].any()  # ignore pixels are in no target mask


@pytest.mark.parametrize("gtg", [True, False])
def test_forward_shapes_with_and_without_gtg(gtg):
    model = make_small_model()
    model.cfg.gtg = gtg
    model.train()
    targets = semantic_targets(_masks(), 7)
    stages = model(_images(), targets)
    n = model.cfg.num_queries
    q = n + (3 if gtg else 0)  # three classes present in each image
    assert len(stages) == model.cfg.dec_layers + 1
    for logits, masks in stages:
        assert logits.shape == (2, q, 8)
        assert masks.shape == (2, q, 16, 16)
    model.eval()
    assert model(_images(), targets)[-1][0].shape[1] == n  # GTG is training only


def test_gtg_queries_do_not_leak_into_text_queries():
    """Changing the GTG inputs must not change the reconstruction queries' predictions."""
    model = make_small_model().train()
    torch.manual_seed(0)
    images = _images()
    m1 = _masks()
    m2 = m1.clone()
    m2[:, :, :10] = 5  # different GT -> different GTG queries and GT attention masks
    out1 = model(images, semantic_targets(m1, 7))
    out2 = model(images, semantic_targets(m2, 7))
    n = model.cfg.num_queries
    for (l1, k1), (l2, k2) in zip(out1, out2):
        torch.testing.assert_close(l1[:, :n], l2[:, :n])
        torch.testing.assert_close(k1[:, :n], k2[:, :n])


def test_matcher_equals_brute_force():
    torch.manual_seed(0)
    matcher = HungarianMatcher(num_points=256)
    for trial in range(5):
        q, t = 5, 3
        logits = torch.randn(q, 8)
        masks = torch.randn(q, 16, 16)
        labels = torch.randint(0, 7, (t,))
        tgt = torch.rand(t, 16, 16) > 0.5
        torch.manual_seed(trial)
        cost = matcher.cost_matrix(logits, masks, labels, tgt)
        torch.manual_seed(trial)
        (rows, cols), = matcher(logits[None], masks[None], [{"labels": labels, "masks": tgt}])
        best = min(itertools.permutations(range(q), t), key=lambda p: sum(cost[p[j], j] for j in range(t)).item())
        got = sorted(zip(cols.tolist(), rows.tolist()))
        assert [r for _, r in got] == list(best)


def test_criterion_terms_and_gtg_terms():
    model = make_small_model().train()
    targets = semantic_targets(_masks(), 7)
    crit = build_criterion(model.cfg, 7)
    losses = crit(model(_images(), targets), targets, model.cfg.num_queries, 4.0)
    stages = model.cfg.dec_layers + 1
    assert sum(k.startswith("loss_ce") for k in losses) == stages
    assert sum(k.startswith("loss_gtg_dice") for k in losses) == stages
    assert all(torch.isfinite(v) for v in losses.values())


def test_loss_decreases_and_tiny_model_overfits_two_images():
    torch.manual_seed(0)
    model = make_small_model().train()
    crit = build_criterion(model.cfg, 7)
    crit.num_points = crit.matcher.num_points = 1024
    images = _images(2, 64)
    masks = _masks(2, 64)
    # images whose colour encodes the class, so two images can be memorised quickly
    colours = torch.tensor([[30, 30, 30], [200, 40, 40], [0, 0, 0], [40, 40, 200]], dtype=torch.uint8)
    images = colours[masks.clamp(max=3)]
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    targets = semantic_targets(masks, 7)
    first = None
    for step in range(60):
        loss = sum(crit(model(images, targets), targets, model.cfg.num_queries, 4.0).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.5 * first
    model.eval()
    pred = model.predict_scores(images).argmax(1)
    keep = masks != 255
    assert (pred[keep] == masks[keep]).float().mean().item() > 0.98


def test_inference_module_matches_model_and_bakes_text():
    model = make_small_model().eval()
    inf = SegCLIPInference(model, scores=True)
    x = _images(2, 64)
    mask, scores = inf(x)
    ref = model.predict_scores(x)
    torch.testing.assert_close(scores, ref)
    assert mask.dtype == torch.uint8 and mask.shape == (2, 64, 64)
    assert torch.equal(mask, ref.argmax(1).to(torch.uint8))
    names = {n for n, _ in inf.named_parameters()} | {n for n, _ in inf.named_buffers()}
    assert "text_queries" in names
    assert not any(n.startswith("tmp.") or "text_embeddings" in n or "cff.self_attn" in n for n in names)


def test_prompts_template_and_overrides():
    assert make_prompts(["low_vegetation"])[0] == "a photo with a low vegetation"
    p = make_prompts(["road", "water"], {"water": "a blue lake seen from above"}, "an aerial image of {}")
    assert p == ("an aerial image of road", "a blue lake seen from above")
    with pytest.raises(SegclipError, match="unknown class"):
        make_prompts(["road"], overrides={"roads": "x"})


def test_clip_text_encoder_from_local_checkpoint(tmp_path):
    """The offline path: an open_clip checkpoint file saved here is loaded by path and encodes prompts once."""
    import open_clip

    from segclip.modeling.text import encode_prompts

    torch.manual_seed(0)
    clip = open_clip.create_model("RN50", pretrained=None)
    path = tmp_path / "clip.pt"
    torch.save(clip.state_dict(), path)
    emb = encode_prompts(["a photo with a road", "a photo with a water"], "RN50", str(path))
    ref = torch.nn.functional.normalize(clip.encode_text(open_clip.get_tokenizer("RN50")(["a photo with a road", "a photo with a water"])), dim=-1)
    torch.testing.assert_close(emb, ref.detach())
    with pytest.raises(SegclipError, match="not found"):
        encode_prompts(["x"], "RN50", str(tmp_path / "nope.pt"))


def test_presets_are_data_and_validate():
    assert {"segclip-r50", "segclip-small"} <= set(PRESETS)
    r50 = get_preset("segclip-r50").model
    assert (r50.backbone, r50.enc_layers, r50.dec_layers, r50.hidden_dim, r50.dec_heads, r50.dec_ffn) == ("resnet50", 6, 9, 256, 8, 2048)
    with pytest.raises(SegclipError, match="unknown preset"):
        get_preset("segclip-r51")
