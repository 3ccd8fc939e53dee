"""Deployment: BN folding on a conv-BN pair, INT8 quantization against PyTorch's observers
and quantize functions, bfloat16 rounding against torch.bfloat16, the distillation loss
against KL divergence in PyTorch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import cnn_course.functional as F
from cnn_course import deploy
from cnn_course.gradcheck import check_gradients


# ---------------------------------------------------------------------------- BN folding
def test_fold_batch_norm_hand_example():
    # 1x1 conv, weight 2, bias 1; BN: mean 3, var 3 (eps 1 -> std 2), gamma 4, beta 5
    w, b = np.array([[[[2.0]]]]), np.array([1.0])
    fw, fb = deploy.fold_batch_norm(
        w, b, np.array([3.0]), np.array([3.0]), np.array([4.0]), np.array([5.0]), eps=1.0
    )
    assert fw.ravel().tolist() == [4.0] and fb.tolist() == [(1 - 3) * 2 + 5]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("stride, groups", [(1, 1), (2, 2)])
def test_folded_conv_equals_conv_then_eval_batch_norm(xp, rng, bias, stride, groups):
    x = xp.asarray(rng.standard_normal((2, 4, 7, 7)))
    w = xp.asarray(rng.standard_normal((6, 4 // groups, 3, 3)))
    b = xp.asarray(rng.standard_normal(6)) if bias else None
    mean, var = xp.asarray(rng.standard_normal(6)), xp.asarray(rng.uniform(0.1, 2, 6))
    gamma, beta = xp.asarray(rng.standard_normal(6)), xp.asarray(rng.standard_normal(6))
    conv = F.conv2d(x, w, b, stride=stride, padding=1, groups=groups)
    expected = F.batch_norm(conv, mean, var, gamma, beta, training=False)
    fw, fb = deploy.fold_batch_norm(w, b, mean, var, gamma, beta)
    folded = F.conv2d(x, fw, fb, stride=stride, padding=1, groups=groups)
    np.testing.assert_allclose(deploy_np(folded), deploy_np(expected), rtol=1e-11, atol=1e-12)


def deploy_np(a):
    from cnn_course.backend import to_numpy

    return to_numpy(a)


@pytest.mark.oracle
def test_fold_batch_norm_matches_torch_fuse(torch, rng):
    conv = torch.nn.Conv2d(3, 5, 3, padding=1).double().eval()
    bn = torch.nn.BatchNorm2d(5).double().eval()
    bn.running_mean.copy_(torch.tensor(rng.standard_normal(5)))
    bn.running_var.copy_(torch.tensor(rng.uniform(0.2, 3, 5)))
    bn.weight.data.copy_(torch.tensor(rng.standard_normal(5)))
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = fuse_conv_bn_eval(conv, bn)
    as_np = [
        t.detach().numpy()
        for t in (conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias)
    ]
    fw, fb = deploy.fold_batch_norm(*as_np, eps=bn.eps)
    np.testing.assert_allclose(fw, fused.weight.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(fb, fused.bias.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_fold_batch_norm_rejects_bad_input():
    w = np.zeros((4, 3, 3, 3))
    with pytest.raises(ValueError, match=r"running_mean has shape \(3,\).*4 output channels"):
        deploy.fold_batch_norm(w, None, np.zeros(3), np.ones(4))
    with pytest.raises(TypeError, match="running_var is required"):
        deploy.fold_batch_norm(w, None, np.zeros(4), None)


# -------------------------------------------------------------------------- quantization
def test_quantize_hand_example():
    x = np.array([-127.5, 0.0, 31.875, 63.25, 127.5], dtype=np.float32)
    scale, zero_point = deploy.calibrate(x, "int8", symmetric=True)
    assert scale == 1.0 and zero_point == 0  # 127.5 / ((127 - (-128)) / 2)
    # 31.875 -> 32; 63.25 -> 63; -127.5 is a tie -> -128 (even); 127.5 -> 128, clamped to 127
    assert deploy.quantize(x, scale, zero_point).tolist() == [-128, 0, 32, 63, 127]
    scale, zero_point = deploy.calibrate(np.array([0.0, 2.55], np.float32), "uint8", False)
    assert scale == np.float32(0.01) and zero_point == 0


def _torch_quant(torch):
    warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

    return MinMaxObserver, PerChannelMinMaxObserver


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("per_channel", [False, True])
def test_quantization_matches_torch(torch, rng, dtype, symmetric, per_channel):
    per_tensor_observer, per_channel_observer = _torch_quant(torch)
    tdtype = {"int8": torch.qint8, "uint8": torch.quint8}[dtype]
    x = rng.standard_normal((8, 3, 5, 5)) * rng.uniform(0.05, 3, (8, 1, 1, 1)) + 0.3
    x = x.astype(np.float32)
    x[0] = np.abs(x[0])  # a channel without negative values: the range is widened to 0
    # values at exact half steps, where rounding rules differ
    if per_channel:
        kind = torch.per_channel_symmetric if symmetric else torch.per_channel_affine
        observer = per_channel_observer(ch_axis=0, dtype=tdtype, qscheme=kind)
    else:
        kind = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
        observer = per_tensor_observer(dtype=tdtype, qscheme=kind)
    observer(torch.tensor(x))
    t_scale, t_zero = observer.calculate_qparams()
    axis = 0 if per_channel else None
    scale, zero_point = deploy.calibrate(x, dtype, symmetric, axis=axis)
    np.testing.assert_array_equal(scale, t_scale.numpy())
    np.testing.assert_array_equal(zero_point, t_zero.numpy())
    # ties: values that land on a half step of the grid
    ties = (rng.integers(-120, 120, x.shape) + 0.5) * (
        scale if not per_channel else scale[:, None, None, None]
    )
    for data in (x, ties.astype(np.float32), 50 * x):  # 50 * x: clamping
        if per_channel:
            expected = torch.quantize_per_channel(
                torch.tensor(data),
                torch.tensor(scale, dtype=torch.float64),
                torch.tensor(zero_point),
                0,
                tdtype,
            )
        else:
            expected = torch.quantize_per_tensor(
                torch.tensor(data), float(scale), int(zero_point), tdtype
            )
        q = deploy.quantize(data, scale, zero_point, dtype, axis=axis)
        assert q.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(q, expected.int_repr().numpy())
        np.testing.assert_array_equal(
            deploy.dequantize(q, scale, zero_point, axis=axis), expected.dequantize().numpy()
        )


def test_round_trip_error_is_at_most_half_a_step(rng):
    x = rng.standard_normal((4, 50)).astype(np.float32)
    scale, zero_point = deploy.calibrate(x, "uint8", symmetric=False, axis=0)
    back = deploy.dequantize(
        deploy.quantize(x, scale, zero_point, "uint8", 0), scale, zero_point, 0
    )
    assert (np.abs(back - x) <= scale[:, None] / 2 * (1 + 1e-5)).all()


def test_quantize_rejects_bad_input():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="needs axis"):
        deploy.quantize(x, np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="4 scales for 3 channels"):
        deploy.quantize(x, np.ones(4), np.zeros(4), axis=0)
    with pytest.raises(ValueError, match="dtype"):
        deploy.calibrate(x, "int4")
    with pytest.raises(TypeError, match="integer"):
        deploy.dequantize(x, 1.0, 0)


# ------------------------------------------------------------------------------ bfloat16
def test_bfloat16_hand_example():
    # 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even -> 1; 1 + 3 * 2^-8 -> 1 + 2^-6
    x = np.array([1 + 2**-8, 1 + 3 * 2**-8, 3.0e38, 65520.0], dtype=np.float32)
    out = deploy.round_to_bfloat16(x)
    assert out[0] == 1.0 and out[1] == 1 + 2**-6
    assert np.isfinite(out[2]) and out[3] == 65536.0  # float16 would overflow at 65520


@pytest.mark.oracle
def test_bfloat16_matches_torch(torch, rng):
    x = np.concatenate(
        [
            rng.standard_normal(5000) * 10.0 ** rng.integers(-40, 38, 5000),
            [3.4e38, -3.4e38, 3.3961e38, 1e-45, -0.0, np.inf, -np.inf, np.nan],
            (1 + (np.arange(256) + 0.5) * 2**-7),  # every tie between bfloat16 neighbours
        ]
    ).astype(np.float32)
    with np.errstate(over="ignore"):
        expected = torch.tensor(x).to(torch.bfloat16).float().numpy()
    got = deploy.round_to_bfloat16(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


# -------------------------------------------------------------------------- distillation
def test_distillation_hand_example():
    # identical logits: the KL divergence is 0, and so is the gradient
    z = np.array([[1.0, 2.0, 3.0]])
    assert float(deploy.distillation_loss(z, z, 2.0)) == pytest.approx(0.0, abs=1e-15)
    assert np.abs(deploy.distillation_loss_backward(np.array(1.0), z, z, 2.0)).max() < 1e-15
    # two classes, T = 1: teacher (0, 0) -> p = (1/2, 1/2); student (0, log 3) -> q = (1/4, 3/4)
    s, t = np.array([[0.0, np.log(3.0)]]), np.zeros((1, 2))
    kl = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)
    assert float(deploy.distillation_loss(s, t, 1.0)) == pytest.approx(kl)


@pytest.mark.oracle
@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
def test_distillation_matches_torch(torch, rng, temperature):
    s = rng.standard_normal((6, 10)) * 3
    t = rng.standard_normal((6, 10)) * 5
    ts = torch.tensor(s, requires_grad=True)
    tf = torch.nn.functional
    loss = (
        tf.kl_div(
            tf.log_softmax(ts / temperature, 1),
            tf.softmax(torch.tensor(t) / temperature, 1),
            reduction="batchmean",
        )
        * temperature**2
    )
    loss.backward(torch.tensor(0.7, dtype=torch.float64))
    got = float(deploy.distillation_loss(s, t, temperature))
    assert got == pytest.approx(loss.item(), rel=1e-12)
    grad = deploy.distillation_loss_backward(np.array(0.7), s, t, temperature)
    np.testing.assert_allclose(grad, ts.grad.numpy(), rtol=1e-11, atol=1e-15)


def test_distillation_backward_gradcheck(rng):
    s, t = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    grad = np.array(1.3)
    analytic = deploy.distillation_loss_backward(grad, s, t, 3.0)
    check_gradients(
        lambda a: deploy.distillation_loss(a, t, 3.0), [s], [analytic], grad, ["student_logits"]
    )


def test_distillation_rejects_bad_input():
    with pytest.raises(ValueError, match="temperature"):
        deploy.distillation_loss(np.zeros((2, 3)), np.zeros((2, 3)), 0.0)
    with pytest.raises(ValueError, match="one shape"):
        deploy.distillation_loss(np.zeros((2, 3)), np.zeros((2, 4)))
