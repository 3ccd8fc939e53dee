"""Layers: a hand example, each layer against its functional op and against PyTorch's nn
layer on the same weights (forward, input and parameter gradients), float64 gradient checks
through composite blocks, train/eval switching, laziness, seeding, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnn_course.functional as F
from cnn_course import nn, zoo
from cnn_course.backend import array_module, to_numpy
from cnn_course.gradcheck import check_gradients

# ------------------------------------------------------------------------------ helpers


def set_params(layer: nn.Module, arrays) -> None:
    for p, a in zip(layer.parameters(), arrays, strict=True):
        p.data = a


def run(layer: nn.Module, x, grad_out):
    """Forward then backward; returns (y, grad_x, [parameter grads])."""
    layer.zero_grad()
    y = layer.forward(x)
    grad_x = layer.backward(grad_out)
    return y, grad_x, [p.grad for p in layer.parameters()]


def share_random_parameters(torch, ours: nn.Module, theirs, rng) -> None:
    """Give our layer and PyTorch's the same random parameters (drawn here, by neither)."""
    with torch.no_grad():
        for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
            assert p.shape == tuple(q.shape)
            q.copy_(torch.from_numpy(rng.standard_normal(p.shape)))
            p.data = q.numpy().copy()


def assert_step_matches_torch(torch, ours: nn.Module, theirs, x, rng) -> None:
    """One forward and backward of both on ``x`` and a random ``grad_out``: outputs, input
    gradients and parameter gradients agree (torch's gradients are reset afterwards)."""
    xt = torch.from_numpy(x).requires_grad_()
    yt = theirs(xt)
    grad_out = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.from_numpy(grad_out))
    y, grad_x, grads = run(ours, x, grad_out)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad_x, xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    for g, q in zip(grads, theirs.parameters(), strict=True):
        np.testing.assert_allclose(g, q.grad.numpy(), rtol=1e-9, atol=1e-11)
        q.grad = None


def check_module_gradients(layer: nn.Module, x, rng, eps: float = 1e-6) -> None:
    """Float64 centred differences for the input and every parameter of ``layer``.

    Batch norm runs in eval mode, with running statistics from one training batch: a fixed
    affine map. (In training mode it subtracts the batch mean, which makes many gradients
    of the layers before it nearly cancel, to ~1e-4, where the round-off of a centred
    difference, ~1e-9, exceeds a 1e-6 relative error; training mode through these blocks
    is checked against PyTorch's autograd instead.)

    ``eps`` is the centred-difference step. Its round-off, ~1e-15 / eps in absolute terms,
    decides how small a gradient entry can be and still be checked to 1e-6 relative error.
    A block of convolutions, eval-mode batch norm, ReLU, max pooling, additions and
    concatenations is piecewise linear in its input and in each single parameter, so its
    centred difference has no truncation error: the blocks use a step of 1e-5, which keeps
    entries down to ~1e-4 measurable. (A step of 1e-4 already crosses ReLU6 kinks.)"""
    xp = array_module(x)
    layer.to("float64")
    layer.forward(x + xp.asarray(rng.standard_normal(x.shape)))
    layer.eval()
    params = list(layer.parameters())
    arrays = [p.data.copy() for p in params]

    def f(x_, *ps):
        for p, a in zip(params, ps, strict=True):
            p.data = a
        return layer.forward(x_)

    grad_out = xp.asarray(rng.standard_normal(f(x, *arrays).shape))
    _, grad_x, grads = run(layer, x, grad_out)
    names = ["x"] + [n for n, _ in layer.named_parameters()]
    check_gradients(f, [x, *arrays], [grad_x, *grads], grad_out, names, eps=eps)


# ------------------------------------------------------------------------ hand example


