"""Classic architectures as ``nn`` models, with torchvision's layer choices.

Every builder only records shapes: no weight is allocated until it is used, so
``summary(vgg16(), (3, 224, 224))`` is instant. Parameter counts equal torchvision's exactly
(the tests check them), so the numbers in the book are the ones people quote.

- ``lenet5``: LeCun et al. (1998) in its common modern form: a 28x28 input padded by 2 in
  the first convolution (the original's 32x32 input), ReLU and 2x2 max pooling instead of
  scaled tanh and trainable average pooling, full 6->16 connections in C3, and a linear
  output layer instead of RBF units. 61,706 parameters for 10 classes.
- ``alexnet``, ``vgg16``, ``googlenet``, ``resnet18``, ``resnet50``, ``mobilenet_v2``: as in
  torchvision (AlexNet is the one-GPU variant of "One weird trick", 64-192-384-256-256
  channels; GoogLeNet uses batch norm and, like torchvision's, 3x3 kernels in the "5x5"
  branch; ResNets are v1.5, stride in the 3x3).
- ``mobilenet_v1``: Howard et al. (2017), Table 1, width multiplier 1, ReLU, batch norm
  after every convolution (torchvision has no MobileNetV1). The paper's Table 1 lists the
  13th depthwise convolution with stride 2 although its output stays 7x7; like the
  reference implementations we use stride 1 there.
- ``densenet121``, ``efficientnet_b0``, ``convnext_tiny``: as in torchvision, with two
  changes that leave every parameter and multiply-accumulate in place: stochastic depth (a
  training-time regulariser without parameters) is left out, and ConvNeXt's two channel-wise
  fully connected layers, which torchvision applies to an (N, H, W, C) view, are the
  equivalent 1x1 convolutions on (N, C, H, W).
"""

from __future__ import annotations

import math
from typing import Any

from cnn_course import nn

__all__ = [
    "lenet5",
    "alexnet",
    "vgg16",
    "GoogLeNet",
    "googlenet",
    "ResNet",
    "resnet18",
    "resnet50",
    "mobilenet_v1",
    "mobilenet_v2",
    "densenet121",
    "efficientnet",
    "efficientnet_b0",
    "EFFICIENTNET_SCALING",
    "convnext_tiny",
]

Array = Any


def _seed(seed: int | None) -> None:
    if seed is not None:
        nn.manual_seed(seed)


def lenet5(num_classes: int = 10, in_channels: int = 1, seed: int | None = None) -> nn.Sequential:
    """LeNet-5 for 28x28 inputs (see the module docstring for the variant).

    (N, in_channels, 28, 28) -> conv5x5(6, pad 2) -> ReLU -> maxpool2 -> conv5x5(16) -> ReLU
    -> maxpool2 -> flatten (400) -> 120 -> ReLU -> 84 -> ReLU -> num_classes logits."""
    _seed(seed)
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )


def _classifier(in_features: int, hidden: int, num_classes: int, dropout_first: bool) -> list:
    """The two hidden fully connected layers of AlexNet and VGG (dropout before each linear
    in AlexNet, after each ReLU in VGG)."""

    def hidden_layer(n_in: int) -> list[nn.Module]:
        # built in forward order: each layer draws its seed when it is constructed
        if dropout_first:
            return [nn.Dropout(0.5), nn.Linear(n_in, hidden), nn.ReLU()]
        return [nn.Linear(n_in, hidden), nn.ReLU(), nn.Dropout(0.5)]

    return [*hidden_layer(in_features), *hidden_layer(hidden), nn.Linear(hidden, num_classes)]


def alexnet(num_classes: int = 1000, seed: int | None = None) -> nn.Sequential:
    """AlexNet as torchvision: five convolutions (11x11/4, 5x5, 3x3 x3) with three 3x3/2 max
    pools, adaptive average pooling to 6x6, and 4096-4096 fully connected layers with
    dropout. 61,100,840 parameters for 1000 classes."""
    _seed(seed)
    features = [
        nn.Conv2d(3, 64, 11, 4, 2),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
    ]
    return nn.Sequential(
        *features,
        nn.AdaptiveAvgPool2d(6),
        nn.Flatten(),
        *_classifier(256 * 6 * 6, 4096, num_classes, dropout_first=True),
    )


