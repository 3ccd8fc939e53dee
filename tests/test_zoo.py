"""Model zoo: parameter counts equal torchvision's, MACs equal torchvision's "GFLOPS" column
(which counts multiply-accumulates) within its rounding, nothing is allocated by building or
summarising, and small forward/backward passes (LeNet-5, GoogLeNet's auxiliary heads)."""

from __future__ import annotations

import numpy as np
import pytest

from cnn_course import functional as F
from cnn_course import nn, zoo
from cnn_course.analysis import count_parameters, summary


def test_lenet5_hand_counts_and_one_training_step(rng):
    # conv1 6*(1*25)+6 = 156, conv2 16*(6*25)+16 = 2416, fc 400*120+120 = 48120,
    # 120*84+84 = 10164, 84*10+10 = 850: total 61,706
    model = zoo.lenet5(num_classes=10, in_channels=1, seed=0)
    s = summary(model, (1, 28, 28))
    assert [r.params for r in s.rows if r.params] == [156, 2416, 48120, 10164, 850]
    assert s.total_params == 61_706
    assert s.receptive_field.size == (16, 16)
    x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
    target = rng.integers(0, 10, 8)
    logits = model.forward(x)
    loss = F.cross_entropy(logits, target)
    model.backward(F.cross_entropy_backward(np.float32(1.0), logits, target))
    for p in model.parameters():  # one SGD step lowers the loss on this batch
        assert p.grad.shape == p.shape and p.grad.dtype == np.float32
        p.data = p.data - 0.05 * p.grad
    assert F.cross_entropy(model.forward(x), target) < loss


# torchvision's model tables: parameters and GFLOPS (MACs, 224x224, rounded to 0.01)
PUBLISHED = [
    ("alexnet", 61_100_840, 0.71),
    ("vgg16", 138_357_544, 15.47),
    ("googlenet", 6_624_904, 1.50),
    ("resnet18", 11_689_512, 1.81),
    ("resnet50", 25_557_032, 4.09),
    ("mobilenet_v2", 3_504_872, 0.30),
    ("densenet121", 7_978_856, 2.83),
    ("efficientnet_b0", 5_288_548, 0.39),
    ("convnext_tiny", 28_589_128, 4.46),
]


@pytest.mark.parametrize(("name", "params", "gmacs"), PUBLISHED)
def test_parameters_and_macs_match_torchvision(name, params, gmacs):
    model = getattr(zoo, name)()
    s = summary(model, (3, 224, 224))
    assert s.total_params == count_parameters(model) == params
    assert round(s.total_macs / 1e9, 2) == gmacs
    assert s.total_flops == 2 * s.total_macs
    assert s.output_shape == (1, 1000)
    assert not any(p.allocated for p in model.parameters())  # shapes only


def test_mobilenet_v1_matches_paper():
    s = summary(zoo.mobilenet_v1(), (3, 224, 224))
    # Howard et al. 2017, Table 1: 4.2 M parameters and 569 M mult-adds. Convolution and
    # fully connected weights: 864 + sum over blocks of (9 C_in + C_in C_out) + 1024 * 1000
    # = 4,221,032; plus 2 * 5,472 batch-norm parameters and the 1000 output biases.
    assert s.total_params == 4_231_976
    assert sum(2 * r.params for r in s.rows if r.type == "BatchNorm2d") == 4 * 10_944
    assert round(s.total_macs / 1e6) == 569


def test_googlenet_auxiliary_heads():
    without, with_aux = zoo.googlenet(), zoo.googlenet(aux_logits=True)
    # each head: conv 1x1 (C_in*128) + BN (256) + fc 2048->1024 (+1024) + fc 1024->1000 (+1000)
    aux1 = 512 * 128 + 256 + 2048 * 1024 + 1024 + 1024 * 1000 + 1000
    aux2 = 528 * 128 + 256 + 2048 * 1024 + 1024 + 1024 * 1000 + 1000
    assert count_parameters(without) == 6_624_904
    assert count_parameters(with_aux) == 6_624_904 + aux1 + aux2 == 13_004_888
    assert summary(with_aux, (3, 224, 224)).total_params == 13_004_888