def test_small_sequential_hand_example(xp):
    # 1x1x3x3 input, 2x2 kernel of ones, bias -10, then ReLU and a linear layer [1, 2]:
    # conv windows sum to 12, 16, 24, 28; minus 10: 2, 6, 14, 18; ReLU keeps them;
    # flatten -> [2, 6, 14, 18]; linear weight [[1, 0, 0, 1]], bias 0.5 -> 20.5.
    model = nn.Sequential(nn.Conv2d(1, 1, 2), nn.ReLU(), nn.Flatten(), nn.Linear(4, 1)).to(
        "float64"
    )
    set_params(
        model,
        [
            xp.ones((1, 1, 2, 2)),
            xp.asarray([-10.0]),
            xp.asarray([[1.0, 0.0, 0.0, 1.0]]),
            xp.asarray([0.5]),
        ],
    )
    x = xp.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    y = model.forward(x)
    np.testing.assert_allclose(to_numpy(y), [[20.5]])
    # dy/dx: each conv output with weight 1 (corners) spreads a 2x2 block of ones.
    grad_x = model.backward(xp.ones((1, 1)))
    np.testing.assert_allclose(
        to_numpy(grad_x)[0, 0], [[1.0, 1.0, 0.0], [1.0, 2.0, 1.0], [0.0, 1.0, 1.0]]
    )
    w = model[0].weight.grad
    # the conv outputs that reach y are the corners (0, 0) and (1, 1): x[i, j] + x[i+1, j+1]
    np.testing.assert_allclose(to_numpy(w)[0, 0], [[1 + 5, 2 + 6], [4 + 8, 5 + 9]])
    np.testing.assert_allclose(to_numpy(model[3].weight.grad), [[2.0, 6.0, 14.0, 18.0]])


def test_add_versus_concat_hand_example(xp):
    # f = 1x1 convolution doubling each channel. Add: x + 2x = 3x, 2 channels.
    # Concat: [x, 2x], 4 channels. Both send back 1 + 2 = 3 per input for a gradient of ones.
    def doubling():
        conv = nn.Conv2d(2, 2, 1, bias=False).to("float64")
        conv.weight.data = xp.asarray([[[[2.0]], [[0.0]]], [[[0.0]], [[2.0]]]])
        return conv

    x = xp.asarray([[[[1.0, -2.0]], [[3.0, 4.0]]]])  # (1, 2, 1, 2)
    add, cat = nn.ResidualAdd(doubling()), nn.DenseConcat(nn.Identity(), doubling())
    np.testing.assert_allclose(to_numpy(add(x)), [[[[3.0, -6.0]], [[9.0, 12.0]]]])
    np.testing.assert_allclose(
        to_numpy(cat(x)), [[[[1.0, -2.0]], [[3.0, 4.0]], [[2.0, -4.0]], [[6.0, 8.0]]]]
    )
    np.testing.assert_allclose(to_numpy(add.backward(xp.ones((1, 2, 1, 2)))), 3.0)
    np.testing.assert_allclose(to_numpy(cat.backward(xp.ones((1, 4, 1, 2)))), 3.0)
    assert add.output_shape((1, 2, 1, 2)) == (1, 2, 1, 2)
    assert cat.output_shape((1, 2, 1, 2)) == (1, 4, 1, 2)


# ------------------------------------------------------------------- layers vs the op


def test_layers_call_their_ops(xp, rng):
    x = xp.asarray(rng.standard_normal((2, 4, 6, 5)))
    conv = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
    conv.to("float64")
    np.testing.assert_array_equal(
        to_numpy(conv(x)),
        to_numpy(F.conv2d(x, conv.weight.data, conv.bias.data, (2, 1), 1, (1, 2), 2)),
    )
    pool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
    np.testing.assert_array_equal(
        to_numpy(pool(x)), to_numpy(F.max_pool2d(x, 3, 2, 1, ceil_mode=True))
    )
    bn = nn.BatchNorm2d(4).to("float64")
    running = (xp.zeros(4), xp.ones(4))
    expected = F.batch_norm(x, *running, bn.weight.data, bn.bias.data, training=True)
    np.testing.assert_array_equal(to_numpy(bn(x)), to_numpy(expected))
    np.testing.assert_array_equal(to_numpy(bn.running_mean), to_numpy(running[0]))


# ---------------------------------------------------------------- the PyTorch oracle

