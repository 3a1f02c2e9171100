"""One time step of each recurrent cell: forward and its analytic backward, as pure tensor functions.

Every cell module has the same shape so the one time loop (``rnnlab.engine.unroll``) can drive any of them:

- ``GATES``: rows of ``W_hh`` per hidden unit (1 Elman, 4 LSTM, 3 GRU);
- ``HAS_CELL_STATE``: whether the state is ``(h, c)`` rather than ``(h,)``;
- ``forward(gi, state, w_hh, b_hh) -> (new_state, saved)`` where ``gi = W_ih x_t + b_ih`` was computed for all
  steps by one GEMM;
- ``backward(dstate, saved, w_hh) -> (dgi, dgh, dstate_prev)``: the gradient of the gate pre-activations on the
  input side and on the recurrent side (equal except for the GRU's n gate) and the gradient of the previous state.
"""
from . import elman as elman
from . import gru as gru
from . import lstm as lstm

__all__ = ["elman", "gru", "lstm"]
