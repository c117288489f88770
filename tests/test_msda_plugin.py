"""The TensorRT plugin form of the deformable attention (``segclip export --trt --msda``), checked on the CPU.

The plugin graph runs in ONNX Runtime through ``segclip.runtime.msda_plugin.reference`` (written from
TensorRT's CUDA kernel, not from segclip's ``ms_deform_attn``).  It must match the GridSample graph of the
same export, and a plugin graph fed a wrong level order, a wrong sampling-location layout or a wrong
sampling convention must not.
"""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from conftest import parity_images
from export_fixtures import FP16_AGREEMENT, assert_one_error
from segclip.errors import SegclipError
from segclip.runtime.msda_plugin import PLUGIN_DOMAIN, PLUGIN_NAME, reference, reference_session

AGREEMENT = 0.9999  # the bar for plugin graph vs GridSample graph
SCORE_TOL = 1e-4  # same FP32 math in another order: measured ~5e-6


# ---- the reference op against torch's grid_sample, op by op ----------------------------------------
def _inputs(n, seed=0, shapes=((6, 7), (3, 4), (2, 2)), heads=3, d=4, q=9, points=2, spread=0.3):
    rng = np.random.default_rng(seed)
    s = sum(h * w for h, w in shapes)
    value = rng.standard_normal((n, s, heads, d)).astype(np.float32)
    # locations beyond the map on every side: [-spread, 1 + spread]
    loc = rng.uniform(-spread, 1 + spread, (n, q, heads, len(shapes), points, 2)).astype(np.float32)
    attw = rng.uniform(0, 1, (n, q, heads, len(shapes), points)).astype(np.float32)
    starts = np.cumsum([0] + [h * w for h, w in shapes[:-1]]).astype(np.int32)
    return value, np.array(shapes, np.int32), starts, loc, attw


def _grid_sample_msda(value, shapes, loc, attw, align_corners=False):
    """Deformable attention written here with torch's grid_sample on 2 * loc - 1 (the convention segclip's
    GridSample form uses), level by level."""
    n, _, m, d = value.shape
    q, points = loc.shape[1], loc.shape[4]
    out, start = torch.zeros(n, q, m, d), 0
    for lvl, (h, w) in enumerate(shapes):
        v = torch.from_numpy(value[:, start:start + h * w]).reshape(n, h, w, m, d).permute(0, 3, 4, 1, 2).reshape(n * m, d, h, w)
        g = torch.from_numpy(2 * loc[:, :, :, lvl] - 1).permute(0, 2, 1, 3, 4).reshape(n * m, q, points, 2)
        s = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=align_corners)
        wt = torch.from_numpy(attw[:, :, :, lvl]).permute(0, 2, 1, 3).reshape(n * m, 1, q, points)
        out += (s * wt).sum(-1).reshape(n, m, d, q).permute(0, 3, 1, 2)
        start += h * w
    return out.numpy()


@pytest.mark.parametrize("batch", [1, 2])
def test_reference_is_grid_sample_on_2loc_minus_1(batch):
    value, shapes, starts, loc, attw = _inputs(batch)
    got = reference(value, shapes, starts, loc, attw)
    want = _grid_sample_msda(value, [tuple(s) for s in shapes], loc, attw)
    assert got.shape == (batch, loc.shape[1], value.shape[2], value.shape[3])
    assert np.abs(got - want).max() < 1e-5
    # every level contributes, and points outside the map are really sampled (zero padding, not clamping)
    for lvl in range(len(shapes)):
        w = attw.copy()
        w[:, :, :, lvl] = 0
        assert np.abs(reference(value, shapes, starts, loc, w) - got).max() > 1e-3
    outside = (loc < 0) | (loc > 1)
    assert outside.any()
    # the reference is sensitive to the convention: align_corners=True is another op
    assert np.abs(_grid_sample_msda(value, [tuple(s) for s in shapes], loc, attw, align_corners=True) - got).max() > 1e-2


def test_reference_refuses_inconsistent_inputs():
    value, shapes, starts, loc, attw = _inputs(1)
    with pytest.raises(SegclipError, match="runs past"):
        reference(value, shapes, starts + 5, loc, attw)