LAYERS = [
    # (ours, torch constructor name, torch args, input shape)
    (lambda: nn.Conv2d(4, 6, 3), "Conv2d", (4, 6, 3), (2, 4, 7, 6)),
    (
        lambda: nn.Conv2d(4, 6, (3, 2), (2, 1), (1, 0), (2, 1), groups=2, bias=False),
        "Conv2d",
        (4, 6, (3, 2), (2, 1), (1, 0), (2, 1), 2, False),
        (2, 4, 9, 7),
    ),
    (lambda: nn.Conv2d(3, 3, 3, 2, 1, groups=3), "Conv2d", (3, 3, 3, 2, 1, 1, 3), (1, 3, 7, 8)),
    (
        lambda: nn.ConvTranspose2d(4, 6, 3, 2, 1, 1, groups=2),
        "ConvTranspose2d",
        (4, 6, 3, 2, 1, 1, 2),
        (2, 4, 4, 5),
    ),
    (lambda: nn.Linear(7, 5), "Linear", (7, 5), (3, 7)),
    (lambda: nn.Linear(7, 5, bias=False), "Linear", (7, 5, False), (3, 7)),
    (lambda: nn.ReLU(), "ReLU", (), (2, 3, 4, 5)),
    (lambda: nn.ReLU6(), "ReLU6", (), (2, 3, 4, 5)),
    (lambda: nn.LeakyReLU(0.2), "LeakyReLU", (0.2,), (2, 3, 4, 5)),
    (lambda: nn.PReLU(3, 0.3), "PReLU", (3, 0.3), (2, 3, 4, 5)),
    (lambda: nn.PReLU(), "PReLU", (), (2, 3, 4, 5)),
    (lambda: nn.ELU(0.7), "ELU", (0.7,), (2, 3, 4, 5)),
    (lambda: nn.Sigmoid(), "Sigmoid", (), (2, 3, 4, 5)),
    (lambda: nn.Tanh(), "Tanh", (), (2, 3, 4, 5)),
    (
        lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True),
        "MaxPool2d",
        (3, 2, 1, 1, False, True),
        (2, 3, 8, 7),
    ),
    (lambda: nn.MaxPool2d((2, 3), dilation=2), "MaxPool2d", ((2, 3), None, 0, 2), (2, 3, 8, 9)),
    (lambda: nn.AvgPool2d(3, 2, 1, True, False), "AvgPool2d", (3, 2, 1, True, False), (2, 3, 8, 7)),
    (lambda: nn.AdaptiveAvgPool2d((3, 2)), "AdaptiveAvgPool2d", ((3, 2),), (2, 3, 7, 5)),
    (lambda: nn.BatchNorm2d(3), "BatchNorm2d", (3,), (4, 3, 5, 6)),
    (lambda: nn.BatchNorm1d(3), "BatchNorm1d", (3,), (6, 3)),
    (lambda: nn.BatchNorm1d(3), "BatchNorm1d", (3,), (4, 3, 5)),
    (lambda: nn.GroupNorm(2, 4), "GroupNorm", (2, 4), (3, 4, 5, 2)),
    (lambda: nn.LayerNorm((5, 2)), "LayerNorm", ((5, 2),), (3, 4, 5, 2)),
    (lambda: nn.Flatten(), "Flatten", (), (2, 3, 4, 5)),
]


@pytest.mark.oracle
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(("make", "name", "args", "shape"), LAYERS)
def test_layer_matches_torch(torch, rng, make, name, args, shape, training):
    ours = make().to("float64").train(training)
    theirs = getattr(torch.nn, name)(*args).double().train(training)
    share_random_parameters(torch, ours, theirs, rng)
    for _ in range(2):  # a second step sees the running statistics of the first
        assert_step_matches_torch(torch, ours, theirs, rng.standard_normal(shape), rng)
        for buffer in ("running_mean", "running_var"):
            if hasattr(theirs, buffer):
                np.testing.assert_allclose(getattr(ours, buffer), getattr(theirs, buffer).numpy())


