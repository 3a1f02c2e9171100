"""Without a C++ compiler the engine falls back to the pure-PyTorch loop, saying so in one line."""
import os
import subprocess
import sys

SCRIPT = """
import torch, rnnlab
m = rnnlab.LSTM(3, 4)
out, _ = m(torch.randn(5, 2, 3))
out.sum().backward()
print(rnnlab.backend_name())
"""


def test_no_compiler_falls_back_to_python_with_one_line_note(tmp_path):
    env = dict(os.environ, CXX=str(tmp_path / "no-such-compiler"), RNNLAB_CACHE=str(tmp_path / "cache"),
               PYTHONIOENCODING="utf-8")
    env.pop("RNNLAB_BACKEND", None)
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, encoding="utf-8", timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "python"
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no C++ compiler" in lines[0] and "pure-PyTorch engine" in lines[0]


def test_forcing_cpp_without_compiler_is_a_clear_error(tmp_path):
    env = dict(os.environ, CXX=str(tmp_path / "no-such-compiler"), RNNLAB_CACHE=str(tmp_path / "cache"),
               RNNLAB_BACKEND="cpp", PYTHONIOENCODING="utf-8")
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, encoding="utf-8", timeout=120)
    assert r.returncode != 0
    assert "RNNLAB_BACKEND=cpp but the C++ engine could not be built" in r.stderr
