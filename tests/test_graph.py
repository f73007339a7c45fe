"""Graph models (cn.Model on cn.Input): forward, backward, fan-out, merges, shared weights,
errors at the user's line, and parity with PyTorch's autograd running the same graph."""

import numpy as np
import pytest
from engine_checks import assert_close, assert_gradient_matches, spread_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convnet as cn

torch = pytest.importorskip("torch")
F = torch.nn.functional

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- an independent executor: PyTorch's autograd over the same calls -----------------------
def torch_call(layer, args):
    """The PyTorch op of one convnet layer on torch tensors (weights copied)."""
    if isinstance(layer, cn.Conv2d):
        pad = layer.geometry(args[0].shape[2:]).padding
        x = F.pad(args[0], (pad.left, pad.right, pad.top, pad.bottom))
        bias = None if layer.bias is None else torch.tensor(layer.bias.data)
        return F.conv2d(x, torch.tensor(layer.weight.data), bias, layer.stride, 0,
                        layer.dilation, layer.groups)
    if isinstance(layer, cn.Linear):
        return F.linear(args[0], torch.tensor(layer.weight.data),
                        torch.tensor(layer.bias.data))
    simple = {cn.ReLU: torch.relu, cn.Sigmoid: torch.sigmoid, cn.Tanh: torch.tanh,
              cn.Flatten: lambda x: x.flatten(1),
              cn.GlobalAvgPool2d: lambda x: x.mean(dim=(2, 3), keepdim=True)}
    if type(layer) in simple:
        return simple[type(layer)](args[0])
    if isinstance(layer, cn.MaxPool2d):
        return F.max_pool2d(args[0], layer.kernel_size, layer.stride)
    if isinstance(layer, cn.Concat):
        return torch.cat(args, dim=layer.axis)
    if isinstance(layer, cn.Add):
        return sum(args[1:], args[0])
    if isinstance(layer, cn.Sub):
        return args[0] - args[1]
    if isinstance(layer, cn.Mul):
        out = args[0]
        for arg in args[1:]:
            out = out * arg
        return out
    if isinstance(layer, cn.Div):
        return args[0] / args[1]
    raise NotImplementedError(type(layer).__name__)


def torch_run(model, xs, grads):
    """Outputs, input gradients and parameter gradients (by the layer's state-dict name) of
    the graph run by PyTorch, for upstream gradients `grads` (None: no gradient)."""
    values = {}
    leaves = [torch.tensor(x, requires_grad=True) for x in xs]
    for slot, leaf in zip(model.input_slots, leaves, strict=True):
        values[slot] = leaf
    params = {}
    for step in model.steps:
        layer = step.layer
        if isinstance(layer, (cn.Conv2d, cn.Linear)) and layer.name not in params:
            params[layer.name] = {}
        out = torch_call_with_params(layer, [values[s] for s in step.inputs], params)
        values[step.outputs[0]] = out
    outs = [values[s] for s in model.output_slots]
    total = sum((o * torch.tensor(g)).sum() for o, g in zip(outs, grads, strict=True)
                if g is not None)
    total.backward()
    return outs, leaves, params


def torch_call_with_params(layer, args, params):
    """torch_call, with the weights as shared leaves so a layer called twice adds its grads."""
    if isinstance(layer, (cn.Conv2d, cn.Linear)):
        own = params[layer.name]
        if not own:
            own["weight"] = torch.tensor(layer.weight.data, requires_grad=True)
            own["bias"] = torch.tensor(layer.bias.data, requires_grad=True)
        if isinstance(layer, cn.Linear):
            return F.linear(args[0], own["weight"], own["bias"])
        pad = layer.geometry(args[0].shape[2:]).padding
        x = F.pad(args[0], (pad.left, pad.right, pad.top, pad.bottom))
        return F.conv2d(x, own["weight"], own["bias"], layer.stride, 0, layer.dilation,
                        layer.groups)
    return torch_call(layer, args)


