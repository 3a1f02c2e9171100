"""BiRNNTagger and the tagging task: shapes, padding never changes a prediction, word dropout, config round trip,
batches bucketed and shuffled reproducibly, the evaluation's numbers on a known case, and two small models that
learn: a rule that needs context, and tags of unseen words from their suffixes (thanks to the character
features; word embeddings alone cannot)."""
from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from rnnlab.data.conllu import TaggingVocab
from rnnlab.models.tagger import BiRNNTagger, build_tagger
from rnnlab.train.tagging import IGNORE, SentenceBatches, TaggingTask, collate, encode, evaluate_tagger, \
    tag_sentences
from rnnlab.train.trainer import Trainer, TrainOptions

SENTS = [(["The", "dog", "barks", "."], ["DET", "NOUN", "VERB", "PUNCT"]),
         (["A", "cat", "sleeps", "quietly", "today", "."], ["DET", "NOUN", "VERB", "ADV", "NOUN", "PUNCT"]),
         (["Run", "!"], ["VERB", "PUNCT"])]


def small(vocab, **kw):
    kw = {"emb": 8, "char_emb": 6, "char_hidden": 5, "hidden": 7, "layers": 2, "dropout": 0.0, **kw}
    return BiRNNTagger(len(vocab.words), len(vocab.chars), len(vocab.tags), **kw)


def batch_of(sents, vocab):
    return collate(encode(sents, vocab), list(range(len(sents))), vocab.words.pad_id)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_shapes_and_zero_logits_past_the_end(cell):
    vocab = TaggingVocab.build(SENTS)
    model = small(vocab, cell=cell, char_cell=cell).eval()
    b = batch_of(SENTS, vocab)
    assert b.words.shape == (3, 6) and b.chars.shape == (3, 6, 7) and b.lengths.tolist() == [4, 6, 2]
    logits = model(b.words, b.chars, b.lengths)
    assert logits.shape == (3, 6, len(vocab.tags))
    assert torch.all(logits[0, 4:] == 0) and torch.all(logits[2, 2:] == 0) and torch.all(logits[1] != 0)
    assert model.char_features(b.chars[0, :4]).shape == (4, 10)
    assert b.tags[2].tolist()[2:] == [IGNORE] * 4


@pytest.mark.parametrize("char_hidden", [5, 0])
def test_padding_and_batch_company_never_change_a_prediction(char_hidden):
    vocab = TaggingVocab.build(SENTS)
    model = small(vocab, char_hidden=char_hidden).eval()
    alone = [model(*(lambda b: (b.words, b.chars, b.lengths))(batch_of([s], vocab)))[0] for s in SENTS]
    b = batch_of(SENTS, vocab)
    together = model(b.words, b.chars, b.lengths)
    # more padding: two extra time steps and longer character rows than any word needs
    words = torch.cat([b.words, torch.zeros(3, 2, dtype=torch.long)], 1)
    chars = torch.zeros(3, 8, 12, dtype=torch.long)
    chars[:, :6, :7] = b.chars
    padded = model(words, chars, b.lengths)
    for i, (words_i, _) in enumerate(SENTS):
        n = len(words_i)
        torch.testing.assert_close(together[i, :n], alone[i][:n], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(padded[i, :n], alone[i][:n], atol=1e-5, rtol=1e-5)
        assert torch.equal(padded[i, :n].argmax(-1), alone[i][:n].argmax(-1))


def test_word_dropout_replaces_training_words_by_unk_only_in_training():
    vocab = TaggingVocab.build(SENTS)
    model = small(vocab, word_dropout=0.9)
    seen = []
    model.embed.register_forward_hook(lambda m, inp, out: seen.append(inp[0].clone()))
    b = batch_of(SENTS, vocab)
    model.train()(b.words, b.chars, b.lengths)
    model.eval()(b.words, b.chars, b.lengths)
    train_ids, eval_ids = seen
    real = b.words != vocab.words.pad_id
    assert torch.equal(eval_ids, b.words)
    assert torch.all(train_ids[~real] == vocab.words.pad_id)  # padding stays padding
    assert (train_ids[real] == vocab.words.unk_id).float().mean() > 0.6


def test_config_rebuilds_the_same_model_and_bad_values_say_the_rule():
    vocab = TaggingVocab.build(SENTS)
    model = small(vocab, cell="gru", word_dropout=0.1)
    again = build_tagger(model.config)
    again.load_state_dict(model.state_dict())
    assert again.config == model.config
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\).*got 1.5"):
        small(vocab, dropout=1.5)
    with pytest.raises(ValueError, match="pad_id and unk_id must differ"):
        small(vocab, pad_id=1)
    with pytest.raises(ValueError, match="char_hidden must be an integer >= 0; got -1; use 0 for no character"):
        small(vocab, char_hidden=-1)
    with pytest.raises(ValueError, match="cell must be one of lstm, gru, layernorm_lstm, layernorm_gru; got 'rnn'"):
        small(vocab, cell="rnn")
    with pytest.raises(ValueError, match="kind' must be 'bi_rnn_tagger'; got 'rnn'"):
        build_tagger({"kind": "rnn"})
    with pytest.raises(ValueError, match="bad tagger config"):
        build_tagger({**model.config, "colour": 1})
    with pytest.raises(ValueError, match="lengths must hold B=3 sentence lengths in"):
        b = batch_of(SENTS, vocab)
        model(b.words, b.chars, torch.tensor([4, 7, 2]))


