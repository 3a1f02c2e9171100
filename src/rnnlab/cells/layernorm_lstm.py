"""Layer-normalised LSTM cell (Ba, Kiros & Hinton 2016, "Layer Normalization", §3.1 and their LN-LSTM): one time
step, forward and its analytic backward, plus the per-block layer norm both LN cells share.

Equations (δ = dL/d·; torch.nn.LSTM's gate order i, f, g, o; LN over each gate block separately)::

    LN_k(y; γ, β) = γ_k ⊙ (y_k - μ(y_k)) / sqrt(var(y_k) + ε) + β_k      per gate block y_k = y[k*H:(k+1)*H]
    a_t = LN(W_ih x_t; γ_ih, β_ih) + LN(W_hh h_{t-1}; γ_hh, β_hh)       # (B, 4H), blocks [a_i, a_f, a_g, a_o]
    i = σ(a_i)   f = σ(a_f)   g = tanh(a_g)   o = σ(a_o)
    c_t = f ⊙ c_{t-1} + i ⊙ g                                          # the state stays un-normalised
    h_t = o ⊙ tanh(LN(c_t; γ_c, β_c))

μ and var (biased, as torch.nn.LayerNorm) are over the H units of one block of one row; ε = 1e-5, torch's default.

Per gate block, not over all 4H: Ba et al. write LN(W_h h) over the stacked vector, but normalising the four blocks
together lets one gate's scale shift the others (a large input-gate pre-activation would shrink the forget gate's);
per-block statistics keep each gate's pre-activation at zero mean and unit variance before its own gain, which is
also what the common implementations do (TensorFlow's LayerNormBasicLSTMCell, the Skip RNN authors' LSTM).
β_ih and β_hh play the role of torch's b_ih and b_hh (a separate bias b would be redundant with them).

Layout: ``W_ih`` (4H, I), ``W_hh`` (4H, H), ``γ_ih, β_ih, γ_hh, β_hh`` (4H,), ``γ_c, β_c`` (H,). The time loop
(``rnnlab.engine.unroll_variants``) normalises the input side of every step at once, after its single GEMM, and
hands the step ``gi = LN(W_ih x_t; γ_ih, β_ih)``.

Backward of one LN (x̂ = (y - μ) / σ, r = 1/σ, out = γ ⊙ x̂ + β, means over the block)::

    δγ += δout ⊙ x̂      δβ += δout      δx̂ = δout ⊙ γ
    δy = r ⊙ (δx̂ - mean(δx̂) - x̂ ⊙ mean(δx̂ ⊙ x̂))

Backward of the step (δc already holds the gradient arriving from step t+1)::

    δy_c = δh_t ⊙ o ⊙ (1 - tanh²(LN(c_t)))               (the gradient at LN(c_t)'s output: δγ_c, δβ_c)
    δc   = δc_t + LN backward of δy_c
    δa_o = δh_t ⊙ tanh(LN(c_t)) ⊙ o(1-o)   δa_i = δc ⊙ g ⊙ i(1-i)
    δa_f = δc ⊙ c_{t-1} ⊙ f(1-f)            δa_g = δc ⊙ i ⊙ (1-g²)
    δz_hh = LN backward of δa (hidden side)   δh_{t-1} = δz_hh W_hh   δc_{t-1} = δc ⊙ f
"""
from __future__ import annotations

import torch
from torch import Tensor

GATES = 4
HAS_CELL_STATE = True
EPS = 1e-5  # torch.nn.LayerNorm's default


def layer_norm_blocks(y: Tensor, blocks: int, eps: float) -> tuple[Tensor, Tensor]:
    """Normalise each of the ``blocks`` equal column blocks of y (R, blocks*H).

    Returns x̂ (R, blocks*H) and 1/σ (R, blocks)."""
    R = y.shape[0]
    yb = y.view(R, blocks, -1)  # (R, blocks, H)
    var, mean = torch.var_mean(yb, dim=2, unbiased=False, keepdim=True)  # (R, blocks, 1) each
    rstd = torch.rsqrt(var + eps)  # (R, blocks, 1)
    xhat = ((yb - mean) * rstd).view(R, -1)  # (R, blocks*H)
    return xhat, rstd.view(R, blocks)  # (R, blocks)


