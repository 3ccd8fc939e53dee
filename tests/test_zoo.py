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
