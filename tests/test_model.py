"""Model parts: shapes, masks, GTG, matcher vs brute force, losses, inference module, text prompts."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from conftest import make_small_model, small_config
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


def _bilinear_ref(img, x, y):
    """Loop reference of bilinear sampling (align_corners=False, zeros outside) of img: h x w x d at
    normalised (x, y): pixel (i, j) covers [j/w, (j+1)/w) x [i/h, (i+1)/h), its centre at (j+0.5)/w."""
    h, w, d = img.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    fx, fy = px - x0, py - y0
    out = torch.zeros(d, dtype=img.dtype)
    for yy, wy in ((y0, 1 - fy), (y0 + 1, fy)):
        for xx, wx in ((x0, 1 - fx), (x0 + 1, fx)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[yy, xx]
    return out


def test_ms_deform_attn_equals_loop_reference():
    """B=2, 2 heads, 3 non-square levels, 4 points, d=4: off-centre points interpolate between pixels,
    out-of-range points read zeros, and heads/levels/points are weighted and concatenated head-major."""
    g = torch.Generator().manual_seed(0)
    b, q, heads, d, points = 2, 5, 2, 4, 4
    shapes = [(3, 5), (2, 4), (4, 3)]
    s = sum(h * w for h, w in shapes)
    value = torch.randn(b, s, heads, d, generator=g, dtype=torch.float64)
    loc = torch.rand(b, q, heads, len(shapes), points, 2, generator=g, dtype=torch.float64) * 1.6 - 0.3
    loc[0, 0, 0, 0, 0] = torch.tensor([(2 + 0.5) / 5, (1 + 0.5) / 3])  # a pixel centre: level 0, pixel (1, 2)
    loc[0, 0, 0, 0, 1] = torch.tensor([(2 + 0.75) / 5, (1 + 0.25) / 3])  # between four pixels
    loc[1, 2, 1, 2, 3] = torch.tensor([1.25, -0.5])  # wholly outside: contributes nothing
    loc[1, 3, 0, 1, 2] = torch.tensor([-0.05, 0.5])  # half a pixel outside the left border: partly zeros
    attw = torch.rand(b, q, heads, len(shapes), points, generator=g, dtype=torch.float64)
    out = ms_deform_attn(value, shapes, loc, attw)
    assert out.shape == (b, q, heads * d)

    ref = torch.zeros(b, q, heads * d, dtype=torch.float64)
    for bi in range(b):
        for qi in range(q):
            for hd in range(heads):
                start = 0
                for lvl, (h, w) in enumerate(shapes):
                    img = value[bi, start:start + h * w, hd].reshape(h, w, d)  # tokens are row-major (y, x)
                    for p in range(points):
                        x, y = loc[bi, qi, hd, lvl, p].tolist()
                        ref[bi, qi, hd * d:(hd + 1) * d] += attw[bi, qi, hd, lvl, p] * _bilinear_ref(img, x, y)
                    start += h * w
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    # and the pixel-centre sample alone is exactly that pixel (value row 1 * 5 + 2 of level 0)
    one = torch.zeros_like(attw)
    one[0, 0, 0, 0, 0] = 1.0
    torch.testing.assert_close(ms_deform_attn(value, shapes, loc, one)[0, 0, :d], value[0, 1 * 5 + 2, 0])


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


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def _bce(logit, t):
    """Binary cross-entropy of sigmoid(logit) against t in {0, 1}."""
    return -(t * math.log(_sig(logit)) + (1 - t) * math.log(1 - _sig(logit)))


def _dice(logit, t, n):
    """Dice loss (+1 smoothing) of a mask that is sigmoid(logit) on all n sampled points against t."""
    p = _sig(logit)
    return 1 - (2 * p * t * n + 1) / (p * n + t * n + 1)


def _softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def _const(values, size):
    """One map per value, constant in space: point sampling cannot change what the losses see."""
    return torch.tensor(values, dtype=torch.float32)[:, None, None].expand(-1, *size).contiguous()


@pytest.fixture
def interior_points(monkeypatch):
    """Point sampling draws coordinates with torch.rand; keep them away from the border, where
    grid_sample's zero padding would blend a constant map with 0 (Mask2Former samples the same way)."""
    real = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **k: 0.25 + 0.5 * real(*a, **k))


