"""Skip RNN's state-update gate (Campos, Jou, Giró-i-Nieto, Torres & Chang 2018, "Skip RNN: Learning to Skip State
Updates in Recurrent Neural Networks", ICLR, eqs. 2-5): one time step of the gate, forward and its analytic backward.

The gate wraps any cell S of ``rnnlab.cells`` (Elman, LSTM, GRU), whose step gives the candidate state S(s_{t-1}, x_t)::

    u_t     = round(ũ_t)                                              binary: update (1) or copy (0); ũ_1 = 1
    s_t     = u_t · S(s_{t-1}, x_t) + (1 - u_t) · s_{t-1}
    Δũ_t    = σ(W_p s_t + b_p)                           W_p (1, H), b_p (1,): the update-probability head
    ũ_{t+1} = u_t · Δũ_t + (1 - u_t) · (ũ_t + min(Δũ_t, 1 - ũ_t))      (accumulates while steps are skipped)

The state s is (h, c) for an LSTM and h otherwise; Δũ_t reads c_t for an LSTM (the authors' code) and h_t otherwise.
``round`` is piecewise constant, so its gradient is replaced by the straight-through estimator (Bengio et al. 2013):
∂u_t/∂ũ_t := 1. A budget loss λ Σ_t u_t (the paper's L_budget) reaches ũ the same way. ``round`` is torch.round
(half to even: ũ = 0.5 copies).

``hard=False`` uses u_t = ũ_t instead of round(ũ_t): the straight-through backward below is then the exact derivative,
which is how the tests gradcheck it.

Backward of the gate at step t (δ = dL/d·; δũ_{t+1} arrives from step t+1; w = ∂min(Δũ, 1-ũ)/∂Δũ, which is 1
when Δũ < 1-ũ, 0 when Δũ > 1-ũ and 1/2 at a tie, as torch.minimum splits it)::

    δΔũ_t  = δũ_{t+1} ⊙ (u_t + (1 - u_t) w)      δp_t = δΔũ_t ⊙ Δũ_t (1 - Δũ_t)      (p_t = W_p s_t + b_p)
    δs_t  += δp_t W_p                                 δW_p += δp_t^T s_t      δb_p += Σ δp_t
    δu_t   = δu_t(direct, e.g. the budget) + <δs_t, S(s_{t-1}, x_t) - s_{t-1}>
             + δũ_{t+1} ⊙ (Δũ_t - ũ_t - min(Δũ_t, 1-ũ_t))
    δũ_t   = δu_t + δũ_{t+1} ⊙ (1 - u_t) w                    (straight through: ∂u/∂ũ = 1)
    δS     = u_t ⊙ δs_t   (into the cell's backward)     δs_{t-1} = (1 - u_t) ⊙ δs_t + the cell's δs_{t-1}
"""
from __future__ import annotations

import torch
from torch import Tensor


def binarize(ut: Tensor, hard: bool) -> Tensor:
    """u_t from ũ_t (B, 1): round(ũ_t) (straight-through in backward), or ũ_t itself when ``hard`` is False."""
    return torch.round(ut) if hard else ut


def mix(u: Tensor, cand: Tensor, prev: Tensor) -> Tensor:
    """u · cand + (1 - u) · prev, u (B, 1) broadcast over the H units."""
    return torch.addcmul(prev, u, cand - prev)  # (B, H)


def forward(u: Tensor, ut: Tensor, s: Tensor, w_p: Tensor, b_p: Tensor) -> tuple[Tensor, Tensor]:
    """ũ_{t+1} (B, 1) and Δũ_t (B, 1) from u_t, ũ_t (B, 1) and the state s_t (B, H) the head reads."""
    delta = torch.sigmoid(torch.addmm(b_p, s, w_p.t()))  # (B, 1)
    ut_next = mix(u, delta, ut + torch.minimum(delta, 1.0 - ut))  # (B, 1)
    return ut_next, delta


def backward(dut_next: Tensor, u: Tensor, ut: Tensor, delta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """From δũ_{t+1} (B, 1): δp_t (B, 1) at the head's pre-activation, the part of δu_t through ũ_{t+1}, and the
    part of δũ_t that bypasses u_t (each (B, 1))."""
    room = 1.0 - ut
    w = torch.where(delta < room, 1.0, torch.where(delta == room, 0.5, 0.0)).to(delta.dtype)  # ∂min/∂Δũ
    dp = dut_next * (u + (1.0 - u) * w) * delta * (1.0 - delta)
    du = dut_next * (delta - ut - torch.minimum(delta, room))
    dut = dut_next * (1.0 - u) * w
    return dp, du, dut
