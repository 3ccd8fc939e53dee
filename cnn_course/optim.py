"""Optimizers and learning-rate schedules, with the update rules and names of ``torch.optim``.

An optimizer takes an iterable of parameters (anything with ``.data`` and ``.grad`` arrays,
such as :class:`cnn_course.nn.Parameter`), and :meth:`Optimizer.step` updates every ``.data``
in place through the array's own backend (NumPy or CuPy), skipping parameters whose ``.grad``
is ``None``. One parameter group: the learning rate is the attribute ``lr``, which the
schedules set.

Update rules for a parameter ``p`` with gradient ``g`` at step ``t = 1, 2, ...`` (the L2
``weight_decay`` of SGD, Adagrad, RMSprop and Adam first replaces ``g`` by ``g + wd * p``):

- SGD: ``b = g`` (first step) else ``b = mu * b + (1 - dampening) * g``; the step direction
  is ``g + mu * b`` with Nesterov, else ``b``; ``p -= lr * direction``.
- Adagrad: ``s += g**2``; ``p -= lr / (1 + (t - 1) * lr_decay) * g / (sqrt(s) + eps)``.
- RMSprop: ``v = alpha * v + (1 - alpha) * g**2``; centered subtracts the squared running
  mean of ``g`` from ``v`` under the root; ``p -= lr * g / (sqrt(v) + eps)`` (or through a
  momentum buffer ``b = momentum * b + g / (sqrt(v) + eps)``).
- Adam: ``m = b1 * m + (1 - b1) * g``, ``v = b2 * v + (1 - b2) * g**2``;
  ``p -= lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)`` (AMSGrad uses the running
  maximum of ``v``).
- AdamW: Adam without the L2 term, and ``p *= 1 - lr * weight_decay`` before the step
  (decoupled weight decay, Loshchilov & Hutter).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from cnn_course.backend import array_module

__all__ = [
    "Optimizer",
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "LRScheduler",
    "LinearLR",
    "StepLR",
    "CosineAnnealingLR",
    "WarmupCosineLR",
]


def _nonnegative(value: float, name: str, op: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
        raise ValueError(f"{op}: {name} must be a non-negative number, got {value!r}")
    return float(value)


def _unit_interval(value: float, name: str, op: str) -> float:
    """A coefficient in [0, 1): a decay rate such as Adam's betas or RMSprop's alpha."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
        raise ValueError(f"{op}: {name} must be in [0, 1), got {value!r}")
    return float(value)


