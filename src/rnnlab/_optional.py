"""The optional packages: each is imported where it is used, and a missing one is ONE line naming the extra to install.

``pip install rnnlab`` brings the layers and the engine (torch, numpy, safetensors, tqdm, ninja); the extras in
pyproject.toml add what a few commands need:

    rnnlab[text]   conllu (reading CoNLL-U: ``rnnlab train tag``, ``rnnlab predict`` on .conllu), tokenizers
                   (``--level bpe``)
    rnnlab[plots]  matplotlib (the figures of ``rnnlab diagnose``, ``--compare-attention``, ``--attention-png``)
    rnnlab[onnx]   onnx, onnxscript (``rnnlab export --onnx``), onnxruntime (its ``--check``)
    rnnlab[all]    all of the above

``require(module, extra=..., purpose=...)`` imports and returns the module or raises ``MissingExtra``, whose message
is the line the command line prints (``rnnlab: error: <message>``, exit code 2; see ``rnnlab.cli.main``).
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtra", "require"]

# Which extra (pyproject.toml's [project.optional-dependencies]) brings each optional top-level module.
EXTRAS = {
    "conllu": "text",
    "tokenizers": "text",
    "matplotlib": "plots",
    "onnx": "onnx",
    "onnxscript": "onnx",
    "onnxruntime": "onnx",
}


class MissingExtra(ImportError):
    """An optional package is not installed; the message (one line) says which extra brings it."""

    def __init__(self, message: str, *, module: str, extra: str) -> None:
        super().__init__(message, name=module)
        self.module = module
        self.extra = extra


def require(module: str, *, purpose: str, extra: str | None = None, alternative: str | None = None) -> ModuleType:
    """Import ``module`` and return it; when it is not installed, a ``MissingExtra`` such as
    "reading CoNLL-U needs the 'conllu' package: pip install 'rnnlab[text]'". ``purpose`` is what needs it
    (the start of that sentence); ``extra`` defaults to ``EXTRAS[module]``; ``alternative`` (e.g. "or pass
    --no-check") is added in parentheses."""
    extra = extra or EXTRAS[module]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        # Only the module itself (or its top-level package) missing means "install the extra"; an ImportError from
        # inside an installed package (a broken install, a missing shared library) propagates as it is.
        missing = getattr(exc, "name", None)
        if missing is not None and missing != module and missing != module.split(".")[0]:
            raise
        hint = f"pip install 'rnnlab[{extra}]'" + (f" ({alternative})" if alternative else "")
        raise MissingExtra(f"{purpose} needs the {module!r} package: {hint}", module=module, extra=extra) from None
