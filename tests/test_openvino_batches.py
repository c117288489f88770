"""OpenVINO compiles one static shape per batch size: a smaller batch (a scene's or an image's last
windows) runs padded on a larger shape already compiled, not compiled again, with the same classes."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import parity_images

pytest.importorskip("openvino")


def test_a_smaller_batch_reuses_the_larger_compiled_shape(export_dir):
    from segclip.runtime import load_runner

    d, _ = export_dir
    x = parity_images(3)
    with load_runner(d, format="onnx", runtime="openvino", threads=2) as r:
        both = r.infer(x[:2])["mask"]
        one = r.infer(x[2:3])["mask"]
        assert list(r._compiled) == [(2, *x.shape[1:])]  # no second compile for the batch of 1
        assert one.shape == (1, *x.shape[1:3])
        assert np.array_equal(r.infer(x[:1])["mask"][0], both[0])
    with load_runner(d, format="onnx", runtime="openvino", threads=2) as fresh:  # its own batch-1 shape
        assert np.array_equal(fresh.infer(x[2:3])["mask"], one)