# ---- the exported plugin graph against the GridSample graph ------------------------------------------
@pytest.fixture(scope="module")
def plugin_export(trained_checkpoint, tmp_path_factory):
    """``export --trt --fp16`` (default --msda auto) of the parity fixture with scores, on this GPU-less machine."""
    from segclip.export import export

    out = tmp_path_factory.mktemp("msda") / "export"
    lines = []
    try:
        manifest = export(trained_checkpoint, out, trt=True, fp16=True, scores=True, batch=(1, 2, 2), parity_images=1,
                          fp16_threshold=FP16_AGREEMENT, log=lines.append)
    except SegclipError as e:  # where --trt without a GPU is an error, it comes after everything is written
        assert "trtexec.sh" in str(e), e
        manifest = json.loads((out / "manifest.json").read_text())
    return out, manifest, "\n".join(map(str, lines))


def _compare(plugin_model, gridsample_path, images, batch):
    """(pixel agreement of the masks, max |dscore|) of the plugin graph (reference op) vs the GridSample graph."""
    import onnxruntime as ort

    ref = ort.InferenceSession(str(gridsample_path), providers=["CPUExecutionProvider"])
    plug = reference_session(plugin_model)
    agree, dmax = [], 0.0
    for i in range(0, len(images), batch):
        x = images[i:i + batch]
        m1, s1 = ref.run(["mask", "scores"], {"image": x})
        m2, s2 = plug.run(["mask", "scores"], {"image": x})
        agree.append(m1 == m2)
        dmax = max(dmax, float(np.abs(s1 - s2).max()))
    return float(np.concatenate(agree).mean()), dmax


@pytest.mark.parametrize("batch", [1, 2])
def test_plugin_graph_matches_gridsample_graph(plugin_export, batch):
    out, manifest, _ = plugin_export
    model = onnx.load(str(out / "model_plugin.onnx"))
    nodes = [n for n in model.graph.node if n.op_type == PLUGIN_NAME]
    layers = sum(n.op_type == "GridSample" for n in onnx.load(str(out / "model.onnx")).graph.node)
    assert nodes and not any(n.op_type == "GridSample" for n in model.graph.node)
    points = manifest["source"]["model_config"]["enc_points"]
    # one plugin node per encoder layer replaces its GridSample per level and sampling point
    assert layers == 3 * points * len(nodes)
    agree, dmax = _compare(model, out / "model.onnx", parity_images(4), batch)
    print(f"plugin vs GridSample graph, batch {batch}: agreement {100 * agree:.4f}%, max |dscore| {dmax:.2e}")
    assert agree >= AGREEMENT and dmax <= SCORE_TOL, (agree, dmax)