def assert_matches_torch(model, xs, grads):
    model.zero_grad()
    outs = model.forward(*xs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    dxs = model.backward([None if g is None else g.copy() for g in grads]
                         if len(grads) > 1 else grads[0].copy())
    dxs = dxs if isinstance(dxs, tuple) else (dxs,)
    t_outs, t_leaves, t_params = torch_run(model, xs, grads)
    for ours, theirs in zip(outs, t_outs, strict=True):
        assert_close(ours, theirs, "output")
    for ours, leaf in zip(dxs, t_leaves, strict=True):
        if leaf.grad is None:
            assert ours is None
        else:
            assert_close(ours, leaf.grad, "input gradient")
    for layer_name, own in t_params.items():
        layer = dict(model.children())[layer_name]
        for name in ("weight", "bias"):
            theirs = own[name].grad  # None where no gradient reached the layer
            theirs = torch.zeros(own[name].shape) if theirs is None else theirs
            assert_close(getattr(layer, name).grad, theirs, f"{layer_name}.{name} gradient")


# -- a random DAG ---------------------------------------------------------------------------
@st.composite
def random_graphs(draw):
    """A graph of 3-9 calls over 5x5 maps: convs (some applied twice), ReLU, Sigmoid, and
    merges (Concat of any two, Add/Sub/Mul of two with equal channels, a (C, 1, 1) gate),
    with one or two outputs."""
    channels = draw(st.integers(1, 3))
    x = cn.Input((channels, 5, 5))
    tensors = [x]
    convs = []
    for _ in range(draw(st.integers(3, 9))):
        op = draw(st.sampled_from(["conv", "conv", "reuse", "relu", "sigmoid", "concat",
                                   "arith", "gate"]))
        a = draw(st.sampled_from(tensors))
        if op == "reuse" and convs:
            conv = draw(st.sampled_from(convs))
            matching = [t for t in tensors if t.shape[0] == conv.in_channels]
            if not matching:
                continue
            tensors.append(conv(draw(st.sampled_from(matching))))
        elif op in ("conv", "reuse"):
            conv = cn.Conv2d(a.shape[0], draw(st.integers(1, 4)), draw(st.sampled_from([1, 3])),
                             padding="same")
            convs.append(conv)
            tensors.append(conv(a))
        elif op == "relu":
            tensors.append(cn.ReLU()(a))
        elif op == "sigmoid":
            tensors.append(cn.Sigmoid()(a))
        elif op == "concat":
            tensors.append(cn.Concat(axis=1)([a, draw(st.sampled_from(tensors))]))
        elif op == "arith":
            same = [t for t in tensors if t.shape == a.shape]
            merge = draw(st.sampled_from([cn.Add, cn.Sub, cn.Mul]))
            tensors.append(merge()([a, draw(st.sampled_from(same))]))
        else:
            gate = cn.Sigmoid()(cn.GlobalAvgPool2d()(a))
            tensors.append(cn.Mul()([a, gate]))
    outputs = [tensors[-1]]
    if draw(st.booleans()) and len(tensors) > 2:
        outputs.append(draw(st.sampled_from(tensors[1:-1])))
    return cn.Model(inputs=x, outputs=outputs if len(outputs) > 1 else outputs[0])


@SETTINGS
@given(random_graphs(), st.integers(0, 2**31 - 1))
def test_random_graphs_match_pytorch_autograd(model, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, *model.input_shape)).astype(np.float32)
    grads = [rng.standard_normal((2, *shape)).astype(np.float32)
             for shape in model.output_shapes()]
    if len(grads) > 1 and rng.random() < 0.3:
        grads[1] = None  # an output that gets no gradient
    assert_matches_torch(model, [x], grads)


def inception_block(channels=4):
    x = cn.Input((channels, 8, 8))
    b1 = cn.ReLU()(cn.Conv2d(channels, 3, 1)(x))
    b2 = cn.ReLU()(cn.Conv2d(3, 4, 3, padding=1)(cn.ReLU()(cn.Conv2d(channels, 3, 1)(x))))
    b3 = cn.Conv2d(channels, 2, 1)(cn.MaxPool2d(3, stride=1, padding=1)(x))
    y = cn.Concat(axis=1)([b1, b2, b3])
    return cn.Model(inputs=x, outputs=y)


