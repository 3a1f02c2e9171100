"""Initialisations for rnnlab (and torch.nn) recurrent layers. Each works in place and returns the module.

- ``default_``: torch.nn's, every parameter uniform in [-1/sqrt(H), 1/sqrt(H)].
- ``orthogonal_``: each gate's H×H block of W_hh a random orthogonal matrix (Saxe et al. 2014), each gate's block
  of W_ih Xavier-uniform, biases zero. Eigenvalues of modulus 1 keep the linearised gradient's norm from shrinking
  or growing through time at the start of training.
- ``identity_``: the IRNN of Le et al. 2015 for an Elman RNN with ReLU: W_hh = scale·I, biases zero, W_ih small
  Gaussian (std 0.001) — the state is copied forward unchanged until learning says otherwise.
- ``forget_bias_``: LSTM forget-gate bias (Gers et al. 2000; Jozefowicz et al. 2015 recommend 1) so the cell keeps
  its memory by default early in training.
- ``chrono_``: the chrono initialisation of Tallec & Ollivier 2018 ("Can recurrent neural networks warp time?") for
  an LSTM: forget-gate bias b_f = log(u), u ~ U[1, t_max - 1], input-gate bias b_i = -b_f. A cell whose forget gate
  sits at sigma(log u) = u/(1+u) forgets with a time constant of about u steps, so the units' memories start spread
  over 1..t_max steps instead of all fading within a few (torch's default puts every forget gate near 0.5).
"""
from __future__ import annotations

import torch
from torch import nn


def _layers(module: nn.Module):
    """(suffix, W_ih, W_hh, b_ih | None, b_hh | None, gates) for every layer and direction of a recurrent module."""
    gates = module.weight_hh_l0.shape[0] // module.hidden_size
    num_directions = 2 if module.bidirectional else 1
    for layer in range(module.num_layers):
        for d in range(num_directions):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            yield (getattr(module, "weight_ih" + sfx), getattr(module, "weight_hh" + sfx),
                   getattr(module, "bias_ih" + sfx, None), getattr(module, "bias_hh" + sfx, None), gates)


def default_(module: nn.Module) -> nn.Module:
    module.reset_parameters()
    return module


@torch.no_grad()
def orthogonal_(module: nn.Module, gain: float = 1.0) -> nn.Module:
    for w_ih, w_hh, b_ih, b_hh, gates in _layers(module):
        for w_block in w_hh.chunk(gates, 0):
            nn.init.orthogonal_(w_block, gain=gain)
        for w_block in w_ih.chunk(gates, 0):
            nn.init.xavier_uniform_(w_block)
        for b in (b_ih, b_hh):
            if b is not None:
                b.zero_()
    return module


@torch.no_grad()
def identity_(module: nn.Module, scale: float = 1.0, input_std: float = 0.001) -> nn.Module:
    for w_ih, w_hh, b_ih, b_hh, gates in _layers(module):
        if gates != 1:
            raise ValueError(f"identity_ is the IRNN initialisation for an Elman RNN (one gate); got a module with "
                             f"{gates} gates ({type(module).__name__}). Use orthogonal_ for LSTM/GRU.")
        w_hh.copy_(scale * torch.eye(w_hh.shape[0], dtype=w_hh.dtype, device=w_hh.device))
        w_ih.normal_(0.0, input_std)
        for b in (b_ih, b_hh):
            if b is not None:
                b.zero_()
    return module


@torch.no_grad()
def forget_bias_(module: nn.Module, value: float = 1.0) -> nn.Module:
    for w_ih, w_hh, b_ih, b_hh, gates in _layers(module):
        if gates != 4:
            raise ValueError(f"forget_bias_ applies to an LSTM (gates i, f, g, o); got {type(module).__name__}.")
        if b_ih is None:
            raise ValueError("forget_bias_ needs biases; the module was built with bias=False.")
        H = w_hh.shape[1]
        b_ih[H:2 * H] = value  # forget gate rows; the sum b_ih + b_hh is what the gate sees
        b_hh[H:2 * H] = 0.0
    return module


@torch.no_grad()
def chrono_(module: nn.Module, t_max: int, generator: torch.Generator | None = None) -> nn.Module:
    """Tallec & Ollivier's chrono init (see the module doc): b_f = log(U[1, t_max - 1]), b_i = -b_f, per unit; the
    other biases and all weights stay as they are. ``t_max``: the longest dependency expected, e.g. the sequence
    length."""
    if isinstance(t_max, bool) or not isinstance(t_max, int) or t_max < 3:
        raise ValueError(f"chrono_ needs t_max, the longest dependency in steps, as an integer >= 3 (so that "
                         f"U[1, t_max - 1] is a range); got {t_max!r}. Pass the sequence length.")
    for w_ih, w_hh, b_ih, b_hh, gates in _layers(module):
        if gates != 4:
            raise ValueError(f"chrono_ applies to an LSTM (gates i, f, g, o); got {type(module).__name__}.")
        if b_ih is None:
            raise ValueError("chrono_ needs biases; the module was built with bias=False.")
        H = w_hh.shape[1]
        u = torch.rand(H, generator=generator, dtype=b_ih.dtype, device=b_ih.device) * (t_max - 2) + 1  # (H,)
        b_f = torch.log(u)  # (H,): forget gate sigma(b_f) = u / (1 + u), a memory of ~u steps
        b_ih[H:2 * H] = b_f  # the gate sees b_ih + b_hh: put the whole bias in b_ih
        b_hh[H:2 * H] = 0.0
        b_ih[:H] = -b_f  # input gate: write little where the cell is meant to remember long
        b_hh[:H] = 0.0
    return module
