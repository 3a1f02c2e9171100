"""Smoke runs of the benchmark scripts that measure the C++ engine's loop: each runs on a tiny point, exits 0 and
prints the table it exists for. They measure, they do not assert times; this only keeps them runnable."""
import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")


def _cpp_available() -> bool:
    from rnnlab.engine import _cpp

    return _cpp.load() is not None


def run_script(*args, timeout=240):
    env = dict(os.environ)
    env.pop("RNNLAB_BACKEND", None)
    env.pop("RNNLAB_FUSE", None)
    env["PYTHONIOENCODING"] = "utf-8"  # the script's output is read as UTF-8 whatever the locale
    proc = subprocess.run([sys.executable, os.path.join(BENCH, args[0]), *args[1:]], capture_output=True,
                          encoding="utf-8", timeout=timeout, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


needs_cpp = pytest.mark.skipif(not _cpp_available(), reason="C++ extension could not be built")


@needs_cpp
def test_profile_lstm_prints_the_phase_table():
    out = run_script("profile_lstm.py", "--points", "24x3", "--seq-len", "5", "--repeats", "1", "--min-time", "0.001")
    assert "**H = 24, B = 3**" in out
    for phase in ("fwd_recurrent", "fwd_gates", "bwd_gates", "bwd_recurrent", "bwd_weights", "pack"):
        assert f"| {phase} |" in out


@needs_cpp
def test_env_ab_prints_each_value_and_the_phases():
    out = run_script("env_ab.py", "--var", "RNNLAB_DW_SPLIT", "--values", "1,0", "--points", "24x3", "--seq-len",
                     "5", "--rounds", "1", "--cell", "gru")
    assert "**H = 24, B = 3**: median ms 1: " in out and ", 0: " in out
    assert "| RNNLAB_DW_SPLIT=1 | RNNLAB_DW_SPLIT=0 |" in out and "| bwd_weights |" in out


def test_env_ab_refuses_a_single_value():
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "env_ab.py"), "--var", "X", "--values", "1"],
                          capture_output=True, encoding="utf-8", timeout=60, cwd=ROOT,
                          env=dict(os.environ, PYTHONIOENCODING="utf-8"))
    assert proc.returncode == 2 and "--values takes two or more comma-separated values; got '1'" in proc.stderr


@needs_cpp
def test_fused_input_prints_each_setting():
    out = run_script("fused_input.py", "--points", "24x3", "--cells", "lstm", "--repeats", "1", "--min-time", "0.001")
    for setting in ("forward", "backward", "auto"):
        assert setting in out


