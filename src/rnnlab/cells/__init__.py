"""One time step of each recurrent cell: forward and its analytic backward, as pure tensor functions.

Every cell module has the same shape so the one time loop (``rnnlab.engine.unroll``) can drive any of them:

- ``GATES``: rows of ``W_hh`` per hidden unit (1 Elman, 4 LSTM, 3 GRU);
- ``HAS_CELL_STATE``: whether the state is ``(h, c)`` rather than ``(h,)``;
- ``forward(gi, state, w_hh, b_hh, h_rec=None) -> (new_state, saved)`` where ``gi = W_ih x_t + b_ih`` was computed
  for all steps by one GEMM; ``h_rec`` (default ``state[0]``) is the h_{t-1} that enters ``W_hh`` — the engine's
  variational recurrent dropout passes ``h_{t-1} ⊙ m`` (Gal & Ghahramani 2016) while the GRU's
  ``z ⊙ h_{t-1}`` term keeps the undropped state;
- ``backward(dstate, saved, w_hh, rec_mask=None) -> (dgi, dgh, dstate_prev)``: the gradient of the gate
  pre-activations on the input side and on the recurrent side (equal except for the GRU's n gate) and the gradient
  of the previous state; ``rec_mask`` (the m of ``h_rec``) multiplies the part of dL/dh_{t-1} that came through
  ``W_hh``.
"""
from . import elman as elman
from . import gru as gru
from . import lstm as lstm

__all__ = ["elman", "gru", "lstm"]