def test_matcher_costs_equal_per_pair_reference(interior_points):
    """cost[q, t] = 2 * -softmax(class)[label t] + 5 * BCE + 5 * Dice, each computed here per pair."""
    matcher = HungarianMatcher(num_points=100)
    logits = torch.tensor([[1.0, -0.5, 2.0, 0.0], [0.2, 0.1, -1.0, 1.5], [-2.0, 3.0, 0.5, 0.0], [0.0, 0.0, 0.0, 4.0]])
    mask_logits = [2.0, -1.0, 0.5, -3.0]
    labels, tvals = [2, 0, 1], [1.0, 0.0, 1.0]
    cost = matcher.cost_matrix(logits, _const(mask_logits, (8, 8)), torch.tensor(labels), _const(tvals, (32, 32)) > 0.5)
    ref = torch.tensor([[2 * -_softmax(logits[q].tolist())[labels[j]] + 5 * _bce(m, tvals[j]) + 5 * _dice(m, tvals[j], 100)
                         for j in range(3)] for q, m in enumerate(mask_logits)])
    torch.testing.assert_close(cost, ref, rtol=1e-5, atol=1e-5)
    (rows, cols), = matcher(logits[None], _const(mask_logits, (8, 8))[None], [{"labels": torch.tensor(labels), "masks": _const(tvals, (32, 32)) > 0.5}])
    best = min(itertools.permutations(range(4), 3), key=lambda p: sum(ref[p[j], j] for j in range(3)).item())
    assert dict(zip(cols.tolist(), rows.tolist())) == dict(enumerate(best))


def test_matcher_finds_the_known_best_assignment(interior_points):
    """Query 1 has target 0's class and mask, query 2 target 1's; query 0 has target 1's class but
    target 0's mask (a greedy match on class would take it); query 3 predicts no-object."""
    matcher = HungarianMatcher(num_points=64)
    logits = torch.tensor([[-5.0, -5.0, 5.0, -5.0], [-5.0, 5.0, -5.0, -5.0], [-5.0, -5.0, 4.0, -5.0], [-5.0, -5.0, -5.0, 5.0]])
    masks = _const([6.0, 6.0, -6.0, 0.0], (4, 4))
    targets = [{"labels": torch.tensor([1, 2]), "masks": _const([1.0, 0.0], (16, 16)) > 0.5},
               {"labels": torch.tensor([2]), "masks": _const([0.0], (16, 16)) > 0.5}]
    (r0, c0), (r1, c1) = matcher(torch.stack([logits, logits]), torch.stack([masks, masks]), targets)
    assert dict(zip(c0.tolist(), r0.tolist())) == {0: 1, 1: 2}
    assert dict(zip(c1.tolist(), r1.tolist())) == {0: 2}


def _ce(row, k):
    return -math.log(_softmax(row)[k])


