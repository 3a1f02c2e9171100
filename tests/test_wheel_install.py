"""The wheel, installed as a user would (``pip install rnnlab``, no extras) into a fresh virtual environment:

- the wheel builds from a copy of the source tree (no network: ``--no-build-isolation`` uses this environment's
  setuptools) and installs with its core dependencies only; the torch pin of constraints.txt keeps pip on the local
  CPU build of torch, and numpy, safetensors, tqdm and ninja come from the package index (pip's cache is used, so a
  second run downloads nothing). No index reachable: the install fails and so does this test, with pip's message;
- none of the optional packages (conllu, tokenizers, matplotlib, onnx, onnxscript, onnxruntime) gets installed;
- run from a directory outside the source tree (the installed package is imported, not src/), with
  RNNLAB_BACKEND=cpp and an empty RNNLAB_CACHE, ``rnnlab.LSTM`` compiles the C++ engine from the installed package's
  csrc/ on first use, with no ninja on PATH (the ``ninja`` core dependency is found beside the interpreter), and its
  output and gradients match ``torch.nn.LSTM`` with the same weights;
- the installed ``rnnlab`` command says in one line which extra a command needs: ``train tag`` ('rnnlab[text]'),
  ``diagnose`` ('rnnlab[plots]'), ``export --onnx`` ('rnnlab[onnx]').

About 1-3 minutes (the venv, unpacking torch, compiling the engine); deselect with ``-m "not install"``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.install

ROOT = Path(__file__).resolve().parent.parent
OPTIONAL = ("conllu", "tokenizers", "matplotlib", "onnx", "onnxscript", "onnxruntime")


def _run(cmd, *, timeout, cwd=None, env=None, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stdout[-4000:]}" \
                                     f"\n{done.stderr[-4000:]}"
    return done


def _copy_source(dest: Path) -> Path:
    """What the wheel is built from: pyproject.toml, README.md (the long description) and src/, without build
    leftovers, so that the build writes nothing into the working tree."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "src", dest / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.so", "*.pyc"))
    return dest


def _path_without_ninja(farm: Path) -> str:
    """A PATH with every program of this PATH except ninja (links in one directory), so the engine's build can only
    use the ninja that the wheel's core dependencies installed into the venv."""
    farm.mkdir()
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not d or not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            target = os.path.join(d, name)
            if name == "ninja" or (farm / name).exists() or not (os.path.isfile(target) and os.access(target, os.X_OK)):
                continue
            (farm / name).symlink_to(target)
    assert shutil.which("ninja", path=str(farm)) is None and shutil.which("c++", path=str(farm)) is not None
    return str(farm)


CHECK = textwrap.dedent("""
    import json, os, sys
    import torch
    import rnnlab
    from rnnlab.engine import _cpp

    torch.manual_seed(0)
    ours = rnnlab.LSTM(5, 7, num_layers=2, batch_first=True)
    ref = torch.nn.LSTM(5, 7, num_layers=2, batch_first=True)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 11, 5)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    (ya, (ha, ca)), (yb, (hb, cb)) = ours(xa), ref(xb)
    w = torch.randn_like(ya)
    ((ya * w).sum() + ha.sum() + ca.sum()).backward()
    ((yb * w).sum() + hb.sum() + cb.sum()).backward()
    diffs = [float((a - b).abs().max()) for a, b in [(ya, yb), (ha, hb), (ca, cb), (xa.grad, xb.grad)]]
    grads = dict(ref.named_parameters())
    diffs += [float((p.grad - grads[n].grad).abs().max()) for n, p in ours.named_parameters()]
    ext = _cpp.load()
    print(json.dumps({"rnnlab": rnnlab.__file__, "csrc": _cpp._CSRC, "backend": rnnlab.backend_name(),
                      "extension": getattr(ext, "__file__", None), "max_diff": max(diffs),
                      "optional_imported": [m for m in %r if m in sys.modules]}))
""" % (OPTIONAL,))


def test_wheel_installs_without_extras_and_builds_the_engine(tmp_path):
    if shutil.which(os.environ.get("CXX", "c++")) is None:  # as tests/conftest.py: only a machine without a compiler
        pytest.skip("no C++ compiler: the C++ engine cannot be built here")
    # The wheel, from a copy of the tree.
    src = _copy_source(tmp_path / "src")
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", dist,
          src], timeout=300)
    wheels = list(dist.glob("rnnlab-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as whl:
        names = whl.namelist()
        meta = whl.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "rnnlab/engine/csrc/module.cpp" in names  # the engine's sources ship: it is compiled where it is used
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    core = sorted(r.split(">")[0].split("=")[0].strip() for r in requires if "extra ==" not in r)
    assert core == ["ninja", "numpy", "safetensors", "torch", "tqdm"], requires

    # A fresh venv with the wheel and its core dependencies; torch pinned to the local CPU build.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], timeout=300)
    py = venv / "bin" / "python"
    _run([py, "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt", wheels[0]], timeout=1800)
    listed = {p["name"].lower(): p["version"] for p in json.loads(
        _run([py, "-m", "pip", "list", "--format", "json"], timeout=120).stdout)}
    assert not [m for m in OPTIONAL if m in listed], listed
    assert listed["torch"].startswith("2.13.0") and "ninja" in listed and "rnnlab" in listed, listed

    # Outside the source tree, with no ninja on PATH and an empty engine cache.
    work = tmp_path / "work"
    work.mkdir()
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RNNLAB_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(RNNLAB_BACKEND="cpp", RNNLAB_CACHE=str(cache), PATH=_path_without_ninja(tmp_path / "bin"))
    done = _run([py, "-c", CHECK], cwd=work, env=env, timeout=1200)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    site = venv.resolve()
    assert Path(got["rnnlab"]).resolve().is_relative_to(site), got  # the installed package, not src/
    assert Path(got["csrc"]).resolve().is_relative_to(site) and (Path(got["csrc"]) / "module.cpp").is_file(), got
    assert got["backend"] == "cpp", (got, done.stderr)
    assert got["extension"] and Path(got["extension"]).resolve().is_relative_to(cache.resolve()), got
    assert got["max_diff"] < 1e-5, got
    assert got["optional_imported"] == [], got
    assert "C++ engine unavailable" not in done.stderr, done.stderr

    # The installed command: one line naming the extra each command path needs, exit code 2.
    rnnlab = venv / "bin" / "rnnlab"
    (work / "train.conllu").write_text("1\tdogs\t_\tNOUN\t_\t_\t_\t_\t_\t_\n\n", encoding="utf-8")
    for args, line in [
        (["train", "tag", "--train", "train.conllu", "--out", "run"],
         "rnnlab: error: reading CoNLL-U needs the 'conllu' package: pip install 'rnnlab[text]'"),
        (["diagnose", "--task", "adding", "--length", "8", "--out", "diag"],
         "rnnlab: error: drawing the figures needs the 'matplotlib' package: pip install 'rnnlab[plots]'"),
        (["export", "run", "--onnx", "m.onnx"],
         "rnnlab: error: ONNX export (--onnx) needs the 'onnx' package: pip install 'rnnlab[onnx]'"),
    ]:
        done = _run([rnnlab, *args], cwd=work, env=env, timeout=600, check=False)
        assert (done.returncode, done.stderr.strip()) == (2, line), (args, done.returncode, done.stderr)
    shutil.rmtree(venv)  # about 1 GB (torch); pytest keeps the last runs' tmp_path, a failed run's venv included
