#!/usr/bin/env python3
"""Fit the rational tanh of the C++ engine's float32 gate math (csrc/common.h, VT<float>::tanh) and check it.

tanh(x) = x * P(x^2) / Q(x^2) on x clamped to [-CLAMP, CLAMP], with P of degree NP and Q of degree NQ in z = x^2,
Q's constant term 1. Fitted to f(z) = tanh(x)/x, so the fit's error is tanh's relative error: linearised least
squares (P - f Q = 0, divided by the previous Q) with Lawson reweighting towards the largest errors, keeping the
best iterate. Then the float32 evaluation (Horner, the clamp) is checked against float64 tanh on a dense grid,
which is the number that matters: coefficients rounded to float32 and float32 arithmetic add to the fit's error.
Both errors are checked against the bounds below (exit status 1 if a fit misses one).

The least-squares solves go through LAPACK, whose BLAS kernel depends on the CPU (OpenBLAS and MKL pick a code path
per CPU model), and the reweighting amplifies those last-bit differences: a refit on another machine can print
coefficients that differ from common.h's from the 6th significant digit on. Any fit that meets the bounds is as good;
the coefficients in common.h are one such fit, and tests/test_benchmark_scripts.py checks them against the same bounds.

    python benchmarks/fit_tanh.py            # prints the coefficients (paste into common.h) and the errors
"""
from __future__ import annotations

import math
import sys

import numpy as np

CLAMP = 9.0  # tanh(9) = 1 - 3e-8 rounds to 1.0 in float32: nothing to fit beyond
NP, NQ = 5, 3  # degree (6, 3) is unstable in float32 Horner; (4, 3) has 2.5x the error
# The accuracy the engine relies on: max relative error against float64 tanh on a dense grid of [-10, 10].
# F32_MAX_REL bounds the float32 evaluation (the engine's; csrc/common.h states it and tests/test_cpp_backend.py
# asserts it through the engine). FIT_MAX_REL bounds the rational function itself, with the float32-rounded
# coefficients, evaluated in float64: degree (5, 3) reaches ~1.2e-7, and a fit within 2e-7 leaves ~3e-7 (about 5
# float32 ulps at 1, 2^-24 each) under F32_MAX_REL for the rounding of the float32 Horner steps, product and division.
FIT_MAX_REL = 2e-7
F32_MAX_REL = 5e-7


def fit(num_deg: int, den_deg: int, iters: int = 60):
    x = np.concatenate([np.linspace(1e-4, 1.0, 4000), np.linspace(1.0, CLAMP, 8000)])
    z = x * x
    f = np.tanh(x) / x
    w = np.ones_like(z)
    q_prev = np.ones_like(z)
    best = None
    for _ in range(iters):
        a = np.concatenate([np.vander(z, num_deg + 1, increasing=True),
                            -f[:, None] * np.vander(z, den_deg + 1, increasing=True)[:, 1:]], axis=1)
        scale = w / (f * q_prev)
        sol, *_ = np.linalg.lstsq(a * scale[:, None], f * scale, rcond=None)
        p, q = sol[: num_deg + 1], np.concatenate([[1.0], sol[num_deg + 1:]])
        qv = np.polyval(q[::-1], z)
        err = np.abs(np.polyval(p[::-1], z) / qv - f) / f
        if best is None or err.max() < best[0]:
            best = (err.max(), p, q)
        w = w * np.sqrt(err / err.mean()) + 1e-12
        w /= w.mean()
        q_prev = qv
    return best


def eval_f64(p, q, xs: np.ndarray) -> np.ndarray:
    """The rational function itself (no float32 rounding of the arithmetic), in float64."""
    xc = np.clip(xs.astype(np.float64), -CLAMP, CLAMP)
    z = xc * xc
    return xc * np.polyval(np.asarray(p, np.float64)[::-1], z) / np.polyval(np.asarray(q, np.float64)[::-1], z)


def eval_f32(p, q, xs: np.ndarray) -> np.ndarray:
    """What the engine computes, in float32."""
    f32 = np.float32
    xc = np.clip(xs, f32(-CLAMP), f32(CLAMP)).astype(f32)
    z = (xc * xc).astype(f32)
    pv = f32(p[-1])
    for c in p[-2::-1]:
        pv = (pv * z + f32(c)).astype(f32)
    qv = f32(q[-1])
    for c in q[-2::-1]:
        qv = (qv * z + f32(c)).astype(f32)
    return (xc * pv / qv).astype(f32)


def main() -> int:
    err, p, q = fit(NP, NQ)
    p32, q32 = p.astype(np.float32), q.astype(np.float32)
    xs = np.linspace(-10.0, 10.0, 4_000_001).astype(np.float32)
    ref = np.tanh(xs.astype(np.float64))
    nz = ref != 0
    rel = np.abs(eval_f32(p32, q32, xs)[nz] - ref[nz]) / np.abs(ref[nz])
    rel64 = np.abs(eval_f64(p32, q32, xs)[nz] - ref[nz]) / np.abs(ref[nz])
    print(f"degree ({NP}, {NQ}) in x^2, clamp {CLAMP}: fit max relative error {err:.2e}; "
          f"float32 evaluation max relative error {rel.max():.2e} ({rel.max() / 2 ** -24:.1f} float32 ulps just below 1)")
    print(f"float32 coefficients evaluated in float64: max relative error {rel64.max():.2e} (bound {FIT_MAX_REL:.0e}); "
          f"float32 evaluation bound {F32_MAX_REL:.0e}")
    print("P (z^0 first):", ", ".join(repr(float(c)) for c in p32))
    print("Q (z^0 first):", ", ".join(repr(float(c)) for c in q32))
    assert math.isclose(float(p32[0]), 1.0) and float(q32[0]) == 1.0
    if not (rel64.max() <= FIT_MAX_REL and rel.max() <= F32_MAX_REL):
        print(f"fit_tanh.py: the fit misses its bounds (float64 evaluation {rel64.max():.2e} > {FIT_MAX_REL:.0e} or "
              f"float32 evaluation {rel.max():.2e} > {F32_MAX_REL:.0e}); do not use these coefficients",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
