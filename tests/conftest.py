"""Shared test set-up.

Engine backends: a test that takes the ``backend`` fixture runs once under each engine backend (``cpp`` and
``python``), forced with RNNLAB_BACKEND, so one pytest run covers both. The C++ backend must build wherever a
compiler exists: a build failure fails those tests instead of silently falling back; only a machine with no C++
compiler skips them. Tests that do not take the fixture use the automatic choice (cpp when it builds).
"""
from __future__ import annotations

import os
import shutil

import pytest
import torch


def pytest_report_header(config):
    forced = os.environ.get("RNNLAB_BACKEND") or "unset (automatic: cpp when it builds)"
    return f"rnnlab: RNNLAB_BACKEND={forced}; torch {torch.__version__}, {torch.get_num_threads()} threads"


@pytest.fixture(autouse=True)
def _restore_threads():
    """CLI commands run in-process with --threads N call torch.set_num_threads; put the count back after each test so
    later tests (e.g. the multi-threaded time loop's) see the machine's own."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same torch RNG state, so a failure reproduces on its own."""
    torch.manual_seed(0)


@pytest.fixture(params=["cpp", "python"])
def backend(request, monkeypatch) -> str:
    """Run the test under each engine backend."""
    if request.param == "cpp":
        from rnnlab.engine import _cpp

        if _cpp.load() is None:
            if shutil.which("c++") is None and shutil.which("g++") is None:
                pytest.skip("no C++ compiler: the C++ engine cannot be built here")
            pytest.fail("a C++ compiler is present but the C++ engine did not build (see the note above)")
    monkeypatch.setenv("RNNLAB_BACKEND", request.param)
    return request.param