def test_inception_block_gradients_match_centred_differences(rng):
    model = inception_block().astype(np.float64)
    x = spread_values(rng, (2, 4, 8, 8))
    y = model.forward(x)
    assert y.shape == (2, 9, 8, 8)
    g = rng.standard_normal(y.shape)

    def loss():
        with cn.no_grad():
            return float((model.forward(x) * g).sum())

    model.zero_grad()
    model.forward(x)
    dx = model.backward(g)
    assert_gradient_matches(dx, loss, x, rng, "input gradient")
    for name, param in model.named_parameters():
        assert_gradient_matches(param.grad.copy(), loss, param.data, rng, name)


def test_two_outputs_and_a_tensor_read_three_times_sum_their_gradients(rng):
    x = cn.Input((2, 4, 4))
    conv = cn.Conv2d(2, 2, 3, padding=1)
    a = conv(x)
    s = cn.Add()([a, cn.Mul()([a, a])])            # a is read three times
    d = cn.Div()([s, cn.Add()([cn.Mul()([a, a]), cn.Sigmoid()(a)])])
    model = cn.Model(inputs=x, outputs=[d, s]).astype(np.float64)
    xv = rng.standard_normal((3, 2, 4, 4))
    g1, g2 = rng.standard_normal((2, 3, 2, 4, 4))

    def loss():
        with cn.no_grad():
            out1, out2 = model.forward(xv)
            return float((out1 * g1).sum() + (out2 * g2).sum())

    model.zero_grad()
    model.forward(xv)
    dx = model.backward([g1, g2])
    assert_gradient_matches(dx, loss, xv, rng, "input gradient")
    assert_gradient_matches(conv.weight.grad.copy(), loss, conv.weight.data, rng, "weight")


def test_a_layer_called_twice_shares_weights_and_adds_its_gradients(rng):
    conv = cn.Conv2d(1, 2, 3, padding=1)
    left, right = cn.Input((1, 6, 6), name="left"), cn.Input((1, 6, 6), name="right")
    model = cn.Model(inputs=[left, right], outputs=cn.Sub()([conv(left), conv(right)]))
    assert model.num_parameters() == conv.num_parameters()
    assert list(model.state_dict()) == ["conv1.weight", "conv1.bias"]
    xl, xr = rng.standard_normal((2, 2, 1, 6, 6)).astype(np.float32)
    g = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    model.zero_grad()
    model.forward(xl, xr)
    dl, dr = model.backward(g)
    # The same weights alone: d/dw (conv(l) - conv(r)) = dw(l, g) - dw(r, g).
    single = cn.Sequential(conv)
    conv.zero_grad()
    single.forward(xl)
    single.backward(g)
    expected = conv.weight.grad.copy()
    conv.zero_grad()
    single.forward(xr)
    single.backward(-g)
    expected += conv.weight.grad
    model.zero_grad()
    model.forward([xl, xr])
    model.backward(g)
    np.testing.assert_allclose(conv.weight.grad, expected, rtol=1e-5, atol=1e-5)
    assert dl.shape == dr.shape == (2, 1, 6, 6)
    np.testing.assert_allclose(conv.bias.grad, 0, atol=1e-4)  # +g and -g cancel


def test_every_cache_is_freed_by_backward(rng):
    model = inception_block()
    model.forward(rng.standard_normal((2, 4, 8, 8)).astype(np.float32))
    assert any(m.cache is not None for m in model.modules())
    model.backward(np.ones((2, 9, 8, 8), np.float32))
    assert all(m.cache is None for m in model.modules())


def test_an_output_without_gradient_still_frees_its_branch(rng):
    x = cn.Input((1, 4, 4))
    a = cn.Conv2d(1, 2, 3, padding=1)(x)
    b = cn.ReLU()(cn.Conv2d(1, 2, 1)(x))
    model = cn.Model(inputs=x, outputs=[a, b])
    model.forward(rng.standard_normal((2, 1, 4, 4)).astype(np.float32))
    model.backward([np.ones((2, 2, 4, 4), np.float32), None], input_grad=False)
    assert all(m.cache is None for m in model.modules())
    assert np.all(model.layers[1].weight.grad == 0)  # b's conv got no gradient


