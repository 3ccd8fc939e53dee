"""Analysis: a tiny net counted by hand, output sizes, the receptive-field recursion against
the table of Araujo, Norris and Sim (Distill 2019), analytic == empirical receptive fields,
the depthwise separable cost ratio, the summary table, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from cnn_course import analysis, nn, zoo
from cnn_course.analysis import (
    ReceptiveField,
    conv_output_size,
    depthwise_separable_cost_ratio,
    empirical_receptive_field,
    pool_output_size,
    receptive_field,
    summary,
)
from cnn_course.ops import conv, pooling


def tiny_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, groups=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def test_tiny_net_hand_example():
    s = summary(tiny_net(), (3, 32, 32))
    # conv1: floor((32 + 2 - 3) / 2) + 1 = 16; pool: 8; conv2 keeps 8; global pool: 1
    assert [r.output_shape for r in s] == [
        (1, 8, 16, 16),
        (1, 8, 16, 16),
        (1, 8, 8, 8),
        (1, 16, 8, 8),
        (1, 16, 1, 1),
        (1, 16),
        (1, 10),
    ]
    # params: 8*3*9 + 8 = 224; 16*(8/2)*9 + 16 = 592; 16*10 + 10 = 170
    assert [r.params for r in s] == [224, 0, 0, 592, 0, 0, 170]
    assert s.total_params == 986
    # MACs: 8*16*16 * 3*9 = 55,296; 16*8*8 * 4*9 = 36,864; 16*10 = 160
    assert [r.macs for r in s] == [55_296, 0, 0, 36_864, 0, 0, 160]
    assert s.total_macs == 92_320 and s.total_flops == 184_640
    # receptive field: conv1 r=3 j=2 P=1; pool r=3+1*2=5 j=4 P=1; conv2 r=5+2*4=13 j=4 P=5
    assert [r.receptive_field for r in s][:4] == [
        ReceptiveField((3, 3), (2, 2), (1, 1)),
        ReceptiveField((3, 3), (2, 2), (1, 1)),
        ReceptiveField((5, 5), (4, 4), (1, 1)),
        ReceptiveField((13, 13), (4, 4), (5, 5)),
    ]
    assert [r.receptive_field for r in s][4:] == [None, None, None]  # global from here on
    assert s.receptive_field == ReceptiveField((13, 13), (4, 4), (5, 5))
    # unit 1 sees input rows 1*4 - 5 = -1 (padding) to -1 + 12 = 11
    assert s.receptive_field.region((1, 0)) == ((-1, 11), (-5, 7))


def test_summary_table_text():
    text = str(summary(tiny_net(), (2, 3, 32, 32)))
    assert "layer  type" in text and "RF (r / j / P)" in text
    assert "3      Conv2d             (2, 16, 8, 8)      592  36,864          13/4/5" in text
    assert "total params: 986" in text
    assert "total MACs per sample: 92,320" in text and "FLOPs = 2 x MACs = 184,640" in text


def test_output_sizes_are_reexported():
    assert analysis.conv_output_size is conv.conv_output_size
    assert analysis.conv_transpose_output_size is conv.conv_transpose_output_size
    assert analysis.pool_output_size is pooling.pool_output_size
    assert conv_output_size(224, 11, 4, 2) == 55  # AlexNet conv1
    assert pool_output_size(55, 3, 2) == 27
    # GoogLeNet's first pool: ceil((112 - 3) / 2) + 1 = 56 where floor mode gives 55
    assert pool_output_size(112, 3, 2, ceil_mode=True) == 56
    assert pool_output_size(112, 3, 2) == 55
    assert conv_output_size(7, 3, 1, 0, dilation=3) == 1  # a 3x3 kernel at dilation 3 spans 7


def test_receptive_field_recursion_hand_example():
    # three 3x3 convolutions at dilation 1, 2, 4 (the ID-CNN/DeepLab stack): 3, 7, 15
    sizes = [receptive_field([(3, 1, 0, d) for d in (1, 2, 4)[:n]]).size for n in (1, 2, 3)]
    assert sizes == [(3, 3), (7, 7), (15, 15)]
    # non-square kernel, asymmetric stride: (5x3, stride (2, 1)) then (3x3, stride 1)
    rf = receptive_field([((5, 3), (2, 1)), (3, 1)])
    assert rf == ReceptiveField((9, 5), (2, 1), (0, 0))
    assert receptive_field([nn.Conv2d(1, 1, 3, 2, 1), nn.MaxPool2d(3, 2, 1)]) == ReceptiveField(
        (7, 7), (4, 4), (3, 3)
    )


# Araujo, Norris and Sim (Distill 2019), Table 1 / google-research/receptive_field:
# (r, effective stride, effective padding) of the TF-Slim models
DISTILL = {"alexnet_v2": (195, 32, 64), "vgg_16": (212, 32, 90), "mobilenet_v1": (315, 32, 126)}


@pytest.mark.parametrize(
    ("name", "paper", "padding"),
    [
        ("vgg16", "vgg_16", 90),
        # torchvision pads AlexNet's conv1 by 2 (TF-Slim: 'VALID'), adding 2 to P
        ("alexnet", "alexnet_v2", 66),
        # TF 'SAME' pads strided 3x3 layers on an even input by 0 before and 1 after; ours
        # pad 1 on both sides: 1 + 2 + 4 + 8 + 16 more at the five stride-2 layers
        ("mobilenet_v1", "mobilenet_v1", 157),
    ],
)
def test_receptive_fields_match_distill_table(name, paper, padding):
    rf = receptive_field(getattr(zoo, name)(), (3, 224, 224))
    size, stride, _ = DISTILL[paper]
    assert rf == ReceptiveField((size, size), (stride, stride), (padding, padding))


def test_resnet50_receptive_field_and_the_distill_variant():
    # torchvision's ResNet-50 (stride in the first block of stages 2-4): 427
    assert receptive_field(zoo.resnet50(), (3, 224, 224)) == ReceptiveField(
        (427, 427), (32, 32), (213, 213)
    )
    # TF-Slim's resnet_v1_50 in the Distill table (483, 32, 239) strides in the *last* unit
    # of stages 1-3, so more 3x3 convolutions work at the coarser spacing. Its path of
    # windows: conv 7x7/2 (pad 3), max pool 3x3/2 ('SAME': pad 0 before), 3x3 convolutions.
    strides = [1, 1, 2] + [1, 1, 1, 2] + [1] * 5 + [2] + [1] * 3
    slim = [(7, 2, 3), (3, 2, 0)] + [(3, s, 1) for s in strides]
    assert receptive_field(slim) == ReceptiveField((483, 483), (32, 32), (239, 239))
    # ResNet-18, by the same recursion: 7, 11, 43, 99, 211, 435
    assert receptive_field(zoo.resnet18(), (3, 224, 224)).size == (435, 435)


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 1, 3, 2)), (1, 15, 15)),
        (
            lambda: nn.Sequential(
                nn.Conv2d(1, 2, (3, 5), (2, 1), (1, 2)),
                nn.MaxPool2d(3, 2, 1, ceil_mode=True),
                nn.Conv2d(2, 2, 3, dilation=(2, 3)),
                nn.BatchNorm2d(2),
                nn.Sigmoid(),
                nn.AvgPool2d(2),
            ),
            (1, 41, 37),
        ),
        (
            lambda: nn.Sequential(
                nn.Conv2d(1, 4, 3, padding=1),
                nn.BasicBlock(4, 8, 2),
                nn.Bottleneck(8, 2, 2),
                nn.InceptionModule(8, 2, 2, 2, 2, 2, 2),
            ),
            (1, 40, 40),
        ),
        (
            lambda: nn.Sequential(
                nn.DepthwiseSeparableConv(1, 2, 2), nn.InvertedResidual(2, 2, 1, 3)
            ),
            (1, 15, 15),
        ),
        (lambda: zoo.lenet5(), (1, 28, 28)),  # up to its last pooling layer, see below
    ],
)
def test_analytic_receptive_field_equals_empirical(make, shape):
    model = make()
    if isinstance(model[-1], nn.Linear):  # keep the feature extractor
        model = nn.Sequential(*model.layers[:6])
    analytic = receptive_field(model, shape)
    out = model.output_shape((1, *shape))
    unit = (out[2] // 2, out[3] // 2)
    measured = empirical_receptive_field(model, shape)
    assert measured.unit == unit
    expected = [
        (max(lo, 0), min(hi, n - 1))
        for (lo, hi), n in zip(analytic.region(unit), shape[1:], strict=True)
    ]
    assert [measured.rows, measured.cols] == expected
    # and the full window fits in these inputs (no clipping), except LeNet's padded border
    assert measured.size == analytic.size or shape == (1, 28, 28)
    assert not any(p.allocated and p.dtype == np.float64 for p in model.parameters())


def test_empirical_receptive_field_restores_the_model(rng):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.MaxPool2d(2), nn.ReLU())
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    y = model.forward(x)
    weight, mean = model[0].weight.data.copy(), model[1].running_mean.copy()
    assert empirical_receptive_field(model, (1, 8, 8)).size == (4, 4)
    assert model.training and model[0].weight.data.dtype == np.float32
    np.testing.assert_array_equal(model[0].weight.data, weight)
    np.testing.assert_array_equal(model[1].running_mean, mean)
    assert "forward" not in vars(model[2])  # max pooling is max pooling again
    np.testing.assert_array_equal(model.eval().forward(x).shape, y.shape)
    assert isinstance(model[2], nn.MaxPool2d) and model[2].dilation == (1, 1)


def test_summary_reads_each_layer_through_its_description():
    # Conv2d(3, 8, 3, stride 2, padding 1) on 3x32x32, by hand: 16x16 output, 8*(27+1) = 224
    # parameters, 8*16*16*27 = 55,296 MACs per sample, a 3x3 window of stride 2.
    spec = nn.Conv2d(3, 8, 3, stride=2, padding=1).describe((4, 3, 32, 32))
    assert spec == nn.LayerSpec(
        "Conv2d", (4, 8, 16, 16), 55_296, 224, ((3, 3), (2, 2), (1, 1), (1, 1))
    )
    row = summary(nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1)), (3, 32, 32))[0]
    assert (row.output_shape, row.params, row.macs) == ((1, 8, 16, 16), 224, 55_296)
    # without an input shape only the window is known (what receptive_field reads)
    assert nn.MaxPool2d(3, 2, 1).describe().window == ((3, 3), (2, 2), (1, 1), (1, 1))
    assert nn.Linear(4, 2).describe().window is None
    assert nn.AdaptiveAvgPool2d(2).describe((1, 3, 8, 6)).window == ((4, 3), (4, 3), 0, 1)
    assert nn.AdaptiveAvgPool2d(1).describe((1, 3, 8, 6)).window is None


@pytest.mark.parametrize(("c", "n", "k"), [(32, 64, 3), (512, 512, 3), (16, 24, 5), (8, 3, 7)])
def test_depthwise_separable_cost_ratio(c, n, k):
    standard = summary(nn.Conv2d(c, n, k, padding=k // 2), (c, 14, 14)).total_macs
    separable = summary(
        nn.Sequential(nn.Conv2d(c, c, k, padding=k // 2, groups=c), nn.Conv2d(c, n, 1)), (c, 14, 14)
    ).total_macs
    assert separable / standard == pytest.approx(1 / n + 1 / k**2, rel=1e-12)
    assert depthwise_separable_cost_ratio(n, k) == pytest.approx(separable / standard, rel=1e-12)
    # the MobileNet block itself (K = 3) costs the same as the pair of convolutions
    if k == 3:
        assert summary(nn.DepthwiseSeparableConv(c, n), (c, 14, 14)).total_macs == separable


def test_depthwise_ratio_hand_value():
    # N = 64, K = 3: 1/64 + 1/9 = 0.015625 + 0.111111... = 0.126736...
    assert depthwise_separable_cost_ratio(64, 3) == pytest.approx(0.12673611111111113)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match=r"input_shape must be \(C, H, W\) or \(N, C, H, W\)"):
        summary(tiny_net(), (3, -32, 32))
    with pytest.raises(ValueError, match="input_shape must be"):
        summary(tiny_net(), (32, 32))
    with pytest.raises(ValueError, match="kernel extent 3 .* larger than the padded input 2"):
        summary(nn.Conv2d(3, 1, 3), (3, 2, 8))
    with pytest.raises(ValueError, match="receptive_field: stride must be positive, got -1"):
        receptive_field([(3, -1)])
    with pytest.raises(TypeError, match=r"layer 1 must be an nn layer or \(kernel_size"):
        receptive_field([(3, 1), "conv"])
    with pytest.raises(ValueError, match="layer 0 \\(Linear\\) has no fixed window"):
        receptive_field([nn.Linear(3, 2)])
    with pytest.raises(ValueError, match="a model needs input_shape"):
        receptive_field(tiny_net())
    with pytest.raises(ValueError, match="branches have different effective strides"):
        ReceptiveField((3, 3), (2, 2), (1, 1)).union(ReceptiveField())
    with pytest.raises(ValueError, match=r"must output a feature map \(N, C, H, W\), got shape"):
        empirical_receptive_field(tiny_net(), (3, 32, 32))
    dilated = nn.Sequential(nn.Conv2d(1, 1, 1), nn.MaxPool2d(2, dilation=2))
    with pytest.raises(ValueError, match="dilated max pooling is not supported"):
        empirical_receptive_field(dilated, (1, 9, 9))
    assert "forward" not in vars(dilated[1])  # nothing was left swapped
    with pytest.raises(ValueError, match="out_channels and kernel_size must be positive"):
        depthwise_separable_cost_ratio(0, 3)
