"""Part-of-speech tagging as a trainer task: batches of sentences bucketed by length, the loss of one batch,
evaluation (token accuracy, accuracy on unknown words, per-tag precision / recall / F1), tagging new sentences,
and reading a trained tagger back from its checkpoint.

    data = SentenceBatches(encode(train_sentences, vocab), batch_size=32, shuffle=True, seed=0)
    trainer = Trainer(model, TaggingTask(model), data, valid_data, options, out_dir=..., meta={"vocab": ...})
    evaluate_tagger(model, valid_data, vocab)   # {"accuracy", "unknown_accuracy", "per_tag", ...}

A batch holds whole sentences: a tagger's state does not carry from one batch to the next, so the task is
stateless (``state`` stays None).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.conllu import ConlluSentence, TaggingVocab
from ..models.tagger import BiRNNTagger, build_tagger
from .checkpoint import CheckpointError, load_checkpoint
from .compat import check_kind, check_vocab_fits

IGNORE = -100  # the target of padding and of gold tags unseen in training: left out of the loss, never predicted
# Sentences are shuffled, then sorted by length within pools of this many batches, so a batch holds sentences of
# similar length (little padding) while the batches still come in a new random order each epoch.
POOL_BATCHES = 50


@dataclass
class Encoded:
    """One sentence as ids."""

    words: list[int]
    chars: list[list[int]]
    tags: list[int]  # IGNORE for a tag unseen in training, or for every word of a sentence to be tagged


def encode(sentences, vocab: TaggingVocab) -> list[Encoded]:
    """``sentences``: ``(words, tags)`` pairs, ``ConlluSentence``s, or word lists (to tag: no gold tags)."""
    out = []
    for s in sentences:
        if isinstance(s, ConlluSentence):
            words, tags = s.words, s.tags
        elif isinstance(s, tuple):
            words, tags = s
        else:
            words, tags = s, None
        if not words:
            raise ValueError("a sentence has no words; every sentence needs at least one")
        out.append(Encoded(vocab.encode_words(words), vocab.encode_chars(words),
                           vocab.encode_tags(tags, IGNORE) if tags is not None else [IGNORE] * len(words)))
    return out


@dataclass
class TagBatch:
    """Sentences padded to the longest one in the batch."""

    words: Tensor  # (B, T) word ids, pad_id past each sentence's end
    chars: Tensor  # (B, T, C) character ids, 0-padded
    lengths: Tensor  # (B,) int64 on the CPU
    tags: Tensor  # (B, T) gold tag ids; IGNORE past the end and for tags unseen in training
    index: list[int]  # which sentences of the data set these are


def collate(sentences: list[Encoded], index: list[int], pad_id: int) -> TagBatch:
    B = len(sentences)
    T = max(len(s.words) for s in sentences)
    C = max(len(c) for s in sentences for c in s.chars)
    words = torch.full((B, T), pad_id, dtype=torch.long)  # (B, T)
    chars = torch.zeros(B, T, C, dtype=torch.long)  # (B, T, C)
    tags = torch.full((B, T), IGNORE, dtype=torch.long)  # (B, T)
    for b, s in enumerate(sentences):
        n = len(s.words)
        words[b, :n] = torch.tensor(s.words)
        tags[b, :n] = torch.tensor(s.tags)
        for t, c in enumerate(s.chars):
            chars[b, t, :len(c)] = torch.tensor(c)
    lengths = torch.tensor([len(s.words) for s in sentences], dtype=torch.long)  # (B,)
    return TagBatch(words, chars, lengths, tags, list(index))


class SentenceBatches:
    """Batches of ``batch_size`` sentences, bucketed by length. With ``shuffle``, each epoch has its own order,
    the same for the same (seed, epoch) — so ``batches(epoch, start)`` resumes exactly; without it the order is
    fixed (evaluation). The trainer's data protocol: ``batches(epoch, start)``, ``num_batches(epoch)``,
    ``batch_size``.

    Any items with a ``words`` list (their length) can be batched: ``collate_fn(items, index, pad_id)`` makes one
    batch of them (default: the tagger's ``TagBatch``; ``rnnlab.data.labeled.collate_labeled`` makes the
    ``(x, lengths, y)`` of a text classifier)."""

    def __init__(self, sentences: list[Encoded], batch_size: int, *, shuffle: bool = False, seed: int = 0,
                 pad_id: int = 0, name: str = "data", collate_fn=None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1 (sentences per batch); got {batch_size!r}")
        if not sentences:
            raise ValueError(f"{name}: no sentences to batch")
        self.sentences, self.batch_size, self.shuffle = list(sentences), batch_size, shuffle
        self.seed, self.pad_id, self.name = seed, pad_id, name
        self.collate_fn = collate_fn if collate_fn is not None else collate
        self.n_tokens = sum(len(s.words) for s in self.sentences)

    def __len__(self) -> int:
        return self.num_batches(0)

    def num_batches(self, epoch: int = 0) -> int:
        return -(-len(self.sentences) // self.batch_size)

    def order(self, epoch: int = 0) -> list[list[int]]:
        """The sentence indices of each batch of ``epoch``."""
        idx = list(range(len(self.sentences)))
        length = [len(s.words) for s in self.sentences]
        if not self.shuffle:
            idx.sort(key=lambda i: length[i])  # stable: equal lengths keep the file's order
            return [idx[k:k + self.batch_size] for k in range(0, len(idx), self.batch_size)]
        rng = random.Random(self.seed * 1_000_003 + epoch)  # a generator of its own: resuming needs no RNG state
        rng.shuffle(idx)
        pool = self.batch_size * POOL_BATCHES
        batches = []
        for k in range(0, len(idx), pool):
            chunk = sorted(idx[k:k + pool], key=lambda i: length[i])
            batches += [chunk[j:j + self.batch_size] for j in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[TagBatch]:
        for index in self.order(epoch)[start:]:
            yield self.collate_fn([self.sentences[i] for i in index], index, self.pad_id)

    def __iter__(self):
        return self.batches(0)


class TaggingTask:
    """Cross-entropy of the gold tags, averaged over a batch's tagged words (padding and tags unseen in training
    left out). Stateless: the ``state`` passed in comes back unchanged."""

    def __init__(self, model: nn.Module, device: torch.device | str | None = None) -> None:
        self.model = model
        self.device = torch.device(device) if device is not None else next(model.parameters()).device

    def logits(self, batch: TagBatch) -> Tensor:
        return self.model(batch.words.to(self.device), batch.chars.to(self.device), batch.lengths)  # (B, T, K)

    def step(self, batch: TagBatch, state):
        logits = self.logits(batch)  # (B, T, K)
        gold = batch.tags.to(self.device)  # (B, T)
        n = int((gold != IGNORE).sum())
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), gold.reshape(-1), ignore_index=IGNORE,
                               reduction="sum")  # over the B*T positions
        return loss / max(n, 1), n, state

    def metrics(self, loss: float) -> dict:
        return {"loss": loss}


@torch.no_grad()
def evaluate_tagger(model: nn.Module, data: SentenceBatches, vocab: TaggingVocab,
                    device: torch.device | str | None = None) -> dict:
    """On every word of ``data`` (eval mode): ``loss`` (mean cross-entropy over words with a tag known from
    training), ``accuracy``, ``unknown_accuracy`` (over words the word vocabulary maps to <unk>; None when there
    are none), ``tokens``, ``unknown_tokens``, ``per_tag`` {tag: precision, recall, f1, support} and ``macro_f1``.
    A gold tag unseen in training counts as a wrong prediction."""
    task = TaggingTask(model, device)
    was_training = model.training
    model.eval()
    K = len(vocab.tags)
    tp, pred_n, gold_n = torch.zeros(K), torch.zeros(K), torch.zeros(K)
    correct = total = unk_correct = unk_total = scored = 0
    loss_sum = 0.0
    try:
        for batch in data.batches(0):
            logits = task.logits(batch).cpu()  # (B, T, K)
            B, T = batch.words.shape
            mask = torch.arange(T) < batch.lengths[:, None]  # (B, T)
            gold, pred = batch.tags[mask], logits.argmax(-1)[mask]  # (N,), (N,)
            hit = pred == gold  # (N,): never true for IGNORE
            unknown = (batch.words[mask] == vocab.words.unk_id)  # (N,)
            correct += int(hit.sum())
            total += int(mask.sum())
            unk_correct += int((hit & unknown).sum())
            unk_total += int(unknown.sum())
            known = gold != IGNORE
            if known.any():
                loss_sum += float(F.cross_entropy(logits[mask][known], gold[known], reduction="sum"))
                scored += int(known.sum())
            tp += torch.bincount(gold[hit], minlength=K).float()
            pred_n += torch.bincount(pred, minlength=K).float()
            gold_n += torch.bincount(gold[known], minlength=K).float()
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError(f"{data.name}: no words to evaluate on")
    per_tag = {}
    for k, tag in enumerate(vocab.tags.itos):
        p = float(tp[k] / pred_n[k]) if pred_n[k] else 0.0
        r = float(tp[k] / gold_n[k]) if gold_n[k] else 0.0
        per_tag[tag] = {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
                        "support": int(gold_n[k])}
    present = [m["f1"] for m in per_tag.values() if m["support"]]
    return {"loss": loss_sum / max(scored, 1), "accuracy": correct / total,
            "unknown_accuracy": unk_correct / unk_total if unk_total else None, "tokens": total,
            "unknown_tokens": unk_total, "macro_f1": sum(present) / len(present) if present else 0.0,
            "per_tag": per_tag}


@torch.no_grad()
def tag_sentences(model: nn.Module, vocab: TaggingVocab, sentences, batch_size: int = 64,
                  device: torch.device | str | None = None) -> list[list[str]]:
    """The predicted tags of each sentence (word lists or ``ConlluSentence``s), in the given order."""
    if not sentences:
        return []
    words = [s.words if isinstance(s, ConlluSentence) else list(s) for s in sentences]
    data = SentenceBatches(encode(words, vocab), batch_size, pad_id=vocab.words.pad_id, name="input")
    task = TaggingTask(model, device)
    was_training = model.training
    model.eval()
    out: list[list[str] | None] = [None] * len(words)
    try:
        for batch in data.batches(0):
            pred = task.logits(batch).argmax(-1).cpu()  # (B, T)
            for b, i in enumerate(batch.index):
                out[i] = vocab.decode_tags(pred[b, :int(batch.lengths[b])])
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


def tagger_sizes(vocab: TaggingVocab) -> list[tuple[str, int, str]]:
    """What ``check_vocab_fits`` compares for a tagger: its three vocabularies against the model config."""
    return [("word vocabulary", len(vocab.words), "num_words"),
            ("character vocabulary", len(vocab.chars), "num_chars"),
            ("tag list", len(vocab.tags), "num_tags")]


def load_tagger(path: str | Path, prefer: str = "best", device: str | torch.device = "cpu"):
    """(model in eval mode, vocab, checkpoint) from a checkpoint directory or a run directory written by
    ``rnnlab train tag`` (see ``load_checkpoint``); the weights are read on the CPU and moved to ``device``."""
    ckpt = load_checkpoint(path, prefer)
    meta = ckpt.meta
    config = check_kind(ckpt.path, meta, ("bi_rnn_tagger",), "a tagger", "rnnlab train tag")
    vocab_json = meta["vocab"]
    try:
        model: BiRNNTagger = build_tagger(config)
        vocab = TaggingVocab.from_json(vocab_json)
    except ValueError as exc:
        raise CheckpointError(f"{ckpt.path / 'checkpoint.json'}: {exc}; the checkpoint is damaged: use another "
                              "one (the run's best/ or last/) or retrain") from None
    check_vocab_fits(ckpt.path, config, tagger_sizes(vocab))
    ckpt.load_model(model)
    return model.to(device).eval(), vocab, ckpt