def test_criterion_values_equal_hand_computation(interior_points):
    """Two images (2 targets and 1), 3 text + 2 GTG queries, 2 decoder stages, num_masks=4 (not the
    3 masks present, so a mean in place of the division shows).  CE uses weight 0.1 on no-object;
    BCE and Dice are summed over matched masks and divided by num_masks; GTG slot g is target g."""
    k, n, num_points, num_masks = 2, 3, 50, 4.0
    crit = SetCriterion(k, HungarianMatcher(num_points=num_points), num_points=num_points)
    targets = [{"labels": torch.tensor([1, 0]), "masks": _const([1.0, 0.0], (16, 16)) > 0.5},
               {"labels": torch.tensor([1]), "masks": _const([1.0], (16, 16)) > 0.5}]
    # text queries: image 0: q0 -> target 1 (class 0, empty mask), q2 -> target 0, q1 unmatched;
    #               image 1: q1 -> target 0, q0 and q2 unmatched.  GTG: slots differ from each other.
    cls = [[[4.0, -1.0, 0.0], [0.0, 0.0, 3.0], [-1.0, 3.0, 0.5], [0.3, 1.2, -0.4], [0.9, -0.2, 0.1]],
           [[0.0, -1.0, 2.0], [-1.0, 4.0, 0.0], [0.5, 0.0, 2.5], [-0.7, 0.4, 0.0], [0.0, 0.0, 0.0]]]
    msk = [[-3.0, 0.0, 2.5, 1.7, -0.6], [0.0, 3.0, -1.0, 0.8, 0.0]]
    assignment = [{0: 1, 2: 0}, {1: 0}]  # query -> target
    stage_scale = [0.5, 1.0]
    stages = [(torch.tensor(cls) * s, torch.stack([_const(m, (8, 8)) for m in msk]) * s) for s in stage_scale]
    losses = crit(stages, targets, n, num_masks)

    for sfx, s in zip(["_0", ""], stage_scale):
        ce_num = ce_den = bce = dice = 0.0
        for b in range(2):
            for qi in range(n):
                tgt = assignment[b].get(qi)
                w = 1.0 if tgt is not None else 0.1
                ce_num += w * _ce([v * s for v in cls[b][qi]], targets[b]["labels"][tgt].item() if tgt is not None else k)
                ce_den += w
                if tgt is not None:
                    t = float(targets[b]["masks"][tgt, 0, 0])
                    bce += _bce(msk[b][qi] * s, t)
                    dice += _dice(msk[b][qi] * s, t, num_points)
        assert losses["loss_ce" + sfx].item() == pytest.approx(2 * ce_num / ce_den, rel=1e-5)
        assert losses["loss_mask" + sfx].item() == pytest.approx(5 * bce / num_masks, rel=1e-5)
        assert losses["loss_dice" + sfx].item() == pytest.approx(5 * dice / num_masks, rel=1e-5)
        gce, gbce, gdice, count = 0.0, 0.0, 0.0, 0
        for b in range(2):
            for g, label in enumerate(targets[b]["labels"].tolist()):
                t = float(targets[b]["masks"][g, 0, 0])
                gce += _ce([v * s for v in cls[b][n + g]], label)
                gbce += _bce(msk[b][n + g] * s, t)
                gdice += _dice(msk[b][n + g] * s, t, num_points)
                count += 1
        assert losses["loss_gtg_ce" + sfx].item() == pytest.approx(2 * gce / count, rel=1e-5)
        assert losses["loss_gtg_mask" + sfx].item() == pytest.approx(5 * gbce / num_masks, rel=1e-5)
        assert losses["loss_gtg_dice" + sfx].item() == pytest.approx(5 * gdice / num_masks, rel=1e-5)
    assert len(losses) == 12


def test_model_criterion_terms_finite_on_every_stage():
    model = make_small_model().train()
    targets = semantic_targets(_masks(), 7)
    crit = build_criterion(model.cfg, 7)
    assert crit.empty_weight.tolist() == pytest.approx([1.0] * 7 + [0.1])
    assert crit.weights == {"ce": 2.0, "mask": 5.0, "dice": 5.0}
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


def test_preprocess_normalises_a_known_pixel_per_channel_in_rgb_order():
    """What the backbone sees, in the model and in the exported inference module: (pixel - mean) / std
    with ImageNet's RGB statistics written out here, channel 0 = the image's R."""
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    img = torch.zeros(2, 64, 64, 3, dtype=torch.uint8)
    img[1, 5, 7] = torch.tensor([200, 100, 30], dtype=torch.uint8)  # R, G, B
    img[0, 0, 0] = torch.tensor([0, 255, 128], dtype=torch.uint8)
    model = make_small_model().eval()
    for net, backbone in ((model, model.backbone), (SegCLIPInference(model), None)):
        backbone = backbone or net.backbone
        seen = []
        handle = backbone.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
        with torch.no_grad():
            net.predict_scores(img) if net is model else net(img)
        handle.remove()
        x = seen[0]
        assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
        for (b, y, xx), rgb in (((1, 5, 7), (200, 100, 30)), ((0, 0, 0), (0, 255, 128)), ((0, 9, 9), (0, 0, 0))):
            want = torch.tensor([(rgb[c] - mean[c]) / std[c] for c in range(3)])
            torch.testing.assert_close(x[b, :, y, xx], want, rtol=1e-6, atol=1e-6)
