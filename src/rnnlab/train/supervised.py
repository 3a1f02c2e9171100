"""Supervised sequence tasks for the trainer — classification, regression, one output per step — and their
evaluation (accuracy, per-class precision/recall/F1 and the confusion matrix; MSE/MAE; per-step accuracy).

Each task follows the trainer's protocol (see ``rnnlab.train.trainer``): ``step(batch, state) -> (loss, n, state)``
and ``metrics(loss)``. Batches are ``(x, lengths, y)`` as ``rnnlab.data.synthetic`` makes them; the model is called
as ``model(x, lengths)`` (``rnnlab.models.classifier``). The tasks carry no state between batches (every sequence
starts from zeros), so resuming a run needs nothing but the data position.

    ClassificationTask   y (B,) class ids      cross-entropy, mean over the B sequences
    RegressionTask       y (B, n_outputs)      mean squared error, mean over the B * n_outputs values
    PerStepTask          y (B, T) class ids    cross-entropy over the steps whose target is not IGNORE (-100)
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.synthetic import IGNORE
from ..models.classifier import build
from .checkpoint import CheckpointError, load_checkpoint
from .compat import check_kind


def _device(model: nn.Module, device) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


class _Task:
    def __init__(self, model: nn.Module, device: torch.device | str | None = None) -> None:
        self.model = model
        self.device = _device(model, device)

    def _unpack(self, batch):
        x, lengths, y = batch
        return x.to(self.device), lengths, y.to(self.device)  # lengths stay on the CPU for packing

    def metrics(self, loss: float) -> dict:
        return {"loss": loss}


class ClassificationTask(_Task):
    """Cross-entropy of ``model(x, lengths)`` logits (B, C) against class ids ``y`` (B,)."""

    def step(self, batch, state):
        x, lengths, y = self._unpack(batch)
        logits = self.model(x, lengths)  # (B, C)
        return F.cross_entropy(logits, y), y.shape[0], None


class RegressionTask(_Task):
    """Mean squared error of ``model(x, lengths)`` (B, n_outputs) against ``y`` (B, n_outputs); the loss reported
    is the MSE."""

    def step(self, batch, state):
        x, lengths, y = self._unpack(batch)
        pred = self.model(x, lengths)  # (B, n_outputs)
        if pred.shape != y.shape:
            raise ValueError(f"the model predicts shape {tuple(pred.shape)} but the targets have shape "
                             f"{tuple(y.shape)}; give the model n_outputs = {y.shape[-1] if y.dim() > 1 else 1} "
                             "and the targets as (B, n_outputs)")
        return F.mse_loss(pred, y), y.numel(), None


class PerStepTask(_Task):
    """Cross-entropy of per-step logits (B, T, C) against ``y`` (B, T), over the steps whose target is not IGNORE
    (copy: the output steps only)."""

    def step(self, batch, state):
        x, lengths, y = self._unpack(batch)
        logits = self.model(x, lengths)  # (B, T, C)
        n = int((y != IGNORE).sum())
        if n == 0:
            raise ValueError("the batch has no target steps (every target is IGNORE = -100); nothing to learn from")
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE)
        return loss, n, None


# -- evaluation ----------------------------------------------------------------------------------------------------
def confusion_matrix(pred: Tensor, target: Tensor, n_classes: int) -> Tensor:
    """(C, C) int64 counts: row = true class, column = predicted class."""
    idx = target.reshape(-1).long() * n_classes + pred.reshape(-1).long()
    return torch.bincount(idx.cpu(), minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification_metrics(cm: Tensor) -> dict:
    """Accuracy, per-class precision/recall/F1/support (lists indexed by class) and their macro averages from a
    confusion matrix. A precision or recall with nothing to divide by (no prediction of that class, no example of
    it) counts as 0, as scikit-learn's ``zero_division=0``."""
    cm = cm.double()
    tp = cm.diag()
    predicted, actual = cm.sum(0), cm.sum(1)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-300), torch.zeros_like(tp))
    total = float(cm.sum())
    return {"accuracy": float(tp.sum()) / total if total else 0.0,
            "precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
            "support": [int(v) for v in actual.tolist()],
            "macro_f1": float(f1.mean()), "confusion": [[int(v) for v in row] for row in cm.long().tolist()]}


