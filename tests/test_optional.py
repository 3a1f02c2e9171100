"""The light core install: ``import rnnlab`` (and every module of the package) imports none of the optional packages
(conllu, tokenizers, matplotlib, onnx, onnxscript, onnxruntime), and each command path that needs one, run as if it
were not installed (``sys.modules[name] = None``), fails as ONE line naming the extra to install, exit code 2.
(tests/test_wheel_install.py checks the same on a real install of the wheel without extras.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from cli_helpers import cli, one_line_error

from rnnlab._optional import EXTRAS, MissingExtra, require

OPTIONAL = tuple(EXTRAS)  # conllu, tokenizers, matplotlib, onnx, onnxscript, onnxruntime
CONLLU = "1\tdogs\t_\tNOUN\t_\t_\t_\t_\t_\t_\n2\tbark\t_\tVERB\t_\t_\t_\t_\t_\t_\n\n"


def missing(monkeypatch, *names):
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: importing it raises ModuleNotFoundError


def test_extras_match_pyproject():
    tomllib = pytest.importorskip("tomllib")
    from pathlib import Path

    meta = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = meta["optional-dependencies"]
    for module, extra in EXTRAS.items():
        assert module in extras[extra], (module, extra)
    assert extras["all"] == ["rnnlab[text,plots,onnx]"] and "rnnlab[all]" in extras["dev"]
    core = " ".join(meta["dependencies"])
    assert not any(module in core for module in OPTIONAL), core


def test_require(monkeypatch):
    assert require("json", purpose="x", extra="text") is json
    missing(monkeypatch, "conllu")
    with pytest.raises(MissingExtra) as exc:
        require("conllu", purpose="reading CoNLL-U")
    assert str(exc.value) == "reading CoNLL-U needs the 'conllu' package: pip install 'rnnlab[text]'"
    assert isinstance(exc.value, ImportError) and exc.value.extra == "text" and exc.value.module == "conllu"
    missing(monkeypatch, "onnxruntime")
    with pytest.raises(MissingExtra, match=r"^the check needs the 'onnxruntime' package: pip install 'rnnlab\[onnx\]' "
                                           r"\(or pass --no-check\)$"):
        require("onnxruntime", purpose="the check", alternative="or pass --no-check")


def test_require_lets_a_broken_install_through(monkeypatch, tmp_path):
    # An ImportError from inside an installed package is not "install the extra": it propagates as it is.
    (tmp_path / "rnnlab_broken_pkg.py").write_text("import rnnlab_no_such_dependency\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="rnnlab_no_such_dependency") as exc:
        require("rnnlab_broken_pkg", purpose="x", extra="text")
    assert not isinstance(exc.value, MissingExtra)


def test_import_rnnlab_imports_no_optional_package():
    """In a fresh interpreter: `import rnnlab` leaves the optional packages unimported although they are installed
    here; with all of them blocked, every module of the package still imports and the public names resolve."""
    code = textwrap.dedent(f"""
        import importlib, pkgutil, sys
        OPTIONAL = {OPTIONAL!r}
        import rnnlab
        assert [m for m in OPTIONAL if m in sys.modules] == [], [m for m in OPTIONAL if m in sys.modules]
        import rnnlab.cli.main
        assert [m for m in OPTIONAL if m in sys.modules] == [], [m for m in OPTIONAL if m in sys.modules]
        for name in [n for n in list(sys.modules) if n == "rnnlab" or n.startswith("rnnlab.")]:
            del sys.modules[name]
        for m in OPTIONAL:
            sys.modules[m] = None  # not installed
        import rnnlab
        for name in rnnlab.__all__:
            getattr(rnnlab, name)
        modules = [m.name for m in pkgutil.walk_packages(rnnlab.__path__, "rnnlab.") if m.name != "rnnlab.__main__"]
        for name in modules:
            importlib.import_module(name)
        print(len(modules))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) > 40  # walked the whole package


# -- the command paths that need an extra -----------------------------------------------------------------------------
def test_train_tag_without_conllu(tmp_path, capsys, monkeypatch):
    (tmp_path / "train.conllu").write_text(CONLLU, encoding="utf-8")
    missing(monkeypatch, "conllu")
    line = one_line_error(capsys, "train", "tag", "--train", tmp_path / "train.conllu", "--out", tmp_path / "run",
                          must=["reading CoNLL-U needs the 'conllu' package: pip install 'rnnlab[text]'"])
    assert line == "rnnlab: error: reading CoNLL-U needs the 'conllu' package: pip install 'rnnlab[text]'"