@pytest.mark.oracle
@settings(max_examples=15)
@given(
    data=st.data(),
    groups=st.sampled_from([1, 2]),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 2)),
    padding=st.tuples(st.integers(0, 2), st.integers(0, 1)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
)
def test_conv2d_layer_matches_torch_random(torch, data, groups, kernel, stride, padding, dilation):
    t = torch
    h = data.draw(st.integers(dilation[0] * (kernel[0] - 1) + 1, 9))
    w = data.draw(st.integers(dilation[1] * (kernel[1] - 1) + 1, 9))
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    ours = nn.Conv2d(2 * groups, 2 * groups, kernel, stride, padding, dilation, groups).to(
        "float64"
    )
    theirs = t.nn.Conv2d(2 * groups, 2 * groups, kernel, stride, padding, dilation, groups).double()
    with t.no_grad():
        theirs.weight.copy_(t.from_numpy(ours.weight.data))
        theirs.bias.copy_(t.from_numpy(ours.bias.data))
    x = rng.standard_normal((2, 2 * groups, h, 2 * w))[..., ::2]  # a non-contiguous input
    xt = t.from_numpy(np.ascontiguousarray(x)).requires_grad_()
    yt = theirs(xt)
    grad_out = rng.standard_normal(tuple(yt.shape))
    yt.backward(t.from_numpy(grad_out))
    y, grad_x, (gw, gb) = run(ours, x, grad_out)
    assert ours.output_shape(x.shape) == tuple(yt.shape)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad_x, xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(gw, theirs.weight.grad.numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(gb, theirs.bias.grad.numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.oracle
def test_dropout_matches_torch_semantics(torch, rng):
    # the masks differ from torch's generator, so compare the rule: kept values scaled by
    # 1/(1-p) in training, the same mask in backward, identity in eval
    layer = nn.Dropout(0.25, seed=3)
    x = rng.standard_normal((50, 40)) + 5
    y = layer.forward(x)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.75)
    assert 0.2 < 1 - kept.mean() < 0.3
    np.testing.assert_allclose(layer.backward(np.ones_like(x)), kept / 0.75)
    torch_eval = torch.nn.Dropout(0.25).eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(layer.eval().forward(x), torch_eval)
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), np.ones_like(x))


@pytest.mark.oracle
def test_basic_block_matches_torch_resnet_block(torch, rng):
    # torchvision's BasicBlock, written out with torch.nn (torchvision is not available)
    tnn = torch.nn

    class TorchBasicBlock(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = tnn.Conv2d(3, 4, 3, 2, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(4)
            self.conv2 = tnn.Conv2d(4, 4, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(4)
            self.down = tnn.Sequential(tnn.Conv2d(3, 4, 1, 2, bias=False), tnn.BatchNorm2d(4))

        def forward(self, x):
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(out + self.down(x))

    theirs = TorchBasicBlock().double()
    ours = nn.BasicBlock(3, 4, stride=2).to("float64")
    share_random_parameters(torch, ours, theirs, rng)
    assert_step_matches_torch(torch, ours, theirs, rng.standard_normal((2, 3, 7, 6)), rng)


# ------------------------------------------------------------------ gradient checks


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda: nn.BasicBlock(2, 3, stride=2), (2, 2, 5, 4)),
        (lambda: nn.BasicBlock(3, 3), (2, 3, 4, 4)),
        (lambda: nn.Bottleneck(4, 2, stride=2), (2, 4, 5, 5)),
        (lambda: nn.Bottleneck(8, 2), (2, 8, 3, 3)),
        (lambda: nn.InceptionModule(3, 2, 2, 3, 1, 2, 2), (2, 3, 4, 5)),
        (lambda: nn.DepthwiseSeparableConv(2, 3, stride=2), (2, 2, 5, 5)),
        (lambda: nn.InvertedResidual(2, 2, 1, 2), (2, 2, 4, 4)),
        (lambda: nn.DenseConcat(nn.Identity(), nn.Conv2d(2, 2, 3, padding=1)), (2, 2, 4, 3)),
    ],
)
def test_block_gradients(xp, rng, make, shape):
    nn.manual_seed(0)
    check_module_gradients(make(), xp.asarray(rng.standard_normal(shape)), rng, eps=1e-5)


def test_smooth_layers_gradients(xp, rng):
    """Group norm, PReLU, average pooling, transposed convolution, layer norm and tanh in
    one model (smooth: the default step)."""
    nn.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.GroupNorm(1, 3),
        nn.PReLU(3),
        nn.AvgPool2d(2),
        nn.ConvTranspose2d(3, 2, 2, 2),
        nn.LeakyReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Flatten(),
        nn.LayerNorm(4),
        nn.Linear(4, 3),
        nn.Tanh(),
    )
    check_module_gradients(model, xp.asarray(rng.standard_normal((2, 2, 4, 3))), rng)


# ------------------------------------------------------------- modes, laziness, seeds


def test_train_eval_switches_every_layer(rng):
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5, seed=0))
    x = rng.standard_normal((8, 4)).astype(np.float32)
    y1, y2 = model(x), model(x)
    assert not np.array_equal(y1, y2)  # fresh dropout masks
    assert not np.allclose(model[1].running_mean, 0)
    mean = model[1].running_mean.copy()
    model.eval()
    assert all(not m.training for m in model.modules())
    np.testing.assert_array_equal(model(x), model(x))
    np.testing.assert_array_equal(model[1].running_mean, mean)  # eval does not update
    assert model.train().training and model[2].training


