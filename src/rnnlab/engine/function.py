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


def bernoulli(shape, p: float, value: float, like: torch.Tensor) -> torch.Tensor:
    """A tensor of ``shape`` (dtype and device of ``like``) holding ``value`` with probability ``p`` and 0 otherwise,
    independently per element: the regularisers' masks.

    Random numbers come from torch's default generator, so ``torch.manual_seed`` fixes them. With the C++ backend
    (CPU, float32/64) one 63-bit seed is drawn from it and the extension's counter-based generator fills the tensor
    (``csrc/masks.h``: ~10x faster than ``bernoulli_``, and a zoneout mask has T*B*H elements per layer direction);
    otherwise ``Tensor.bernoulli_``. The two give different masks for the same seed."""
    out = torch.empty(shape, dtype=like.dtype, device=like.device)
    if out.numel() and like.dtype in (torch.float32, torch.float64) and backend_name(like.device) == "cpp":
        from . import _cpp

        seed = int(torch.randint(0, 2 ** 63 - 1, (), dtype=torch.int64))
        _cpp.load().bernoulli_fill(out, float(p), float(value), seed)
        return out
    out.bernoulli_(p)
    return out if value == 1 else out.mul_(value)


class Recurrence(torch.autograd.Function):
    """One direction of one layer over all its steps. Inputs after the options are tensors; absent ones are empty.

    The last three (``rec_mask``, ``zone_h``, ``zone_c``: recurrent dropout and zoneout, see ``unroll``) are
    constants: they get no gradient and go to backward unchanged."""

    @staticmethod
    def forward(ctx, backend, mode, reverse, batch_sizes, slot, x, h0, c0, w_ih, w_hh, b_ih, b_hh, rec_mask, zone_h,
                zone_c):
        options = (rec_mask, zone_h, zone_c)
        extra = _extra(options)  # none when all are off: the call is exactly the plain one
        out, h_n, c_n, *saved = backend.forward(mode, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, True,
                                                *extra)
        ctx.backend, ctx.mode, ctx.reverse, ctx.batch_sizes, ctx.slot = backend, mode, reverse, batch_sizes, slot
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, *options, *saved)
        return out, h_n, c_n

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_hn, grad_cn):
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, rec_mask, zone_h, zone_c, *saved = ctx.saved_tensors
        # Outputs that took no part in the loss arrive as None: their gradient is zero.
        grad_out = torch.zeros(x.shape[0], w_hh.shape[1], dtype=x.dtype, device=x.device) if grad_out is None else grad_out.contiguous()
        grad_hn = torch.zeros_like(h0) if grad_hn is None else grad_hn.contiguous()
        if c0.numel() > 0:
            grad_cn = torch.zeros_like(c0) if grad_cn is None else grad_cn.contiguous()
        else:
            grad_cn = c0
        dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, norms = ctx.backend.backward(
            ctx.mode, x, ctx.batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, ctx.reverse, saved,
            grad_out, grad_hn, grad_cn, ctx.slot is not None, *_extra((rec_mask, zone_h, zone_c)))
        if ctx.slot is not None:
            ctx.slot.norms = norms
        has_bias = b_ih.numel() > 0
        return (None, None, None, None, None, dx, dh0, dc0 if c0.numel() > 0 else None, dw_ih, dw_hh,
                db_ih if has_bias else None, db_hh if has_bias else None, None, None, None)


def run(mode: int, reverse: bool, batch_sizes, x, h0, c0, w_ih, w_hh, b_ih, b_hh, slot=None, rec_mask=None,
        zone_h=None, zone_c=None):
    """Run one direction of one layer; record for backward only when a gradient can be requested.

    ``rec_mask`` (B, H), ``zone_h`` / ``zone_c`` (N, H): recurrent dropout and zoneout (see ``unroll``); None or
    empty = off, which runs exactly the plain loop."""
    backend = get_backend(x.device)
    tensors = (x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    empty = x.new_empty(0)
    options = tuple(empty if t is None else t.detach() for t in (rec_mask, zone_h, zone_c))
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return Recurrence.apply(backend, mode, reverse, batch_sizes, slot, *tensors, *options)
    out, h_n, c_n = backend.forward(mode, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, False,
                                    *_extra(options))[:3]
    return out, h_n, c_n


def _extra(options: tuple) -> tuple:
    """The trailing option arguments of a backend call: none when every option is off (empty), so a plain layer
    makes exactly the call it made before the options existed."""
    return options if any(t.numel() > 0 for t in options) else ()