def test_bpe_level_without_tokenizers(tmp_path, capsys, monkeypatch):
    corpus = tmp_path / "text.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 20, encoding="utf-8")
    missing(monkeypatch, "tokenizers")
    one_line_error(capsys, "train", "lm", "--train", corpus, "--level", "bpe", "--out", tmp_path / "run",
                   must=["--level bpe", "'tokenizers' package: pip install 'rnnlab[text]'"])


def test_bpe_checkpoint_without_tokenizers(tmp_path, capsys, monkeypatch):
    """A BPE model trained elsewhere, used here without tokenizers: the extra to install, not 'checkpoint damaged'."""
    pytest.importorskip("tokenizers")
    corpus = tmp_path / "text.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 20, encoding="utf-8")
    run = tmp_path / "run"
    rc, _, err = cli(capsys, "train", "lm", "--train", corpus, "--level", "bpe", "--bpe-vocab", "260", "--epochs", "1",
                     "--hidden", "8", "--emb", "4", "--bptt", "8", "--batch-size", "4", "--quiet", "--out", run)
    assert rc == 0, err
    missing(monkeypatch, "tokenizers")
    line = one_line_error(capsys, "generate", run, "--max-tokens", "3", must=["pip install 'rnnlab[text]'"])
    assert "damaged" not in line
    one_line_error(capsys, "eval", run, "--file", corpus, must=["pip install 'rnnlab[text]'"])


def test_diagnose_figures_without_matplotlib(tmp_path, capsys, monkeypatch):
    missing(monkeypatch, "matplotlib")
    one_line_error(capsys, "diagnose", "--task", "adding", "--cell", "rnn_tanh", "--length", "8", "--steps", "1",
                   "--out", tmp_path / "diag",
                   must=["drawing the figures needs the 'matplotlib' package: pip install 'rnnlab[plots]'"])
    assert not (tmp_path / "diag").exists() or not any((tmp_path / "diag").iterdir())  # failed before any work


@pytest.mark.parametrize("absent, flags, must", [
    ("onnx", ["--no-check"], "ONNX export (--onnx) needs the 'onnx' package: pip install 'rnnlab[onnx]'"),
    ("onnxscript", ["--no-check"], "needs the 'onnxscript' package: pip install 'rnnlab[onnx]'"),
    ("onnxruntime", [], "needs the 'onnxruntime' package: pip install 'rnnlab[onnx]' (or pass --no-check)"),
])
def test_export_onnx_without_the_onnx_extra(tmp_path, capsys, monkeypatch, absent, flags, must):
    missing(monkeypatch, absent)
    # Checked before RUN_DIR is read: no trained model is needed to get the line.
    one_line_error(capsys, "export", tmp_path / "run", "--onnx", tmp_path / "m.onnx", *flags, must=[must])


# -- ninja, a core dependency: the engine's build finds it beside the interpreter when it is not on PATH ---------------
def test_engine_build_finds_the_ninja_package_off_path(tmp_path, monkeypatch):
    ninja = pytest.importorskip("ninja")
    from rnnlab.engine import _cpp

    monkeypatch.setenv("PATH", str(tmp_path))  # no ninja on PATH (as with a venv's python run without activate)
    assert _cpp._ninja_dir() == ninja.BIN_DIR
    with _cpp._path_with(ninja.BIN_DIR):
        assert os.environ["PATH"].split(os.pathsep) == [ninja.BIN_DIR, str(tmp_path)]
    assert os.environ["PATH"] == str(tmp_path)  # put back
    missing(monkeypatch, "ninja")
    assert _cpp._ninja_dir() == ""


def test_engine_without_ninja_is_the_one_line_fallback(tmp_path, monkeypatch, capsys):
    from rnnlab.engine import _cpp

    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path / "cache"))  # nothing built there: a build would be needed
    monkeypatch.setattr(_cpp, "_ninja_dir", lambda: "")
    assert _cpp._build() is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ninja" in err[0] and "pip install ninja" in err[0] and "pure-PyTorch" in err[0], err
