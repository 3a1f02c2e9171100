"""SequenceClassifier / SequenceTagger (rnnlab.models.classifier) and the supervised trainer tasks and evaluation
(rnnlab.train.supervised): padding never changes a prediction (every pooling, uni- and bidirectional, every cell),
what each pooling computes, shapes, config round trips, bad arguments, the metrics, and that small models really
learn parity and the adding problem through the project's Trainer. The padding tests run under both engine
backends (the ``backend`` fixture of conftest.py)."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from rnnlab.data.synthetic import Adding, Copy, Parity
from rnnlab.models.classifier import SequenceClassifier, SequenceTagger, build
from rnnlab.train.supervised import ClassificationTask, PerStepTask, RegressionTask, classification_metrics, \
    confusion_matrix, evaluate_classification, evaluate_regression, evaluate_per_step, load_sequence_model
from rnnlab.train.trainer import Trainer, TrainOptions

CELLS = ["lstm", "gru", "rnn_tanh"]
POOLINGS = ["last", "mean", "max"]


def _padded_batch(seqs, pad_fill):
    """Stack sequences of different lengths, filling the padding with ``pad_fill(shape)`` (garbage, not zeros)."""
    T = max(s.shape[0] for s in seqs)
    rows = []
    for s in seqs:
        pad = pad_fill((T - s.shape[0],) + tuple(s.shape[1:]))
        rows.append(torch.cat([s, pad.to(s.dtype)]))
    return torch.stack(rows), torch.tensor([s.shape[0] for s in seqs])


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("cell", CELLS)
def test_padding_never_changes_a_classifier_prediction(cell, pooling, bidirectional, backend):
    model = SequenceClassifier(3, vocab_size=5, emb=4, cell=cell, hidden=6, layers=2, bidirectional=bidirectional,
                               pooling=pooling).eval()
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, 5, (n,), generator=g) for n in (7, 3, 5, 1)]
    x, lengths = _padded_batch(seqs, lambda shape: torch.randint(0, 5, shape, generator=g))
    batched = model(x, lengths)  # (4, 3)
    assert batched.shape == (4, 3)
    for i, s in enumerate(seqs):
        alone = model(s[None], torch.tensor([s.shape[0]]))  # (1, 3), no padding at all
        torch.testing.assert_close(batched[i], alone[0], rtol=1e-5, atol=1e-6)
    # other garbage in the padding: bit-for-bit the same outputs (padding is never read)
    x2 = x.clone()
    for i, n in enumerate(lengths.tolist()):
        x2[i, n:] = (x2[i, n:] + 1) % 5
    assert torch.equal(model(x2, lengths), batched)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_padding_never_changes_a_regression_on_features(pooling, bidirectional, backend):
    model = SequenceClassifier(2, input_size=2, cell="lstm", hidden=5, bidirectional=bidirectional,
                               pooling=pooling, task="regress").eval()
    seqs = [torch.rand(n, 2) for n in (2, 6, 4)]
    x, lengths = _padded_batch(seqs, lambda shape: 100 * torch.randn(shape))
    batched = model(x, lengths)
    for i, s in enumerate(seqs):
        torch.testing.assert_close(batched[i], model(s[None], None)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", CELLS + ["rnn_relu"])
def test_padding_never_changes_a_tagger_output(cell, bidirectional, backend):
    model = SequenceTagger(4, vocab_size=6, one_hot=True, cell=cell, hidden=5, bidirectional=bidirectional).eval()
    seqs = [torch.randint(0, 6, (n,)) for n in (3, 8, 5)]
    x, lengths = _padded_batch(seqs, lambda shape: torch.randint(0, 6, shape))
    batched = model(x, lengths)  # (3, 8, 4)
    assert batched.shape == (3, 8, 4)
    for i, s in enumerate(seqs):
        n = s.shape[0]
        torch.testing.assert_close(batched[i, :n], model(s[None])[0], rtol=1e-5, atol=1e-6)
        assert batched[i, n:].eq(0).all()  # padded steps: zeros


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_what_each_pooling_reads(bidirectional):
    torch.manual_seed(3)
    kw = {"vocab_size": 4, "hidden": 5, "layers": 2, "bidirectional": bidirectional}
    models = {p: SequenceClassifier(2, pooling=p, **kw).eval() for p in POOLINGS}
    for m in models.values():
        m.load_state_dict(models["last"].state_dict())
    x = torch.randint(0, 4, (3, 6))
    lengths = torch.tensor([6, 2, 4])
    out, mask, _ = models["last"].encode(x, lengths)  # (3, 6, D*H)
    H = 5
    for b, n in enumerate(lengths.tolist()):
        valid = out[b, :n]
        # last: the forward direction at the last valid step, the backward direction at step 0
        expect_last = valid[n - 1, :H] if not bidirectional else torch.cat([valid[n - 1, :H], valid[0, H:]])
        torch.testing.assert_close(models["last"].pool(x, lengths)[b], expect_last)
        torch.testing.assert_close(models["mean"].pool(x, lengths)[b], valid.mean(0))
        torch.testing.assert_close(models["max"].pool(x, lengths)[b], valid.max(0).values)
        assert mask[b].tolist() == [t < n for t in range(6)]


def test_shapes_predict_and_config_round_trip(tmp_path):
    clf = SequenceClassifier(3, vocab_size=7, hidden=8, emb=4, layers=2, bidirectional=True, pooling="mean",
                             dropout=0.1)
    reg = SequenceClassifier(2, input_size=3, hidden=8, task="regress", cell="gru", init="orthogonal")
    tag = SequenceTagger(5, vocab_size=7, hidden=8, cell="rnn_relu", init="identity")
    x = torch.randint(0, 7, (4, 9))
    lengths = torch.tensor([9, 1, 5, 3])
    assert clf(x, lengths).shape == (4, 3) and clf.predict(x, lengths).shape == (4,)
    assert reg(torch.rand(4, 9, 3), lengths).shape == (4, 2) and reg.predict(torch.rand(4, 9, 3)).shape == (4, 2)
    assert tag(x, lengths).shape == (4, 9, 5) and tag.predict(x, lengths).shape == (4, 9)
    assert clf.training  # predict() restores the mode
    for model, inp in ((clf, x), (reg, torch.rand(4, 9, 3)), (tag, x)):
        config = json.loads(json.dumps(model.config))  # JSON-able
        twin = build(config)
        assert type(twin) is type(model) and twin.config == model.config
        twin.load_state_dict(model.state_dict())
        model.eval(), twin.eval()
        assert torch.equal(twin(inp, lengths), model(inp, lengths))


def test_inits():
    irnn = SequenceClassifier(2, vocab_size=3, cell="rnn_relu", hidden=6, init="identity")
    assert torch.equal(irnn.rnn.weight_hh_l0, torch.eye(6))
    assert irnn.rnn.bias_hh_l0.eq(0).all()
    orth = SequenceClassifier(2, vocab_size=3, cell="gru", hidden=6, init="orthogonal")
    for block in orth.rnn.weight_hh_l0.detach().chunk(3, 0):
        torch.testing.assert_close(block @ block.T, torch.eye(6), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_outputs": 2}, "give exactly one of vocab_size .* and input_size .*; got vocab_size=None, input_size=None"),
    ({"n_outputs": 2, "vocab_size": 3, "input_size": 2}, "give exactly one of vocab_size"),
    ({"n_outputs": 1, "vocab_size": 3}, "n_outputs must be an integer >= 2; got 1. A classifier needs at least two"),
    ({"n_outputs": 0, "input_size": 3, "task": "regress"}, "n_outputs must be an integer >= 1; got 0"),
    ({"n_outputs": 2, "vocab_size": 3, "cell": "transformer"}, "cell must be one of lstm, gru, rnn_tanh, rnn_relu, "
                                                              "layernorm_lstm, layernorm_gru; got 'transformer'"),
    ({"n_outputs": 2, "vocab_size": 3, "pooling": "attention"}, "pooling must be one of last, mean, max; got "
                                                               "'attention'"),
    ({"n_outputs": 2, "vocab_size": 3, "task": "rank"}, "task must be one of classify, regress; got 'rank'"),
    ({"n_outputs": 2, "vocab_size": 3, "hidden": 0}, "hidden must be an integer >= 1; got 0"),
    ({"n_outputs": 2, "vocab_size": 3, "layers": 1.5}, "layers must be an integer >= 1; got 1.5"),
    ({"n_outputs": 2, "vocab_size": 3, "dropout": 1.0}, r"dropout must be a number in \[0, 1\) .*; got 1.0"),
    ({"n_outputs": 2, "vocab_size": 3, "init": "xavier"}, "init must be one of default, orthogonal, identity, chrono; got "
                                                         "'xavier'"),
    ({"n_outputs": 2, "vocab_size": 3, "init": "identity"}, "init='identity' is the IRNN .*; got cell='lstm'. Use "
                                                           "cell='rnn_relu'"),
    ({"n_outputs": 2, "vocab_size": 3, "one_hot": True, "emb": 4}, "one_hot input .* got emb=4. Leave emb unset"),
    ({"n_outputs": 2, "input_size": 3, "one_hot": True}, "one_hot and emb apply to token ids .* Drop them"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SequenceClassifier(**kwargs)


def test_bad_call_arguments_and_configs():
    model = SequenceClassifier(2, vocab_size=3, hidden=4)
    x = torch.randint(0, 3, (2, 5))
    with pytest.raises(ValueError, match=r"every length must be in \[1, T\] = \[1, 5\] .*got lengths from 0 to 5"):
        model(x, torch.tensor([5, 0]))
    with pytest.raises(ValueError, match=r"got lengths from 3 to 6"):
        model(x, torch.tensor([6, 3]))
    with pytest.raises(ValueError, match=r"lengths must be a \(B,\) = \(2,\) integer tensor; got torch.float32"):
        model(x, torch.tensor([5.0, 3.0]))
    with pytest.raises(ValueError, match=r"x must be a \(B, T\) tensor of int64 token ids; got 2-D torch.float32"):
        model(x.float())
    with pytest.raises(ValueError, match=r"x must be a \(B, T, 2\) float tensor of features"):
        SequenceClassifier(1, input_size=2, hidden=3, task="regress")(x)
    with pytest.raises(ValueError, match="model config 'kind' must be one of sequence_classifier, sequence_tagger; "
                                         "got 'rnn'"):
        build({"kind": "rnn"})
    with pytest.raises(ValueError, match="bad sequence_tagger model config: .*unexpected keyword argument 'pooling'"):
        build({**SequenceTagger(2, vocab_size=3).config, "pooling": "last"})


def test_confusion_matrix_and_per_class_metrics():
    target = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = torch.tensor([0, 0, 1, 1, 0, 2, 2, 1, 2])
    cm = confusion_matrix(pred, target, 4)  # class 3: never seen, never predicted
    assert cm.tolist() == [[2, 1, 0, 0], [1, 1, 0, 0], [0, 1, 3, 0], [0, 0, 0, 0]]
    m = classification_metrics(cm)
    assert m["accuracy"] == pytest.approx(6 / 9)
    assert m["precision"] == pytest.approx([2 / 3, 1 / 3, 1.0, 0.0])
    assert m["recall"] == pytest.approx([2 / 3, 1 / 2, 3 / 4, 0.0])
    assert m["f1"] == pytest.approx([2 / 3, 0.4, 6 / 7, 0.0])
    assert m["support"] == [3, 2, 4, 0] and m["confusion"] == cm.tolist()
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.4 + 6 / 7) / 4)


class CopyOracle(nn.Module):
    """Reads the answer off the input: at output step j it emits the j-th symbol (checks the targets' alignment)."""

    def __init__(self, n_symbols: int, alphabet: int) -> None:
        super().__init__()
        self.K, self.A = n_symbols, alphabet
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x, lengths):
        B, T = x.shape
        logits = torch.zeros(B, T, self.A)
        for b, n in enumerate(lengths.tolist()):
            for j in range(self.K):
                logits[b, n - self.K + j, int(x[b, j])] = 1.0
        return logits + 0 * self.dummy


