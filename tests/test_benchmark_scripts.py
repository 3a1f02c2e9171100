"""Smoke runs of the benchmark scripts that measure the C++ engine's loop: each runs on a tiny point, exits 0 and
prints the table it exists for. They measure, they do not assert times; this only keeps them runnable."""
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
    proc = subprocess.run([sys.executable, os.path.join(BENCH, args[0]), *args[1:]], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)
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
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2 and "--values takes two or more comma-separated values; got '1'" in proc.stderr


@needs_cpp
def test_fused_input_prints_each_setting():
    out = run_script("fused_input.py", "--points", "24x3", "--cells", "lstm", "--repeats", "1", "--min-time", "0.001")
    for setting in ("forward", "backward", "auto"):
        assert setting in out


def _common_h_tanh_coefficients():
    """(P, Q) of VT<float>::tanh in csrc/common.h, constant term first, as written there (Horner, highest first)."""
    with open(os.path.join(ROOT, "src", "rnnlab", "engine", "csrc", "common.h")) as f:
        text = f.read()
    body = text[text.index("static inline V tanh(V x) {"):]
    body = body[: body.index("return x * p / q;")]
    coeffs = {"p": [], "q": []}
    for name in coeffs:
        start = re.search(rf"V {name} = bc\(([-+0-9.e]+)f\);", body)
        coeffs[name].append(float(start.group(1)))
        for sign, value in re.findall(rf"{name} = {name} \* z ([-+]) ([0-9.e+-]+)f;", body):
            coeffs[name].append(float(value) * (-1.0 if sign == "-" else 1.0))
        coeffs[name].reverse()
    return coeffs["p"], coeffs["q"]


def test_fit_tanh_reproduces_the_engine_coefficients():
    """The coefficients in csrc/common.h are the ones benchmarks/fit_tanh.py prints (to float32 precision)."""
    out = run_script("fit_tanh.py", timeout=120)
    printed = {}
    for line in out.splitlines():
        if line.startswith(("P (", "Q (")):
            printed[line[0]] = [float(c) for c in line.split(":", 1)[1].split(",")]
    p, q = _common_h_tanh_coefficients()
    assert len(p) == len(printed["P"]) == 6 and len(q) == len(printed["Q"]) == 4
    for mine, theirs in zip(p + q, printed["P"] + printed["Q"]):
        assert mine == pytest.approx(theirs, rel=1e-6)
