"""Plugs the variant time loops (layer-normalised LSTM / GRU, Skip RNN) into autograd, as ``function.py`` does for the
plain cells: one ``torch.autograd.Function`` per direction of each layer, backward = the hand-written BPTT of the
backend that ran the forward (``cpp``: ``csrc/variants.h``; ``python``: ``unroll_variants.py``). The backend is
chosen by ``function.backend_name`` (RNNLAB_BACKEND honoured).
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from . import unroll_variants
from .function import backend_name


def get_backend(device: torch.device | None = None):
    """The module holding ln_forward / ln_backward / skip_forward / skip_backward for tensors on ``device``."""
    if backend_name(device) == "cpp":
        from . import _cpp

        return _cpp.load()
    return unroll_variants


def _zeros_if_none(grad, like):
    return torch.zeros_like(like) if grad is None else grad.contiguous()


class LayerNormRecurrence(torch.autograd.Function):
    """One direction of one layer-normalised LSTM / GRU layer over all its steps; absent tensors are empty."""

    @staticmethod
    def forward(ctx, backend, mode, reverse, batch_sizes, eps, x, h0, c0, w_ih, w_hh, g_ih, b_ih, g_hh, b_hh, g_c, b_c):
        params = (w_ih, w_hh, g_ih, b_ih, g_hh, b_hh, g_c, b_c)
        out, h_n, c_n, *saved = backend.ln_forward(mode, x, batch_sizes, h0, c0, *params, eps, reverse, True)
        ctx.backend, ctx.mode, ctx.reverse, ctx.batch_sizes, ctx.eps = backend, mode, reverse, batch_sizes, eps
        ctx.save_for_backward(x, h0, c0, *params, *saved)
        return out, h_n, c_n

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_hn, grad_cn):
        x, h0, c0, *rest = ctx.saved_tensors
        params, saved = rest[:8], rest[8:]
        grad_out = torch.zeros(x.shape[0], h0.shape[1], dtype=x.dtype, device=x.device) if grad_out is None \
            else grad_out.contiguous()  # an output that took no part in the loss has a zero gradient
        grad_hn = _zeros_if_none(grad_hn, h0)
        has_c = c0.numel() > 0
        grad_cn = _zeros_if_none(grad_cn, c0) if has_c else c0
        dx, dh0, dc0, *dparams = ctx.backend.ln_backward(ctx.mode, x, ctx.batch_sizes, h0, c0, *params, ctx.eps,
                                                         ctx.reverse, saved, grad_out, grad_hn, grad_cn)
        dparams = [d if p.numel() > 0 else None for d, p in zip(dparams, params)]
        return (None, None, None, None, None, dx, dh0, dc0 if has_c else None, *dparams)


class SkipRecurrence(torch.autograd.Function):
    """One direction of one Skip RNN layer over all its steps: outputs (out (N, H), u (N,), h_n, c_n | empty)."""

    @staticmethod
    def forward(ctx, backend, mode, hard, reverse, batch_sizes, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_p, b_p):
        params = (w_ih, w_hh, b_ih, b_hh, w_p, b_p)
        out, u, h_n, c_n, *saved = backend.skip_forward(mode, x, batch_sizes, h0, c0, *params, hard, reverse, True)
        ctx.backend, ctx.mode, ctx.hard, ctx.reverse, ctx.batch_sizes = backend, mode, hard, reverse, batch_sizes
        ctx.save_for_backward(x, h0, c0, *params, *saved)
        return out, u, h_n, c_n

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_u, grad_hn, grad_cn):
        x, h0, c0, *rest = ctx.saved_tensors
        params, saved = rest[:6], rest[6:]
        grad_out = torch.zeros(x.shape[0], h0.shape[1], dtype=x.dtype, device=x.device) if grad_out is None \
            else grad_out.contiguous()
        grad_u = x.new_zeros(x.shape[0]) if grad_u is None else grad_u.contiguous()
        grad_hn = _zeros_if_none(grad_hn, h0)
        has_c = c0.numel() > 0
        grad_cn = _zeros_if_none(grad_cn, c0) if has_c else c0
        dx, dh0, dc0, *dparams = ctx.backend.skip_backward(ctx.mode, x, ctx.batch_sizes, h0, c0, *params, ctx.hard,
                                                           ctx.reverse, saved, grad_out, grad_u, grad_hn, grad_cn)
        dparams = [d if p.numel() > 0 else None for d, p in zip(dparams, params)]
        return (None, None, None, None, None, dx, dh0, dc0 if has_c else None, *dparams)


def _needs_grad(tensors) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def run_layer_norm(mode, reverse, batch_sizes, eps, x, h0, c0, w_ih, w_hh, g_ih, b_ih, g_hh, b_hh, g_c, b_c):
    """One direction of one LN layer; records for backward only when a gradient can be requested."""
    backend = get_backend(x.device)
    tensors = (x, h0, c0, w_ih, w_hh, g_ih, b_ih, g_hh, b_hh, g_c, b_c)
    if _needs_grad(tensors):
        return LayerNormRecurrence.apply(backend, mode, reverse, batch_sizes, eps, *tensors)
    return tuple(backend.ln_forward(mode, x, batch_sizes, h0, c0, *tensors[3:], eps, reverse, False)[:3])


def run_skip(mode, hard, reverse, batch_sizes, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_p, b_p):
    """One direction of one Skip RNN layer: (out (N, H), u (N,), h_n, c_n | empty)."""
    backend = get_backend(x.device)
    tensors = (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_p, b_p)
    if _needs_grad(tensors):
        return SkipRecurrence.apply(backend, mode, hard, reverse, batch_sizes, *tensors)
    return tuple(backend.skip_forward(mode, x, batch_sizes, h0, c0, *tensors[3:], hard, reverse, False)[:4])
