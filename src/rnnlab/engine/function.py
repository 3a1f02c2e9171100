"""Plugs the time loop into autograd: ``loss.backward()`` reaches our hand-written BPTT through one
``torch.autograd.Function`` per direction of each layer. Also chooses the backend.

Backends: ``cpp`` (the C++ loop, built on first use and cached) and ``python`` (``unroll.py``). The C++ one is
used whenever it builds and the tensors are on the CPU; ``RNNLAB_BACKEND=cpp|python`` forces one.
"""
from __future__ import annotations

import os

import torch
from torch.autograd.function import once_differentiable

from . import unroll

_BACKENDS = ("cpp", "python")


def backend_name(device: torch.device | None = None) -> str:
    """The backend that runs tensors on ``device`` (CPU when None), honouring RNNLAB_BACKEND."""
    forced = os.environ.get("RNNLAB_BACKEND", "").strip().lower()
    if forced and forced not in _BACKENDS:
        raise ValueError(f"RNNLAB_BACKEND must be one of {', '.join(_BACKENDS)}; got {forced!r}. Unset it to choose automatically.")
    on_cpu = device is None or torch.device(device).type == "cpu"
    if forced == "python" or not on_cpu:
        if forced == "cpp":
            raise ValueError(f"RNNLAB_BACKEND=cpp runs on CPU tensors only; got tensors on {device}. Unset RNNLAB_BACKEND.")
        return "python"
    from . import _cpp

    if _cpp.load() is not None:
        return "cpp"
    if forced == "cpp":
        raise RuntimeError("RNNLAB_BACKEND=cpp but the C++ engine could not be built (see the note above); "
                           "install g++ and ninja, or set RNNLAB_BACKEND=python.")
    return "python"


def get_backend(device: torch.device | None = None):
    if backend_name(device) == "cpp":
        from . import _cpp

        return _cpp.load()
    return unroll


class Recurrence(torch.autograd.Function):
    """One direction of one layer over all its steps. Inputs after the options are tensors; absent ones are empty."""

    @staticmethod
    def forward(ctx, backend, mode, reverse, batch_sizes, slot, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        out, h_n, c_n, *saved = backend.forward(mode, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, True)
        ctx.backend, ctx.mode, ctx.reverse, ctx.batch_sizes, ctx.slot = backend, mode, reverse, batch_sizes, slot
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, *saved)
        return out, h_n, c_n

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_hn, grad_cn):
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, *saved = ctx.saved_tensors
        # Outputs that took no part in the loss arrive as None: their gradient is zero.
        grad_out = torch.zeros(x.shape[0], w_hh.shape[1], dtype=x.dtype, device=x.device) if grad_out is None else grad_out.contiguous()
        grad_hn = torch.zeros_like(h0) if grad_hn is None else grad_hn.contiguous()
        if c0.numel() > 0:
            grad_cn = torch.zeros_like(c0) if grad_cn is None else grad_cn.contiguous()
        else:
            grad_cn = c0
        dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, norms = ctx.backend.backward(
            ctx.mode, x, ctx.batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, ctx.reverse, saved,
            grad_out, grad_hn, grad_cn, ctx.slot is not None)
        if ctx.slot is not None:
            ctx.slot.norms = norms
        has_bias = b_ih.numel() > 0
        return (None, None, None, None, None, dx, dh0, dc0 if c0.numel() > 0 else None, dw_ih, dw_hh,
                db_ih if has_bias else None, db_hh if has_bias else None)


def run(mode: int, reverse: bool, batch_sizes, x, h0, c0, w_ih, w_hh, b_ih, b_hh, slot=None):
    """Run one direction of one layer; record for backward only when a gradient can be asked for."""
    backend = get_backend(x.device)
    tensors = (x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return Recurrence.apply(backend, mode, reverse, batch_sizes, slot, *tensors)
    out, h_n, c_n = backend.forward(mode, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, False)[:3]
    return out, h_n, c_n
