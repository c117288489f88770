"""Metadata prompts (MetaSegNet): scene table, sidecars, fusion, training, checkpoints, CLI errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import LOVEDA_CLASSES, LOVEDA_PALETTE, small_config
from segclip.cli import main
from segclip.errors import SegclipError
from segclip.metadata import SceneTable, apply_sidecar, load_sidecar, lookup_scene


def _scene_model(seed=0):
    from segclip.modeling import build_model

    torch.manual_seed(seed)
    emb = torch.nn.functional.normalize(torch.randn(len(LOVEDA_CLASSES), 512), dim=-1)
    table = SceneTable(("domain",), [("rural",), ("urban",)])
    scene_emb = torch.nn.functional.normalize(torch.randn(len(table), 512), dim=-1)
    return build_model(small_config(), LOVEDA_CLASSES, text_embeddings=emb, scenes=table, scene_embeddings=scene_emb)


def _images(b=2, s=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, s, s, 3), dtype=torch.uint8, generator=g)


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory):
    from segclip.data.sample import generate_sample_dataset

    return generate_sample_dataset(tmp_path_factory.mktemp("sample") / "data", seed=0, num_train=8, num_val=4, size=128)


def test_scene_table_prompts_ids_and_fallback():
    t = SceneTable.from_metas(("domain", "climate"), [{"domain": "Urban", "climate": "arid"}, {"domain": "rural"},
                                                      {"domain": "rural", "climate": "unknown"}, {}])
    assert t.names == ["generic", "rural/*", "urban/arid"]
    assert t.prompts == ["a remote sensing image", "a remote sensing image of a rural area",
                         "a remote sensing image of an urban area in an arid climate zone"]
    assert t.scene_id({"domain": "URBAN ", "climate": "Arid"}) == 2
    assert t.scene_id({"domain": "rural", "climate": "N/A"}) == 1  # unknown value -> phrase left out
    assert t.scene_id({"domain": "desert"}) == 0 and t.scene_id(None) == 0  # unseen -> generic, never an error
    assert SceneTable.from_dict(json.loads(json.dumps(t.to_dict()))).names == t.names
    custom = SceneTable(("climate",), [("arid",)], templates={"climate": "under a {} sky"}, prefix="an aerial photo")
    assert custom.prompts[1] == "an aerial photo under an arid sky"
    assert lookup_scene(t.names, "Urban/arid") == 2 and lookup_scene(t.names, "domain=urban,climate=arid") == 2
    assert lookup_scene(t.names, "1") == 1
    with pytest.raises(SegclipError, match="unknown scene 'desert'; this model knows: generic, rural/\\*, urban/arid"):
        lookup_scene(t.names, "desert")
    with pytest.raises(SegclipError, match="scene id 3 is out of range"):
        lookup_scene(t.names, 3)


def test_different_scenes_give_different_scores_and_inference_bakes_table():
    from segclip.modeling import SegCLIPInference

    model = _scene_model().eval()
    x = _images()
    rural = model.predict_scores(x, torch.tensor([1, 1]))
    urban = model.predict_scores(x, torch.tensor([2, 2]))
    assert (rural - urban).abs().max() > 1e-3  # the metadata path is live
    torch.testing.assert_close(model.predict_scores(x), model.predict_scores(x, torch.tensor([0, 0])))  # default = generic
    inf = SegCLIPInference(model, scores=True)
    _, scores = inf(x, torch.tensor([1, 2], dtype=torch.int32))
    torch.testing.assert_close(scores, torch.cat([rural[:1], urban[1:]]))
    names = {n for n, _ in inf.named_parameters()} | {n for n, _ in inf.named_buffers()}
    assert "scene_tokens" in names and not any("scene_embeddings" in n or "metadata.proj" in n for n in names)
    assert inf.scene_tokens.shape == (3, model.cfg.metadata_tokens, model.cfg.hidden_dim)


def test_gradients_reach_the_fusion_module():
    from segclip.engine.trainer import build_criterion
    from segclip.modeling import semantic_targets

    model = _scene_model().train()
    masks = torch.zeros(2, 64, 64, dtype=torch.int64)
    masks[:, :32] = 1
    targets = semantic_targets(masks, 7)
    crit = build_criterion(model.cfg, 7)
    loss = sum(crit(model(_images(), targets, torch.tensor([1, 2])), targets, model.cfg.num_queries, 2.0).values())
    loss.backward()
    for name, p in model.metadata.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert not model.scene_embeddings.requires_grad  # cached CLIP embeddings stay frozen


def test_checkpoint_round_trip_and_old_checkpoints_load(tmp_path):
    from conftest import make_small_model

    from segclip.engine.checkpoint import atomic_save, checkpoint_dict, load_checkpoint, model_from_checkpoint

    model = _scene_model().eval()
    path = atomic_save(checkpoint_dict(model, LOVEDA_PALETTE, dataset="sample"), tmp_path / "m.pt")
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["scenes"]["names"] == ["generic", "rural", "urban"]
    again = model_from_checkpoint(load_checkpoint(path))
    x = _images(1)
    torch.testing.assert_close(again.predict_scores(x, torch.tensor([2])), model.predict_scores(x, torch.tensor([2])), rtol=0, atol=0)
    # a checkpoint written before metadata prompts existed: no scene keys, no metadata config fields
    old = checkpoint_dict(make_small_model(), LOVEDA_PALETTE)
    for k in ("scenes", "scene_embeddings"):
        old.pop(k)
    for k in [k for k in old["model_config"] if k.startswith("metadata")]:
        old["model_config"].pop(k)
    atomic_save(old, tmp_path / "old.pt")
    legacy = model_from_checkpoint(tmp_path / "old.pt")
    assert legacy.scenes is None and legacy.metadata is None


def test_sidecar_csv_json_and_errors(tmp_path, sample_root):
    from segclip.data import build_dataset

    ds = build_dataset("sample", sample_root, "train")
    stems = [m["path"].rsplit("/", 1)[1][:-4] for m in (ds.meta(i) | {"path": str(ds.records[i][0])} for i in range(len(ds)))]
    csv_path = tmp_path / "meta.csv"
    csv_path.write_text("image,climate,season\n" + "".join(f"{s}.png,{'arid' if i % 2 else 'temperate'},\n" for i, s in enumerate(stems[:4])))
    table = load_sidecar(csv_path)
    assert table[stems[1]] == {"climate": "arid", "season": ""}
    keys = apply_sidecar(ds, table, str(csv_path))
    assert keys == ("climate", "season") and ds.metadata_keys == ("domain", "climate", "season")
    assert ds.meta(1)["climate"] == "arid" and "climate" not in ds.meta(len(ds) - 1)
    json_path = tmp_path / "meta.json"
    json_path.write_text(json.dumps({stems[0]: {"gsd": "0.3 m"}}))
    assert load_sidecar(json_path) == {stems[0]: {"gsd": "0.3 m"}}

    bad = tmp_path / "bad.csv"
    bad.write_text("image,climate\n1,arid\n2,arid,extra\n")
    with pytest.raises(SegclipError, match="line 3: 3 fields but the header has 2"):
        load_sidecar(bad)
    bad.write_text("climate,image\narid,1\n")
    with pytest.raises(SegclipError, match="line 1: the CSV header must start with an image column"):
        load_sidecar(bad)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text(json.dumps({"1": ["arid"]}))
    with pytest.raises(SegclipError, match="entry '1' must map keys to plain values"):
        load_sidecar(bad_json)
    other = tmp_path / "other.csv"
    other.write_text("image,climate\nnot_an_image,arid\n")
    with pytest.raises(SegclipError, match="names none of the .* images"):
        apply_sidecar(build_dataset("sample", sample_root, "train"), load_sidecar(other), str(other))


def test_training_with_metadata_and_eval_ablation(sample_root, tmp_path):
    """The sample set (LoveDA layout) trains with Urban/Rural scenes by default; the checkpoint
    holds the table; eval reports mIoU with metadata on and withheld; --metadata off trains without."""
    from segclip.cli.train_cmds import run_training
    from segclip.engine.checkpoint import load_checkpoint

    kw = dict(batch_size=2, crop_size=64, backbone_weights="none", clip_checkpoint="none", device="cpu", progress=False,
              max_steps=2, checkpoint_every=2)
    trainer, _ = run_training("sample", str(sample_root), "segclip-small", str(tmp_path / "on"), **kw)
    assert trainer.model.scenes.names == ["generic", "rural", "urban"]
    ckpt = load_checkpoint(tmp_path / "on")
    assert ckpt["model_config"]["metadata"] == "on" and ckpt["scene_embeddings"].shape == (3, 512)
    assert set(trainer.scene_ids.tolist()) == {1, 2}
    run = CliRunner().invoke(main, ["eval", str(tmp_path / "on"), "--data", f"sample:{sample_root}:val",
                                    "--limit", "2", "--metadata", "off"])
    assert run.exit_code == 0, run.output
    assert "(metadata off)" in run.output and (tmp_path / "on" / "eval_val_nometa.json").is_file()

    trainer_off, _ = run_training("sample", str(sample_root), "segclip-small", str(tmp_path / "off"), metadata="off", **kw)
    assert trainer_off.model.scenes is None and load_checkpoint(tmp_path / "off")["scenes"] is None
    run = CliRunner().invoke(main, ["eval", str(tmp_path / "off"), "--data", f"sample:{sample_root}:val",
                                    "--limit", "1", "--metadata", "on"])
    assert run.exit_code == 2 and run.output.count("\n") == 1 and "trained without metadata prompts" in run.output


def test_cli_sidecar_errors_are_one_line(sample_root, tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("image,climate\nnot_an_image,arid\n")
    args = ["train", "--data", f"sample:{sample_root}", "--preset", "segclip-small",
            "--backbone-weights", "none", "--clip-checkpoint", "none", "--max-steps", "1", "--device", "cpu"]
    for sidecar, msg in ((other, "names none of the"), (tmp_path / "missing.csv", "no such file")):
        run = CliRunner().invoke(main, args + ["--out", str(tmp_path / "run"), "--metadata", str(sidecar)])
        assert run.exit_code == 2 and run.output.count("\n") == 1 and msg in run.output, run.output
    assert not (tmp_path / "run").exists()
