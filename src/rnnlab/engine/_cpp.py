"""Build (once) and load rnnlab's C++ time-loop extension.

``load()`` returns the extension module (functions ``forward`` / ``backward``,
see ``csrc/module.cpp``) or ``None`` when it cannot be built; in that case ONE
line goes to stderr saying that the pure-PyTorch engine is used and why.

The build goes through ``torch.utils.cpp_extension.load`` (ninja) into
``$RNNLAB_CACHE/ext-<hash>`` (default ``~/.cache/rnnlab``), where the hash
covers the sources, the flags, the torch / Python versions and the CPU
features the flags depend on, so a stale or foreign binary is never loaded.
A built binary is imported directly without running ninja again.
ninja: the one on PATH, else the one pip installed with rnnlab (the ``ninja`` package, a core dependency), which
sits beside the interpreter and is not on PATH when a virtual environment's python runs without ``activate``.
Concurrent builds: a lock in this process, torch's file baton across processes.

Environment:
  RNNLAB_CACHE        cache root (default ~/.cache/rnnlab)
  RNNLAB_DISABLE_CPP  "1": do not build/load (load() returns None silently)
  RNNLAB_THREADS      (read by the extension) cap on the time loop's threads
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import platform
import shutil
import sys
import threading
import warnings

__all__ = ["load", "build_flags"]

_CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
_SOURCES = ["module.cpp"]
_lock = threading.Lock()
_state: dict = {}


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def build_flags() -> tuple[list[str], list[str]]:
    """(compile flags, link flags).  Never -ffast-math (it can enable
    flush-to-zero for the whole process)."""
    cflags = ["-O3", "-fopenmp", "-DNDEBUG", "-fno-math-errno", "-Wno-unused-parameter"]
    if platform.machine() in ("x86_64", "AMD64"):
        flags = _cpu_flags()
        if {"avx2", "fma"} <= flags:
            cflags += ["-mavx2", "-mfma"]
            if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
                cflags += ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq"]
    # -fopenmp at link time links libgomp.so.1, the same soname as torch's
    # bundled libgomp, so the already-loaded runtime is shared.
    return cflags, ["-fopenmp"]


def _digest(cflags: list[str], ldflags: list[str]) -> str:
    import torch

    h = hashlib.sha256()
    for fn in sorted(os.listdir(_CSRC)):
        if fn.endswith((".h", ".cpp")):
            h.update(fn.encode())
            with open(os.path.join(_CSRC, fn), "rb") as f:
                h.update(f.read())
    h.update(" ".join(cflags + ["|"] + ldflags).encode())
    h.update(torch.__version__.encode())
    h.update(sys.version.encode())
    h.update(platform.machine().encode())
    return h.hexdigest()[:16]


def _fail(reason: str) -> None:
    reason = " ".join(str(reason).split())
    if len(reason) > 300:
        reason = reason[:297] + "..."
    print(f"rnnlab: C++ engine unavailable ({reason}); using the pure-PyTorch engine",
          file=sys.stderr)


def _first_error_line(msg: str) -> str:
    for line in msg.splitlines():
        if "error" in line.lower() and line.strip():
            return line.strip()
    lines = [ln for ln in msg.splitlines() if ln.strip()]
    return lines[-1] if lines else "build failed"


def _ninja_dir() -> str | None:
    """None when ``ninja`` is on PATH (torch.utils.cpp_extension runs it by that name); else the directory of the
    ninja of the ``ninja`` package, or "" when there is none."""
    if shutil.which("ninja") is not None:
        return None
    try:
        import ninja
    except ImportError:
        return ""
    d = getattr(ninja, "BIN_DIR", "") or ""
    return d if d and shutil.which("ninja", path=d) is not None else ""


@contextlib.contextmanager
def _path_with(directory: str | None):
    """PATH with ``directory`` in front for the duration (torch starts ``ninja`` by name, through PATH)."""
    if not directory:
        yield
        return
    old = os.environ.get("PATH")
    os.environ["PATH"] = directory + (os.pathsep + old if old else "")
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = old


def _build():
    if os.environ.get("RNNLAB_DISABLE_CPP", "") not in ("", "0"):
        return None
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        _fail(f"no C++ compiler found ({cxx!r} is not on PATH)")
        return None
    try:
        import torch  # noqa: F401
        from torch.utils import cpp_extension
    except Exception as e:  # pragma: no cover
        _fail(f"torch.utils.cpp_extension unavailable: {e}")
        return None
    cflags, ldflags = build_flags()
    tag = _digest(cflags, ldflags)
    name = f"rnnlab_cpp_{tag}"
    root = os.environ.get("RNNLAB_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "rnnlab")
    bdir = os.path.join(root, f"ext-{tag}")
    so = os.path.join(bdir, name + ".so")
    if os.path.exists(so):  # fast path: already built, import directly
        try:
            spec = importlib.util.spec_from_file_location(name, so)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            return mod
        except Exception:
            pass  # fall through to a (re)build
    ninja_dir = _ninja_dir()
    if ninja_dir == "":
        _fail("ninja, which torch.utils.cpp_extension builds with, is not installed: pip install ninja")
        return None
    try:
        os.makedirs(bdir, exist_ok=True)
    except OSError as e:
        _fail(f"cannot create cache dir {bdir}: {e}")
        return None
    try:
        with warnings.catch_warnings(), _path_with(ninja_dir):
            warnings.simplefilter("ignore")
            return cpp_extension.load(
                name=name,
                sources=[os.path.join(_CSRC, s) for s in _SOURCES],
                extra_cflags=cflags,
                extra_ldflags=ldflags,
                extra_include_paths=[_CSRC],
                build_directory=bdir,
                verbose=False,
            )
    except Exception as e:
        _fail(f"build failed: {_first_error_line(str(e))}")
        return None


def load():
    """The compiled extension module, or None (pure-PyTorch fallback)."""
    if "mod" in _state:
        return _state["mod"]
    with _lock:
        if "mod" not in _state:
            _state["mod"] = _build()
        return _state["mod"]
