"""segclip trt-check: hand-built graphs, each breaking one documented TensorRT rule, and the CLI's exit codes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto as T
from onnx import helper, numpy_helper, save

from export_fixtures import assert_one_error


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _vi(name, t, shape):
    return helper.make_tensor_value_info(name, t, shape)


def _uint8_model(extra_nodes=(), extra_inits=(), opset=17, mid=None):
    """image uint8 -> Cast float -> [extra] -> Cast uint8 -> mask: the shape of a segclip graph."""
    mid = mid or "f"
    nodes = [helper.make_node("Cast", ["image"], ["f"], name="cast_in", to=T.FLOAT), *extra_nodes,
             helper.make_node("Cast", [mid], ["mask"], name="cast_out", to=T.UINT8)]
    return _model(nodes, [_vi("image", T.UINT8, [1, 3, 8, 8])], [_vi("mask", T.UINT8, None)], extra_inits, opset)


def _check(model, version="10"):
    from segclip.export.trt_check import check_model

    return check_model(model, version)


def test_clean_graph_is_ok_in_both_versions():
    m = _uint8_model([helper.make_node("Relu", ["f"], ["r"], name="relu")], mid="r")
    assert _check(m, "10") == [] and _check(m, "11") == []


@pytest.mark.parametrize("attrs,needle", [
    ({"mode": "bicubic", "padding_mode": "zeros"}, None),
    ({"mode": "bilinear", "padding_mode": "mirror"}, "padding_mode='mirror'"),
])
def test_gridsample_modes(attrs, needle):
    gs = helper.make_node("GridSample", ["f", "grid"], ["s"], name="gs", **attrs)
    m = _uint8_model([gs], [numpy_helper.from_array(np.zeros((1, 4, 4, 2), np.float32), "grid")], mid="s")
    got = _check(m)
    if needle is None:
        assert got == []
    else:
        assert len(got) == 1 and got[0].startswith("node gs (GridSample): ") and needle in got[0]


def test_gridsample_rank5_refused_by_10_accepted_by_11():
    gs = helper.make_node("GridSample", ["x", "grid"], ["y"], name="gs3d", mode="linear")
    m = _model([gs], [_vi("x", T.FLOAT, [1, 2, 4, 4, 4])], [_vi("y", T.FLOAT, None)],
               [numpy_helper.from_array(np.zeros((1, 4, 4, 4, 3), np.float32), "grid")], opset=20)
    (p,) = _check(m, "10")
    assert "node gs3d (GridSample)" in p and "input rank 5" in p and "rank 4 only" in p
    assert _check(m, "11") == []


def test_resize_cubic_and_antialias_refused():
    sc = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    r = helper.make_node("Resize", ["f", "", "scales"], ["r"], name="up", mode="cubic", antialias=1)
    got = _check(_uint8_model([r], [sc], opset=18, mid="r"))
    assert any("mode='cubic'" in p for p in got) and any("antialias=1" in p for p in got)
    assert all(p.startswith("node up (Resize): ") for p in got)


def test_axes_from_a_computed_tensor_refused():
    shape = helper.make_node("Shape", ["f"], ["s"], name="shape")
    gather = helper.make_node("Gather", ["s", "zero"], ["ax"], name="pick")
    sq = helper.make_node("Unsqueeze", ["f", "ax1"], ["u"], name="unsq")
    red = helper.make_node("ReduceSum", ["f", "ax"], ["rs"], name="rsum", keepdims=1)
    add = helper.make_node("Add", ["rs", "f"], ["a"], name="add")
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"), numpy_helper.from_array(np.array([0], np.int64), "ax1")]
    got = _check(_uint8_model([shape, gather, sq, red, add], inits, mid="a"))
    assert got == ["node rsum (ReduceSum): input axes ('ax') must be a build-time constant (initializer or Constant) for TensorRT 10.15"]


@pytest.mark.parametrize("op", ["If", "Loop", "NonZero"])
def test_control_flow_and_nonzero_refused(op):
    n = helper.make_node(op, ["f"], ["o"], name="bad")
    (p,) = [x for x in _check(_uint8_model([n], mid="f")) if "bad" in x]
    assert p.startswith(f"node bad ({op}): ")


def test_unsupported_unknown_and_custom_ops():
    nodes = [helper.make_node("Unique", ["f"], ["u"], name="uniq"),
             helper.make_node("NotAnOp", ["f"], ["v"], name="what"),
             helper.make_node("MultiScaleDeformableAttn", ["f"], ["w"], name="msda", domain="mmcv")]
    got = _check(_uint8_model(nodes))
    assert any(p.startswith("node uniq (Unique): not supported by TensorRT 10.15") for p in got)
    assert any(p.startswith("node what (NotAnOp): not in TensorRT 10.15's ONNX operator matrix") for p in got)
    assert any(p.startswith("node msda (MultiScaleDeformableAttn): custom op domain 'mmcv'") for p in got)


def test_opset_outside_range():
    got = _check(_uint8_model(opset=7))
    assert got and got[0].startswith("graph: opset 7 is outside TensorRT 10.15's supported range 9..24")


def test_uint8_rules():
    # uint8 read by something other than a Cast to float, and uint8 inside the graph
    nodes = [helper.make_node("Identity", ["image"], ["i"], name="peek"),
             helper.make_node("Cast", ["image"], ["f"], name="cast_in", to=T.FLOAT),
             helper.make_node("Cast", ["f"], ["u8"], name="to_u8", to=T.UINT8),
             helper.make_node("Cast", ["u8"], ["f2"], name="back", to=T.FLOAT),
             helper.make_node("ArgMax", ["f2"], ["am"], name="argmax", axis=1),
             helper.make_node("Cast", ["am"], ["mask"], name="cast_out", to=T.UINT8)]
    m = _model(nodes, [_vi("image", T.UINT8, [1, 3, 8, 8])], [_vi("mask", T.UINT8, None), _vi("i", T.UINT8, None)])
    got = _check(m)
    assert any(p.startswith("node peek (Identity): reads UINT8 graph input 'image'") for p in got)
    assert any(p.startswith("node to_u8 (Cast): output 'u8' is UINT8 inside the graph") for p in got)
    assert any(p.startswith("node cast_out (Cast): produces UINT8 graph output 'mask'") and "from FP32" in p for p in got)  # from INT64


def test_qdq_follows_explicit_quantization_rules():
    s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    z8 = numpy_helper.from_array(np.array(0, np.int8), "z8")
    nodes = [helper.make_node("QuantizeLinear", ["f", "s", "z8"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "z8"], ["dq"], name="dq"),
             helper.make_node("Relu", ["dq"], ["r"], name="relu")]
    assert _check(_uint8_model(nodes, [s, z8], opset=19, mid="r")) == []
    zu8 = numpy_helper.from_array(np.array(3, np.uint8), "zu8")
    bad = [helper.make_node("QuantizeLinear", ["f", "s", "zu8"], ["q"], name="q_u8"),
           helper.make_node("DequantizeLinear", ["q", "s", "zu8"], ["dq"], name="dq_u8")]
    got = _check(_uint8_model(bad, [s, zu8], opset=19, mid="dq"))
    assert any(p.startswith("node q_u8 (QuantizeLinear): y_zero_point must be zero") for p in got)
    assert any(p.startswith("node q_u8 (QuantizeLinear): quantizes to UINT8") for p in got)
    assert any(p.startswith("node dq_u8 (DequantizeLinear): input type UINT8") or "dq_u8" in p for p in got)


def test_support_table_is_data_with_sources():
    from segclip.export.trt_check import SUPPORT_FILE

    doc = json.loads(SUPPORT_FILE.read_text())
    for v in ("10", "11"):
        t = doc["tables"][v]
        assert t["tensorrt"].startswith(v + ".") and all(u.startswith("https://") for u in t["sources"])
        assert t["ops"]["GridSample"]["types"] and t["ops"]["Unique"] == {"supported": False}


# ---- the CLI ----------------------------------------------------------------------------------------
def _cli(*args):
    from segclip.cli import main

    return CliRunner().invoke(main, ["trt-check", *map(str, args)])


def test_trt_version_names_a_release_or_a_jetpack_and_refuses_one_without_a_table(tmp_path):
    """trt-check --trt-version 10.3 (JetPack 6) once said "ok for TensorRT 10.15": a release without a
    table of its own is refused in one line naming the tables there are."""
    from segclip.export.trt_check import resolve_trt_version, support_table

    tables = support_table()["tables"]
    assert resolve_trt_version("10") == "10" and resolve_trt_version(tables["10"]["tensorrt"]) == "10"
    assert resolve_trt_version(tables["11"]["tensorrt"]) == "11"
    ok = tmp_path / "ok.onnx"
    save(_uint8_model(), str(ok))
    for asked in ("10.3", "jetpack6.2", "JetPack-6.1"):
        line = assert_one_error(_cli(ok, "--trt-version", asked), 2, "no ONNX support table for TensorRT 10.3",
                                f"TensorRT {tables['10']['tensorrt']} (--trt-version 10)")
        assert "ok for" not in line
    assert_one_error(_cli(ok, "--trt-version", "jetpack5.1"), 2, "JetPack 5.1", "--trt-version 10.3")
    res = _cli(ok, "--trt-version", tables["10"]["tensorrt"])
    assert res.exit_code == 0 and f"ok for TensorRT {tables['10']['tensorrt']}" in res.output


def test_cli_exit_codes(tmp_path):
    ok = tmp_path / "ok.onnx"
    save(_uint8_model(), str(ok))
    res = _cli(ok)
    assert res.exit_code == 0 and "ok for TensorRT 10.15" in res.output
    bad = tmp_path / "bad.onnx"
    save(_uint8_model([helper.make_node("NonZero", ["f"], ["nz"], name="nz")]), str(bad))
    res = _cli(bad, "--trt-version", "11")
    lines = res.output.strip().splitlines()
    assert res.exit_code == 1 and lines[0].startswith(f"{bad}: node nz (NonZero): ") and "1 problem(s) for TensorRT 11" in lines[-1]
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(ok.read_bytes()[: len(ok.read_bytes()) // 2])
    assert_one_error(_cli(trunc), 2, "trunc.onnx", "truncated")
    (tmp_path / "notes.onnx").write_text("not a model at all\n")
    assert_one_error(_cli(tmp_path / "notes.onnx"), 2, "notes.onnx")
    assert_one_error(_cli(tmp_path), 2, "is a directory")
    assert_one_error(_cli(tmp_path / "missing.onnx"), 2, "no such file")
