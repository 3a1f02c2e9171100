"""Elman RNN cell: one time step, forward and its analytic backward.

Equation (torch.nn.RNN's, weight names included)::

    z_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
    h_t = f(z_t)                     f = tanh, or ReLU (use identity init with ReLU: IRNN, Le et al. 2015)

Gate layout: one block, ``W_ih`` is (H, I) and ``W_hh`` is (H, H).

The input half ``gi = W_ih x_t + b_ih`` of every step is computed by the time loop as one GEMM before the loop,
so a step receives it ready-made. The cell never loops over time.
"""
from __future__ import annotations

import torch
from torch import Tensor

GATES = 1  # rows of W_hh per hidden unit
HAS_CELL_STATE = False


def forward(gi: Tensor, state: tuple[Tensor], w_hh: Tensor, b_hh: Tensor | None, nonlinearity: str = "tanh",
            h_rec: Tensor | None = None):
    """One step. gi: (B, H) input half of z_t; state: (h_{t-1},), (B, H); h_rec: the h_{t-1} that enters W_hh
    (None: state's). Returns (h_t,) and what backward needs."""
    h_prev = state[0] if h_rec is None else h_rec
    z = gi + (torch.addmm(b_hh, h_prev, w_hh.t()) if b_hh is not None else h_prev @ w_hh.t())  # (B, H)
    h = torch.tanh(z) if nonlinearity == "tanh" else torch.relu(z)  # (B, H)
    return (h,), (h,)


def backward(dstate: tuple[Tensor], saved: tuple[Tensor, ...], w_hh: Tensor, nonlinearity: str = "tanh",
             rec_mask: Tensor | None = None):
    """Given (dL/dh_t,) (B, H), return dL/dz_t for the input and recurrent halves and (dL/dh_{t-1},); ``rec_mask``:
    the mask forward's ``h_rec`` carried (its gradient path is W_hh)."""
    (dh,) = dstate
    (h,) = saved
    # tanh'(z) = 1 - h^2 ; relu'(z) = [z > 0] = [h > 0]
    dz = dh * (1.0 - h * h) if nonlinearity == "tanh" else dh * (h > 0).to(dh.dtype)  # (B, H)
    dh_prev = dz @ w_hh  # (B, H)
    if rec_mask is not None:
        dh_prev = dh_prev * rec_mask
    return dz, dz, (dh_prev,)