def test_parameters_are_lazy_and_seeded():
    model = zoo.vgg16()
    params = list(model.parameters())
    assert len(params) == 32 and not any(p.allocated for p in params)
    assert sum(p.size for p in params) == 138_357_544
    nn.manual_seed(5)
    a = nn.Conv2d(2, 3, 3)
    nn.manual_seed(5)
    b = nn.Conv2d(2, 3, 3)
    # first touched in a different order: the values do not depend on it
    np.testing.assert_array_equal(b.bias.data, b.bias.data)
    bias_b, weight_b = b.bias.data, b.weight.data
    np.testing.assert_array_equal(a.weight.data, weight_b)
    np.testing.assert_array_equal(a.bias.data, bias_b)
    assert a.weight.data.dtype == np.float32
    # PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = 2 * 3 * 3 = 18
    assert np.abs(a.weight.data).max() <= 1 / np.sqrt(18)
    assert np.abs(a.bias.data).max() <= 1 / np.sqrt(18)


def test_gradients_accumulate_until_zero_grad(rng):
    layer = nn.Linear(3, 2).to("float64")
    x, g = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    _, _, (w1, _) = run(layer, x, g)
    layer.forward(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * w1)
    layer.zero_grad()
    assert layer.weight.grad is None and layer.bias.grad is None


@pytest.mark.oracle
def test_backward_params_gives_backwards_parameter_gradients_and_skips_the_input(
    torch, rng, monkeypatch
):
    """A training step's ``backward_params``: every parameter gets the gradient PyTorch's
    autograd gives (and the one ``backward`` gives, bit for bit), and the first convolution
    is asked for no input gradient (a spy on the functional backward)."""
    model = zoo.lenet5(seed=0)
    x = rng.standard_normal((4, 1, 28, 28)).astype("float32")
    y = np.array([3, 1, 4, 1])
    grad = F.cross_entropy_backward(1.0, model.forward(x), y)
    model.backward(grad)
    full = [to_numpy(p.grad).copy() for p in model.parameters()]
    model.zero_grad()
    calls = []
    real = F.conv2d_backward

    def spy(*args, **kwargs):
        calls.append(kwargs.get("input_grad", True))
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "conv2d_backward", spy)
    assert model.backward_params(grad) is None
    assert calls == [True, False]  # C3 passes its gradient on; C1 has no one to pass it to
    for p, want in zip(model.parameters(), full, strict=True):
        np.testing.assert_array_equal(to_numpy(p.grad), want)

    tmodel = _torch_lenet(torch, model)
    loss = torch.nn.functional.cross_entropy(tmodel(torch.tensor(x)), torch.tensor(y))
    loss.backward()
    for p, t in zip(model.parameters(), tmodel.parameters(), strict=True):
        np.testing.assert_allclose(to_numpy(p.grad), t.grad.numpy(), rtol=1e-4, atol=1e-6)


def _torch_lenet(torch, model):
    """PyTorch's LeNet-5 with ``model``'s weights."""
    tnn = torch.nn
    tmodel = tnn.Sequential(
        tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
        tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(), tnn.Linear(84, 10),
    )  # fmt: skip
    with torch.no_grad():
        for p, t in zip(model.parameters(), tmodel.parameters(), strict=True):
            t.copy_(torch.tensor(to_numpy(p.data)))
    return tmodel


def test_backward_params_skips_the_layers_before_the_first_parameter(rng):
    """Layers before the first one with parameters are not run backward at all, and a
    network without parameters does nothing."""
    seen = []

    class Spy(nn.ReLU):
        def backward(self, grad_out):
            seen.append("relu")
            return super().backward(grad_out)

    model = nn.Sequential(Spy(), nn.Flatten(), nn.Linear(12, 2))
    x = rng.standard_normal((3, 3, 2, 2)).astype("float32")
    out = model.forward(x)
    model.backward_params(np.ones_like(out))
    assert seen == []
    expected = np.ones((2, 3)) @ np.maximum(x, 0).reshape(3, -1)  # grad_out^T @ input
    np.testing.assert_allclose(model.layers[2].weight.grad, expected, rtol=1e-6)
    assert nn.Sequential(Spy()).backward_params(np.ones((1, 2))) is None
    assert seen == []