def test_batches_are_bucketed_and_shuffled_reproducibly_per_epoch():
    rng = random.Random(1)
    sents = [(["w"] * n, ["T"] * n) for n in (rng.randint(1, 40) for _ in range(500))]
    vocab = TaggingVocab.build(sents)
    data = SentenceBatches(encode(sents, vocab), 8, shuffle=True, seed=3)
    e0, e1 = data.order(0), data.order(1)
    assert e0 == SentenceBatches(encode(sents, vocab), 8, shuffle=True, seed=3).order(0)  # same (seed, epoch)
    assert e0 != e1
    for order in (e0, e1):
        assert sorted(i for b in order for i in b) == list(range(500)) and len(order) == data.num_batches(0) == 63
    spread = [max(len(sents[i][0]) for i in b) - min(len(sents[i][0]) for i in b) for b in e0]
    assert sum(spread) / len(spread) < 3  # pooled by length: little padding (random batches would spread ~30)
    resumed = [b.index for b in data.batches(1, start=10)]
    assert resumed == e1[10:]
    fixed = SentenceBatches(encode(sents, vocab), 8)
    assert fixed.order(0) == fixed.order(5)


class _Fixed(nn.Module):
    """A 'model' that predicts the tag id ``by_char[first character id]`` for each word."""

    def __init__(self, by_char: dict[int, int], k: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.by_char, self.k = by_char, k

    def forward(self, words, chars, lengths):
        pred = chars[:, :, 0].clone().apply_(lambda c: self.by_char.get(c, 0))  # (B, T)
        return torch.nn.functional.one_hot(pred, self.k).float() * 5  # (B, T, K)


def test_evaluation_counts_accuracy_unknown_words_and_per_tag_scores():
    vocab = TaggingVocab.build([(["a", "b", "c", "z", "q"], ["X", "Y", "X", "X", "X"])])  # tags X=0, Y=1
    sents = [(["a", "zz", "c"], ["X", "X", "Y"]), (["qq", "b"], ["Y", "NEW"])]  # NEW: unseen in training
    c = vocab.chars.id
    model = _Fixed({c("a"): 0, c("z"): 0, c("c"): 0, c("q"): 1, c("b"): 1}, 2)
    m = evaluate_tagger(model, SentenceBatches(encode(sents, vocab), 8), vocab)
    # sentence 0: a/X→X ok, zz/X→X ok (unknown), c/Y→X wrong; sentence 1: qq/Y→Y ok (unknown), b/NEW→Y wrong
    assert m["tokens"] == 5 and m["accuracy"] == pytest.approx(3 / 5)
    assert m["unknown_tokens"] == 2 and m["unknown_accuracy"] == 1.0
    assert m["per_tag"]["X"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert m["per_tag"]["Y"] == pytest.approx({"precision": 1 / 2, "recall": 1 / 2, "f1": 0.5, "support": 2})
    assert m["macro_f1"] == pytest.approx(0.65)


def _train(model, sents, vocab, epochs, batch_size=16, lr=0.02):
    data = SentenceBatches(encode(sents, vocab), batch_size, shuffle=True, pad_id=vocab.words.pad_id)
    options = TrainOptions(epochs=epochs, lr=lr, clip_norm=5.0, quiet=True, progress=False)
    Trainer(model, TaggingTask(model), data, options=options, print_fn=lambda s: None).fit()
    return model


def _context_data(n, rng):
    """Tags that need context: 'AFTER' right after the word 'x', 'BEFORE' right before it, else 'OTHER'."""
    out = []
    for _ in range(n):
        words = [rng.choice("xxabc") for _ in range(rng.randint(3, 9))]
        tags = ["AFTER" if i and words[i - 1] == "x" else "BEFORE" if i + 1 < len(words) and words[i + 1] == "x"
                else "OTHER" for i in range(len(words))]
        out.append((words, tags))
    return out


def test_a_small_tagger_learns_a_rule_that_needs_both_directions():
    rng = random.Random(0)
    train, test = _context_data(300, rng), _context_data(100, rng)
    vocab = TaggingVocab.build(train)
    model = _train(small(vocab, emb=8, hidden=16, layers=1, char_hidden=0), train, vocab, epochs=12)
    m = evaluate_tagger(model, SentenceBatches(encode(test, vocab), 64), vocab)
    majority = max(sum(t == tag for _, ts in test for t in ts) for tag in ("AFTER", "BEFORE", "OTHER"))
    assert majority / m["tokens"] < 0.6  # chance / majority-tag level
    assert m["accuracy"] > 0.97, m["accuracy"]
    assert tag_sentences(model, vocab, [["a", "x", "b", "c"]]) == [["BEFORE", "OTHER", "AFTER", "OTHER"]]


SUFFIXES = {"ing": "VERB", "ly": "ADV", "tion": "NOUN", "ful": "ADJ"}


def _suffix_data(stems, n, rng):
    out = []
    for _ in range(n):
        pairs = [(rng.choice(stems), rng.choice(list(SUFFIXES))) for _ in range(rng.randint(2, 6))]
        out.append(([s + x for s, x in pairs], [SUFFIXES[x] for _, x in pairs]))
    return out


def test_unknown_words_get_their_tag_from_the_suffix_thanks_to_char_features():
    rng = random.Random(0)
    stems = sorted({"".join(rng.choice("bcdfgkmnprstvz") + rng.choice("aeiou") for _ in range(2))
                    for _ in range(100)})
    rng.shuffle(stems)
    train, test = _suffix_data(stems[:50], 150, rng), _suffix_data(stems[50:], 60, rng)
    vocab = TaggingVocab.build(train)
    assert all(vocab.is_unknown(w) for ws, _ in test for w in ws)
    results = {}
    for char_hidden in (12, 0):
        model = small(vocab, emb=8, char_emb=8, char_hidden=char_hidden, hidden=12, layers=1, word_dropout=0.3)
        _train(model, train, vocab, epochs=8)
        results[char_hidden] = evaluate_tagger(model, SentenceBatches(encode(test, vocab), 64), vocab)
    assert results[12]["unknown_accuracy"] > 0.95, results[12]["unknown_accuracy"]
    assert results[0]["unknown_accuracy"] < 0.5  # every unknown word is the same <unk>: about one in four