def _bucket(length: int, width: int) -> int:
    return (length // width) * width


@torch.no_grad()
def _collect(model: nn.Module, data, device):
    """Run ``model`` over all batches of ``data`` (epoch 0) in eval mode; yields (output, lengths, y) per batch."""
    was = model.training
    model.eval()
    try:
        for x, lengths, y in (data.batches(0) if hasattr(data, "batches") else data):
            yield model(x.to(device), lengths), lengths, y.to(device)
    finally:
        model.train(was)


@torch.no_grad()
def evaluate_classification(model: nn.Module, data, *, bucket_width: int | None = None,
                            device: torch.device | str | None = None) -> dict:
    """Over all batches of ``data``: loss (mean cross-entropy), n, and ``classification_metrics`` (accuracy,
    per-class precision/recall/F1, confusion matrix). With ``bucket_width`` also ``by_length``: for each bucket of
    sequence lengths ``[k*w, k*w + w - 1]`` that occurs, ``{"lengths": "40-49", "n": ..., "accuracy": ...}``."""
    if getattr(model, "task", "classify") != "classify" or not hasattr(model, "n_outputs"):
        raise ValueError(f"evaluate_classification needs a classifier (task='classify', n_outputs classes); got "
                         f"{type(model).__name__} with task={getattr(model, 'task', None)!r}. Use "
                         "evaluate_regression for task='regress'")
    device = _device(model, device)
    n_classes = model.n_outputs
    cm = torch.zeros(n_classes, n_classes, dtype=torch.long)
    loss_sum, n = 0.0, 0
    buckets: dict[int, list] = {}  # bucket start -> [correct, count, shortest, longest]
    for logits, lengths, y in _collect(model, data, device):
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        n += y.shape[0]
        pred = logits.argmax(1)  # (B, C) -> (B,)
        cm += confusion_matrix(pred, y, n_classes)
        if bucket_width:
            correct = (pred == y).cpu()
            for length, ok in zip(lengths.tolist(), correct.tolist()):
                b = buckets.setdefault(_bucket(length, bucket_width), [0, 0, length, length])
                b[0] += ok
                b[1] += 1
                b[2], b[3] = min(b[2], length), max(b[3], length)
    if n == 0:
        raise ValueError("evaluation data has no batches")
    out = {"loss": loss_sum / n, "n": n, **classification_metrics(cm)}
    if bucket_width:
        out["by_length"] = [{"lengths": f"{lo}-{hi}" if lo != hi else f"{lo}", "n": count, "accuracy": ok / count}
                            for _, (ok, count, lo, hi) in sorted(buckets.items())]
    return out


@torch.no_grad()
def evaluate_regression(model: nn.Module, data, *, baseline: float | None = None,
                        device: torch.device | str | None = None) -> dict:
    """Over all batches of ``data``: mse, mae (means over every predicted value), n (sequences); with ``baseline``
    also ``baseline_mse``, the MSE of always predicting that constant on the same data (adding problem: 1)."""
    device = _device(model, device)
    se, ae, base, count, n = 0.0, 0.0, 0.0, 0, 0
    for pred, _, y in _collect(model, data, device):
        se += float(((pred - y) ** 2).sum())
        ae += float((pred - y).abs().sum())
        if baseline is not None:
            base += float(((y - baseline) ** 2).sum())
        count += y.numel()
        n += y.shape[0]
    if n == 0:
        raise ValueError("evaluation data has no batches")
    out = {"mse": se / count, "mae": ae / count, "n": n}
    if baseline is not None:
        out["baseline_mse"] = base / count
    return out


@torch.no_grad()
def evaluate_per_step(model: nn.Module, data, *, device: torch.device | str | None = None) -> dict:
    """Over the target steps (not IGNORE) of all batches of ``data``: loss (mean cross-entropy), accuracy (per
    step: per symbol for the copy task), sequence_accuracy (every target step of a sequence right), steps, n."""
    device = _device(model, device)
    loss_sum, correct, steps, seq_ok, n = 0.0, 0, 0, 0, 0
    for logits, _, y in _collect(model, data, device):
        keep = y != IGNORE  # (B, T)
        loss_sum += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                          ignore_index=IGNORE, reduction="sum"))
        right = (logits.argmax(-1) == y) & keep  # (B, T)
        correct += int(right.sum())
        steps += int(keep.sum())
        seq_ok += int((right.sum(1) == keep.sum(1)).sum())
        n += y.shape[0]
    if steps == 0:
        raise ValueError("evaluation data has no target steps")
    return {"loss": loss_sum / steps, "accuracy": correct / steps, "sequence_accuracy": seq_ok / n,
            "steps": steps, "n": n}


def classifier_sizes(vocab) -> list[tuple[str, int, str]]:
    """What ``rnnlab.train.compat.check_vocab_fits`` compares for a text classifier (``TextVocab``): its words and
    its labels against the model config."""
    return [("word vocabulary", len(vocab.words), "vocab_size"), ("label list", len(vocab.labels), "n_outputs")]


def load_sequence_model(path: str | Path, prefer: str = "best", device: str | torch.device = "cpu"):
    """(model in eval mode, checkpoint) from a checkpoint or run directory written for a SequenceClassifier or
    SequenceTagger (``rnnlab task ...``, or a Trainer with such a model)."""
    ckpt = load_checkpoint(path, prefer)
    config = check_kind(ckpt.path, ckpt.meta, ("sequence_classifier", "sequence_tagger"),
                        "a sequence classifier or tagger", "rnnlab task", vocab=False)
    try:
        model = build(config)
    except ValueError as exc:
        raise CheckpointError(f"{ckpt.path / 'checkpoint.json'}: {exc}; the checkpoint is damaged: use another "
                              "one (the run's best/ or last/) or retrain") from None
    ckpt.load_model(model)
    return model.to(device).eval(), ckpt