def test_googlenet_aux_forward_backward_small(rng):
    model = zoo.googlenet(num_classes=3, aux_logits=True, seed=0)
    x = rng.standard_normal((2, 3, 64, 64)).astype(np.float32)
    out, aux2, aux1 = model.forward(x)
    assert out.shape == aux2.shape == aux1.shape == (2, 3)
    grad_x = model.backward((np.ones_like(out), np.ones_like(aux2), np.ones_like(aux1)))
    assert grad_x.shape == x.shape and np.isfinite(grad_x).all()
    assert model.aux1.layers[-1].weight.grad is not None
    model.eval()
    assert model.forward(x).shape == (2, 3)  # eval: logits only


def test_num_classes_and_seed():
    assert summary(zoo.resnet18(num_classes=7), (3, 64, 64)).output_shape == (1, 7)
    a, b = zoo.lenet5(seed=3), zoo.lenet5(seed=3)
    np.testing.assert_array_equal(a[0].weight.data, b[0].weight.data)
    assert isinstance(zoo.mobilenet_v2(), nn.Module)


# torchvision's weight metadata ("_ops", the GFLOPS column before rounding to 0.01)
@pytest.mark.parametrize(
    ("name", "ops"), [("densenet121", 2.834), ("efficientnet_b0", 0.386), ("convnext_tiny", 4.456)]
)
def test_macs_match_torchvision_to_three_decimals(name, ops):
    assert round(summary(getattr(zoo, name)(), (3, 224, 224)).total_macs / 1e9, 3) == ops


# torchvision's EfficientNet_B1/B2/B3_Weights: num_params, and "_ops" at the weights' crop size
@pytest.mark.parametrize(
    ("variant", "params", "size", "ops"),
    [
        ("b1", 7_794_184, 240, 0.687),
        ("b2", 9_109_994, 288, 1.088),
        ("b3", 12_233_232, 300, 1.827),
    ],
)
def test_efficientnet_compound_scaling_matches_torchvision(variant, params, size, ops):
    s = summary(zoo.efficientnet(variant), (3, size, size))
    assert s.total_params == params
    assert round(s.total_macs / 1e9, 3) == ops
    assert zoo.EFFICIENTNET_SCALING[variant][2] == {"b1": 240, "b2": 260, "b3": 300}[variant]


def test_efficientnet_rejects_unknown_variant():
    with pytest.raises(ValueError, match="variant"):
        zoo.efficientnet("b9")


# ---- the post-2018 blocks against the same blocks written with torch.nn (torchvision's
# definitions; torchvision itself is not importable here), forward and backward in float64


def _share(torch, ours, theirs, rng):
    """Same random parameters in both (drawn here); torch's Linear weights (out, in) are our
    1x1 convolutions' (out, in, 1, 1)."""
    with torch.no_grad():
        for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
            assert p.size == q.numel()
            q.copy_(torch.from_numpy(rng.standard_normal(tuple(q.shape))))
            p.data = q.numpy().reshape(p.shape).copy()