_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16(num_classes: int = 1000, seed: int | None = None) -> nn.Sequential:
    """VGG-16 (configuration D) as torchvision: thirteen 3x3 convolutions (padding 1) + ReLU
    in five stages closed by 2x2 max pooling, adaptive average pooling to 7x7 and
    4096-4096 fully connected layers. 138,357,544 parameters for 1000 classes."""
    _seed(seed)
    layers: list[nn.Module] = []
    channels = 3
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU()]
            channels = v
    return nn.Sequential(
        *layers,
        nn.AdaptiveAvgPool2d(7),
        nn.Flatten(),
        *_classifier(512 * 7 * 7, 4096, num_classes, dropout_first=False),
    )


class _InceptionAux(nn.Sequential):
    """GoogLeNet's auxiliary classifier (torchvision): 4x4 adaptive average pooling,
    1x1 convolution to 128 channels, fully connected 2048 -> 1024 -> classes, dropout 0.7."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(4),
            *nn.conv_bn_act(in_channels, 128, 1, eps=0.001).layers,
            nn.Flatten(),
            nn.Linear(2048, 1024),
            nn.ReLU(),
            nn.Dropout(0.7),
            nn.Linear(1024, num_classes),
        )


class GoogLeNet(nn.Module):
    """GoogLeNet (Inception v1) as torchvision, optionally with the two auxiliary heads.

    ``forward`` returns the logits, or in training with ``aux_logits`` the tuple
    ``(logits, aux2, aux1)`` as torchvision; ``backward`` then takes the three upstream
    gradients (the auxiliary losses are added to the main one, each usually weighted 0.3)
    and adds the heads' gradients where they branch off the trunk (after 4a and 4d).
    Without the heads: 6,624,904 parameters for 1000 classes."""

    def __init__(self, num_classes: int = 1000, aux_logits: bool = False) -> None:
        super().__init__()
        conv = nn.conv_bn_act
        inc = nn.InceptionModule
        # torchvision's weights use a 3x3 kernel in the "5x5" branch
        k = {"branch3_kernel_size": 3}
        self.stem = nn.Sequential(
            *conv(3, 64, 7, 2, eps=0.001).layers,
            nn.MaxPool2d(3, 2, ceil_mode=True),
            *conv(64, 64, 1, eps=0.001).layers,
            *conv(64, 192, 3, eps=0.001).layers,
            nn.MaxPool2d(3, 2, ceil_mode=True),
            inc(192, 64, 96, 128, 16, 32, 32, **k),  # 3a
            inc(256, 128, 128, 192, 32, 96, 64, **k),  # 3b
            nn.MaxPool2d(3, 2, ceil_mode=True),
            inc(480, 192, 96, 208, 16, 48, 64, **k),  # 4a
        )
        self.middle = nn.Sequential(
            inc(512, 160, 112, 224, 24, 64, 64, **k),  # 4b
            inc(512, 128, 128, 256, 24, 64, 64, **k),  # 4c
            inc(512, 112, 144, 288, 32, 64, 64, **k),  # 4d
        )
        self.head = nn.Sequential(
            inc(528, 256, 160, 320, 32, 128, 128, **k),  # 4e
            nn.MaxPool2d(2, 2, ceil_mode=True),
            inc(832, 256, 160, 320, 32, 128, 128, **k),  # 5a
            inc(832, 384, 192, 384, 48, 128, 128, **k),  # 5b
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(1024, num_classes),
        )
        self.aux_logits = aux_logits
        self.aux1 = _InceptionAux(512, num_classes) if aux_logits else None
        self.aux2 = _InceptionAux(528, num_classes) if aux_logits else None

    def _with_aux(self) -> bool:
        return self.aux_logits and self.training

    def forward(self, x: Array) -> Array | tuple[Array, Array, Array]:
        a = self.stem.forward(x)
        b = self.middle.forward(a)
        out = self.head.forward(b)
        if not self._with_aux():
            return out
        return out, self.aux2.forward(b), self.aux1.forward(a)

    def backward(self, grad_out: Array | tuple[Array, Array, Array]) -> Array:
        if not self._with_aux():
            return self.stem.backward(self.middle.backward(self.head.backward(grad_out)))
        grad_main, grad_aux2, grad_aux1 = grad_out
        grad_b = self.head.backward(grad_main) + self.aux2.backward(grad_aux2)
        grad_a = self.middle.backward(grad_b) + self.aux1.backward(grad_aux1)
        return self.stem.backward(grad_a)

    def trace(self, input_shape, rf, record, name):
        a, rf_a = self.stem.trace(input_shape, rf, record, nn._join(name, "stem"))
        b, rf_b = self.middle.trace(a, rf_a, record, nn._join(name, "middle"))
        if self.aux_logits:
            self.aux1.trace(a, rf_a, record, nn._join(name, "aux1"))
            self.aux2.trace(b, rf_b, record, nn._join(name, "aux2"))
        return self.head.trace(b, rf_b, record, nn._join(name, "head"))


def googlenet(
    num_classes: int = 1000, aux_logits: bool = False, seed: int | None = None
) -> GoogLeNet:
    """GoogLeNet as torchvision (see :class:`GoogLeNet`)."""
    _seed(seed)
    return GoogLeNet(num_classes, aux_logits)


class ResNet(nn.Sequential):
    """ResNet as torchvision: 7x7/2 convolution + BN + ReLU, 3x3/2 max pool, four stages of
    ``block`` (64, 128, 256, 512 planes; the first block of stages 2-4 has stride 2),
    global average pooling and one fully connected layer."""

    def __init__(self, block: type[nn.Module], layers: tuple[int, ...], num_classes: int) -> None:
        modules: list[nn.Module] = [*nn.conv_bn_act(3, 64, 7, 2).layers, nn.MaxPool2d(3, 2, 1)]
        channels = 64
        for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                modules.append(block(channels, planes, stride))
                channels = planes * block.expansion
        super().__init__(
            *modules, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)
        )


def resnet18(num_classes: int = 1000, seed: int | None = None) -> ResNet:
    """ResNet-18: BasicBlocks (2, 2, 2, 2). 11,689,512 parameters for 1000 classes."""
    _seed(seed)
    return ResNet(nn.BasicBlock, (2, 2, 2, 2), num_classes)


def resnet50(num_classes: int = 1000, seed: int | None = None) -> ResNet:
    """ResNet-50: Bottlenecks (3, 4, 6, 3), v1.5. 25,557,032 parameters for 1000 classes."""
    _seed(seed)
    return ResNet(nn.Bottleneck, (3, 4, 6, 3), num_classes)


# (out_channels, stride) of the 13 depthwise separable blocks, Howard et al. 2017, Table 1
_MOBILENET_V1 = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    *[(512, 1)] * 5,
    (1024, 2),
    (1024, 1),
)


def mobilenet_v1(num_classes: int = 1000, seed: int | None = None) -> nn.Sequential:
    """MobileNetV1 (width 1.0): 3x3/2 convolution to 32 channels, 13 depthwise separable
    blocks, global average pooling, one fully connected layer (no dropout).

    4,231,976 parameters for 1000 classes: the paper's "4.2 million", whose Table 1 counts
    the convolution and fully connected weights (4,221,032) plus 10,944 batch-norm scales and
    shifts and the 1000 output biases. 568.7 million MACs at 224x224 (the paper: 569 M)."""
    _seed(seed)
    layers: list[nn.Module] = list(nn.conv_bn_act(3, 32, 3, 2).layers)
    channels = 32
    for out_channels, stride in _MOBILENET_V1:
        layers.append(nn.DepthwiseSeparableConv(channels, out_channels, stride))
        channels = out_channels
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)
    )


# (expand_ratio t, out_channels c, repeats n, first stride s), Sandler et al. 2018, Table 2
_MOBILENET_V2 = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def mobilenet_v2(num_classes: int = 1000, seed: int | None = None) -> nn.Sequential:
    """MobileNetV2 (width 1.0) as torchvision: 3x3/2 convolution to 32 channels, 17 inverted
    residual blocks, 1x1 convolution to 1280, global average pooling, dropout 0.2, one fully
    connected layer. 3,504,872 parameters for 1000 classes."""
    _seed(seed)
    layers: list[nn.Module] = list(nn.conv_bn_act(3, 32, 3, 2, activation=nn.ReLU6).layers)
    channels = 32
    for t, c, n, s in _MOBILENET_V2:
        for i in range(n):
            layers.append(nn.InvertedResidual(channels, c, s if i == 0 else 1, t))
            channels = c
    layers += nn.conv_bn_act(channels, 1280, 1, activation=nn.ReLU6).layers
    return nn.Sequential(
        *layers,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(1280, num_classes),
    )


def _dense_layer(in_channels: int, growth_rate: int, bn_size: int) -> nn.DenseConcat:
    """DenseNet-BC layer: ``[x, conv3x3(relu(bn(conv1x1(relu(bn(x))))))]``, the 1x1
    convolution to ``bn_size * growth_rate`` channels, the 3x3 adding ``growth_rate``."""
    width = bn_size * growth_rate
    return nn.DenseConcat(
        nn.Identity(),
        nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(),
            nn.Conv2d(in_channels, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, growth_rate, 3, padding=1, bias=False),
        ),
    )


def densenet121(num_classes: int = 1000, seed: int | None = None) -> nn.Sequential:
    """DenseNet-121 (Huang et al. 2017, DenseNet-BC) as torchvision: 7x7/2 convolution to 64
    channels + BN + ReLU, 3x3/2 max pool, four dense blocks of (6, 12, 24, 16) layers with
    growth rate 32 (each layer sees the concatenation of all earlier outputs of its block),
    transitions (BN, ReLU, 1x1 convolution halving the channels, 2x2 average pooling), BN,
    ReLU, global average pooling and one fully connected layer. 7,978,856 parameters for
    1000 classes."""
    _seed(seed)
    growth_rate, bn_size = 32, 4
    layers: list[nn.Module] = [*nn.conv_bn_act(3, 64, 7, 2, 3).layers, nn.MaxPool2d(3, 2, 1)]
    channels = 64
    for i, count in enumerate((6, 12, 24, 16)):
        for _ in range(count):
            layers.append(_dense_layer(channels, growth_rate, bn_size))
            channels += growth_rate
        if i < 3:  # transition: halve the channels and the resolution
            layers += [
                nn.BatchNorm2d(channels),
                nn.ReLU(),
                nn.Conv2d(channels, channels // 2, 1, bias=False),
                nn.AvgPool2d(2, 2),
            ]
            channels //= 2
    return nn.Sequential(
        *layers,
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, num_classes),
    )


def _mbconv(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, expand_ratio: int
) -> nn.Module:
    """EfficientNet's MBConv block (torchvision's ``MBConv``): MobileNetV2's inverted residual
    with SiLU, a squeeze-and-excitation gate on the expanded channels (squeezed to a quarter
    of the block's *input* channels) and an identity shortcut when the shapes allow it."""
    hidden = _make_divisible(in_channels * expand_ratio)
    silu = nn.SiLU
    layers: list[nn.Module] = []
    if hidden != in_channels:
        layers += nn.conv_bn_act(in_channels, hidden, 1, activation=silu).layers
    layers += nn.conv_bn_act(
        hidden, hidden, kernel_size, stride, groups=hidden, activation=silu
    ).layers
    layers.append(nn.SqueezeExcitation(hidden, max(1, in_channels // 4), activation=silu))
    layers += nn.conv_bn_act(hidden, out_channels, 1, activation=None).layers
    body = nn.Sequential(*layers)
    return nn.ResidualAdd(body) if stride == 1 and in_channels == out_channels else body


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor``, never more than 10% down (the
    TensorFlow rule torchvision uses to scale widths)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


# (expand_ratio, kernel_size, first stride, in_channels, out_channels, repeats) of EfficientNet-B0,
# Tan and Le 2019, Table 1
_EFFICIENTNET_B0 = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)

# (width multiplier, depth multiplier, input resolution, dropout) of B0-B3: the multipliers and
# dropouts of torchvision, the resolutions of the paper (torchvision evaluates B2 at 288)
EFFICIENTNET_SCALING = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
}


def efficientnet(variant: str = "b0", num_classes: int = 1000, seed: int | None = None):
    """EfficientNet-B0 to B3 (Tan and Le 2019) as torchvision: 3x3/2 convolution, MBConv
    blocks (SiLU, squeeze-and-excitation) in seven stages, 1x1 convolution to four times the
    last stage's width, global average pooling, dropout, one fully connected layer.

    B1-B3 scale B0's channels by the width multiplier (rounded to multiples of 8) and each
    stage's number of blocks by the depth multiplier (rounded up), and are meant for the input
    resolution of :data:`EFFICIENTNET_SCALING` (compound scaling). Parameters for 1000 classes:
    B0 5,288,548; B1 7,794,184; B2 9,109,994; B3 12,233,232."""
    if variant not in EFFICIENTNET_SCALING:
        raise ValueError(
            f"efficientnet: variant must be one of {sorted(EFFICIENTNET_SCALING)}, got {variant!r}"
        )
    width, depth, _, dropout = EFFICIENTNET_SCALING[variant]
    _seed(seed)
    stem = _make_divisible(32 * width)
    layers: list[nn.Module] = list(nn.conv_bn_act(3, stem, 3, 2, activation=nn.SiLU).layers)
    channels = stem
    for t, k, s, _, c, n in _EFFICIENTNET_B0:
        c = _make_divisible(c * width)
        for i in range(math.ceil(n * depth)):
            layers.append(_mbconv(channels, c, k, s if i == 0 else 1, t))
            channels = c
    layers += nn.conv_bn_act(channels, 4 * channels, 1, activation=nn.SiLU).layers
    return nn.Sequential(
        *layers,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(4 * channels, num_classes),
    )


def efficientnet_b0(num_classes: int = 1000, seed: int | None = None) -> nn.Sequential:
    """EfficientNet-B0 as torchvision: 16 MBConv blocks, 1x1 convolution to 1280, dropout 0.2.
    5,288,548 parameters for 1000 classes (see :func:`efficientnet`)."""
    return efficientnet("b0", num_classes, seed)


def _convnext_block(dim: int) -> nn.ResidualAdd:
    """ConvNeXt block: ``x + gamma * pw2(gelu(pw1(layernorm(dwconv7x7(x)))))``, the 1x1
    ("pointwise") convolutions dim -> 4 dim -> dim, ``gamma`` a layer scale (init 1e-6)."""
    return nn.ResidualAdd(
        nn.Sequential(
            nn.Conv2d(dim, dim, 7, padding=3, groups=dim),
            nn.LayerNorm2d(dim, eps=1e-6),
            nn.Conv2d(dim, 4 * dim, 1),
            nn.GELU(),
            nn.Conv2d(4 * dim, dim, 1),
            nn.LayerScale(dim, 1e-6),
        )
    )


def convnext_tiny(num_classes: int = 1000, seed: int | None = None) -> nn.Sequential:
    """ConvNeXt-T (Liu et al. 2022) as torchvision: a 4x4/4 "patchify" convolution to 96
    channels + LayerNorm, four stages of (3, 3, 9, 3) ConvNeXt blocks on 96, 192, 384, 768
    channels, each stage after the first opened by LayerNorm + 2x2/2 convolution, then global
    average pooling, LayerNorm and one fully connected layer. 28,589,128 parameters for 1000
    classes."""
    _seed(seed)
    dims, depths = (96, 192, 384, 768), (3, 3, 9, 3)
    layers: list[nn.Module] = [nn.Conv2d(3, dims[0], 4, 4), nn.LayerNorm2d(dims[0], eps=1e-6)]
    for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
        if i > 0:
            layers += [nn.LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], dim, 2, 2)]
        layers += [_convnext_block(dim) for _ in range(depth)]
    return nn.Sequential(
        *layers,
        nn.AdaptiveAvgPool2d(1),
        nn.LayerNorm2d(dims[-1], eps=1e-6),
        nn.Flatten(),
        nn.Linear(dims[-1], num_classes),
    )