class Optimizer:
    """Base class: holds the parameters, ``lr`` and the per-parameter state.

    Parameters
    ----------
    params : iterable
        Objects with array attributes ``.data`` and ``.grad`` (``.grad`` may be ``None``).
    lr : float
        Learning rate (non-negative).
    """

    def __init__(self, params: Iterable[Any], lr: float) -> None:
        name = type(self).__name__
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{name}: got an empty parameter list")
        for i, p in enumerate(self.params):
            if not (hasattr(p, "data") and hasattr(p, "grad")):
                raise TypeError(
                    f"{name}: parameter {i} ({type(p).__name__}) has no .data and .grad"
                )
        self.lr = _nonnegative(lr, "lr", name)
        # One dict of named arrays (and the step count) per parameter, created at first use.
        self.state: list[dict[str, Any]] = [{} for _ in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every gradient: to ``None`` (PyTorch's default; the next backward then
        starts afresh), or, with ``set_to_none=False``, to zeros in place."""
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        for p, state in zip(self.params, self.state, strict=True):
            if p.grad is None:
                continue
            if tuple(p.grad.shape) != tuple(p.data.shape):
                raise ValueError(
                    f"{type(self).__name__}: grad shape {tuple(p.grad.shape)} does not match "
                    f"parameter shape {tuple(p.data.shape)}"
                )
            state["step"] = state.get("step", 0) + 1
            self._update(p.data, p.grad, state)

    def _update(self, data: Any, grad: Any, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _l2(self, data: Any, grad: Any, weight_decay: float) -> Any:
        """``grad + weight_decay * data`` (a new array; the stored gradient is not changed)."""
        return grad + weight_decay * data if weight_decay else grad


def _buffer(state: dict[str, Any], name: str, like: Any) -> Any:
    """``state[name]``, made as zeros shaped like ``like`` on first use."""
    if name not in state:
        state[name] = array_module(like).zeros_like(like)
    return state[name]


def _decay_add(buffer: Any, decay: float, value: Any) -> Any:
    """``buffer = decay * buffer + value`` in place, and return ``buffer``: a momentum
    buffer, or a running average when ``value`` is scaled by ``1 - decay``."""
    buffer *= decay
    buffer += value
    return buffer


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, Nesterov momentum and
    L2 weight decay (``torch.optim.SGD``)."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(params, lr)
        self.momentum = _nonnegative(momentum, "momentum", "SGD")
        self.dampening = float(dampening)
        self.weight_decay = _nonnegative(weight_decay, "weight_decay", "SGD")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                "SGD: nesterov momentum requires momentum > 0 and dampening = 0, got "
                f"momentum={momentum!r}, dampening={dampening!r}"
            )
        self.nesterov = bool(nesterov)

    def _update(self, data: Any, grad: Any, state: dict[str, Any]) -> None:
        d_p = self._l2(data, grad, self.weight_decay)
        if self.momentum:
            if "momentum_buffer" in state:
                buf = _decay_add(
                    state["momentum_buffer"], self.momentum, (1 - self.dampening) * d_p
                )
            else:  # the first step starts the buffer at the gradient, undamped (as PyTorch)
                buf = state["momentum_buffer"] = d_p.copy()
            d_p = d_p + self.momentum * buf if self.nesterov else buf
        data -= self.lr * d_p


class Adagrad(Optimizer):
    """Adagrad: per-coordinate step ``lr / sqrt(sum of squared gradients)``
    (``torch.optim.Adagrad``)."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ) -> None:
        super().__init__(params, lr)
        self.lr_decay = _nonnegative(lr_decay, "lr_decay", "Adagrad")
        self.weight_decay = _nonnegative(weight_decay, "weight_decay", "Adagrad")
        self.initial_accumulator_value = _nonnegative(
            initial_accumulator_value, "initial_accumulator_value", "Adagrad"
        )
        self.eps = _nonnegative(eps, "eps", "Adagrad")

    def _update(self, data: Any, grad: Any, state: dict[str, Any]) -> None:
        xp = array_module(data)
        if "sum" not in state:
            state["sum"] = xp.full_like(data, self.initial_accumulator_value)
        grad = self._l2(data, grad, self.weight_decay)
        clr = self.lr / (1 + (state["step"] - 1) * self.lr_decay)
        state["sum"] += grad * grad
        data -= clr * grad / (xp.sqrt(state["sum"]) + self.eps)


class RMSprop(Optimizer):
    """RMSprop: divide by a running root-mean-square of the gradient; optionally centered
    and with momentum (``torch.optim.RMSprop``)."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        super().__init__(params, lr)
        self.alpha = _unit_interval(alpha, "alpha", "RMSprop")
        self.eps = _nonnegative(eps, "eps", "RMSprop")
        self.weight_decay = _nonnegative(weight_decay, "weight_decay", "RMSprop")
        self.momentum = _nonnegative(momentum, "momentum", "RMSprop")
        self.centered = bool(centered)

    def _update(self, data: Any, grad: Any, state: dict[str, Any]) -> None:
        xp = array_module(data)
        grad = self._l2(data, grad, self.weight_decay)
        decay = self.alpha
        square_avg = _decay_add(_buffer(state, "square_avg", data), decay, (1 - decay) * grad**2)
        if self.centered:
            grad_avg = _decay_add(_buffer(state, "grad_avg", data), decay, (1 - decay) * grad)
            avg = xp.sqrt(square_avg - grad_avg * grad_avg) + self.eps
        else:
            avg = xp.sqrt(square_avg) + self.eps
        if self.momentum:
            buf = _decay_add(_buffer(state, "momentum_buffer", data), self.momentum, grad / avg)
            data -= self.lr * buf
        else:
            data -= self.lr * grad / avg


class Adam(Optimizer):
    """Adam with bias correction, optional AMSGrad and L2 weight decay (``torch.optim.Adam``).

    ``decoupled_weight_decay=True`` turns it into AdamW (as in ``torch.optim.Adam``).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        decoupled_weight_decay: bool = False,
    ) -> None:
        super().__init__(params, lr)
        name = type(self).__name__
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (
            _unit_interval(betas[0], "betas[0]", name),
            _unit_interval(betas[1], "betas[1]", name),
        )
        self.eps = _nonnegative(eps, "eps", name)
        self.weight_decay = _nonnegative(weight_decay, "weight_decay", name)
        self.amsgrad = bool(amsgrad)
        self.decoupled_weight_decay = bool(decoupled_weight_decay)

    def _update(self, data: Any, grad: Any, state: dict[str, Any]) -> None:
        xp = array_module(data)
        beta1, beta2 = self.betas
        t = state["step"]
        if self.decoupled_weight_decay:
            data *= 1 - self.lr * self.weight_decay
        else:
            grad = self._l2(data, grad, self.weight_decay)
        exp_avg = _decay_add(_buffer(state, "exp_avg", data), beta1, (1 - beta1) * grad)
        exp_avg_sq = _decay_add(_buffer(state, "exp_avg_sq", data), beta2, (1 - beta2) * grad**2)
        if self.amsgrad:
            max_sq = _buffer(state, "max_exp_avg_sq", data)
            exp_avg_sq = xp.maximum(max_sq, exp_avg_sq, out=max_sq)
        step_size = self.lr / (1 - beta1**t)
        denom = xp.sqrt(exp_avg_sq) / math.sqrt(1 - beta2**t) + self.eps
        data -= step_size * exp_avg / denom