def _fit_tanh_module():
    """benchmarks/fit_tanh.py as a module: its bounds (FIT_MAX_REL, F32_MAX_REL) and its clamp."""
    spec = importlib.util.spec_from_file_location("_fit_tanh", os.path.join(BENCH, "fit_tanh.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _common_h_tanh_coefficients():
    """(P, Q, clamp) of VT<float>::tanh in csrc/common.h, constant terms first (written there highest first, for
    Horner), and the bound it clamps x to."""
    with open(os.path.join(ROOT, "src", "rnnlab", "engine", "csrc", "common.h"), encoding="utf-8") as f:
        text = f.read()
    body = text[text.index("static inline V tanh(V x) {"):]
    body = body[: body.index("return x * p / q;")]
    clamp = float(re.search(r"x = vmin\(x, bc\(([-+0-9.]+)f\)\);", body).group(1))
    assert float(re.search(r"x = vmax\(x, bc\(([-+0-9.]+)f\)\);", body).group(1)) == -clamp
    coeffs = {"p": [], "q": []}
    for name in coeffs:
        start = re.search(rf"V {name} = bc\(([-+0-9.e]+)f\);", body)
        coeffs[name].append(float(start.group(1)))
        for sign, value in re.findall(rf"{name} = {name} \* z ([-+]) ([0-9.e+-]+)f;", body):
            coeffs[name].append(float(value) * (-1.0 if sign == "-" else 1.0))
        coeffs[name].reverse()
    return coeffs["p"], coeffs["q"], clamp


def _rational_tanh_rel_error(p, q, clamp, dtype):
    """Max relative error of x * P(x^2) / Q(x^2) (x clamped to [-clamp, clamp], Horner) against float64 torch.tanh,
    on the float32 numbers nearest 4M + 1 evenly spaced points of [-10, 10] (the engine's inputs are float32).
    dtype float64: the rational function itself, with the coefficients rounded to float32 as the engine stores them;
    float32: every operation rounded to float32, without FMA (a build without -mfma evaluates it so)."""
    import torch

    x = torch.linspace(-10.0, 10.0, 4_000_001, dtype=torch.float64).to(torch.float32)
    ref = torch.tanh(x.double())
    coef = lambda c: torch.tensor(c, dtype=torch.float32).to(dtype).tolist()  # noqa: E731
    p, q = coef(p), coef(q)
    xc = x.to(dtype).clamp(-clamp, clamp)
    z = xc * xc
    pv = torch.full_like(z, p[-1])
    for c in p[-2::-1]:
        pv = pv * z + c
    qv = torch.full_like(z, q[-1])
    for c in q[-2::-1]:
        qv = qv * z + c
    got = (xc * pv / qv).double()
    keep = ref != 0
    return ((got - ref).abs()[keep] / ref.abs()[keep]).max().item()


def test_fit_tanh_fits_within_its_bounds():
    """benchmarks/fit_tanh.py runs, and the coefficients it prints reach the accuracy it states, recomputed here
    against float64 torch.tanh: the rational function (float32 coefficients, float64 arithmetic) within FIT_MAX_REL,
    its float32 evaluation within F32_MAX_REL. The coefficients themselves are not compared with common.h's: least
    squares through the CPU's BLAS kernel gives other last bits on another machine, and the reweighted fit turns those
    into other coefficients from the 6th digit on, each as accurate (common.h's are checked in the next test)."""
    import torch

    fit = _fit_tanh_module()
    out = run_script("fit_tanh.py", timeout=120)
    printed = {}
    for line in out.splitlines():
        if line.startswith(("P (", "Q (")):
            printed[line[0]] = [float(c) for c in line.split(":", 1)[1].split(",")]
    p, q = printed["P"], printed["Q"]
    assert len(p) == fit.NP + 1 == 6 and len(q) == fit.NQ + 1 == 4 and p[0] == 1.0 and q[0] == 1.0
    reported = re.search(r"float32 evaluation max relative error ([0-9.e+-]+) ", out)
    assert reported and float(reported.group(1)) <= fit.F32_MAX_REL, out
    err64 = _rational_tanh_rel_error(p, q, fit.CLAMP, torch.float64)
    assert err64 <= fit.FIT_MAX_REL, (err64, p, q)
    err32 = _rational_tanh_rel_error(p, q, fit.CLAMP, torch.float32)
    assert err32 <= fit.F32_MAX_REL, (err32, p, q)


def test_engine_tanh_coefficients_meet_the_fit_bounds():
    """csrc/common.h's coefficients meet fit_tanh.py's bounds: the rational function within FIT_MAX_REL of float64
    tanh, and its float32 evaluation without FMA within F32_MAX_REL, the bound tests/test_cpp_backend.py asserts for
    the engine's own (FMA) build, so a build without FMA keeps it too."""
    import torch

    fit = _fit_tanh_module()
    p, q, clamp = _common_h_tanh_coefficients()
    assert len(p) == fit.NP + 1 and len(q) == fit.NQ + 1 and p[0] == 1.0 and q[0] == 1.0 and clamp == fit.CLAMP
    err64 = _rational_tanh_rel_error(p, q, clamp, torch.float64)
    assert err64 <= fit.FIT_MAX_REL, err64
    err32 = _rational_tanh_rel_error(p, q, clamp, torch.float32)
    assert err32 <= fit.F32_MAX_REL, err32
