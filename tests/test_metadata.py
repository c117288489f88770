"""Metadata prompts (MetaSegNet): scene table, sidecars, fusion, training, checkpoints, CLI errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import LOVEDA_PALETTE, make_scene_model
from export_fixtures import SIZE, images as export_images
from segclip.cli import main
from segclip.errors import SegclipError
from segclip.metadata import SceneTable, apply_sidecar, load_sidecar, lookup_scene

_scene_model = make_scene_model


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

    from segclip.checkpoint import atomic_save, checkpoint_dict, load_checkpoint, model_from_checkpoint

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
    from segclip.checkpoint import load_checkpoint

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
    assert "windows, metadata off" in run.output and (tmp_path / "on" / "eval_val_nometa_first2.json").is_file()  # --limit: a spot-check file

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


# ---- deployment: the scene table becomes a constant, scene_id an input ---------------------------------
def test_export_has_scene_input_and_passes_parity_for_every_scene(scene_export_dir, trained_scene_ckpt):
    import onnx

    out, manifest = scene_export_dir
    assert manifest["scenes"]["table"][1] == {"id": 1, "name": "rural", "prompt": "a remote sensing image of a rural area"}
    assert manifest["scenes"]["default"] == 0 and manifest["signature"]["scenes"] == ["generic", "rural", "urban"]
    assert manifest["signature"]["scene_keys"] == ["domain"]
    from segclip.contract import manifest_signature

    sig = manifest_signature(manifest)  # what benchmarks use to give each dataset image its own scene
    assert [sig.scene_of({"domain": d}) for d in ("Rural", "urban", "desert")] == [1, 2, 0]
    for key in ("onnx", "onnx_fp16"):
        art = manifest["artifacts"][key]
        per_scene = art["parity"]["pixel_agreement_per_scene"]
        assert art["status"] == "ok" and {int(k) for k in per_scene} == {0, 1, 2}
        assert min(per_scene.values()) >= art["parity"]["threshold"]
        g = onnx.load(str(out / art["file"]), load_external_data=False).graph
        ins = {i.name: (i.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim])
               for i in g.input}
        assert ins["scene_id"] == (onnx.TensorProto.INT32, ["batch"])
    assert "over 3 scenes" in manifest["parity"]["table"]


@pytest.mark.parametrize("runtime", [dict(providers="cpu"), dict(runtime="openvino", threads=2)], ids=["onnxruntime", "openvino"])
def test_exported_scenes_match_pytorch_and_change_the_output(scene_export_dir, trained_scene_ckpt, runtime):
    """Independent reference: the checkpoint's own SegCLIP.predict_scores per scene vs ONNX Runtime and
    OpenVINO (both feed the scene_id input)."""
    from segclip.checkpoint import model_from_checkpoint
    from segclip.runtime import load_runner

    out, _ = scene_export_dir
    model = model_from_checkpoint(trained_scene_ckpt)
    x = export_images(2)
    with load_runner(out, format="onnx", **runtime) as r:
        scores = {}
        for sid, name in enumerate(("generic", "rural", "urban")):
            ref = model.predict_scores(torch.from_numpy(x), torch.full((2,), sid)).numpy()
            got = r.infer(x, name)
            np.testing.assert_allclose(got["scores"], ref, atol=1e-4)
            assert (got["mask"] == ref.argmax(1)).mean() > 0.999, name
            scores[name] = got["scores"]
        for a, b in (("generic", "rural"), ("rural", "urban")):  # the scene path is live in the graph
            assert np.abs(scores[a] - scores[b]).max() > 1e-3, (a, b)
        np.testing.assert_allclose(r.infer(x)["scores"], scores["generic"], atol=1e-6)  # no scene_id -> generic (0)
        np.testing.assert_allclose(r.infer(x, [1, 2])["scores"], np.stack([scores["rural"][0], scores["urban"][1]]), atol=1e-5)
        with pytest.raises(SegclipError, match="scene id 3 is out of range .* scenes: generic, rural, urban"):
            r.infer(x, 3)
        with pytest.raises(SegclipError, match="unknown scene 'desert'"):
            r.infer(x, "desert")


def test_model_without_metadata_has_no_scene_input(export_dir):
    from segclip.runtime import load_runner

    out, manifest = export_dir
    assert manifest["scenes"] is None and manifest["signature"]["scenes"] == []
    with load_runner(out, format="onnx", providers="cpu") as r:
        assert [t.name for t in r.signature.inputs] == ["image"]
        with pytest.raises(SegclipError, match="exported without metadata prompts, so it takes no 'scene_id'"):
            r.infer(export_images(1), "rural")


def test_trtexec_profile_covers_scene_id():
    from segclip.export.tensorrt import input_profiles, trtexec_command

    cmd = trtexec_command("model_fp16.onnx", "model.plan", (1, 2, 4), (64, 64), 1024, scenes=True)
    assert "--minShapes=image:1x64x64x3,scene_id:1" in cmd and "--maxShapes=image:4x64x64x3,scene_id:4" in cmd
    assert input_profiles((1, 2, 4), (64, 64))["image"]["opt"] == [2, 64, 64, 3] and "scene_id" not in input_profiles((1, 2, 4), (64, 64))


def test_predict_scene_on_torch_and_onnx_and_bad_scene(scene_export_dir, trained_scene_ckpt, tmp_path):
    from PIL import Image

    from export_fixtures import assert_one_error

    out, _ = scene_export_dir
    img = tmp_path / "tile.png"
    Image.fromarray(export_images(1)[0]).save(img)
    masks = {}
    for model in (trained_scene_ckpt, out):
        for scene in ("rural", "urban"):
            dest = tmp_path / f"{Path(model).name}_{scene}"
            run = CliRunner().invoke(main, ["predict", "--model", str(model), str(img), "--out", str(dest), "--scene", scene,
                                            "--device", "cpu", "--size", str(SIZE), "--quiet"])
            assert run.exit_code == 0, run.output
            masks[(Path(model).name, scene)] = np.asarray(Image.open(dest / "tile_mask.png"))
    for scene in ("rural", "urban"):  # the checkpoint (PyTorch) and the export (ONNX Runtime) agree per scene
        assert (masks[(Path(trained_scene_ckpt).name, scene)] == masks[(out.name, scene)]).mean() > 0.999
    run = CliRunner().invoke(main, ["predict", "--model", str(out), str(img), "--out", str(tmp_path / "x"), "--scene", "desert"])
    assert_one_error(run, 2, "unknown scene 'desert'", "generic, rural, urban")
    assert not list((tmp_path / "x").glob("*mask*"))


def test_int8_export_of_a_scene_model_calibrates_under_every_scene(trained_scene_ckpt, sample_root, tmp_path):
    """--int8 --fp16 --trt on a model with a scene_id input (the quickstart's model has scenes): the
    calibration, the INT8+FP16 range pass and the sensitivity ranking all feed scene ids."""
    import onnx

    from segclip.export import export
    from segclip.export import int8 as q8

    out = tmp_path / "e"
    # no GPU here: the ONNX files are written, the engine is left to trtexec.sh (a note, no error)
    export(trained_scene_ckpt, out, int8=True, fp16=True, trt=True, data=f"sample:{sample_root}:train", calib_images=4,
           parity_images=3, batch=(1, 1, 2), int8_threshold="0.5:100", log=lambda *a: None)
    m = json.loads((out / "manifest.json").read_text())
    for key in ("onnx_int8", "onnx_int8_cpu", "onnx_int8_fp16"):
        a = m["artifacts"][key]
        assert a["status"] == "ok" and set(a["parity"]["pixel_agreement_per_scene"]) == {"0", "1", "2"}, key
        assert "scene_id" in [i.name for i in onnx.load(str(out / a["file"])).graph.input], key
    fp32, qdq = onnx.load(str(out / "model.onnx")), onnx.load(str(out / "model_int8.onnx"))
    images = export_images(2, seed=3)
    ranked = q8.sensitivity(fp32, qdq, images, scene_ids=np.array([1, 2], np.int32))
    assert len(ranked) == q8.qdq_summary(qdq)["quantized_nodes"] and all(np.isfinite(e) for _, e in ranked)
