"""The time loops of the cell variants in pure PyTorch — layer-normalised LSTM / GRU and Skip RNN — forward keeping
what backward needs, and BPTT written out, as ``unroll.py`` does for the plain cells (same row layout: step t owns
rows ``[off_t, off_t + bs_t)`` of a PackedSequence-style (N, ·) tensor; see that module). ``csrc/variants.h`` holds
the same loops in C++ with the same signatures. The dilated RNN needs no loop of its own (``rnnlab.variants``).

Modes: 0 Elman tanh, 1 Elman ReLU, 2 LSTM, 3 GRU (``unroll``'s numbering); the LN loops take 2 and 3.

Interface (shared with the C++ backend; ``saved`` is backend-private)::

    ln_forward(mode, x (N, I), batch_sizes (T,), h0 (B, H), c0 (B, H) | empty, w_ih (G*H, I), w_hh (G*H, H),
               g_ih, b_ih, g_hh, b_hh (G*H,), g_c, b_c (H,) | empty, eps, reverse, save)
        -> [out (N, H), h_n, c_n | empty, *saved]
    ln_backward(mode, x, batch_sizes, h0, c0, w_ih, w_hh, g_ih, b_ih, g_hh, b_hh, g_c, b_c, eps, reverse, saved,
                grad_out (N, H), grad_hn (B, H), grad_cn | empty)
        -> [dx, dh0, dc0 | empty, dw_ih, dw_hh, dg_ih, db_ih, dg_hh, db_hh, dg_c | empty, db_c | empty]
    skip_forward(mode, x, batch_sizes, h0, c0 | empty, w_ih, w_hh, b_ih | empty, b_hh | empty, w_p (1, H), b_p (1,),
                 hard, reverse, save) -> [out (N, H), u (N,), h_n, c_n | empty, *saved]
    skip_backward(mode, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_p, b_p, hard, reverse, saved,
                  grad_out (N, H), grad_u (N,), grad_hn (B, H), grad_cn | empty)
        -> [dx, dh0, dc0 | empty, dw_ih, dw_hh, db_ih | empty, db_hh | empty, dw_p, db_p]
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..cells import elman, gru, layernorm_gru, layernorm_lstm, lstm, skip
from ..cells.layernorm_lstm import layer_norm_blocks, layer_norm_blocks_backward
from .unroll import GRU, LSTM, RNN_RELU, RNN_TANH, _opt, _steps

_LN_CELL = {LSTM: layernorm_lstm, GRU: layernorm_gru}
_CELL = {RNN_TANH: elman, RNN_RELU: elman, LSTM: lstm, GRU: gru}
_OPTS = {RNN_TANH: {"nonlinearity": "tanh"}, RNN_RELU: {"nonlinearity": "relu"}, LSTM: {}, GRU: {}}


def _ln_cell(mode: int):
    if mode not in _LN_CELL:
        raise ValueError(f"layer-normalised loops run mode 2 (LSTM) or 3 (GRU); got mode {mode!r}.")
    return _LN_CELL[mode]


# -- layer-normalised LSTM / GRU ----------------------------------------------------------------------------------
def ln_forward(mode, x, batch_sizes, h0, c0, w_ih, w_hh, g_ih, b_ih, g_hh, b_hh, g_c, b_c, eps, reverse, save):
    cell = _ln_cell(mode)
    N, H, G = x.shape[0], w_hh.shape[1], cell.GATES
    # The input side of every step at once: one GEMM, one LN over (N, G) blocks.
    xhat_ih, rstd_ih = layer_norm_blocks(x @ w_ih.t(), G, eps)  # (N, G*H), (N, G)
    gi = torch.addcmul(b_ih, xhat_ih, g_ih)  # (N, G*H)
    state = [h0.clone()] + ([c0.clone()] if cell.HAS_CELL_STATE else [])  # each (B, H); rows advance in place
    out = x.new_empty(N, H)
    saved, h_prev_rows = None, None
    for t, row, bs in _steps(batch_sizes, reverse):
        rows = slice(row, row + bs)
        prev = tuple(s[:bs] for s in state)  # each (bs, H)
        if cell is layernorm_lstm:
            new, step_saved = cell.forward(gi[rows], prev, w_hh, (g_hh, b_hh), (g_c, b_c), eps)
        else:
            new, step_saved = cell.forward(gi[rows], prev, w_hh, (g_hh, b_hh), eps)
        if save:
            if saved is None:  # one (N, w) buffer per saved tensor, filled step by step
                saved = [x.new_empty(N, s.shape[1]) for s in step_saved]
                h_prev_rows = x.new_empty(N, H)
            for buf, s in zip(saved, step_saved):
                buf[rows] = s
            h_prev_rows[rows] = prev[0]  # for dW_hh = sum_t dz_hh_t^T h_{t-1}: one GEMM after backward's loop
        for s, n in zip(state, new):
            s[:bs] = n
        out[rows] = new[0]
    c_n = state[1] if cell.HAS_CELL_STATE else x.new_empty(0)
    return [out, state[0], c_n] + ([xhat_ih, rstd_ih, h_prev_rows] + saved if save else [])


def ln_backward(mode, x, batch_sizes, h0, c0, w_ih, w_hh, g_ih, b_ih, g_hh, b_hh, g_c, b_c, eps, reverse, saved,
                grad_out, grad_hn, grad_cn):
    cell = _ln_cell(mode)
    xhat_ih, rstd_ih, h_prev_rows, saved = saved[0], saved[1], saved[2], saved[3:]
    is_lstm = cell is layernorm_lstm
    N, H, G = x.shape[0], w_hh.shape[1], cell.GATES
    dstate = [grad_hn.clone()] + ([grad_cn.clone()] if is_lstm else [])  # each (B, H)
    dgi = x.new_empty(N, G * H)  # δ at the input side's LN output
    dgh = dgi if is_lstm else torch.empty_like(dgi)  # δ at the hidden side's LN output: the same for the LSTM
    dz_hh = x.new_empty(N, G * H)  # δ at W_hh h_{t-1}
    dy_c = x.new_empty(N, H) if is_lstm else None  # δ at LN(c_t)'s output
    for t, row, bs in reversed(_steps(batch_sizes, reverse)):
        rows = slice(row, row + bs)
        dstate[0][:bs] += grad_out[rows]  # δh_t = from the output at t + from step t+1 (already in dstate)
        step_saved = tuple(s[rows] for s in saved)
        dnow = tuple(d[:bs] for d in dstate)
        if is_lstm:
            dgi[rows], dz_hh[rows], dy_c[rows], dprev = cell.backward(dnow, step_saved, w_hh, g_hh, g_c)
        else:
            dgi[rows], dgh[rows], dz_hh[rows], dprev = cell.backward(dnow, step_saved, w_hh, g_hh)
        for d, p in zip(dstate, dprev):
            d[:bs] = p
    xhat_hh = saved[1] if is_lstm else saved[2]  # (N, G*H)
    # Parameters shared across time: their gradients are sums over all rows, one reduction or GEMM each.
    dg_ih, db_ih = (dgi * xhat_ih).sum(0), dgi.sum(0)  # (G*H,)
    dg_hh, db_hh = (dgh * xhat_hh).sum(0), dgh.sum(0)
    dz_ih = layer_norm_blocks_backward(dgi * g_ih, xhat_ih, rstd_ih)  # (N, G*H)
    dx = dz_ih @ w_ih  # (N, I)
    dw_ih = dz_ih.t() @ x  # (G*H, I)
    dw_hh = dz_hh.t() @ h_prev_rows  # (G*H, H)
    if is_lstm:
        chat = saved[4]  # (N, H)
        dg_c, db_c, dc0 = (dy_c * chat).sum(0), dy_c.sum(0), dstate[1]  # (H,) each
    else:
        dg_c = db_c = dc0 = x.new_empty(0)
    return [dx, dstate[0], dc0, dw_ih, dw_hh, dg_ih, db_ih, dg_hh, db_hh, dg_c, db_c]


# -- Skip RNN -------------------------------------------------------------------------------------------------------
def skip_forward(mode, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_p, b_p, hard, reverse, save):
    cell, opts = _CELL[mode], _OPTS[mode]
    b_ih, b_hh = _opt(b_ih), _opt(b_hh)
    N, H, B = x.shape[0], w_hh.shape[1], h0.shape[0]
    has_c = cell.HAS_CELL_STATE
    gi = torch.addmm(b_ih, x, w_ih.t()) if b_ih is not None else x @ w_ih.t()  # (N, G*H): all steps, one GEMM
    state = [h0.clone()] + ([c0.clone()] if has_c else [])  # each (B, H)
    ut_state = x.new_ones(B, 1)  # ũ_1 = 1: every sequence updates at its first step
    out, u_out = x.new_empty(N, H), x.new_empty(N)
    keep = None
    for t, row, bs in _steps(batch_sizes, reverse):
        rows = slice(row, row + bs)
        prev = tuple(s[:bs] for s in state)  # each (bs, H)
        ut = ut_state[:bs].clone()  # (bs, 1); a copy: ut_state advances in place below
        u = skip.binarize(ut, hard)  # (bs, 1)
        cand, cell_saved = cell.forward(gi[rows], prev, w_hh, b_hh, **opts)  # S(s_{t-1}, x_t)
        new = tuple(skip.mix(u, c, p) for c, p in zip(cand, prev))  # s_t
        head = new[1] if has_c else new[0]  # what W_p reads: c_t (LSTM) or h_t
        ut_next, delta = skip.forward(u, ut, head, w_p, b_p)
        if save:
            step = [*prev, *cand, u, ut, delta, head, *cell_saved]
            if keep is None:  # one (N, w) buffer per saved tensor, filled step by step
                keep = [x.new_empty(N, s.shape[1]) for s in step]
            for buf, s in zip(keep, step):
                buf[rows] = s
        for s, n in zip(state, new):
            s[:bs] = n
        ut_state[:bs] = ut_next
        out[rows] = new[0]
        u_out[rows] = u.squeeze(1)
    c_n = state[1] if has_c else x.new_empty(0)
    return [out, u_out, state[0], c_n] + (keep if save else [])


def skip_backward(mode, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_p, b_p, hard, reverse, saved,
                  grad_out, grad_u, grad_hn, grad_cn):
    cell, opts = _CELL[mode], _OPTS[mode]
    has_c = cell.HAS_CELL_STATE
    k = 2 if has_c else 1  # tensors per state
    prev_rows, cand_rows = saved[:k], saved[k:2 * k]
    u_rows, ut_rows, delta_rows, head_rows = saved[2 * k:2 * k + 4]
    cell_saved = saved[2 * k + 4:]
    N, H, B = x.shape[0], w_hh.shape[1], h0.shape[0]
    G = w_hh.shape[0] // H
    dstate = [grad_hn.clone()] + ([grad_cn.clone()] if has_c else [])  # each (B, H)
    dut_state = x.new_zeros(B, 1)  # δũ_{t+1}: nothing flows back from beyond the last step
    dgi = x.new_empty(N, G * H)
    dgh = dgi if mode != GRU else torch.empty_like(dgi)  # they differ only for the GRU's n gate
    dp_rows = x.new_empty(N, 1)
    for t, row, bs in reversed(_steps(batch_sizes, reverse)):
        rows = slice(row, row + bs)
        dstate[0][:bs] += grad_out[rows]
        u, ut, delta = u_rows[rows], ut_rows[rows], delta_rows[rows]  # (bs, 1) each
        dp, du, dut = skip.backward(dut_state[:bs], u, ut, delta)
        dstate[k - 1][:bs] += dp @ w_p  # (bs, H): Δũ_t reads c_t (LSTM) or h_t
        dp_rows[rows] = dp
        for d, c, p in zip(dstate, cand_rows, prev_rows):  # δu_t through s_t = s_{t-1} + u (S - s_{t-1})
            du = du + (d[:bs] * (c[rows] - p[rows])).sum(1, keepdim=True)
        dut_state[:bs] = du + grad_u[rows].unsqueeze(1) + dut  # straight through: δũ_t = δu_t + the bypass
        dcand = tuple(u * d[:bs] for d in dstate)
        dgi_t, dgh_t, dprev = cell.backward(dcand, tuple(s[rows] for s in cell_saved), w_hh, **opts)
        dgi[rows] = dgi_t
        if mode == GRU:
            dgh[rows] = dgh_t
        for d, p in zip(dstate, dprev):
            d[:bs] = torch.addcmul(p, 1.0 - u, d[:bs])  # (1 - u) δs_t + the cell's δs_{t-1}
    dx = dgi @ w_ih  # (N, I)
    dw_ih = dgi.t() @ x  # (G*H, I)
    dw_hh = dgh.t() @ prev_rows[0]  # (G*H, H)
    has_bias = b_ih.numel() > 0
    db_ih = dgi.sum(0) if has_bias else x.new_empty(0)
    db_hh = dgh.sum(0) if has_bias else x.new_empty(0)
    dw_p = dp_rows.t() @ head_rows  # (1, H)
    db_p = dp_rows.sum(0)  # (1,)
    dc0 = dstate[1] if has_c else x.new_empty(0)
    return [dx, dstate[0], dc0, dw_ih, dw_hh, db_ih, db_hh, dw_p, db_p]
