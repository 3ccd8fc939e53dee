"""Scaled dot-product attention and its backward pass (chapter 22, question q900-22-1).

``scaled_dot_product_attention`` follows ``torch.nn.functional.scaled_dot_product_attention``:
the same argument names, mask conventions (a boolean mask says which keys a query may attend
to; a float mask is added to the scores), causal masking and default scale ``1/sqrt(E)``.
There is no ``dropout_p``: attention dropout is :func:`dropout` applied to the weights, which
this function does not expose. A query whose every key is masked out gets zero weights and a
zero output, as PyTorch's math implementation gives.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from cnn_course._checks import require_array, require_float, require_grad_out, require_same_backend
from cnn_course.backend import array_module

__all__ = [
    "scaled_dot_product_attention",
    "scaled_dot_product_attention_backward",
    "scaled_dot_product_attention_naive",
]


def _check(op: str, q: Any, k: Any, v: Any, attn_mask: Any, is_causal: bool, scale: Any):
    for name, a in (("q", q), ("k", k), ("v", v)):
        require_float(a, name, op)
        if a.ndim < 2:
            raise ValueError(f"{op}: {name} must have shape (..., L, E), got {tuple(a.shape)}")
    require_same_backend(op, q=q, k=k, v=v, attn_mask=attn_mask)
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-1] != v.shape[:-1]:
        raise ValueError(
            f"{op}: q (..., L, E), k (..., S, E) and v (..., S, Ev) must share their leading "
            f"dimensions and k and v their S, got q {tuple(q.shape)}, k {tuple(k.shape)}, "
            f"v {tuple(v.shape)}"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"{op}: q and k must have the same embedding size E, got q {tuple(q.shape)} and "
            f"k {tuple(k.shape)}"
        )
    if attn_mask is not None:
        require_array(attn_mask, "attn_mask", op)
        if is_causal:
            raise ValueError(f"{op}: give attn_mask or is_causal=True, not both")
        if attn_mask.dtype.kind not in "bf":
            raise TypeError(f"{op}: attn_mask must be bool or float, got dtype {attn_mask.dtype}")
        scores_shape = (*q.shape[:-1], k.shape[-2])
        mask_shape = tuple(attn_mask.shape)
        if len(mask_shape) > len(scores_shape) or any(
            m not in (1, t) for m, t in zip(mask_shape[::-1], scores_shape[::-1], strict=False)
        ):
            raise ValueError(
                f"{op}: attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to the "
                f"scores' shape {scores_shape} (..., L, S)"
            )
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
        raise TypeError(f"{op}: scale must be a number or None, got {scale!r}")


def _weights(q: Any, k: Any, attn_mask: Any, is_causal: bool, scale: Any) -> tuple[Any, float]:
    """Attention weights ``softmax(scale * q k^T + mask)``, shape (..., L, S), and the scale."""
    xp = array_module(q, k)
    s = 1 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    scores = (q @ xp.swapaxes(k, -1, -2)) * s
    length, source = q.shape[-2], k.shape[-2]
    if is_causal:  # query i sees keys 0..i (PyTorch's tril of an L x S matrix of ones)
        attn_mask = xp.tril(xp.ones((length, source), dtype=bool))
    if attn_mask is not None:
        if attn_mask.dtype == bool:
            scores = xp.where(attn_mask, scores, -xp.inf)
        else:
            scores = scores + attn_mask.astype(scores.dtype)
    top = scores.max(axis=-1, keepdims=True)
    dead = xp.isneginf(top)  # every key masked: zero weights, not 0/0
    e = xp.exp(scores - xp.where(dead, 0, top))
    total = e.sum(axis=-1, keepdims=True)
    return xp.where(dead, 0, e / xp.where(dead, 1, total)).astype(q.dtype), s


def scaled_dot_product_attention(
    q: Any,
    k: Any,
    v: Any,
    attn_mask: Any = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> Any:
    """``softmax(q k^T * scale + mask) v``: every query's output is the average of the values,
    weighted by how well its key matches the query.

    Parameters
    ----------
    q : (..., L, E) float array
        Queries: ``L`` target positions (tokens) of size ``E``; ``...`` is typically
        (N, heads).
    k : (..., S, E) float array
        Keys for the ``S`` source positions.
    v : (..., S, Ev) float array
        Values.
    attn_mask : bool or float array broadcastable to (..., L, S), optional
        Boolean: ``True`` where a query may attend to a key. Float: added to the scores
        (``-inf`` blocks).
    is_causal : bool
        Query ``i`` attends to keys ``0..i`` only (the lower triangle of an L x S grid).
    scale : float, optional
        Default ``1 / sqrt(E)``.

    Returns
    -------
    (..., L, Ev) array. The cost is ``O(L S (E + Ev))``: quadratic in the number of tokens
    for self-attention (``L = S``), see :func:`cnn_course.analysis.attention_macs`.
    """
    _check("scaled_dot_product_attention", q, k, v, attn_mask, is_causal, scale)
    weights, _ = _weights(q, k, attn_mask, is_causal, scale)
    return weights @ v


def scaled_dot_product_attention_backward(
    grad_out: Any,
    q: Any,
    k: Any,
    v: Any,
    attn_mask: Any = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> tuple[Any, Any, Any]:
    """Gradients ``(grad_q, grad_k, grad_v)`` of :func:`scaled_dot_product_attention`.

    With ``P`` the weights and ``G = grad_out``: ``grad_v = P^T G``; ``dP = G v^T``; through
    the row-wise softmax ``dS = P * (dP - rowsum(dP * P))``; and ``grad_q = scale * dS k``,
    ``grad_k = scale * dS^T q``. A float ``attn_mask`` is a constant here (its gradient would
    be ``dS``, summed over its broadcast dimensions).
    """
    op = "scaled_dot_product_attention_backward"
    _check(op, q, k, v, attn_mask, is_causal, scale)
    require_grad_out(op, grad_out, (*q.shape[:-1], v.shape[-1]), like=q)
    xp = array_module(q, k, v)
    weights, s = _weights(q, k, attn_mask, is_causal, scale)
    grad_v = xp.swapaxes(weights, -1, -2) @ grad_out
    grad_weights = grad_out @ xp.swapaxes(v, -1, -2)
    grad_scores = weights * (grad_weights - (grad_weights * weights).sum(axis=-1, keepdims=True))
    grad_q = (grad_scores @ k) * s
    grad_k = (xp.swapaxes(grad_scores, -1, -2) @ q) * s
    return grad_q.astype(q.dtype), grad_k.astype(k.dtype), grad_v.astype(v.dtype)


def scaled_dot_product_attention_naive(
    q: Any,
    k: Any,
    v: Any,
    attn_mask: Any = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> Any:
    """The definition, one query at a time (loops over the leading dimensions and the
    queries): the readable version :func:`scaled_dot_product_attention` is tested against.
    Same arguments and result."""
    _check("scaled_dot_product_attention_naive", q, k, v, attn_mask, is_causal, scale)
    xp = array_module(q, k, v)
    s = 1 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    lead = q.shape[:-2]
    length, source = q.shape[-2], k.shape[-2]
    mask = None
    if attn_mask is not None:
        mask = xp.broadcast_to(attn_mask, (*lead, length, source))
    out = xp.zeros((*lead, length, v.shape[-1]), dtype=q.dtype)
    for idx in itertools.product(*(range(n) for n in lead)):
        for i in range(length):
            scores = [float((q[idx][i] * k[idx][j]).sum()) * s for j in range(source)]
            for j in range(source):
                if is_causal and j > i:
                    scores[j] = -math.inf
                elif mask is not None and mask.dtype == bool and not mask[idx][i, j]:
                    scores[j] = -math.inf
                elif mask is not None and mask.dtype != bool:
                    scores[j] += float(mask[idx][i, j])
            top = max(scores)
            if top == -math.inf:
                continue
            e = [math.exp(t - top) for t in scores]
            for j in range(source):
                out[idx][i] += e[j] / sum(e) * v[idx][j]
    return out
