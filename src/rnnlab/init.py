"""Initialisations for rnnlab (and torch.nn) recurrent layers. Each works in place and returns the module.

- ``default_``: torch.nn's, every parameter uniform in [-1/sqrt(H), 1/sqrt(H)].
- ``orthogonal_``: each gate's H×H block of W_hh a random orthogonal matrix (Saxe et al. 2014), each gate's block
  of W_ih Xavier-uniform, biases zero. Eigenvalues of modulus 1 keep the linearised gradient's norm from shrinking
  or growing through time at the start of training.
- ``identity_``: the IRNN of Le et al. 2015 for an Elman RNN with ReLU: W_hh = scale·I, biases zero, W_ih small
  Gaussian (std 0.001) — the state is copied forward unchanged until learning says otherwise.
- ``forget_bias_``: LSTM forget-gate bias (Gers et al. 2000; Jozefowicz et al. 2015 recommend 1) so the cell keeps
  its memory by default early in training.
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
