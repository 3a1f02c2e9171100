"""Read ||dL/dh_t|| for every step t, layer and direction off the same backward pass that computes the weights'
gradients — no second forward, no hooks on per-step tensors (the engine never materialises them for autograd).

    with rnnlab.probe(model) as p:
        out, _ = model(x)
        loss_fn(out).backward()
    p.grad_norms[("lstm", 0, 0)]   # tensor (T,): ||dL/dh_t|| of layer 0, forward direction

While a probe is active, every rnnlab layer run under it registers a slot at forward time; the engine's backward
fills the slot with the norms it computes from the dL/dh_t it already has in hand.
"""
from __future__ import annotations

import threading

import torch
from torch import nn

_active = threading.local()


class _Slot:
    """Where one direction of one layer of one forward call puts its norms."""

    __slots__ = ("key", "norms")

    def __init__(self, key):
        self.key = key
        self.norms: torch.Tensor | None = None


class probe:
    """Context manager collecting the gradient-through-time norms of the rnnlab layers run inside it.

    Args:
        model: optional module; its submodules' names (``model.named_modules()``) label the records. Layers not
            found in it are labelled ``ClassName#k`` in order of first use.

    After ``backward()``, ``grad_norms`` maps ``(name, layer, direction)`` to a tensor (T,) of ||dL/dh_t||
    (direction 1 is the reverse direction of a bidirectional layer, indexed by real time t). If a layer ran several
    times under the probe (e.g. successive chunks), ``calls`` keeps every record in forward order and
    ``grad_norms`` holds the last one.
    """

    def __init__(self, model: nn.Module | None = None):
        self._names = {id(m): n or type(m).__name__ for n, m in model.named_modules()} if model is not None else {}
        self._slots: list[_Slot] = []
        self._prev = None

    def _name(self, module: nn.Module) -> str:
        key = id(module)
        if key not in self._names:
            k = sum(1 for n in self._names.values() if n.startswith(type(module).__name__ + "#"))
            self._names[key] = f"{type(module).__name__}#{k}"
        return self._names[key]

    def slot(self, module: nn.Module, layer: int, direction: int) -> _Slot:
        s = _Slot((self._name(module), layer, direction))
        self._slots.append(s)
        return s

    def __enter__(self) -> "probe":
        self._prev = getattr(_active, "probe", None)
        _active.probe = self
        return self

    def __exit__(self, *exc) -> None:
        _active.probe = self._prev

    @property
    def calls(self) -> list[tuple[tuple[str, int, int], torch.Tensor]]:
        return [(s.key, s.norms) for s in self._slots if s.norms is not None]

    @property
    def grad_norms(self) -> dict[tuple[str, int, int], torch.Tensor]:
        return dict(self.calls)


def active_probe() -> probe | None:
    return getattr(_active, "probe", None)
