"""The ``rnnlab`` command, run as a user runs it: in a subprocess, checking exit codes and what reaches stderr."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def rnnlab(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # Import this checkout's rnnlab even where it was not pip-installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    # What the command prints is read as UTF-8 whatever the locale (its messages hold e.g. "→").
    env["PYTHONIOENCODING"] = "utf-8"
    return subprocess.run([sys.executable, "-m", "rnnlab", *args], capture_output=True, encoding="utf-8", env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_help_shows_commands_and_examples():
    r = rnnlab("--help")
    assert r.returncode == 0, r.stderr
    assert "demo" in r.stdout
    assert "examples:" in r.stdout and "rnnlab demo --steps" in r.stdout
    assert r.stderr == ""


def test_demo_help_shows_options_and_examples():
    r = rnnlab("demo", "--help")
    assert r.returncode == 0, r.stderr
    for flag in ("--steps", "--seconds", "--hidden", "--backend", "--debug"):
        assert flag in r.stdout
    assert "examples:" in r.stdout


def test_demo_smoke():
    r = rnnlab("demo", "--steps", "5", "--hidden", "8", "--batch", "8")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "step      5" in out
    assert "engine backend that ran: " in out
    forced = os.environ.get("RNNLAB_BACKEND")
    if forced:
        assert f"engine backend that ran: {forced}" in out
    # The probe table: one row per time step of the last batch.
    assert "||dL/dh_t||" in out and "lstm layer 0" in out
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "args, must_name",
    [
        (["demo", "--steps", "0"], ["--steps", "got 0", "from 1 to"]),
        (["demo", "--hidden", "-3"], ["--hidden", "-3", "from 1 to"]),
        (["demo", "--lr", "fast"], ["--lr", "'fast'", "number"]),
        (["demo", "--seconds", "nan"], ["--seconds", "nan", "number"]),
        (["demo", "--backend", "gpu"], ["--backend", "gpu"]),
        (["demo", "--min-len", "9", "--max-len", "3"], ["--min-len 9", "--max-len 3"]),
        (["demo", "--no-such-flag"], ["--no-such-flag"]),
        (["frobnicate"], ["frobnicate"]),
        ([], ["no command"]),
    ],
)
def test_user_error_is_one_line_and_exit_2(args, must_name):
    r = rnnlab(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("rnnlab: error: ")
    for text in must_name:
        assert text in lines[0]
    assert r.stdout == ""


def test_bad_backend_env_is_a_user_error(monkeypatch):
    monkeypatch.setenv("RNNLAB_BACKEND", "quantum")
    r = rnnlab("demo", "--steps", "1")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert len(r.stderr.splitlines()) == 1 and "RNNLAB_BACKEND" in r.stderr


def test_debug_shows_the_traceback():
    r = rnnlab("--debug", "demo", "--min-len", "9", "--max-len", "3")
    assert r.returncode == 2
    assert "Traceback" in r.stderr
    assert r.stderr.splitlines()[-1].startswith("rnnlab: error: --min-len 9")


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("rnnlab")
    if not script.exists():
        pytest.skip("rnnlab is not pip-installed in this environment")
    r = subprocess.run([str(script), "--help"], capture_output=True, encoding="utf-8", timeout=300,
                       env=dict(os.environ, PYTHONIOENCODING="utf-8"))
    assert r.returncode == 0 and "examples:" in r.stdout


def test_an_ascii_locale_gets_escapes_not_a_crash():
    """Under LANG=C with no UTF-8 coercion stdout is ASCII; the help's 'λ' and the progress lines' '→' must not end
    the run with UnicodeEncodeError."""
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    env.pop("PYTHONIOENCODING", None)
    r = subprocess.run([sys.executable, "-m", "rnnlab", "task", "parity", "--help"], capture_output=True, env=env,
                       timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr.decode("ascii", "replace")
    assert b"--skip-budget \\u03bb" in r.stdout
