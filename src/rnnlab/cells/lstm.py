"""LSTM cell: one time step, forward and its analytic backward.

Equations (torch.nn.LSTM's; Hochreiter & Schmidhuber 1997 with the forget gate of Gers et al. 2000)::

    [a_i, a_f, a_g, a_o] = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh      # gate pre-activations, (B, 4H)
    i = σ(a_i)   f = σ(a_f)   g = tanh(a_g)   o = σ(a_o)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)

Gate layout: rows of ``W_ih`` (4H, I), ``W_hh`` (4H, H) and the biases are stacked as (i, f, g, o), torch's order,
so a state_dict moves between rnnlab and torch.nn unchanged.

Backward (δ = dL/d·, δc_t already holds the gradient arriving from step t+1)::

    δc  = δc_t + δh_t ⊙ o ⊙ (1 - tanh²(c_t))
    δa_o = δh_t ⊙ tanh(c_t) ⊙ o(1-o)      δa_i = δc ⊙ g ⊙ i(1-i)
    δa_f = δc ⊙ c_{t-1} ⊙ f(1-f)          δa_g = δc ⊙ i ⊙ (1-g²)
    δc_{t-1} = δc ⊙ f                      δh_{t-1} = δa W_hh
"""
from __future__ import annotations

import torch
from torch import Tensor

GATES = 4
HAS_CELL_STATE = True


def forward(gi: Tensor, state: tuple[Tensor, Tensor], w_hh: Tensor, b_hh: Tensor | None, h_rec: Tensor | None = None):
    """One step. gi: (B, 4H) input half of the gates; state: (h_{t-1}, c_{t-1}), each (B, H); h_rec: the h_{t-1}
    that enters W_hh (None: state's)."""
    h_prev, c_prev = state
    h_prev = h_prev if h_rec is None else h_rec
    a = gi + (torch.addmm(b_hh, h_prev, w_hh.t()) if b_hh is not None else h_prev @ w_hh.t())  # (B, 4H)
    a_i, a_f, a_g, a_o = a.chunk(4, dim=1)  # 4 x (B, H)
    i, f, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.sigmoid(a_o)
    g = torch.tanh(a_g)
    c = f * c_prev + i * g  # (B, H)
    tanh_c = torch.tanh(c)
    h = o * tanh_c  # (B, H)
    return (h, c), (torch.cat([i, f, g, o], dim=1), c_prev, tanh_c)  # gates (B, 4H)


def backward(dstate: tuple[Tensor, Tensor], saved: tuple[Tensor, ...], w_hh: Tensor, rec_mask: Tensor | None = None):
    """Given (dL/dh_t, dL/dc_t) from later steps, return dL/da_t (input and recurrent halves), (dh_{t-1}, dc_{t-1});
    ``rec_mask``: the mask forward's ``h_rec`` carried (δh_{t-1} = (δa W_hh) ⊙ m)."""
    dh, dc = dstate
    gates, c_prev, tanh_c = saved
    i, f, g, o = gates.chunk(4, dim=1)  # 4 x (B, H)
    dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
    da = torch.cat(
        [dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f), dc * i * (1.0 - g * g), dh * tanh_c * o * (1.0 - o)],
        dim=1,
    )  # (B, 4H)
    dh_prev = da @ w_hh  # (B, H)
    if rec_mask is not None:
        dh_prev = dh_prev * rec_mask
    return da, da, (dh_prev, dc * f)