def _assert_step_matches(torch, ours, theirs, x, rng):
    xt = torch.from_numpy(x).requires_grad_()
    yt = theirs(xt)
    grad_out = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.from_numpy(grad_out))
    ours.zero_grad()
    y = ours.forward(x)
    grad_x = ours.backward(grad_out)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad_x, xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        np.testing.assert_allclose(p.grad.reshape(q.shape), q.grad.numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.oracle
def test_dense_layer_matches_torch(torch, rng):
    tnn = torch.nn

    class DenseLayer(tnn.Module):  # torchvision's _DenseLayer, bn_size 4
        def __init__(self, c, growth):
            super().__init__()
            self.f = tnn.Sequential(
                tnn.BatchNorm2d(c), tnn.ReLU(), tnn.Conv2d(c, 4 * growth, 1, bias=False),
                tnn.BatchNorm2d(4 * growth), tnn.ReLU(),
                tnn.Conv2d(4 * growth, growth, 3, padding=1, bias=False),
            )  # fmt: skip

        def forward(self, x):
            return torch.cat([x, self.f(x)], 1)

    ours, theirs = zoo._dense_layer(5, 3, 4).to("float64"), DenseLayer(5, 3).double()
    _share(torch, ours, theirs, rng)
    _assert_step_matches(torch, ours, theirs, rng.standard_normal((2, 5, 6, 5)), rng)
    assert ours.forward(np.zeros((1, 5, 4, 4))).shape == (1, 8, 4, 4)  # 5 + growth 3


@pytest.mark.oracle
@pytest.mark.parametrize(
    ("c_in", "c_out", "stride", "expand"), [(4, 4, 1, 6), (4, 8, 2, 6), (8, 4, 1, 1)]
)
def test_mbconv_block_matches_torch(torch, rng, c_in, c_out, stride, expand):
    tnn = torch.nn
    hidden = c_in * expand

    def cba(i, o, k, s=1, groups=1, act=True):
        layers = [tnn.Conv2d(i, o, k, s, k // 2, groups=groups, bias=False), tnn.BatchNorm2d(o)]
        return layers + [tnn.SiLU()] if act else layers

    class SE(tnn.Module):  # torchvision.ops.SqueezeExcitation(hidden, c_in // 4, SiLU)
        def __init__(self):
            super().__init__()
            self.fc1 = tnn.Conv2d(hidden, max(1, c_in // 4), 1)
            self.fc2 = tnn.Conv2d(max(1, c_in // 4), hidden, 1)

        def forward(self, x):
            s = tnn.functional.adaptive_avg_pool2d(x, 1)
            return x * torch.sigmoid(self.fc2(tnn.functional.silu(self.fc1(s))))

    class MBConv(tnn.Module):  # torchvision's MBConv without stochastic depth
        def __init__(self):
            super().__init__()
            expand_layers = cba(c_in, hidden, 1) if expand != 1 else []
            self.block = tnn.Sequential(
                *expand_layers, *cba(hidden, hidden, 3, stride, hidden), SE(),
                *cba(hidden, c_out, 1, act=False),
            )  # fmt: skip

        def forward(self, x):
            y = self.block(x)
            return y + x if stride == 1 and c_in == c_out else y

    ours, theirs = zoo._mbconv(c_in, c_out, 3, stride, expand).to("float64"), MBConv().double()
    _share(torch, ours, theirs, rng)
    _assert_step_matches(torch, ours, theirs, rng.standard_normal((2, c_in, 6, 7)), rng)


@pytest.mark.oracle
def test_convnext_block_matches_torch(torch, rng):
    tnn, dim = torch.nn, 4

    class CNBlock(tnn.Module):  # torchvision's CNBlock without stochastic depth
        def __init__(self):
            super().__init__()
            self.dw = tnn.Conv2d(dim, dim, 7, padding=3, groups=dim)
            self.norm = tnn.LayerNorm(dim, eps=1e-6)
            self.pw1, self.pw2 = tnn.Linear(dim, 4 * dim), tnn.Linear(4 * dim, dim)
            self.scale = tnn.Module()  # a sub-module, so that its parameter comes last
            self.scale.layer_scale = tnn.Parameter(torch.ones(dim, 1, 1) * 1e-6)

        def forward(self, x):
            y = self.dw(x).permute(0, 2, 3, 1)
            y = self.pw2(tnn.functional.gelu(self.pw1(self.norm(y)))).permute(0, 3, 1, 2)
            return self.scale.layer_scale * y + x

    ours, theirs = zoo._convnext_block(dim).to("float64"), CNBlock().double()
    _share(torch, ours, theirs, rng)
    _assert_step_matches(torch, ours, theirs, rng.standard_normal((2, dim, 5, 6)), rng)


@pytest.mark.oracle
def test_layer_norm_2d_matches_torch(torch, rng):
    x = rng.standard_normal((2, 3, 4, 5)) * 3 + 1
    layer = nn.LayerNorm2d(3, eps=1e-6).to("float64")
    theirs = torch.nn.LayerNorm(3, eps=1e-6).double()
    _share(torch, layer, theirs, rng)

    class Permuted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = theirs

        def forward(self, x):
            return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    _assert_step_matches(torch, layer, Permuted(), x, rng)
    with pytest.raises(ValueError, match="LayerNorm2d"):
        layer.forward(np.zeros((2, 4, 4, 5)))


def test_new_models_forward_backward_small(rng):
    for make in (zoo.densenet121, zoo.efficientnet_b0, zoo.convnext_tiny):
        model = make(num_classes=3, seed=0)
        x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
        out = model.forward(x)
        grad_x = model.backward(np.ones_like(out))
        assert out.shape == (2, 3) and grad_x.shape == x.shape and np.isfinite(grad_x).all()
        assert all(p.grad is not None for p in model.parameters())
