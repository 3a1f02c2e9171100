"""Layer-normalised GRU cell (Ba, Kiros & Hinton 2016, "Layer Normalization": the normalisation of their LN-LSTM
applied to torch.nn.GRU's gates): one time step, forward and its analytic backward.

Equations (torch.nn.GRU's gate order r, z, n, with the hidden side's shift inside the reset product as torch puts
``b_hn`` there; LN over each gate block separately, see ``layernorm_lstm`` for LN_k and why per block)::

    [i_r, i_z, i_n] = LN(W_ih x_t; γ_ih, β_ih)      [h_r, h_z, h_n] = LN(W_hh h_{t-1}; γ_hh, β_hh)   # (B, 3H)
    r = σ(i_r + h_r)    z = σ(i_z + h_z)    n = tanh(i_n + r ⊙ h_n)
    h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

A GRU has no separate cell state, so only the gate pre-activations are normalised (h_t is a convex mix of n ∈ (-1, 1)
and h_{t-1}, bounded already). Layout: ``W_ih`` (3H, I), ``W_hh`` (3H, H), ``γ_ih, β_ih, γ_hh, β_hh`` (3H,); the
time loop hands the step ``gi = LN(W_ih x_t; γ_ih, β_ih)`` computed for all steps at once.

Backward (δ = dL/d·; δh_t is the total gradient of h_t)::

    δa_n = δh_t ⊙ (1-z) ⊙ (1-n²)    δa_z = δh_t ⊙ (h_{t-1} - n) ⊙ z(1-z)    δa_r = δa_n ⊙ h_n ⊙ r(1-r)
    δgi = [δa_r, δa_z, δa_n]  (input-side LN output)    δgh = [δa_r, δa_z, δa_n ⊙ r]  (hidden-side LN output)
    δz_hh = LN backward of δgh      δh_{t-1} = δz_hh W_hh + δh_t ⊙ z
"""
from __future__ import annotations

import torch
from torch import Tensor

from .layernorm_lstm import EPS, layer_norm_blocks, layer_norm_blocks_backward

GATES = 3
HAS_CELL_STATE = False


def forward(gi: Tensor, state: tuple[Tensor], w_hh: Tensor, ln_hh: tuple[Tensor, Tensor], eps: float = EPS):
    """One step. gi: (B, 3H) = LN(W_ih x_t; γ_ih, β_ih); state: (h_{t-1},), (B, H).

    Returns (h_t,) and what backward needs: ([r, z, n, h_n] (B, 4H), h_{t-1}, x̂_hh (B, 3H), 1/σ_hh (B, 3))."""
    (h_prev,) = state
    g_hh, b_hh = ln_hh
    xhat_hh, rstd_hh = layer_norm_blocks(h_prev @ w_hh.t(), GATES, eps)  # (B, 3H), (B, 3)
    gh = torch.addcmul(b_hh, xhat_hh, g_hh)  # (B, 3H)
    i_r, i_z, i_n = gi.chunk(3, dim=1)  # 3 x (B, H)
    h_r, h_z, h_n = gh.chunk(3, dim=1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    h = n + z * (h_prev - n)  # (B, H) == (1 - z) n + z h_prev
    return (h,), (torch.cat([r, z, n, h_n], dim=1), h_prev, xhat_hh, rstd_hh)  # (B, 4H), ...


def backward(dstate: tuple[Tensor], saved: tuple[Tensor, ...], w_hh: Tensor, g_hh: Tensor):
    """Given (δh_t,) (B, H), return δgi (B, 3H), δgh (B, 3H) at the two LNs' outputs, δz_hh (B, 3H) at W_hh h_{t-1},
    and (δh_{t-1},)."""
    (dh,) = dstate
    rzn, h_prev, xhat_hh, rstd_hh = saved
    r, z, n, h_n = rzn.chunk(4, dim=1)  # 4 x (B, H)
    da_n = dh * (1.0 - z) * (1.0 - n * n)
    da_z = dh * (h_prev - n) * z * (1.0 - z)
    da_r = da_n * h_n * r * (1.0 - r)
    dgi = torch.cat([da_r, da_z, da_n], dim=1)  # (B, 3H)
    dgh = torch.cat([da_r, da_z, da_n * r], dim=1)  # (B, 3H)
    dz_hh = layer_norm_blocks_backward(dgh * g_hh, xhat_hh, rstd_hh)  # (B, 3H)
    dh_prev = dz_hh @ w_hh + dh * z  # (B, H)
    return dgi, dgh, dz_hh, (dh_prev,)
