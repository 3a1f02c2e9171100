"""Phase timers of the C++ time loop: where one layer's forward and backward spend their time, measured inside the
loop (csrc/prof.h), for benchmarks/profile_lstm.py.

    with phase_timers() as timers:
        out, _ = lstm(x)
        out.sum().backward()
    timers.seconds        # {"fwd_recurrent": [thread 0, thread 1], "fwd_gates": [...], ...}

Each thread of the loop adds the wall time of each phase of each step to its own row; work done outside the
parallel region (the big one-shot GEMMs) is charged to thread 0. The timers are process-wide: while they are on,
every C++ engine call in the process adds to them. The pure-PyTorch engine has no timers.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from . import _cpp


@dataclass
class PhaseTimes:
    """Seconds per phase, one entry per loop thread (threads that never ran a phase report 0.0)."""

    seconds: dict[str, list[float]] = field(default_factory=dict)

    def total(self, phase: str) -> float:
        return sum(self.seconds.get(phase, []))

    def slowest(self, phase: str) -> float:
        return max(self.seconds.get(phase, [0.0]))


@contextlib.contextmanager
def phase_timers(threads: int | None = None):
    """Turn the C++ loop's phase timers on for the block; the yielded PhaseTimes is filled when the block exits.

    threads: how many thread rows to report (default: torch.get_num_threads()).
    Raises RuntimeError when the C++ engine is not available."""
    import torch

    mod = _cpp.load()
    if mod is None:
        raise RuntimeError("phase timers need the C++ engine, which is not available here "
                           "(see the note printed when rnnlab fell back to the pure-PyTorch engine)")
    n = threads or torch.get_num_threads()
    result = PhaseTimes()
    mod.profile_enable(True)
    try:
        yield result
    finally:
        names, sec = mod.profile_read()
        mod.profile_enable(False)
        result.seconds = {name: [float(v) for v in sec[:n, i]] for i, name in enumerate(names)}
