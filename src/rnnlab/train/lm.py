"""Language modelling as a trainer task: the loss of one chunk, the state carried between chunks, evaluation, and
reading a trained LM back from its checkpoint."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.text import LMStream, Vocab
from ..engine import detach_state
from ..models.lm import build_model
from .checkpoint import CheckpointError, load_checkpoint
from .compat import check_kind, check_vocab_fits
from .metrics import lm_metrics
from .trainer import evaluate_task


class LMTask:
    """Next-token cross-entropy on ``(x, y)`` chunks (T, B) for any model with the LM call
    ``model(tokens, state) -> (logits, state)`` (``RecurrentLM``, ``NGramLM``)."""

    batch_dim = 1  # chunks are (T, B) and states (layers, B, H) or (order - 2, B): the trainer shards along dim 1

    def __init__(self, model: nn.Module, char_level: bool = False, device: torch.device | str | None = None) -> None:
        self.model, self.char_level = model, char_level
        self.device = torch.device(device) if device is not None else next(model.parameters()).device

    def init_state(self, batch_size: int):
        return self.model.init_state(batch_size, self.device)

    def step(self, batch, state):
        x, y = (t.to(self.device) for t in batch)  # (T, B), (T, B)
        logits, state = self.model(x, state)  # (T, B, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))  # mean over the T*B targets
        return loss, y.numel(), state

    def detach_state(self, state):
        # Truncated BPTT: the next chunk continues from this state's *value* (the model keeps reading the stream),
        # but its graph is cut here, so the next backward stops at the chunk boundary instead of running back
        # through every chunk since the start of the epoch (unbounded time and memory).
        return detach_state(state)

    def metrics(self, loss: float) -> dict:
        return lm_metrics(loss, self.char_level)


def evaluate(model: nn.Module, stream: LMStream, level: str | None = None) -> dict:
    """Mean next-token loss (nats/token) of ``model`` over the whole ``stream``, with the state carried from chunk to
    chunk as in training; returns loss, ppl, and bpc when ``level == 'char'``."""
    task = LMTask(model, char_level=level == "char")
    return lm_metrics(evaluate_task(model, task, stream), task.char_level)


LM_KINDS = ("rnn", "ngram")  # model.config['kind'] of the language models (rnnlab.models.lm)


def load_lm(path: str | Path, prefer: str = "best", device: str | torch.device = "cpu"):
    """(model in eval mode, vocab, checkpoint) from a checkpoint directory or a run directory (see
    ``load_checkpoint``); the weights are read on the CPU and moved to ``device``."""
    ckpt = load_checkpoint(path, prefer)
    meta = ckpt.meta
    config = check_kind(ckpt.path, meta, LM_KINDS, "a language model", "rnnlab train lm")
    try:
        model = build_model(config)
        vocab = Vocab.from_json(meta["vocab"])
    except ValueError as exc:
        raise CheckpointError(f"{ckpt.path / 'checkpoint.json'}: {exc}; the checkpoint is damaged: use another "
                              "one (the run's best/ or last/) or retrain") from None
    check_vocab_fits(ckpt.path, config, [("vocabulary", len(vocab), "vocab_size")])
    ckpt.load_model(model)
    return model.to(device).eval(), vocab, ckpt