def test_per_step_task_and_evaluation_on_copy():
    data = Copy(16, 3, n_symbols=3, alphabet=5, delay=1, max_delay=4, seed=2)
    oracle = CopyOracle(3, 5)
    m = evaluate_per_step(oracle, data)
    assert m["accuracy"] == 1.0 and m["sequence_accuracy"] == 1.0 and m["steps"] == 3 * 16 * 3 and m["n"] == 48
    loss, n, state = PerStepTask(oracle).step(data.batch(0, 0), None)
    assert n == 16 * 3 and state is None  # only the output steps count
    model = SequenceTagger(5, vocab_size=7, hidden=4)
    m = evaluate_per_step(model, data)  # untrained: about chance, and the loss of a near-uniform guess
    assert 0 <= m["accuracy"] <= 1 and m["loss"] == pytest.approx(torch.log(torch.tensor(5.0)).item(), rel=0.2)


def test_regression_task_rejects_mismatched_shapes():
    model = SequenceClassifier(2, input_size=2, hidden=3, task="regress")
    with pytest.raises(ValueError, match=r"predicts shape \(4, 2\) but the targets have shape \(4, 1\); give the "
                                         "model n_outputs = 1"):
        RegressionTask(model).step(Adding(4, 1, length=5).batch(0, 0), None)


