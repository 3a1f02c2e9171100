"""Truncated backpropagation through time.

Two forms:

- ``detach_state`` — the common case (TBPTT with k1 = k2 = chunk length): a long stream is cut into chunks, the
  hidden state is carried from one chunk to the next so the model still *sees* the whole past, but it is detached
  at the chunk boundary so that backward stops there. Without the detach, every ``loss.backward()`` would try to
  run back through every chunk since the start of the stream: time and memory growing without bound, and an error
  once the earlier chunks' graphs have been freed.

- ``tbptt(k1, k2)`` — the general TBPTT(k1, k2) of Williams & Peng (1990): every k1 steps, the losses of those k1
  steps are backpropagated through at most the last k2 steps (k2 ≥ k1). Exact semantics, for update u:

      t_u = min(u * k1, T),  s_u = max(0, t_u - k2)
      gradient_u = d/dθ  Σ_{t_{u-1} < t ≤ t_u} L_t,   with the state h_{s_u} held constant

  The state at every step is computed once, with the weights current when the forward first reaches that step
  (as an online learner would); the k2-step window of an update is recomputed from the stored, detached state
  h_{s_u} with the current weights. ``on_update`` runs after each update's backward (an optimiser step, say).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def detach_state(state):
    """Cut the graph behind a carried state (a tensor, or tuples/lists of them) while keeping its value.

    Call it between chunks of one stream: the next chunk starts from where the last one ended (its value is kept),
    but backpropagation through time stops at the boundary (the history is forgotten by autograd). This is what
    makes truncated BPTT cost O(chunk) per update instead of O(everything so far).
    """
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(s) for s in state)
    raise TypeError(f"detach_state expects a Tensor or a tuple/list of Tensors; got {type(state).__name__}.")


def tbptt(module: Callable, inputs: Tensor, targets, loss_fn: Callable, k1: int, k2: int, state=None,
          on_update: Callable[[], None] | None = None, time_dim: int = 0):
    """Run TBPTT(k1, k2) over one long sequence; returns (list of the updates' loss values, final state).

    Args:
        module: called as ``module(x_chunk, state) -> (output_chunk, new_state)`` — an rnnlab or torch.nn recurrent
            layer, or any model with that call shape; ``state=None`` means its zero state.
        inputs: the sequence, time along ``time_dim`` (0 for (T, B, ...), 1 for batch_first).
        targets: indexed like ``inputs`` along ``time_dim``, handed to ``loss_fn`` step-aligned with the outputs.
        loss_fn: ``loss_fn(outputs, targets) -> scalar`` for the k1 (or fewer, at the end) newest steps.
        k1: steps between updates. k2: steps each update backpropagates through (k2 ≥ k1).
        on_update: called after each update's ``backward()``, e.g. ``lambda: (opt.step(), opt.zero_grad())``.
    """
    for name, v in (("k1", k1), ("k2", k2)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"tbptt: {name} must be a positive integer; got {v!r}.")
    if k2 < k1:
        raise ValueError(f"tbptt: k2 must be >= k1 so that every step's loss reaches back at least to its own step; "
                         f"got k1={k1}, k2={k2}. Use k2 >= k1 (k2 = k1 is the usual chunked TBPTT).")
    T = inputs.shape[time_dim]

    def span(x, a, b):
        return x.narrow(time_dim, a, b - a)

    ends = list(range(k1, T, k1)) + [T]  # t_u
    starts = [max(0, t - k2) for t in ends]  # s_u
    needed = sorted(set(starts) | set(ends))
    states = {0: detach_state(state)}  # step -> state after that many steps, computed once (see module doc)
    losses = []
    prev_end = 0
    for s, t in zip(starts, ends):
        # The window restarts from the stored state h_s, detached: this is where backward is truncated.
        h = states[s]
        outs, pos = [], s
        for cut in [c for c in needed if s < c <= t]:  # stop at every step a later update will restart from
            out, h = module(span(inputs, pos, cut), h)
            outs.append(out)
            states.setdefault(cut, detach_state(h))
            pos = cut
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=time_dim)
        loss = loss_fn(span(out, prev_end - s, t - s), span(targets, prev_end, t))
        loss.backward()
        losses.append(float(loss.detach()))
        if on_update is not None:
            on_update()
        prev_end = t
        for k in [k for k in states if k < s]:  # no later window starts before s
            del states[k]
    return losses, states[T]
