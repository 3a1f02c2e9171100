"""The time loop in pure PyTorch: forward over T steps keeping what backward needs, and backpropagation through
time over the same steps in reverse — written out, not left to autograd's tape.

This is the readable reference and the fallback engine; ``csrc/`` holds the same two loops in C++ with the same
signatures, and tests hold both to torch.nn. Only this module (and its C++ twin) knows about time.

Time layout. One direction of one layer sees its input as rows grouped by step, the layout of a PackedSequence:
step t owns rows ``[off_t, off_t + bs_t)`` with ``off_t = bs_0 + ... + bs_{t-1}``, ``bs`` non-increasing, and row r
of any step belongs to sequence r (sequences sorted by decreasing length). A padded batch (T, B, I) is the case
``bs_t = B`` for all t. At step t only the first ``bs_t`` sequences advance; the others keep their state, so

- processed forwards (t = 0..T-1), a finished sequence's state stays put and is its h_n;
- processed in reverse (t = T-1..0), a sequence starts from its own h0 row at its own last step.

Modes: 0 Elman tanh, 1 Elman ReLU, 2 LSTM, 3 GRU. Tensors use torch.nn's gate layouts (see each cell).

Interface (shared with the C++ backend)::

    forward(mode, x (N, I), batch_sizes (T,) int64 cpu, h0 (B, H), c0 (B, H) | empty, w_ih, w_hh,
            b_ih | empty, b_hh | empty, reverse, save,
            rec_mask (B, H) | empty, zone_h (N, H) | empty, zone_c (N, H) | empty)
            -> [out (N, H), h_n, c_n | empty, *saved]
    backward(mode, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, saved, grad_out (N, H),
             grad_hn (B, H), grad_cn | empty, probe, rec_mask, zone_h, zone_c)
             -> [dx, dh0, dc0 | empty, dw_ih, dw_hh, db_ih, db_hh, norms | empty]

The three trailing tensors are optional (left out or empty: off) and are the same in forward and backward; they are
constants, not differentiated. With (h̃_t, c̃_t) = cell(x_t, h_{t-1}, c_{t-1}) the cell's ordinary step:

- ``rec_mask`` m, variational dropout on the recurrent state (Gal & Ghahramani 2016, "A Theoretically Grounded
  Application of Dropout in Recurrent Neural Networks"): the h_{t-1} that enters W_hh is ``h_{t-1} ⊙ m[b]``, one
  row of m per sequence b, the same at every step (the caller draws m = Bernoulli(1-p)/(1-p)). Only the W_hh
  product sees it (the GRU's ``z ⊙ h_{t-1}`` term keeps the undropped state), so backward multiplies the part of
  dL/dh_{t-1} that came through W_hh by m, and dW_hh = Σ_t δa_t^T (h_{t-1} ⊙ m).
- ``zone_h`` / ``zone_c`` d, zoneout (Krueger et al. 2016, "Zoneout: Regularizing RNNs by Randomly Preserving
  Hidden Activations"): ``h_t = d_t ⊙ h_{t-1} + (1 - d_t) ⊙ h̃_t`` and, for the LSTM, ``c_t = d^c_t ⊙ c_{t-1} +
  (1 - d^c_t) ⊙ c̃_t`` (h̃_t = o ⊙ tanh(c̃_t) reads the un-zoned c̃_t: the cell is a black box, as in the
  paper), one row of d per row of x. Training passes Bernoulli(p) draws, evaluation the constant p (the
  expectation). The state and the output are the zoned h_t. Backward: δh̃ = (1 - d) ⊙ δh_t into the cell,
  d ⊙ δh_t straight to h_{t-1} (and the same for c).

``norms[t]`` (probe=True) is the Frobenius norm, over the sequences active at step t, of the total gradient
dL/dh_t — the gradient from the output at t plus the one flowing back from the next processed step — which is what
autograd would put in ``h_t.grad``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..cells import elman, gru, lstm

RNN_TANH, RNN_RELU, LSTM, GRU = 0, 1, 2, 3
_CELL = {RNN_TANH: elman, RNN_RELU: elman, LSTM: lstm, GRU: gru}
_OPTS = {RNN_TANH: {"nonlinearity": "tanh"}, RNN_RELU: {"nonlinearity": "relu"}, LSTM: {}, GRU: {}}


def _steps(batch_sizes: Tensor, reverse: bool):
    """(t, first row, active batch) for each step, in processing order."""
    sizes = batch_sizes.tolist()
    offsets = [0]
    for bs in sizes[:-1]:
        offsets.append(offsets[-1] + bs)
    order = range(len(sizes) - 1, -1, -1) if reverse else range(len(sizes))
    return [(t, offsets[t], sizes[t]) for t in order]


def _opt(t: Tensor) -> Tensor | None:
    return t if t.numel() > 0 else None


def _optional(t: Tensor | None) -> Tensor | None:
    """An optional trailing tensor: None or empty means off."""
    return t if t is not None and t.numel() > 0 else None


def _check_options(cell, m, zh, zc, state_shape, rows_shape) -> None:
    if m is not None and m.shape != state_shape:
        raise ValueError(f"rec_mask must have h0's shape {tuple(state_shape)} (one row per sequence); "
                         f"got {tuple(m.shape)}")
    for name, z in (("zone_h", zh), ("zone_c", zc)):
        if z is not None and z.shape != rows_shape:
            raise ValueError(f"{name} must have shape {tuple(rows_shape)} (one row per row of x); got {tuple(z.shape)}")
    if zc is not None and not cell.HAS_CELL_STATE:
        raise ValueError("zone_c zones out the LSTM's cell state; this cell has none. Pass an empty tensor")


def forward(mode, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, save, rec_mask=None, zone_h=None,
            zone_c=None):
    cell, opts = _CELL[mode], _OPTS[mode]
    b_ih, b_hh = _opt(b_ih), _opt(b_hh)
    m, zh, zc = _optional(rec_mask), _optional(zone_h), _optional(zone_c)
    N, H = x.shape[0], w_hh.shape[1]
    _check_options(cell, m, zh, zc, h0.shape, (N, H))
    gi = torch.addmm(b_ih, x, w_ih.t()) if b_ih is not None else x @ w_ih.t()  # (N, G*H): all steps, one GEMM
    state = [h0.clone()] + ([c0.clone()] if cell.HAS_CELL_STATE else [])  # each (B, H); rows advance in place
    out = x.new_empty(N, H)
    saved, h_prev_rows = None, None
    for t, row, bs in _steps(batch_sizes, reverse):
        rows = slice(row, row + bs)
        prev = tuple(s[:bs] for s in state)  # each (bs, H)
        h_rec = prev[0] * m[:bs] if m is not None else None  # (bs, H): the h_{t-1} that enters W_hh
        new, step_saved = cell.forward(gi[rows], prev, w_hh, b_hh, **opts, h_rec=h_rec)
        if zh is not None or zc is not None:  # zoneout: h_t = d h_{t-1} + (1 - d) h~_t, the same for c
            new = tuple(n if d is None else n + d[rows] * (p - n) for n, p, d in zip(new, prev, (zh, zc)))
        if save:
            if saved is None:  # one (N, w) buffer per saved tensor, filled step by step
                saved = [x.new_empty(N, s.shape[1]) for s in step_saved]
                h_prev_rows = x.new_empty(N, H)
            for buf, s in zip(saved, step_saved):
                buf[rows] = s
            # for dW_hh = sum_t dgh_t^T h_{t-1} (⊙ m), one GEMM after backward's loop
            h_prev_rows[rows] = prev[0] if h_rec is None else h_rec
        for s, n in zip(state, new):
            s[:bs] = n
        out[rows] = new[0]
    c_n = state[1] if cell.HAS_CELL_STATE else x.new_empty(0)
    return [out, state[0], c_n] + ([h_prev_rows] + saved if save else [])


def backward(mode, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, saved, grad_out, grad_hn, grad_cn, probe,
             rec_mask=None, zone_h=None, zone_c=None):
    cell, opts = _CELL[mode], _OPTS[mode]
    m, zh, zc = _optional(rec_mask), _optional(zone_h), _optional(zone_c)
    _check_options(cell, m, zh, zc, h0.shape, (x.shape[0], w_hh.shape[1]))
    h_prev_rows, saved = saved[0], saved[1:]
    G = w_hh.shape[0] // w_hh.shape[1]
    N = x.shape[0]
    dstate = [grad_hn.clone()] + ([grad_cn.clone()] if cell.HAS_CELL_STATE else [])  # each (B, H)
    dgi = x.new_empty(N, G * w_hh.shape[1])  # dL/d(gate pre-activation), input side
    dgh = dgi if mode != GRU else torch.empty_like(dgi)  # recurrent side: differs only for the GRU's n gate
    norms = x.new_zeros(len(batch_sizes)) if probe else x.new_empty(0)
    zones = (zh, zc)[:len(dstate)]
    for t, row, bs in reversed(_steps(batch_sizes, reverse)):
        rows = slice(row, row + bs)
        dstate[0][:bs] += grad_out[rows]  # dL/dh_t = from the output at t + from step t+1 (already in dstate)
        if probe:
            norms[t] = torch.linalg.vector_norm(dstate[0][:bs])
        dnow = tuple(d[:bs] for d in dstate)  # each (bs, H): dL/dh_t (, dL/dc_t)
        # zoneout: the cell's output h~_t gets (1 - d) of dL/dh_t, h_{t-1} gets d of it directly (same for c)
        dcell = tuple(dn if z is None else dn * (1 - z[rows]) for dn, z in zip(dnow, zones))
        dgi_t, dgh_t, dprev = cell.backward(dcell, tuple(s[rows] for s in saved), w_hh, **opts,
                                            rec_mask=None if m is None else m[:bs])
        dprev = tuple(dp if z is None else dp + z[rows] * dn for dp, dn, z in zip(dprev, dnow, zones))
        dgi[rows] = dgi_t
        if mode == GRU:
            dgh[rows] = dgh_t
        for d, p in zip(dstate, dprev):
            d[:bs] = p
    # The weights are shared across time, so their gradient is the sum over steps: one GEMM each.
    dx = dgi @ w_ih  # (N, I)
    dw_ih = dgi.t() @ x  # (G*H, I)
    dw_hh = dgh.t() @ h_prev_rows  # (G*H, H)
    has_bias = b_ih.numel() > 0
    db_ih = dgi.sum(0) if has_bias else x.new_empty(0)
    db_hh = dgh.sum(0) if has_bias else x.new_empty(0)
    dc0 = dstate[1] if cell.HAS_CELL_STATE else x.new_empty(0)
    return [dx, dstate[0], dc0, dw_ih, dw_hh, db_ih, db_hh, norms]
