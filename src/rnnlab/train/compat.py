"""Does a checkpoint fit what reads it? Two checks the loaders (``load_lm``, ``load_tagger``, ``load_seq2seq``) and
the commands that resume a run make before building anything:

- the model kind: a tagger's run given to ``rnnlab generate`` is named as what it is, with the command that reads it;
- the vocabulary against the weights: checkpoint.json stores the vocabulary and the model config side by side; one
  edited, or copied from another run, gives a model whose embedding or output layer has another size than the
  vocabulary reading its text — an index error deep inside the model or, worse, quietly wrong tokens.
"""
from __future__ import annotations

from pathlib import Path

from .checkpoint import CheckpointError

# The run kind ('run'.'kind' in checkpoint.json) → the command that trains it and the ones that read it.
TRAINED_BY = {"lm": "rnnlab train lm", "ngram": "rnnlab train ngram", "tag": "rnnlab train tag",
              "classify": "rnnlab train classify", "classify-series": "rnnlab train classify-series",
              "regress": "rnnlab train regress",
              "seq2seq": "rnnlab train seq2seq", "task": "rnnlab task"}
READ_BY = {"lm": "rnnlab generate / eval", "ngram": "rnnlab generate / eval", "tag": "rnnlab predict",
           "classify": "rnnlab predict", "classify-series": "rnnlab predict", "seq2seq": "rnnlab translate", "task": "rnnlab diagnose"}


def describe(meta: dict) -> str:
    """What a checkpoint holds, for an error message: "a 'rnnlab train tag' run (model 'bi_rnn_tagger')"."""
    run = meta.get("run") if isinstance(meta.get("run"), dict) else {}
    model = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    kind, model_kind = run.get("kind"), model.get("kind")
    what = f"a '{TRAINED_BY[kind]}' run" if kind in TRAINED_BY else "a checkpoint"
    return what + (f" (model {model_kind!r})" if model_kind else " (no model config)")


def reader_hint(meta: dict) -> str:
    """"read it with 'rnnlab predict', or " when a command reads this checkpoint's kind; else ""."""
    run = meta.get("run") if isinstance(meta.get("run"), dict) else {}
    reader = READ_BY.get(run.get("kind"))
    return f"read it with '{reader}', or " if reader else ""


def wrong_kind(path: str | Path, meta: dict, wanted: str, trained_by: str) -> CheckpointError:
    """The error for a checkpoint that holds another kind of model than ``wanted`` ('a language model')."""
    return CheckpointError(f"{path}: holds {describe(meta)}, not {wanted}; {reader_hint(meta)}pass a run directory "
                           f"written by '{trained_by}'")


def damaged(path: str | Path, what: str) -> CheckpointError:
    """The error for a checkpoint.json that lacks ``what`` (e.g. "a model config ('model')") or has it in a form
    rnnlab cannot read."""
    return CheckpointError(f"{path}: checkpoint.json has no readable {what}; the checkpoint is damaged: use another "
                           "one (the run's best/ or last/) or retrain")


def check_kind(path: str | Path, meta: dict, kinds: tuple[str, ...], wanted: str, trained_by: str,
               vocab: bool = True) -> dict:
    """The model config of a checkpoint that must hold a model of one of ``kinds`` (and, with ``vocab``, a
    vocabulary): a CheckpointError saying what it holds instead, or what is missing from it."""
    config = meta.get("model")
    if not isinstance(config, dict) or "kind" not in config:
        raise damaged(path, "model config ('model')")
    if config["kind"] not in kinds:
        raise wrong_kind(path, meta, wanted, trained_by)
    if vocab and not isinstance(meta.get("vocab"), dict):
        raise damaged(path, "vocabulary ('vocab')")
    return config


def check_vocab_fits(path: str | Path, config, sizes: list[tuple[str, int, str]]) -> None:
    """``sizes``: (what, its size in the vocabulary, the model-config key that must equal it). A CheckpointError
    naming the checkpoint, both sizes and the fix at the first mismatch."""
    if not isinstance(config, dict):
        raise damaged(path, "model config ('model')")
    for what, n_vocab, key in sizes:
        n_model = config.get(key)
        if n_model != n_vocab:
            raise CheckpointError(f"{path}: the {what} in checkpoint.json has {n_vocab} entries but the model was "
                                  f"built for {n_model!r} (model config {key!r}); the vocabulary does not belong "
                                  "to these weights (checkpoint.json edited or copied from another run): use the "
                                  "checkpoint as training wrote it, or retrain")
