"""Networks exported by PyTorch's ONNX exporter at several opsets, using what modern CNNs
are made of: LayerNorm (LayerNormalization from opset 17, ReduceMean-Sub-Pow-Sqrt-Div before
it), GELU (Erf), SiLU, Hardswish, Hardsigmoid, ReLU6 (Clip), PReLU, ELU, channel shuffle
(Reshape-Transpose-Reshape computed from x.size()), channel split, squeeze-and-excitation,
upsampling (nearest and bilinear), ConvTranspose2d, PixelShuffle, padding modes, softmax over
an axis, MatMul of two activations: imported, they match PyTorch and onnxruntime."""

import warnings

import numpy as np
import pytest
from exchange_helpers import assert_close, ort_session

import convnet as cn

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
nn = torch.nn
F = torch.nn.functional


class Modern(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.prelu = nn.PReLU(8)
        self.expand = nn.Conv2d(8, 16, 1)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.se_reduce = nn.Conv2d(16, 4, 1)
        self.se_expand = nn.Conv2d(4, 16, 1)
        self.project = nn.Conv2d(16, 8, 1)
        self.norm = nn.LayerNorm(8)
        self.up = nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1, output_padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.head = nn.Conv2d(2, 6, 3, padding=1)

    def forward(self, x):
        x = self.prelu(self.stem(F.pad(x, (1, 1, 1, 1), mode="reflect")))
        h = F.hardswish(self.expand(x))
        h = F.relu6(self.depthwise(h))
        gate = F.hardsigmoid(self.se_expand(F.silu(self.se_reduce(h.mean((2, 3),
                                                                          keepdim=True)))))
        h = self.project(h * gate)
        n, c, hh, ww = h.size()
        h = h.view(n, 2, c // 2, hh, ww).transpose(1, 2).reshape(n, c, hh, ww)  # shuffle
        a, b = h.split(4, dim=1)
        h = torch.cat([F.gelu(a), F.elu(b)], dim=1) + x
        t = self.norm(h.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        attention = torch.softmax(torch.matmul(t.flatten(2).transpose(1, 2), t.flatten(2))
                                  / 8.0, dim=-1)
        mixed = torch.matmul(t.flatten(2), attention).view(n, c, hh, ww)
        up = F.interpolate(mixed, scale_factor=2, mode="nearest") + self.up(mixed)
        smooth = F.interpolate(up, scale_factor=0.5, mode="bilinear", align_corners=False)
        return self.head(self.shuffle(F.pad(smooth, (0, 0, 0, 0)) * 1.5 - 0.25)), t


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_modern_blocks_exported_by_pytorch_match(opset, tmp_path):
    torch.manual_seed(0)
    net = Modern().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = tmp_path / f"modern{opset}.onnx"
    x = torch.randn(2, 3, 10, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=opset,
                              input_names=["x"], output_names=["y", "tokens"],
                              dynamic_axes={"x": {0: "N"}})
        except Exception as error:
            pytest.skip(f"torch.onnx.export is not available here: {error}")
    imported = cn.onnx.load(path)
    assert imported.output_names == ["y", "tokens"]
    data = np.random.default_rng(1).normal(size=(3, 3, 10, 12)).astype(np.float32)
    with torch.no_grad():
        expected = [t.numpy() for t in net(torch.from_numpy(data))]
    ours = imported.forward(data)
    session = ort_session(path)
    theirs = session.run(None, {"x": data})
    for a, b, c in zip(ours, expected, theirs, strict=True):
        assert_close(a, b)
        assert_close(a, c)
