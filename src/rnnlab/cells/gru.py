"""GRU cell: one time step, forward and its analytic backward.

Equations (torch.nn.GRU's; Cho et al. 2014, with ``b_hn`` inside the reset product as torch and cuDNN define it)::

    r = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t-1} + b_hn))
    h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

Gate layout: rows of ``W_ih`` (3H, I), ``W_hh`` (3H, H) and the biases are stacked as (r, z, n), torch's order.

Because ``r`` multiplies only the recurrent half of n's pre-activation, the gradient that reaches ``W_hn``/``b_hn``
is r times the one that reaches ``W_in``/``b_in``: backward returns the two halves separately (``dgi``, ``dgh``).
"""
from __future__ import annotations

import torch
from torch import Tensor

GATES = 3
HAS_CELL_STATE = False


def forward(gi: Tensor, state: tuple[Tensor], w_hh: Tensor, b_hh: Tensor | None, h_rec: Tensor | None = None):
    """One step. gi: (B, 3H) = W_ih x_t + b_ih; state: (h_{t-1},), (B, H); h_rec: the h_{t-1} that enters W_hh
    (None: state's; the z ⊙ h_{t-1} term always uses state's)."""
    (h_prev,) = state
    h_in = h_prev if h_rec is None else h_rec
    gh = torch.addmm(b_hh, h_in, w_hh.t()) if b_hh is not None else h_in @ w_hh.t()  # (B, 3H)
    i_r, i_z, i_n = gi.chunk(3, dim=1)  # 3 x (B, H)
    h_r, h_z, h_n = gh.chunk(3, dim=1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    h = n + z * (h_prev - n)  # (B, H) == (1 - z) n + z h_prev
    return (h,), (torch.cat([r, z, n, h_n], dim=1), h_prev)  # (B, 4H)


def backward(dstate: tuple[Tensor], saved: tuple[Tensor, ...], w_hh: Tensor, rec_mask: Tensor | None = None):
    """Given (dL/dh_t,) (B, H), return dL/d(input half) (B, 3H), dL/d(recurrent half) (B, 3H) and (dL/dh_{t-1},);
    ``rec_mask``: the mask forward's ``h_rec`` carried (it scales the W_hh path only)."""
    (dh,) = dstate
    rzn, h_prev = saved
    r, z, n, h_n = rzn.chunk(4, dim=1)  # 4 x (B, H)
    da_n = dh * (1.0 - z) * (1.0 - n * n)  # through n = tanh(a_n)
    da_z = dh * (h_prev - n) * z * (1.0 - z)
    da_r = da_n * h_n * r * (1.0 - r)
    dgi = torch.cat([da_r, da_z, da_n], dim=1)  # (B, 3H)
    dgh = torch.cat([da_r, da_z, da_n * r], dim=1)  # (B, 3H)
    dh_rec = dgh @ w_hh  # (B, H): through W_hh
    dh_prev = (dh_rec if rec_mask is None else dh_rec * rec_mask) + dh * z  # (B, H)
    return dgi, dgh, (dh_prev,)