class AdamW(Adam):
    """Adam with decoupled weight decay (``torch.optim.AdamW``; default weight_decay 0.01)."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, decoupled_weight_decay=True)


class LRScheduler:
    """Base class: sets ``optimizer.lr`` to ``lr_at(t)`` for ``t = 0, 1, ...``.

    As in ``torch.optim.lr_scheduler``, creating the scheduler applies ``t = 0`` and each
    :meth:`step` (once per epoch or per iteration, as the caller decides) advances ``t``.
    Subclasses give the closed form of PyTorch's schedule as a function of ``base_lr``, the
    optimizer's learning rate when the scheduler was created.
    """

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0
        optimizer.lr = self.lr_at(0)

    def lr_at(self, t: int) -> float:
        raise NotImplementedError

    def step(self) -> None:
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def get_last_lr(self) -> list[float]:
        """The current learning rate, as a one-element list (PyTorch's shape)."""
        return [self.optimizer.lr]


def _positive_int(value: int, name: str, op: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{op}: {name} must be a positive int, got {value!r}")
    return value


def _linear(start: float, end: float, t: int, total: int) -> float:
    """From ``start`` at ``t = 0`` to ``end`` at ``t = total``, then constant."""
    return start + (end - start) * min(t, total) / total


def _cosine(base_lr: float, eta_min: float, t: int, t_max: int) -> float:
    """Half a cosine from ``base_lr`` at ``t = 0`` down to ``eta_min`` at ``t = t_max``."""
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * min(t, t_max) / t_max)) / 2


class LinearLR(LRScheduler):
    """Multiply ``base_lr`` by a factor going linearly from ``start_factor`` to
    ``end_factor`` over ``total_iters`` steps, then constant (``LinearLR``; linear warmup)."""

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
    ) -> None:
        if not 0 < start_factor <= 1 or not 0 <= end_factor <= 1:
            raise ValueError(
                "LinearLR: start_factor must be in (0, 1] and end_factor in [0, 1], got "
                f"{start_factor!r} and {end_factor!r}"
            )
        self.start_factor, self.end_factor = float(start_factor), float(end_factor)
        self.total_iters = _positive_int(total_iters, "total_iters", "LinearLR")
        super().__init__(optimizer)

    def lr_at(self, t: int) -> float:
        return self.base_lr * _linear(self.start_factor, self.end_factor, t, self.total_iters)


class StepLR(LRScheduler):
    """``base_lr * gamma ** (t // step_size)`` (``StepLR``: step decay)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = _positive_int(step_size, "step_size", "StepLR")
        self.gamma = _nonnegative(gamma, "gamma", "StepLR")
        super().__init__(optimizer)

    def lr_at(self, t: int) -> float:
        return self.base_lr * self.gamma ** (t // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """``eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2`` for
    ``t <= T_max``, then ``eta_min`` (``CosineAnnealingLR`` over one half period)."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:  # noqa: N803
        self.T_max = _positive_int(T_max, "T_max", "CosineAnnealingLR")
        self.eta_min = _nonnegative(eta_min, "eta_min", "CosineAnnealingLR")
        super().__init__(optimizer)

    def lr_at(self, t: int) -> float:
        return _cosine(self.base_lr, self.eta_min, t, self.T_max)


class WarmupCosineLR(LRScheduler):
    """Linear warmup for ``warmup_iters`` steps, then cosine annealing to ``eta_min`` at
    ``total_iters``: the composition ``SequentialLR([LinearLR(start_factor,
    total_iters=warmup_iters), CosineAnnealingLR(T_max=total_iters - warmup_iters,
    eta_min)], milestones=[warmup_iters])``."""

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_iters: int,
        total_iters: int,
        start_factor: float = 0.1,
        eta_min: float = 0.0,
    ) -> None:
        _positive_int(total_iters, "total_iters", "WarmupCosineLR")
        if not isinstance(warmup_iters, int) or not 0 < warmup_iters < total_iters:
            raise ValueError(
                "WarmupCosineLR: need 0 < warmup_iters < total_iters, got "
                f"warmup_iters={warmup_iters!r}, total_iters={total_iters!r}"
            )
        self.warmup_iters, self.total_iters = warmup_iters, total_iters
        if not 0 < start_factor <= 1:
            raise ValueError(
                f"WarmupCosineLR: start_factor must be in (0, 1], got {start_factor!r}"
            )
        self.start_factor = float(start_factor)
        self.eta_min = _nonnegative(eta_min, "eta_min", "WarmupCosineLR")
        super().__init__(optimizer)

    def lr_at(self, t: int) -> float:
        if t < self.warmup_iters:
            return self.base_lr * _linear(self.start_factor, 1.0, t, self.warmup_iters)
        span = self.total_iters - self.warmup_iters
        return _cosine(self.base_lr, self.eta_min, t - self.warmup_iters, span)