def test_named_parameters_and_shapes():
    block = nn.BasicBlock(2, 4, stride=2)
    names = [n for n, _ in block.named_parameters()]
    assert names == [
        "0.main.0.weight",
        "0.main.1.weight",
        "0.main.1.bias",
        "0.main.3.weight",
        "0.main.4.weight",
        "0.main.4.bias",
        "0.shortcut.0.weight",
        "0.shortcut.1.weight",
        "0.shortcut.1.bias",
    ]
    assert block.output_shape((5, 2, 9, 8)) == (5, 4, 5, 4)
    # 4*2*9 + 4*4*9 + 4*2 = 72 + 144 + 8 MACs per output position, 5*4 positions
    assert block.macs((1, 2, 9, 8)) == 20 * 224


def test_inputs_unchanged(rng):
    model = nn.Sequential(nn.Conv2d(2, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Dropout(0.5))
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    x0 = x.copy()
    y = model(x)
    g = rng.standard_normal(y.shape).astype(np.float32)
    g0 = g.copy()
    grad_x = model.backward(g)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(g, g0)
    assert y.dtype == grad_x.dtype == np.float32


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="Conv2d: groups=2 must divide in_channels=3"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="Conv2d: stride must be positive, got 0"):
        nn.Conv2d(3, 4, 3, stride=0)
    with pytest.raises(ValueError, match="Conv2d: input has 2 channels, expected 3"):
        nn.Conv2d(3, 4, 3).output_shape((1, 2, 8, 8))
    with pytest.raises(ValueError, match="kernel extent 5 .* larger than the padded input 4"):
        nn.Conv2d(3, 4, 5).output_shape((1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"Linear: input must be \(N, 4\), got shape \(1, 5\)"):
        nn.Linear(4, 2).output_shape((1, 5))
    with pytest.raises(RuntimeError, match="Linear.backward called before forward"):
        nn.Linear(4, 2).backward(np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"Parameter: data must have shape \(2, 3\), got \(3, 2\)"):
        nn.Parameter((2, 3)).data = np.zeros((3, 2))
    with pytest.raises(TypeError, match="Sequential: item 1 is int, not a Module"):
        nn.Sequential(nn.ReLU(), 3)
    with pytest.raises(ValueError, match="BatchNorm2d: input must have 4 dimensions"):
        nn.BatchNorm2d(3).forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="ResidualAdd: main output .* and shortcut output"):
        nn.ResidualAdd(nn.Conv2d(2, 3, 1)).output_shape((1, 2, 4, 4))
    with pytest.raises(ValueError, match="GroupNorm: num_groups=3 must divide num_channels=4"):
        nn.GroupNorm(3, 4)
    # the layer rejects what F.dropout rejects (p = 1 would divide by 1 - p = 0)
    for p in (1.0, 1.5, -0.5):
        message = rf"ropout: p \(the drop probability\) must be in \[0, 1\), got {p}"
        with pytest.raises(ValueError, match="D" + message):
            nn.Dropout(p)
        with pytest.raises(ValueError, match="d" + message):
            F.dropout(np.ones(3), p)


def test_each_layer_describes_itself_in_one_place():
    """One shape-only description per layer (``describe``); ``output_shape`` and ``macs``
    read it, and containers walk their children with ``trace``."""
    layers = [getattr(nn, name) for name in nn.__all__]
    modules = [
        c for c in layers if isinstance(c, type) and issubclass(c, nn.Module) and c is not nn.Module
    ]
    for cls in modules:
        assert "output_shape" not in vars(cls) and "macs" not in vars(cls), cls.__name__
        assert not hasattr(cls, "rf_params"), cls.__name__
    block = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    spec = block.describe((1, 2, 8, 8))
    # 4 filters * 8*8 positions * 2*3*3 taps = 4,608 MACs; 4*(18+1) = 76 parameters
    assert (spec.output_shape, spec.macs, spec.params) == ((1, 4, 4, 4), 4_608, 0)
    assert sum(p.size for p in block.parameters()) == 76
    assert block.output_shape((1, 2, 8, 8)) == (1, 4, 4, 4) and block.macs((1, 2, 8, 8)) == 4_608