def test_sequential_and_residual_work_as_layers_in_a_graph(rng):
    x = cn.Input((2, 6, 6))
    body = cn.Sequential(cn.Conv2d(2, 3, 3, padding=1), cn.ReLU())
    res = cn.Residual(cn.Conv2d(3, 3, 3, padding=1))
    y = cn.Concat()([res(body(x)), x])
    model = cn.Model(inputs=x, outputs=y).astype(np.float64)
    xv = spread_values(rng, (2, 2, 6, 6))
    g = rng.standard_normal((2, 5, 6, 6))

    def loss():
        with cn.no_grad():
            return float((model.forward(xv) * g).sum())

    model.zero_grad()
    model.forward(xv)
    dx = model.backward(g)
    assert_gradient_matches(dx, loss, xv, rng, "input gradient")
    for name, param in model.named_parameters():
        assert_gradient_matches(param.grad.copy(), loss, param.data, rng, name)
    rows = model.describe().rows
    assert [r.name for r in rows if r.depth == 0] == ["seq1", "res1", "concat1"]
    assert rows[0].connected_to == ["input"] and rows[-1].connected_to == ["res1", "input"]


# -- errors at the user's line ----------------------------------------------------------------
def test_a_merge_of_sizes_that_disagree_fails_at_the_call_naming_both_producers():
    x = cn.Input((1, 28, 28))
    e1 = cn.Conv2d(1, 4, 3, padding=1)(x)
    p = cn.MaxPool2d(2)(e1)
    small = cn.Conv2d(4, 4, 3)(p)  # 14 -> 12
    with pytest.raises(cn.ShapeError) as error:
        cn.Concat(axis=1)([small, e1])
    message = str(error.value)
    assert "concat1 (Concat)" in message
    assert "conv2 12x12" in message and "conv1 28x28" in message


def test_a_conv_that_does_not_fit_fails_at_the_call():
    x = cn.Input((3, 7, 7))
    with pytest.raises(cn.ShapeError, match=r"conv1: input 7x7, filter 3, stride 3"):
        cn.Conv2d(3, 4, 3, stride=3)(x)


def test_a_channel_mismatch_fails_at_the_call():
    x = cn.Input((3, 8, 8))
    with pytest.raises(cn.ShapeError, match=r"in_channels=4 but the input reaching it has 3"):
        cn.Conv2d(4, 4, 3)(x)


def test_add_refuses_shapes_that_do_not_broadcast_and_names_the_fix():
    x = cn.Input((4, 8, 8))
    a, b = cn.Conv2d(4, 4, 1)(x), cn.Conv2d(4, 6, 1)(x)
    with pytest.raises(cn.ShapeError, match=r"add1 \(Add\): shapes that do not broadcast: "
                                            r"conv1 \(4, 8, 8\), conv2 \(6, 8, 8\).*1x1"):
        cn.Add()([a, b])


def test_mul_broadcasts_a_channel_gate():
    x = cn.Input((4, 8, 8))
    gate = cn.Sigmoid()(cn.GlobalAvgPool2d()(x))
    y = cn.Mul()([x, gate])
    assert y.shape == (4, 8, 8)


def test_model_refuses_outputs_that_need_an_input_it_was_not_given():
    x, other = cn.Input((1, 4, 4)), cn.Input((1, 4, 4), name="mask")
    y = cn.Mul()([x, other])
    with pytest.raises(ValueError, match=r"depend on the input 'mask'"):
        cn.Model(inputs=x, outputs=y)


def test_layer_called_with_a_list_where_one_tensor_is_expected():
    x = cn.Input((1, 4, 4))
    with pytest.raises(TypeError, match=r"ReLU: takes one tensor, received a list of 2"):
        cn.ReLU()([x, x])


