"""Absurd declared sizes are refused before anything is allocated, in a line that says which
size and why: a layer of 10^9 outputs in a model file, an IDX header whose sizes overflow, a
small .gz that expands without end, a model that outputs 4 x 10^10 scores, an input shape no
image can be resized to. Each used to hang, swap or end in a MemoryError traceback."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import convnet as cn
from convnet.cli import main
from convnet.data import DataError
from convnet.data.idx import read_idx

TREE = Path(__file__).resolve().parent.parent


def cli(*argv, timeout=60) -> subprocess.CompletedProcess:
    """The CLI in its own process, so a regression shows as a timeout rather than a hung run."""
    return subprocess.run([sys.executable, "-m", "convnet", *map(str, argv)],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "PYTHONPATH": str(TREE)})


def last_line(result) -> str:
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


# -- layers -------------------------------------------------------------------------------------

def test_a_model_file_with_a_billion_outputs_is_refused_at_once(tmp_path):
    model = tmp_path / "big.toml"
    model.write_text('input_shape = [1, 12, 12]\n[[layers]]\ntype = "flatten"\n'
                     '[[layers]]\ntype = "linear"\nout_features = 1000000000\n')
    started = time.monotonic()
    line = last_line(cli("summary", model))
    assert time.monotonic() - started < 30
    assert line == (f"convnet: error: {model}:4: layer 2 (linear): Linear: a weight of "
                    f"1,000,000,000 x 144 = 144,000,000,000 values (536.4 GiB as float32) is "
                    f"more than the 2 GiB one layer may hold; check the sizes (a Linear's "
                    f"in_features x out_features, a Conv2d's out_channels x in_channels x kernel)")


@pytest.mark.parametrize("make", [lambda: cn.Linear(3 * 10**5, 3 * 10**5),
                                  lambda: cn.Conv2d(3, 10**6, 30),
                                  lambda: cn.BatchNorm2d(10**9)])
def test_layers_refuse_parameters_beyond_the_budget(make):
    with pytest.raises(ValueError, match=r"is more than the 2 GiB one layer may hold"):
        make()


# -- data files ---------------------------------------------------------------------------------

def idx_header(*shape: int) -> bytes:
    return bytes([0, 0, 0x08, len(shape)]) + b"".join(struct.pack(">I", d) for d in shape)


def test_an_idx_header_whose_sizes_overflow(tmp_path):
    # 65536^4 = 2^64: multiplied in int64 it wrapped to 0 bytes, which an empty body matched,
    # and the reshape failed with a ValueError traceback.
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_header(65536, 65536, 65536, 65536))
    with pytest.raises(DataError, match=r"declares shape \(65536, 65536, 65536, 65536\), "
                                        r"18,446,744,073,709,551,616 bytes of data, more than"):
        read_idx(path)


def test_a_small_gzip_that_expands_without_end_is_read_no_further_than_declared(tmp_path):
    path = tmp_path / "bomb.gz"
    with gzip.open(path, "wb", compresslevel=9) as stream:
        stream.write(idx_header(10, 28, 28) + bytes(10 * 28 * 28))
        zeros = bytes(1 << 20)
        for _ in range(256):  # 256 MB more than the header declares, in a ~250 KB file
            stream.write(zeros)
    assert path.stat().st_size < 400_000
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"the gzip stream holds more than the 7,840 bytes "
                                            r"its IDX header declares"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"read {peak / 2**20:.0f} MiB"


def test_a_gzip_declaring_more_than_it_can_expand_to(tmp_path):
    path = tmp_path / "liar.gz"
    path.write_bytes(gzip.compress(idx_header(60000, 28, 28) + bytes(100)))
    with pytest.raises(DataError, match=r"47,040,000 bytes of data, but a gzip file of \d+ "
                                        r"bytes expands to at most"):
        read_idx(path)


# -- models that declare absurd sizes ---------------------------------------------------------

def test_a_model_of_4e10_outputs_is_refused_before_listing_its_classes(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["out"], axis=1)], "huge",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4, 100000, 100000])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4 * 10**10])])
    path = tmp_path / "huge.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    image = tmp_path / "small.png"
    Image.new("RGB", (10, 10)).save(image)
    line = last_line(cli("predict", path, image))
    # The ONNX importer refuses the declared input itself, before any layer is built
    assert line == ("convnet: error: input 'input' declares (?, 4, 100000, 100000): "
                    "40,000,000,000 values per sample, more than the 268,435,456 convnet "
                    "computes; pass a smaller input_shape to load()")


def test_an_input_shape_no_image_can_be_resized_to(tmp_path, capsys):
    model = tmp_path / "wide.toml"
    model.write_text('input_shape = [1, 1000000, 1000000]\n[[layers]]\ntype = "conv"\n'
                     'out_channels = 3\nkernel_size = 3\n[[layers]]\ntype = "gap"\n')
    image = tmp_path / "small.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(image)
    assert main(["visualize", str(model), "activations", "--image", str(image), "-o",
                 str(tmp_path / "a.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("convnet: error: image: converting 1 image(s) to 1x1000000x1000000 needs "
                   "4,656.7 GiB, more than half of this machine's memory; is the model's input "
                   "shape right?"), err