def _mutated(model, how: str):
    """The plugin graph with one deliberate mistake in what each plugin node is fed."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    new, flipped = [], set()
    for n in g.node:
        if n.op_type == PLUGIN_NAME:
            if how == "level order":  # levels listed coarse-to-fine instead of the value's order
                for i in (1, 2):
                    t = inits[n.input[i]]
                    if t.name not in flipped:  # the layers share these initializers
                        flipped.add(t.name)
                        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t)[::-1].copy(), t.name))
            elif how == "xy layout":  # sampling locations (y, x) instead of the plugin's (x, y)
                idx = helper.make_tensor(n.name + "_yx", T.INT64, [2], [1, 0])
                g.initializer.append(idx)
                new.append(helper.make_node("Gather", [n.input[3], idx.name], [n.input[3] + "_yx"], axis=-1))
                n.input[3] = n.input[3] + "_yx"
            elif how == "convention":  # the grid_sample grid (2 * loc - 1) instead of the plugin's [0, 1] locations
                two = numpy_helper.from_array(np.array(2, np.float32), n.name + "_two")
                one = numpy_helper.from_array(np.array(1, np.float32), n.name + "_one")
                g.initializer.extend([two, one])
                new += [helper.make_node("Mul", [n.input[3], two.name], [n.name + "_2l"]),
                        helper.make_node("Sub", [n.name + "_2l", one.name], [n.name + "_grid"])]
                n.input[3] = n.name + "_grid"
        new.append(n)
    del g.node[:]
    g.node.extend(new)
    return m


@pytest.mark.parametrize("how", ["level order", "xy layout", "convention"])
def test_a_wrong_plugin_graph_fails_the_comparison(plugin_export, how):
    out, _, _ = plugin_export
    model = _mutated(onnx.load(str(out / "model_plugin.onnx")), how)
    agree, dmax = _compare(model, out / "model.onnx", parity_images(2), 2)
    print(f"plugin graph with a wrong {how}: agreement {100 * agree:.4f}%, max |dscore| {dmax:.2e}")
    assert not (agree >= AGREEMENT and dmax <= SCORE_TOL), (how, agree, dmax)


# ---- export --trt without a GPU: both TensorRT graphs, trtexec.sh and the recorded form ---------------
def test_export_trt_writes_both_forms_and_says_which(plugin_export, tmp_path):
    out, manifest, log = plugin_export
    arts = manifest["artifacts"]
    for key in ("onnx", "onnx_fp16", "onnx_plugin", "onnx_plugin_fp16"):
        assert (out / arts[key]["file"]).is_file() and arts[key]["status"] == "ok" and arts[key]["tensorrt_check"] == "ok", key
    form = arts["tensorrt"]["msda"]
    assert arts["tensorrt"]["status"] == "not_built" and arts["tensorrt"]["onnx"] == "model_plugin_fp16.onnx"
    assert form["form"] == "plugin" and form["plugin_version"] == "1" and form["fallback_onnx"] == "model_fp16.onnx"
    # in the FP16 graph the plugin runs FP32 between casts (its FP16 kernel samples in half precision)
    fp32 = {d["name"]: d["reason"] for d in arts["onnx_plugin_fp16"]["fp16"]["fp32_nodes"]}
    plugin_nodes = [n for n in onnx.load(str(out / "model_plugin_fp16.onnx")).graph.node if n.op_type == PLUGIN_NAME]
    assert plugin_nodes and all("TensorRT plugin kept FP32" in fp32[n.name] for n in plugin_nodes)
    assert "the engine takes the plugin form" in log
    assert json.loads((out / "manifest.json").read_text())["artifacts"]["tensorrt"]["msda"] == form
    meta = {p.key: p.value for p in onnx.load(str(out / "model_plugin.onnx"), load_external_data=False).metadata_props}
    assert meta["segclip.tensorrt_plugins"] == PLUGIN_NAME and meta["segclip.plugin_version"] == "1"
    script = (out / "trtexec.sh").read_text()
    assert "plugin form" in script and "ONNX=model_fp16.onnx sh trtexec.sh" in script
    # trtexec.sh builds the plugin graph, or the GridSample one when asked (a stand-in trtexec records its arguments)
    fake = tmp_path / "fake-trtexec"
    fake.write_text('#!/bin/sh\necho "$@" > "$ARGS"\n')
    fake.chmod(0o755)
    for onnx_env, want in ((None, "--onnx=model_plugin_fp16.onnx"), ("model_fp16.onnx", "--onnx=model_fp16.onnx")):
        env = dict(os.environ, TRTEXEC=str(fake), ARGS=str(tmp_path / "args"))
        env.pop("ONNX", None)
        if onnx_env:
            env["ONNX"] = onnx_env
        subprocess.run(["sh", str(out / "trtexec.sh")], env=env, check=True, capture_output=True, timeout=30)
        assert want in (tmp_path / "args").read_text().split()


def test_plugin_graph_is_refused_by_name_without_the_reference(plugin_export):
    from segclip.runtime.onnx_runner import OnnxRunner
    from segclip.runtime.openvino_runner import OpenVINORunner

    out, _, _ = plugin_export
    with pytest.raises(SegclipError) as e:
        OnnxRunner(out / "model_plugin.onnx")
    msg = str(e.value)
    assert PLUGIN_NAME in msg and "model.onnx" in msg and "\n" not in msg
    # with the reference op it runs, and gives the GridSample graph's masks; so does OpenVINO through segclip's
    # kernel of the plugin (segclip.runtime.ov_extension), built for this process: the export wrote no library
    x = parity_images(2)
    with OnnxRunner(out / "model_plugin.onnx", providers="cpu", reference_ops=True) as r, \
            OnnxRunner(out / "model.onnx", providers="cpu") as g, OpenVINORunner(out / "model_plugin.onnx") as ov:
        want = g.infer(x)["mask"]
        assert np.array_equal(r.infer(x)["mask"], want)
        assert float((ov.infer(x)["mask"] == want).mean()) >= AGREEMENT


# ---- segclip's OpenVINO kernel of the plugin against the reference ------------------------------------------
def _one_node_graph(path, value, shapes, starts, loc, attw, index_type=np.int32):
    """A one-node ONNX graph of the plugin op, as segclip writes it (index inputs as initializers)."""
    io = [helper.make_tensor_value_info(n, T.FLOAT, list(a.shape)) for n, a in (("value", value), ("loc", loc), ("attw", attw))]
    node = helper.make_node(PLUGIN_NAME, ["value", "shapes", "starts", "loc", "attw"], ["out"], domain=PLUGIN_DOMAIN,
                            plugin_version="1", plugin_namespace="")
    graph = helper.make_graph([node], "msda", io, [helper.make_tensor_value_info("out", T.FLOAT, None)],
                              [numpy_helper.from_array(shapes.astype(index_type), "shapes"),
                               numpy_helper.from_array(starts.astype(index_type), "starts")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(PLUGIN_DOMAIN, 1)]), path)
    return path


def _openvino_kernel(path, feeds, library=None):
    import openvino as ov

    from segclip.runtime import ov_extension

    core = ov.Core()
    core.add_extension(str(library or ov_extension.library_for(path, None)))
    compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2})
    return compiled(feeds)[compiled.outputs[0]]


@pytest.mark.parametrize("batch,d,index_type", [(1, 32, np.int32), (2, 4, np.int64)])
def test_openvino_kernel_matches_the_reference(tmp_path, batch, d, index_type):
    """D = 32 (segclip's heads, the compiled-in fast path) and any other D; INT32 and INT64 index inputs;
    points beyond every edge (zero padding); a NaN location adds nothing, as the CUDA kernel's bounds test."""
    pytest.importorskip("openvino")
    value, shapes, starts, loc, attw = _inputs(batch, d=d, q=40, points=3)
    path = _one_node_graph(tmp_path / "msda.onnx", value, shapes, starts, loc, attw, index_type)
    got = _openvino_kernel(path, {"value": value, "loc": loc, "attw": attw})
    want = reference(value, shapes, starts, loc, attw)
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-5
    nan_loc, no_weight = loc.copy(), attw.copy()
    nan_loc[:, 5, 1, 2, 0] = np.nan
    no_weight[:, 5, 1, 2, 0] = 0
    got_nan = _openvino_kernel(path, {"value": value, "loc": nan_loc, "attw": attw})
    assert np.isfinite(got_nan).all()
    assert np.abs(got_nan - reference(value, shapes, starts, loc, no_weight)).max() < 1e-5


@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_openvino_kernel_code_path_of_other_cpus_matches_the_reference(tmp_path, isa):
    """The library dispatches AVX-512 / AVX2 / baseline code at load time; this CPU runs one of them.  The
    other paths, built alone, run here too (an AVX2-only CPU's, an older one's) and must agree as well."""
    pytest.importorskip("openvino")
    from segclip.runtime import ov_extension

    if ov_extension.build_problem():
        pytest.skip(ov_extension.build_problem())
    lib = ov_extension.build(tmp_path / f"lib_{isa}.so", isa=isa)
    for d in (32, 4):
        value, shapes, starts, loc, attw = _inputs(2, d=d, q=40, points=3, seed=d)
        path = _one_node_graph(tmp_path / f"msda_{d}.onnx", value, shapes, starts, loc, attw)
        got = _openvino_kernel(path, {"value": value, "loc": loc, "attw": attw}, library=lib)
        assert np.abs(got - reference(value, shapes, starts, loc, attw)).max() < 1e-5, (isa, d)


def test_openvino_kernel_library_is_rebuilt_or_refused_in_one_line(tmp_path, monkeypatch):
    """A library built against another OpenVINO is not loaded (no stable extension ABI): one is built for the
    process, and it says why; with no compiler that is a one-line error naming the fix."""
    pytest.importorskip("openvino")
    from segclip.runtime import ov_extension

    graph = tmp_path / "model_int8_msda.onnx"
    graph.write_bytes(b"")
    (tmp_path / ov_extension.LIBRARY_NAME).write_bytes(b"not a library")
    old = {**ov_extension.stamp(), "openvino": "2024.0.0"}
    lines = []
    lib = ov_extension.library_for(graph, old, log=lines.append)
    assert lib.parent != tmp_path and lib.is_file()
    assert ov_extension.library_for(graph, ov_extension.stamp()) == tmp_path / ov_extension.LIBRARY_NAME
    monkeypatch.setattr(ov_extension, "_BUILT", {})
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.raises(SegclipError) as e:
        ov_extension.library_for(graph, old)
    msg = str(e.value)
    assert "2024.0.0" in msg and "g++" in msg and "--format onnx_int8" in msg and "\n" not in msg
    # segclip doctor says it before anything is exported
    from segclip.cli import main

    out = CliRunner().invoke(main, ["doctor"]).output
    line = next(ln for ln in out.splitlines() if ln.startswith("OpenVINO deformable-attention kernel"))
    assert "install g++" in line and ov_extension.build_problem() in line


def test_msda_plugin_needs_trt_one_line(tmp_path):
    from segclip.cli import main

    res = CliRunner().invoke(main, ["export", str(tmp_path / "x.pt"), "--msda", "plugin"])
    assert_one_error(res, 2, "--msda plugin", "TensorRT only", "--trt")
    res = CliRunner().invoke(main, ["export", str(tmp_path / "x.pt"), "--msda", "plugin", "--trt", "--int8"])
    assert_one_error(res, 2, "--msda plugin with --int8")


def test_plugin_versions_by_tensorrt_release():
    from segclip.runtime.msda_plugin import plugin_version_for, versions_in

    assert plugin_version_for("10.3.0.30") == "1" and plugin_version_for("10.11.0") == "2"
    assert plugin_version_for("11.1.0") == "2" and plugin_version_for(None) == "1"
    assert versions_in("10.3") == ("1",) and versions_in("11.2") == ("1", "2")


# ---- trt-check: the plugin node passes; a malformed one is named -----------------------------------
def _plugin_graph(n_inputs=5, shapes_type=T.INT32, version="1", namespace=None):
    vi = helper.make_tensor_value_info
    ss = helper.make_tensor("ss", shapes_type, [2, 2], [4, 4, 2, 2])
    lsi = helper.make_tensor("lsi", T.INT32, [2], [0, 16])
    attrs = {"plugin_version": version}
    if namespace is not None:
        attrs["plugin_namespace"] = namespace
    ins = ["value", "ss", "lsi", "loc", "attw"][:n_inputs]
    node = helper.make_node(PLUGIN_NAME, ins, ["y"], name="msda0", domain=PLUGIN_DOMAIN, **attrs)
    g = helper.make_graph([node, helper.make_node("Relu", ["y"], ["out"], name="relu")], "g",
                          [vi("value", T.FLOAT, [1, 20, 2, 8]), vi("loc", T.FLOAT, [1, 5, 2, 2, 4, 2]),
                           vi("attw", T.FLOAT, [1, 5, 2, 2, 4])],
                          [vi("out", T.FLOAT, [1, 5, 2, 8])], [ss, lsi], value_info=[vi("y", T.FLOAT, [1, 5, 2, 8])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(PLUGIN_DOMAIN, 1)], ir_version=8)


def test_trt_check_accepts_the_plugin_and_names_a_malformed_node(tmp_path):
    from segclip.cli import main
    from segclip.export.trt_check import check_model

    assert check_model(_plugin_graph(), "10") == [] and check_model(_plugin_graph(version="2"), "11") == []
    few = check_model(_plugin_graph(n_inputs=4), "10")
    assert len(few) == 1 and "msda0" in few[0] and "4 input(s)" in few[0] and "needs a plugin" not in few[0]
    wrong = check_model(_plugin_graph(shapes_type=T.INT64), "10")
    assert len(wrong) == 1 and "spatial_shapes" in wrong[0] and "INT64" in wrong[0] and "INT32" in wrong[0]
    assert "plugin_version='3'" in check_model(_plugin_graph(version="3"), "10")[0]
    assert "plugin_namespace" in check_model(_plugin_graph(namespace="mine"), "10")[0]
    # the CLI: exit 0 for the good graph, 1 naming the node for the bad one
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    onnx.save(_plugin_graph(), good)
    onnx.save(_plugin_graph(shapes_type=T.INT64), bad)
    assert CliRunner().invoke(main, ["trt-check", str(good)]).exit_code == 0
    res = CliRunner().invoke(main, ["trt-check", str(bad)])
    assert res.exit_code == 1 and "msda0" in res.output and "spatial_shapes" in res.output