def test_backward_needs_one_gradient_per_output(rng):
    x = cn.Input((1, 4, 4))
    model = cn.Model(inputs=x, outputs=[cn.ReLU()(x), cn.Sigmoid()(x)])
    model.forward(rng.standard_normal((1, 1, 4, 4)).astype(np.float32))
    with pytest.raises(TypeError, match="has 2 outputs; pass a list of 2 gradients"):
        model.backward(np.ones((1, 1, 4, 4), np.float32))


def test_names_are_unique_and_user_names_are_kept():
    x = cn.Input((1, 4, 4))
    a = cn.Conv2d(1, 2, 1).named("stem")(x)
    b = cn.Conv2d(2, 2, 1)(a)
    model = cn.Model(inputs=x, outputs=b)
    assert [layer.name for layer in model.layers] == ["stem", "conv1"]
    with pytest.raises(ValueError, match="layer names must be unique"):
        c = cn.Conv2d(2, 2, 1).named("stem")(b)
        cn.Model(inputs=x, outputs=c)


# -- any input size -------------------------------------------------------------------------
def test_a_fully_convolutional_graph_runs_at_other_sizes_and_rechecks_the_arithmetic(rng):
    x = cn.Input((1, 16, 16))
    a = cn.Conv2d(1, 2, 3, padding=1)(x)
    b = cn.MaxPool2d(2)(a)
    model = cn.Model(inputs=x, outputs=[b, a])
    out, skip = model.forward(rng.standard_normal((1, 1, 24, 20)).astype(np.float32))
    assert out.shape == (1, 2, 12, 10) and skip.shape == (1, 2, 24, 20)
    with pytest.raises(cn.ShapeError, match=r"pool1: input 25x20, filter 2, stride 2"):
        model.forward(rng.standard_normal((1, 1, 25, 20)).astype(np.float32))


# -- summary ----------------------------------------------------------------------------------
def test_graph_summary_connects_rows_counts_parameters_once_and_takes_the_widest_field():
    x = cn.Input((3, 16, 16))
    conv = cn.Conv2d(3, 3, 3, padding=1)
    deep = conv(conv(x))                      # 5x5 field
    shallow = cn.Conv2d(3, 3, 1)(x)           # 1x1 field
    y = cn.Add()([shallow, deep])
    model = cn.Model(inputs=x, outputs=y)
    summary = model.describe()
    assert summary.total_params == model.num_parameters() == 84 + 12
    rows = {(row.name, tuple(row.connected_to)): row for row in summary.rows}
    again = rows[("conv1", ("conv1",))]
    assert again.params == 0 and again.shared_with == "conv1"
    assert rows[("add1", ("conv2", "conv1#2"))].receptive_field == (5, 5)
    table = str(summary)
    assert "Connected to" in table and "shared with conv1" in table
    data = summary.to_dict()
    assert data["outputs"] == [{"name": "add1", "shape": [3, 16, 16]}]
    assert data["receptive_field"] == [5, 5]


def test_a_unet_whose_decoder_misses_the_encoder_gets_both_fixes():
    x = cn.Input((1, 28, 28))
    e1 = cn.ReLU()(cn.Conv2d(1, 4, 3, padding=1)(x))                         # 28x28
    e2 = cn.ReLU()(cn.Conv2d(4, 4, 3, padding=1)(cn.MaxPool2d(2)(e1)))       # 14x14
    e3 = cn.ReLU()(cn.Conv2d(4, 4, 3, padding=1)(cn.MaxPool2d(2)(e2)))       # 7x7
    bottom = cn.MaxPool2d(2, strict=False)(e3)                              # 3x3, floored
    up = cn.ConvTranspose2d(4, 4, 2, stride=2)(bottom)                       # 6x6
    with pytest.raises(cn.ShapeError) as error:
        cn.Concat(axis=1)([up, e3])
    assert str(error.value) == (
        "concat1 (Concat): spatial sizes differ: deconv1 6x6, relu3 7x7; deconv1 "
        "(ConvTranspose2d) with output_padding=1 gives 7x7, or pad the input to 32x32 (the "
        "network downsamples by 8x8)")
    fixed = cn.ConvTranspose2d(4, 4, 2, stride=2, output_padding=1)(bottom)
    assert cn.Concat(axis=1)([fixed, e3]).shape == (8, 7, 7)