def layer_norm_blocks_backward(dxhat: Tensor, xhat: Tensor, rstd: Tensor) -> Tensor:
    """δy from δx̂ = δout ⊙ γ, given x̂ (R, blocks*H) and 1/σ (R, blocks) of the forward."""
    R, blocks = rstd.shape
    d = dxhat.view(R, blocks, -1)  # (R, blocks, H)
    xb = xhat.view(R, blocks, -1)
    m1 = d.mean(2, keepdim=True)  # (R, blocks, 1)
    m2 = (d * xb).mean(2, keepdim=True)
    return ((d - m1 - xb * m2) * rstd.unsqueeze(2)).view(R, -1)  # (R, blocks*H)


def forward(gi: Tensor, state: tuple[Tensor, Tensor], w_hh: Tensor, ln_hh: tuple[Tensor, Tensor],
            ln_c: tuple[Tensor, Tensor], eps: float = EPS):
    """One step. gi: (B, 4H) = LN(W_ih x_t; γ_ih, β_ih); state: (h_{t-1}, c_{t-1}), each (B, H).

    Returns (h_t, c_t) and what backward needs: (gates (B, 4H), x̂_hh (B, 4H), 1/σ_hh (B, 4), c_{t-1}, ĉ_t,
    1/σ_c (B, 1), tanh(LN(c_t)))."""
    h_prev, c_prev = state
    g_hh, b_hh = ln_hh
    g_c, b_c = ln_c
    xhat_hh, rstd_hh = layer_norm_blocks(h_prev @ w_hh.t(), GATES, eps)  # (B, 4H), (B, 4)
    a = gi + torch.addcmul(b_hh, xhat_hh, g_hh)  # (B, 4H)
    a_i, a_f, a_g, a_o = a.chunk(4, dim=1)  # 4 x (B, H)
    i, f, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.sigmoid(a_o)
    g = torch.tanh(a_g)
    c = f * c_prev + i * g  # (B, H)
    chat, rstd_c = layer_norm_blocks(c, 1, eps)  # (B, H), (B, 1)
    tanh_c = torch.tanh(torch.addcmul(b_c, chat, g_c))  # (B, H)
    h = o * tanh_c
    gates = torch.cat([i, f, g, o], dim=1)  # (B, 4H)
    return (h, c), (gates, xhat_hh, rstd_hh, c_prev, chat, rstd_c, tanh_c)


def backward(dstate: tuple[Tensor, Tensor], saved: tuple[Tensor, ...], w_hh: Tensor, g_hh: Tensor, g_c: Tensor):
    """Given (δh_t, δc_t) from later steps, return δa (B, 4H) — the gradient at both LNs' outputs —, δz_hh (B, 4H)
    at W_hh h_{t-1}, δy_c (B, H) at LN(c_t)'s output, and (δh_{t-1}, δc_{t-1})."""
    dh, dc = dstate
    gates, xhat_hh, rstd_hh, c_prev, chat, rstd_c, tanh_c = saved
    i, f, g, o = gates.chunk(4, dim=1)  # 4 x (B, H)
    dy_c = dh * o * (1.0 - tanh_c * tanh_c)  # (B, H)
    dc = dc + layer_norm_blocks_backward(dy_c * g_c, chat, rstd_c)
    da = torch.cat(
        [dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f), dc * i * (1.0 - g * g), dh * tanh_c * o * (1.0 - o)],
        dim=1,
    )  # (B, 4H)
    dz_hh = layer_norm_blocks_backward(da * g_hh, xhat_hh, rstd_hh)  # (B, 4H)
    dh_prev = dz_hh @ w_hh  # (B, H)
    return da, dz_hh, dy_c, (dh_prev, dc * f)