def _fit(model, task, train, valid=None, out_dir=None, **options):
    Trainer(model, task, train, valid, TrainOptions(quiet=True, clip_norm=1.0, **options), out_dir=out_dir,
            print_fn=lambda s: None).fit()


def test_a_small_lstm_learns_parity_on_short_strings(tmp_path):
    torch.manual_seed(0)
    model = SequenceClassifier(2, vocab_size=2, one_hot=True, hidden=24)
    train = Parity(32, 60, min_len=1, max_len=6, seed=0)
    valid = Parity(128, 1, min_len=1, max_len=6, seed=0, split="valid")
    _fit(model, ClassificationTask(model), train, valid, out_dir=tmp_path / "run", epochs=5, lr=1e-2)
    test = Parity(200, 4, min_len=1, max_len=6, seed=0, split="test")
    m = evaluate_classification(model, test, bucket_width=2)
    assert m["accuracy"] > 0.9, m  # chance is 0.5
    assert m["n"] == 800 and sum(map(sum, m["confusion"])) == 800
    assert m["accuracy"] == pytest.approx((m["confusion"][0][0] + m["confusion"][1][1]) / 800)
    assert [b["lengths"] for b in m["by_length"]] == ["1", "2-3", "4-5", "6"]
    assert sum(b["n"] for b in m["by_length"]) == 800
    assert min(m["f1"]) > 0.85
    # the checkpoint the trainer wrote rebuilds the same model
    loaded, ckpt = load_sequence_model(tmp_path / "run", prefer="last")
    x, lengths, _ = test.batch(0, 0)
    assert torch.equal(loaded.predict(x, lengths), model.predict(x, lengths))


def test_a_small_lstm_beats_the_adding_baseline_at_small_T():
    torch.manual_seed(0)
    model = SequenceClassifier(1, input_size=2, hidden=24, task="regress")
    _fit(model, RegressionTask(model), Adding(32, 60, length=10, seed=0), epochs=5, lr=1e-2)
    m = evaluate_regression(model, Adding(256, 4, length=10, seed=0, split="test"), baseline=1.0)
    assert m["n"] == 1024 and abs(m["baseline_mse"] - 1 / 6) < 0.02
    assert m["mse"] < m["baseline_mse"] / 3, m  # well below always predicting 1
    assert 0 < m["mae"] < 0.25
