"""The built-in models: the networks of the lecture and its peers, written as specs.

Each is the same data a user's model file holds (see `convnet.io.spec`), so `convnet summary
lenet5` and a TOML file go through one path. Channel and feature counts that follow from
the input are left for the spec builder to fill in.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from convnet.io.spec import build
from convnet.nn.layer import Layer


@dataclass(frozen=True)
class ZooModel:
    name: str
    description: str
    spec: dict
    # the entry (or entries: an FCN scores at several scales) sized for the classes
    # (default: the last)
    classifier: str | tuple[str, ...] | None = None
    task: str = "classify"  # or "segment": a score per class and pixel

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.spec["input_shape"])


def _conv(k, size, pad=0, stride=1):
    return {"type": "conv", "out_channels": k, "kernel_size": size, "padding": pad,
            "stride": stride}


RELU = {"type": "relu"}
RELU6 = {"type": "relu6"}
FLATTEN = {"type": "flatten"}


def _pool(size, stride=None):
    return {"type": "maxpool", "kernel_size": size, "stride": stride or size}


def _fc(n):
    return {"type": "linear", "out_features": n}


def _classifier(n):
    """The last layer feeds softmax, not a ReLU: Xavier/Glorot keeps its first scores small."""
    return {"type": "linear", "out_features": n, "init": "xavier"}


def _basic_block(k, stride=1, in_k=None):
    """Two 3x3 convs with batch norm; a strided 1x1 projection when the shape changes."""
    body = [_conv(k, 3, "same", stride), {"type": "batchnorm"}, RELU,
            _conv(k, 3, "same"), {"type": "batchnorm"}]
    projection = None
    if stride != 1 or (in_k is not None and in_k != k):
        projection = {"type": "conv", "out_channels": k, "kernel_size": 1, "stride": stride,
                      "padding": "same", "in_channels": in_k}
    return [{"type": "residual", "body": body, "projection": projection}, RELU]


class _Graph:
    """Entries of a graph spec, each named and reading named tensors (the default: the
    entry before)."""

    def __init__(self):
        self.entries: list[dict] = []

    def add(self, entry: dict, name: str, inputs=None) -> str:
        entry = {**entry, "name": name}
        if inputs is not None:
            entry["inputs"] = [inputs] if isinstance(inputs, str) else list(inputs)
        self.entries.append(entry)
        return name

    def fire(self, x: str, name: str, squeeze: int, expand: int) -> str:
        """SqueezeNet's Fire module: a 1x1 squeeze, then 1x1 and 3x3 expands side by side.
        Batch norm after the squeeze (as later SqueezeNets have) keeps the plain SGD of
        `convnet train` stable."""
        self.add(_conv(squeeze, 1), f"{name}_squeeze", x)
        self.add({"type": "batchnorm"}, f"{name}_squeeze_bn")
        s = self.add(RELU, f"{name}_squeeze_relu")
        self.add(_conv(expand, 1), f"{name}_expand1x1", s)
        e1 = self.add(RELU, f"{name}_expand1x1_relu")
        self.add(_conv(expand, 3, 1), f"{name}_expand3x3", s)
        e3 = self.add(RELU, f"{name}_expand3x3_relu")
        return self.add({"type": "concat", "axis": 1}, f"{name}_concat", [e1, e3])

    def inception(self, x: str, name: str, b1: int, b3: tuple, b5: tuple, pool: int) -> str:
        """GoogLeNet's Inception module: 1x1, 1x1-3x3, 1x1-5x5 (as two 3x3) and pool-1x1
        branches side by side, concatenated."""
        self.add(_conv(b1, 1), f"{name}_1x1", x)
        one = self.add(RELU, f"{name}_1x1_relu")
        self.add(_conv(b3[0], 1), f"{name}_3x3_reduce", x)
        self.add(RELU, f"{name}_3x3_reduce_relu")
        self.add(_conv(b3[1], 3, 1), f"{name}_3x3")
        three = self.add(RELU, f"{name}_3x3_relu")
        self.add(_conv(b5[0], 1), f"{name}_5x5_reduce", x)
        self.add(RELU, f"{name}_5x5_reduce_relu")
        self.add(_conv(b5[1], 3, 1), f"{name}_5x5a")
        self.add(RELU, f"{name}_5x5a_relu")
        self.add(_conv(b5[1], 3, 1), f"{name}_5x5b")
        five = self.add(RELU, f"{name}_5x5b_relu")
        self.add({"type": "maxpool", "kernel_size": 3, "stride": 1, "padding": 1},
                 f"{name}_pool", x)
        self.add(_conv(pool, 1), f"{name}_pool_proj")
        pooled = self.add(RELU, f"{name}_pool_proj_relu")
        return self.add({"type": "concat", "axis": 1}, f"{name}_concat",
                        [one, three, five, pooled])

    def inverted_residual(self, x: str, name: str, channels: int, out: int, expand: int,
                          stride: int) -> str:
        """MobileNet's inverted residual: a 1x1 expansion, a 3x3 depthwise conv (one filter
        per channel: groups = channels), squeeze-and-excitation (global pooling, two 1x1
        convs, a hard-sigmoid gate multiplied in), a linear 1x1 projection, and the input
        added back when the shape allows."""
        wide = channels * expand
        if expand != 1:
            self.add(_conv(wide, 1), f"{name}_expand", x)
            self.add({"type": "batchnorm"}, f"{name}_expand_bn")
            y = self.add(RELU6, f"{name}_expand_relu6")
        else:
            y = x
        # 'same': at stride 2 a 3x3 window needs one row and column of padding after, none
        # before, to tile 32 pixels into 16 exactly (pad 1 on both sides would not fit).
        self.add({"type": "conv", "out_channels": wide, "kernel_size": 3, "padding": "same",
                  "stride": stride, "groups": wide}, f"{name}_depthwise", y)
        self.add({"type": "batchnorm"}, f"{name}_depthwise_bn")
        y = self.add(RELU6, f"{name}_depthwise_relu6")
        self.add({"type": "gap"}, f"{name}_se_squeeze", y)
        self.add(_conv(max(wide // 4, 4), 1), f"{name}_se_reduce")
        self.add(RELU, f"{name}_se_relu")
        self.add(_conv(wide, 1), f"{name}_se_expand")
        gate = self.add({"type": "hardsigmoid"}, f"{name}_se_gate")
        y = self.add({"type": "mul"}, f"{name}_se_scale", [y, gate])
        self.add(_conv(out, 1), f"{name}_project", y)
        y = self.add({"type": "batchnorm"}, f"{name}_project_bn")
        if stride == 1 and channels == out:
            y = self.add({"type": "add"}, f"{name}_add", [x, y])
        return y

    def spec(self, input_shape) -> dict:
        return {"input_shape": list(input_shape), "layers": self.entries}


def _squeezenet_mini() -> dict:
    g = _Graph()
    g.add(_conv(32, 3, 1), "conv1", "input")
    g.add({"type": "batchnorm"}, "bn1")
    g.add(RELU, "relu1")
    x = g.add(_pool(2), "pool1")                                     # 16x16
    x = g.fire(x, "fire2", 8, 16)
    x = g.fire(x, "fire3", 8, 32)
    x = g.add(_pool(2), "pool3", x)                                  # 8x8
    x = g.fire(x, "fire4", 16, 32)
    g.add({"type": "dropout", "p": 0.2}, "drop", x)
    # Scores, not a ReLU's input: Xavier keeps the first ones small (as _classifier does).
    g.add({"type": "conv", "out_channels": 10, "kernel_size": 1, "init": "xavier"},
          "classifier")
    g.add({"type": "gap"}, "gap")
    g.add(FLATTEN, "flatten")
    return g.spec((3, 32, 32))


def _inception_mini() -> dict:
    g = _Graph()
    g.add(_conv(16, 3, 1), "conv1", "input")
    g.add({"type": "batchnorm"}, "bn1")
    g.add(RELU, "relu1")
    x = g.add(_pool(2), "pool1")                                     # 16x16
    x = g.inception(x, "mixed3a", 16, (12, 16), (4, 8), 8)           # 48 channels
    x = g.add(_pool(2), "pool3", x)                                  # 8x8
    x = g.inception(x, "mixed4a", 24, (16, 32), (8, 16), 16)         # 88 channels
    g.add({"type": "gap"}, "gap", x)
    g.add(FLATTEN, "flatten")
    g.add(_classifier(10), "classifier")
    return g.spec((3, 32, 32))


def _mobilenet_mini() -> dict:
    g = _Graph()
    g.add(_conv(16, 3, 1), "conv1", "input")
    g.add({"type": "batchnorm"}, "bn1")
    x = g.add(RELU6, "relu6_1")                                     # 32x32
    x = g.inverted_residual(x, "block1", 16, 16, 1, 1)
    x = g.inverted_residual(x, "block2", 16, 24, 4, 2)              # 16x16
    x = g.inverted_residual(x, "block3", 24, 24, 4, 1)
    x = g.inverted_residual(x, "block4", 24, 40, 4, 2)              # 8x8
    x = g.inverted_residual(x, "block5", 40, 40, 4, 1)
    g.add(_conv(128, 1), "head", x)
    g.add({"type": "batchnorm"}, "head_bn")
    g.add(RELU6, "head_relu6")
    g.add({"type": "gap"}, "gap")
    g.add(FLATTEN, "flatten")
    g.add(_classifier(10), "classifier")
    return g.spec((3, 32, 32))


def _conv_bn_relu(g: _Graph, x: str, name: str, k: int, size: int = 3, pad=1,
                  stride: int = 1) -> str:
    g.add(_conv(k, size, pad, stride), name, x)
    g.add({"type": "batchnorm"}, f"{name}_bn")
    return g.add(RELU, f"{name}_relu")


def _fcn_mini() -> dict:
    """FCN (Long, Shelhamer, Darrell 2015) in small: a strided encoder (4x4 convolutions of
    stride 2 and padding 1 halve 64 -> 32 -> 16 -> 8 exactly: (64 - 4 + 2*1)/2 + 1 = 32), 1x1
    classifiers scoring every class at strides 8, 4 and 2, and bilinear upsampling by 2 that
    adds each finer score map (the skip connections of FCN-8s), back to 64x64."""
    g = _Graph()
    x = _conv_bn_relu(g, "input", "conv1", 8)                            # 8 x 64x64
    x = _conv_bn_relu(g, x, "down1", 16, 4, 1, 2)                        # 16 x 32x32
    s2 = _conv_bn_relu(g, x, "conv2", 16)
    x = _conv_bn_relu(g, s2, "down2", 32, 4, 1, 2)                       # 32 x 16x16
    s4 = _conv_bn_relu(g, x, "conv3", 32)
    x = _conv_bn_relu(g, s4, "down3", 64, 4, 1, 2)                       # 64 x 8x8
    s8 = _conv_bn_relu(g, x, "conv4", 64)
    up = {"type": "upsample", "scale_factor": 2, "mode": "bilinear"}
    # 11 classes: digits-seg's background and ten digits (resized for other data)
    score = {"type": "conv", "out_channels": 11, "kernel_size": 1, "init": "xavier"}
    g.add(score, "score8", s8)                                           # classes x 8x8
    g.add(up, "up8")                                                     # 16x16
    g.add(score, "score4", s4)
    g.add({"type": "add"}, "fuse4", ["up8", "score4"])
    g.add(up, "up4")                                                     # 32x32
    g.add(score, "score2", s2)
    g.add({"type": "add"}, "fuse2", ["up4", "score2"])
    g.add(up, "up2")                                                     # 64x64
    return g.spec((1, 64, 64))


def _unet_mini() -> dict:
    """U-Net (Ronneberger, Fischer, Brox 2015) in small: three 2x2 poolings down to 8x8, 2x2
    transposed convolutions of stride 2 back up ((8 - 1)*2 - 2*0 + 1*(2 - 1) + 0 + 1 = 16), each
    concatenated with the encoder map of its size, and a 1x1 classifier at 64x64. The bottleneck
    also scores every class itself, upsampled by 8 and added to the classifier's scores (FCN's
    coarse scores): a short path from the loss to the features that tell digits apart. On
    digits-seg (Adam, lr 0.003, batches of 32) the network without it reached a validation mean
    IoU of 0.38 after 9 epochs (1,017 steps); with it, 0.39 after 160 steps."""
    g = _Graph()
    e1 = _conv_bn_relu(g, "input", "enc1", 8)                            # 8 x 64x64
    g.add(_pool(2), "pool1", e1)                                         # 32x32
    x = _conv_bn_relu(g, "pool1", "enc2a", 16)
    e2 = _conv_bn_relu(g, x, "enc2b", 16)                                # 16 x 32x32
    g.add(_pool(2), "pool2", e2)                                         # 16x16
    x = _conv_bn_relu(g, "pool2", "enc3a", 32)
    e3 = _conv_bn_relu(g, x, "enc3b", 32)                                # 32 x 16x16
    g.add(_pool(2), "pool3", e3)                                         # 8x8
    x = _conv_bn_relu(g, "pool3", "mid_a", 64)
    middle = x = _conv_bn_relu(g, x, "mid_b", 64)                        # 64 x 8x8
    for level, skip, k in ((3, e3, 32), (2, e2, 16), (1, e1, 8)):
        g.add({"type": "convtranspose", "out_channels": k, "kernel_size": 2, "stride": 2},
              f"up{level}", x)                                           # twice the size
        g.add({"type": "concat", "axis": 1}, f"cat{level}", [f"up{level}", skip])
        x = _conv_bn_relu(g, f"cat{level}", f"dec{level}", k)
    # 11 classes: digits-seg's background and ten digits (resized for other data)
    score = {"type": "conv", "out_channels": 11, "kernel_size": 1, "init": "xavier"}
    g.add(score, "classifier", x)                                        # classes x 64x64
    g.add(score, "score_mid", middle)                                    # classes x 8x8
    g.add({"type": "upsample", "scale_factor": 8, "mode": "bilinear"}, "up_mid")
    g.add({"type": "add"}, "scores", ["classifier", "up_mid"])           # classes x 64x64
    return g.spec((1, 64, 64))


def _bottleneck(k, inner):
    """1x1 reduce -> 3x3 -> 1x1 expand, added to the input: the 1x1 convolutions of the lecture."""
    body = [_conv(inner, 1), RELU, _conv(inner, 3, 1), RELU, _conv(k, 1)]
    return [{"type": "residual", "body": body, "projection": None}, RELU]


MODELS: dict[str, ZooModel] = {
    model.name: model
    for model in [
        ZooModel("lenet5", "LeNet-5 (LeCun 1998) with ReLU and max pooling, for 28x28 digits",
                 {"input_shape": [1, 28, 28], "layers": [
                     _conv(6, 5, 2), RELU, _pool(2), _conv(16, 5), RELU, _pool(2), FLATTEN,
                     _fc(120), RELU, _fc(84), RELU, _classifier(10)]}),
        ZooModel("convnetjs-mnist", "ConvNetJS's MNIST demo net: two conv-relu-pool blocks on "
                 "24x24 crops",
                 {"input_shape": [1, 24, 24], "layers": [
                     _conv(8, 5, 2), RELU, _pool(2), _conv(16, 5, 2), RELU, _pool(3), FLATTEN,
                     _classifier(10)]}),
        ZooModel("convnetjs", "ConvNetJS's CIFAR-10 demo net: three conv5x5-relu-pool blocks "
                 "(16, 20, 20 filters)",
                 {"input_shape": [3, 32, 32], "layers": [
                     _conv(16, 5, 2), RELU, _pool(2), _conv(20, 5, 2), RELU, _pool(2),
                     _conv(20, 5, 2), RELU, _pool(2), FLATTEN, _classifier(10)]}),
        ZooModel("tinyvgg", "CNN Explainer's Tiny VGG: two blocks of [conv3x3x10, relu] x2 + "
                 "pool, on 64x64 colour images",
                 {"input_shape": [3, 64, 64], "layers": [
                     _conv(10, 3), RELU, _conv(10, 3), RELU, _pool(2),
                     _conv(10, 3), RELU, _conv(10, 3), RELU, _pool(2), FLATTEN, _classifier(10)]}),
        ZooModel("vggish", "A VGG-style net: stacks of 3x3 convs (32, 64, 128 filters) with "
                 "2x2 pooling, for 32x32 images",
                 {"input_shape": [3, 32, 32], "layers": [
                     _conv(32, 3, 1), RELU, _conv(32, 3, 1), RELU, _pool(2),
                     _conv(64, 3, 1), RELU, _conv(64, 3, 1), RELU, _pool(2),
                     _conv(128, 3, 1), RELU, _pool(2), FLATTEN, _classifier(10)]}),
        ZooModel("resnet8", "A small ResNet: a 3x3 stem and three residual stages (16, 32, 64) "
                 "with batch norm and global average pooling",
                 {"input_shape": [3, 32, 32], "layers": [
                     _conv(16, 3, 1), {"type": "batchnorm"}, RELU,
                     *_basic_block(16), *_basic_block(32, 2, 16), *_basic_block(64, 2, 32),
                     {"type": "gap"}, FLATTEN, _classifier(10)]}),
        ZooModel("bottleneck", "1x1 convolutions at work: a 1x1-3x3-1x1 residual bottleneck "
                 "between conv-pool stages, for 32x32 images",
                 {"input_shape": [3, 32, 32], "layers": [
                     _conv(32, 3, 1), RELU, _pool(2), *_bottleneck(32, 8),
                     _conv(64, 1), RELU, _pool(2), *_bottleneck(64, 16),
                     {"type": "gap"}, FLATTEN, _classifier(10)]}),
        ZooModel("squeezenet-mini", "SqueezeNet's Fire modules (Iandola 2016): 1x1 squeeze, "
                 "1x1 and 3x3 expands concatenated, a 1x1 conv classifier and global pooling",
                 _squeezenet_mini(), classifier="classifier"),
        ZooModel("mobilenet-mini", "MobileNetV2/V3's inverted residuals (Sandler 2018, Howard "
                 "2019): 1x1 expand, 3x3 depthwise, squeeze-and-excitation, linear projection, "
                 "ReLU6", _mobilenet_mini(), classifier="classifier"),
        ZooModel("inception-mini", "GoogLeNet's Inception modules (Szegedy 2014): 1x1, 3x3, "
                 "5x5 (two 3x3) and pooling branches concatenated, for 32x32 images",
                 _inception_mini(), classifier="classifier"),
        ZooModel("fcn-mini", "segmentation, an FCN (Long 2015): strided 4x4 convs down to 8x8, "
                 "1x1 class scores at three scales, bilinear upsampling adding the finer ones",
                 _fcn_mini(), classifier=("score8", "score4", "score2"), task="segment"),
        ZooModel("unet-mini", "segmentation, a U-Net (Ronneberger 2015): pooling down to 8x8, "
                 "2x2 transposed convs back up, concatenated with the encoder's maps; the "
                 "bottleneck's class scores added",
                 _unet_mini(), classifier=("classifier", "score_mid"), task="segment"),
    ]
}


def names() -> list[str]:
    return list(MODELS)


def spec_for(name: str, num_classes: int | None = None, in_channels: int | None = None) -> dict:
    """A copy of the zoo spec, with its classifier and input depth adapted when asked."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; the zoo has: {', '.join(MODELS)} "
                       f"(or give the path of a .toml model file)")
    spec = copy.deepcopy(MODELS[name].spec)
    if in_channels is not None:
        spec["input_shape"][0] = in_channels
    if num_classes is not None:
        wanted = MODELS[name].classifier
        wanted = (wanted,) if isinstance(wanted, str) else tuple(wanted or ())
        chosen = [entry for entry in spec["layers"] if entry.get("name") in wanted]
        for entry in chosen or [spec["layers"][-1]]:
            entry["out_channels" if entry["type"] == "conv" else "out_features"] = num_classes
    spec["name"] = name
    return spec


def build_model(name: str, num_classes: int | None = None,
                in_channels: int | None = None) -> Layer:
    """A freshly initialised zoo model (seed with cn.manual_seed first to reproduce it)."""
    return build(spec_for(name, num_classes, in_channels))
