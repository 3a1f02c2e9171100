"""rnnlab.RNN / LSTM / GRU carry torch.nn.RNNBase's public surface, so code written for torch.nn's layers runs with
the classes swapped: every public name of torch.nn's instances, ``all_weights`` and the ``_flat_weights`` lists (never
stale when a parameter is replaced), torch.nn's check methods, batches of no sequences, whole-model checkpoints
(``torch.save(model)``, also loaded with ``weights_only=True`` through ``rnnlab.safe_globals``), and a standard
torch.nn training script run with both classes from the same weights."""
import math
import pickle

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnlab
from rnnlab import models

PAIRS = {
    "rnn_tanh": (rnnlab.RNN, nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (rnnlab.RNN, nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (rnnlab.LSTM, nn.LSTM, {}),
    "gru": (rnnlab.GRU, nn.GRU, {}),
}
# Public names of torch.nn's instances that rnnlab's may lack, each with its reason. None: rnnlab has them all.
DIR_EXCEPTIONS: dict[str, str] = {}
# torch.nn's private names that code outside torch reads (weight-drop wrappers, parametrization helpers, exporters).
PRIVATE_NAMES = ("_flat_weights", "_flat_weights_names", "_all_weights")


def make_pair(cell, seed=0, dtype=torch.float32, **kw):
    """(rnnlab layer, torch.nn layer) with the same weights (torch.nn's state_dict loaded into rnnlab's)."""
    ours, theirs, extra = PAIRS[cell]
    torch.manual_seed(seed)
    t = theirs(**kw, **extra).to(dtype)
    m = ours(**kw, **extra).to(dtype)
    m.load_state_dict(t.state_dict())
    return m, t


def outcome(f):
    """What a call gave: ("ok", its value) or ("raised", the exception's type)."""
    try:
        return "ok", f()
    except Exception as e:  # noqa: BLE001 - the type is what is compared
        return "raised", type(e)


# -- names ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_every_public_name_of_torch_nn_exists(cell):
    m, t = make_pair(cell, input_size=3, hidden_size=4)
    public = {n for n in dir(t) if not n.startswith("_")}
    missing = sorted(n for n in public - set(DIR_EXCEPTIONS) if not hasattr(m, n))
    assert missing == [], f"{type(m).__name__} lacks torch.nn's {missing}"
    assert all(hasattr(m, n) for n in PRIVATE_NAMES)
    # a method stays a method, an attribute an attribute
    kinds = {n: callable(getattr(t, n)) for n in public - set(DIR_EXCEPTIONS)}
    assert {n: callable(getattr(m, n)) for n in kinds} == kinds


@pytest.mark.parametrize("cell", PAIRS)
@pytest.mark.parametrize("kw", [{}, {"num_layers": 2, "bidirectional": True, "bias": False, "batch_first": True},
                                {"num_layers": 3, "dropout": 0.25}], ids=["default", "stack", "dropout"])
def test_attributes_and_repr_equal_torch_nn(cell, kw):
    m, t = make_pair(cell, input_size=3, hidden_size=4, **kw)
    for name in ("mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional",
                 "proj_size") + (("nonlinearity",) if cell.startswith("rnn") else ()):
        assert getattr(m, name) == getattr(t, name), name
        assert type(getattr(m, name)) is type(getattr(t, name)), name
    if cell != "rnn_relu":  # rnnlab's repr names a ReLU RNN's nonlinearity; torch.nn's leaves it out
        assert repr(m) == repr(t)


def test_proj_size_is_an_attribute_and_still_refused():
    assert rnnlab.LSTM(3, 4).proj_size == 0
    with pytest.raises(ValueError, match="proj_size must be 0"):
        rnnlab.LSTM(3, 4, proj_size=2)


def test_rnnbase_takes_torch_nn_mode_names():
    assert rnnlab.layers.RNNBase("GRU", 3, 4).mode == "GRU"
    with pytest.raises(ValueError, match="mode must be one of torch.nn's cell names 'RNN_TANH', 'RNN_RELU', 'LSTM', "
                                         "'GRU'; got 'lstm'"):
        rnnlab.layers.RNNBase("lstm", 3, 4)


# -- all_weights and the flat lists ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", PAIRS)
@pytest.mark.parametrize("bias", [True, False])
def test_all_weights_and_flat_lists_equal_torch_nn(cell, bias):
    m, t = make_pair(cell, input_size=3, hidden_size=4, num_layers=2, bidirectional=True, bias=bias)
    assert m._flat_weights_names == t._flat_weights_names
    assert m._all_weights == t._all_weights
    assert len(m.all_weights) == 4 and all(len(ws) == (4 if bias else 2) for ws in m.all_weights)
    for ours, theirs, names in zip(m.all_weights, t.all_weights, m._all_weights):
        for a, b, name in zip(ours, theirs, names):
            assert isinstance(a, nn.Parameter) and a is getattr(m, name)
            assert a.shape == b.shape and torch.equal(a, b), name
    assert len(m._flat_weights) == len(t._flat_weights)
    for a, b, name in zip(m._flat_weights, t._flat_weights, m._flat_weights_names):
        assert a is getattr(m, name) and torch.equal(a, b), name


def test_flat_weights_follow_assignment_and_to():
    m = rnnlab.GRU(3, 4, num_layers=2)
    new = nn.Parameter(torch.randn(12, 4))
    m.weight_hh_l1 = new
    assert m._flat_weights[m._flat_weights_names.index("weight_hh_l1")] is new
    assert m.all_weights[1][1] is new
    m.to(torch.float64)
    assert all(w.dtype == torch.float64 for w in m._flat_weights)
    assert all(a is b for a, b in zip(m._flat_weights, m.parameters()))


@pytest.mark.parametrize("parametrize", ["weight_norm", "spectral_norm", "orthogonal"])
def test_flat_weights_under_a_parametrization_are_what_forward_runs(parametrize, backend):
    m, t = make_pair("lstm", dtype=torch.float64, input_size=3, hidden_size=4, num_layers=2)
    fn = getattr(nn.utils.parametrizations, parametrize)
    names = m._flat_weights_names
    for module in (m, t):
        torch.manual_seed(5)  # spectral_norm starts its power iteration from a random vector: the same for both
        fn(module, "weight_hh_l0")
        module.eval()  # spectral_norm's estimate stays fixed in eval mode, so both read the same weight
    assert m._flat_weights_names == names  # the names stay; the values are the parametrized ones
    i = names.index("weight_hh_l0")
    assert not isinstance(m._flat_weights[i], nn.Parameter)
    torch.testing.assert_close(m._flat_weights[i], m.weight_hh_l0)
    torch.testing.assert_close(m._flat_weights[i], t.weight_hh_l0)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    (o1, (h1, c1)), (o2, (h2, c2)) = m(x), t(x)
    torch.testing.assert_close(o1, o2)
    torch.testing.assert_close(h1, h2)
    torch.testing.assert_close(c1, c2)


def test_flat_weights_inside_functional_call(backend):
    m, t = make_pair("gru", dtype=torch.float64, input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    swapped = {name: torch.randn_like(p) for name, p in m.named_parameters()}
    seen = []
    m.register_forward_pre_hook(lambda module, args: seen.append(module._flat_weights))
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out, h = torch.func.functional_call(m, swapped, (x,))
    assert all(a is swapped[n] for a, n in zip(seen[0], m._flat_weights_names))  # the swapped-in tensors
    assert all(a is p for a, p in zip(m._flat_weights, m.parameters()))  # and the parameters again after the call
    ref_out, ref_h = torch.func.functional_call(t, swapped, (x,))
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(h, ref_h)


def test_flatten_parameters_is_a_no_op(backend):
    m = rnnlab.LSTM(3, 4, num_layers=2)
    before = [(p, p.detach().clone()) for p in m.parameters()]
    x = torch.randn(5, 2, 3)
    out = m(x)[0]
    assert m.flatten_parameters() is None
    assert all(p is q and torch.equal(p, v) for (p, v), q in zip(before, m.parameters()))
    assert torch.equal(m(x)[0], out)


# -- torch.nn's check methods ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_check_methods_behave_as_torch_nn(cell, batch_first):
    m, t = make_pair(cell, input_size=3, hidden_size=4, num_layers=2, bidirectional=True, batch_first=batch_first)
    good = torch.randn(2, 5, 3) if batch_first else torch.randn(5, 2, 3)
    packed = pack_padded_sequence(torch.randn(5, 3, 3), torch.tensor([5, 2, 4]), enforce_sorted=False)
    inputs = [(good, None), (packed.data, packed.batch_sizes), (torch.randn(5, 3), None), (good, packed.batch_sizes),
              (torch.randn(5, 2, 7), None), (good.double(), None)]
    for x, bs in inputs:
        assert outcome(lambda: m.check_input(x, bs)) == outcome(lambda: t.check_input(x, bs))
        if outcome(lambda: t.check_input(x, bs))[0] == "ok":
            assert m.get_expected_hidden_size(x, bs) == t.get_expected_hidden_size(x, bs)
    expected = t.get_expected_hidden_size(good, None)
    assert expected == (4, 2, 4)
    for h in (torch.zeros(expected), torch.zeros(4, 3, 4), torch.zeros(2, 4)):
        assert outcome(lambda: m.check_hidden_size(h, expected)) == outcome(lambda: t.check_hidden_size(h, expected))
        hidden = (h, torch.zeros(expected)) if cell == "lstm" else h
        assert outcome(lambda: m.check_forward_args(good, hidden, None)) == \
            outcome(lambda: t.check_forward_args(good, hidden, None))
    with pytest.raises(RuntimeError, match=r"^my \(4, 2, 4\) vs \[4, 3, 4\]$"):  # the caller's message, as torch.nn's
        m.check_hidden_size(torch.zeros(4, 3, 4), expected, "my {} vs {}")
    if cell == "lstm":
        assert m.get_expected_cell_size(packed.data, packed.batch_sizes) == \
            t.get_expected_cell_size(packed.data, packed.batch_sizes)
        assert outcome(lambda: m.check_forward_args(good, (torch.zeros(expected), torch.zeros(4, 3, 4)), None)) == \
            ("raised", RuntimeError)
    perm = torch.tensor([1, 0])
    hx = (torch.randn(expected), torch.randn(expected)) if cell == "lstm" else torch.randn(expected)
    for p in (perm, None):
        ours, theirs = m.permute_hidden(hx, p), t.permute_hidden(hx, p)
        for a, b in zip(ours if cell == "lstm" else [ours], theirs if cell == "lstm" else [theirs]):
            assert torch.equal(a, b)


# -- batches of no sequences, inputs of no steps --------------------------------------------------------------------
@pytest.mark.parametrize("cell", PAIRS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("give_h0", [False, True])
def test_empty_batch_as_torch_nn(cell, bidirectional, batch_first, give_h0, backend):
    m, t = make_pair(cell, input_size=3, hidden_size=4, num_layers=2, bidirectional=bidirectional,
                     batch_first=batch_first)
    D = 2 if bidirectional else 1
    results = []
    for module in (m, t):
        x = torch.randn((0, 5, 3) if batch_first else (5, 0, 3), requires_grad=True)
        states = [torch.zeros(2 * D, 0, 4, requires_grad=True) for _ in range(2 if cell == "lstm" else 1)]
        hx = (tuple(states) if cell == "lstm" else states[0]) if give_h0 else None
        out, hn = module(x, hx)
        finals = list(hn) if cell == "lstm" else [hn]
        (out.sum() + sum(s.sum() for s in finals)).backward()
        results.append((out, finals, x.grad, [s.grad for s in states] if give_h0 else [],
                        [p.grad for p in module.parameters()]))
    (out, finals, dx, dstates, dparams), (ref_out, ref_finals, ref_dx, ref_dstates, ref_dparams) = results
    assert out.shape == ref_out.shape
    assert out.shape == ((0, 5, 4 * D) if batch_first else (5, 0, 4 * D)) and out.dtype == ref_out.dtype
    assert [s.shape for s in finals] == [s.shape for s in ref_finals] == [(2 * D, 0, 4)] * len(finals)
    assert out.requires_grad and all(s.requires_grad for s in finals)
    assert dx.shape == ref_dx.shape
    assert [g.shape for g in dstates] == [g.shape for g in ref_dstates]
    for g, ref in zip(dparams, ref_dparams):  # zeros, not None, as torch.nn's: an optimizer steps the same
        assert g is not None and torch.equal(g, ref) and not g.any()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_empty_batch_in_training_with_every_regulariser(cell, backend):
    cls, _, _ = PAIRS[cell]
    m = cls(3, 4, num_layers=2, bidirectional=True, dropout=0.5, weight_drop=0.5, input_dropout=0.1,
            output_dropout=0.1, recurrent_dropout=0.2, zoneout=0.1).train()
    out, hn = m(torch.randn(6, 0, 3))
    assert out.shape == (6, 0, 8)
    assert (hn[0] if cell == "lstm" else hn).shape == (4, 0, 4)
    out.sum().backward()
    assert all(p.grad is not None and not p.grad.any() for p in m.parameters())


def test_empty_batch_through_step_and_no_grad(backend):
    m = rnnlab.LSTM(3, 4, num_layers=2)
    out, (h, c) = m.step(torch.randn(0, 3))
    assert out.shape == (0, 4) and h.shape == c.shape == (2, 0, 4)
    with torch.no_grad():
        out, _ = m(torch.randn(5, 0, 3))
    assert out.shape == (5, 0, 4) and out.grad_fn is None


@pytest.mark.parametrize("cell", PAIRS)
@pytest.mark.parametrize("form", ["time_major", "batch_first", "unbatched", "unbatched_h0", "no_batch_either"])
def test_no_time_steps_raises_as_torch_nn(cell, form):
    m, t = make_pair(cell, input_size=3, hidden_size=4, num_layers=2, bidirectional=True,
                     batch_first=form == "batch_first")
    x = {"time_major": torch.randn(0, 2, 3), "batch_first": torch.randn(2, 0, 3), "unbatched": torch.randn(0, 3),
         "unbatched_h0": torch.randn(0, 3), "no_batch_either": torch.randn(0, 0, 3)}[form]
    hx = None
    if form == "unbatched_h0":
        hx = (torch.zeros(4, 4), torch.zeros(4, 4)) if cell == "lstm" else torch.zeros(4, 4)
    with pytest.raises(RuntimeError, match="Expected sequence length to be larger than 0"):
        t(x, hx)
    with pytest.raises(RuntimeError, match=r"input must have at least one time step; got shape "):  # caught as torch's
        m(x, hx)
    with pytest.raises(ValueError, match="Leave empty sequences out"):  # and as rnnlab's other input errors
        m(x, hx)


def test_empty_packed_sequence_names_the_problem():
    # torch's packing functions refuse empty input; a hand-built one makes torch.nn fail with an IndexError
    empty = PackedSequence(torch.randn(0, 3), torch.tensor([], dtype=torch.int64))
    with pytest.raises(IndexError):
        nn.LSTM(3, 4)(empty)
    with pytest.raises(RuntimeError, match="a PackedSequence must have at least one time step; got empty batch_sizes"):
        rnnlab.LSTM(3, 4)(empty)


# -- whole-model checkpoints ----------------------------------------------------------------------------------------
class Tagger(nn.Module):
    """A user's model holding an rnnlab layer: the checkpoint names this class, so loading allows it too."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(rnn.hidden_size * rnn.num_directions, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


def test_whole_model_loads_with_weights_only_through_safe_globals(tmp_path, backend):
    model = Tagger(rnnlab.LSTM(3, 4, num_layers=2, bidirectional=True, zoneout=(0.1, 0.2))).eval()
    seq = nn.Sequential(nn.Linear(3, 3), rnnlab.GRU(3, 5))
    torch.save(model, tmp_path / "model.pt")
    torch.save(seq, tmp_path / "seq.pt")
    with torch.serialization.safe_globals([Tagger, nn.Linear]), \
            pytest.raises(pickle.UnpicklingError, match="Unsupported global: GLOBAL rnnlab.layers.LSTM"):
        torch.load(tmp_path / "model.pt", weights_only=True)  # without rnnlab's classes: refused
    with torch.serialization.safe_globals(rnnlab.safe_globals(Tagger)):
        loaded = torch.load(tmp_path / "model.pt", weights_only=True)
    with torch.serialization.safe_globals(rnnlab.safe_globals()):
        seq_loaded = torch.load(tmp_path / "seq.pt", weights_only=True)
    assert type(loaded.rnn) is rnnlab.LSTM and loaded.rnn.zoneout == (0.1, 0.2) and loaded.rnn.mode == "LSTM"
    assert type(seq_loaded[1]) is rnnlab.GRU
    x = torch.randn(6, 2, 3)
    assert torch.equal(loaded(x), model(x))
    assert torch.equal(seq_loaded[1](seq_loaded[0](x))[0], seq[1](seq[0](x))[0])


def rnnlab_models():
    """One of each model rnnlab builds, covering every layer kind and head."""
    return [*(models.RecurrentLM(10, hidden=6, cell=c, layers=2, dropout=0.1) for c in models.CELLS),
            models.RecurrentLM(10, hidden=6, skip=True, skip_budget=0.1),
            models.RecurrentLM(10, hidden=6, emb=6, tie=True),
            models.NGramLM(10, emb=4, hidden=6, direct=True, dropout=0.1),
            models.SequenceClassifier(3, vocab_size=10, hidden=6, pooling="mean", bidirectional=True, dropout=0.1),
            models.SequenceClassifier(3, vocab_size=10, hidden=6, dilations=[1, 2]),
            models.SequenceClassifier(1, input_size=3, hidden=6, task="regress"),
            models.SequenceTagger(3, vocab_size=10, hidden=6),
            models.Seq2Seq(10, 12, emb=4, hidden=6, input_feeding=True),
            models.ConditionalDecoder(12, n_conditions=3, emb=4, dec_hidden=6),
            models.BiRNNTagger(10, 8, 4, emb=4, char_emb=3, char_hidden=5, hidden=6)]


def test_every_rnnlab_model_loads_with_weights_only(tmp_path):
    for i, model in enumerate(rnnlab_models()):
        path = tmp_path / f"{i}.pt"
        torch.save(model, path)
        with torch.serialization.safe_globals(rnnlab.safe_globals()):
            loaded = torch.load(path, weights_only=True)
        assert type(loaded) is type(model) and repr(loaded) == repr(model)
        a, b = model.state_dict(), loaded.state_dict()
        assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_safe_globals_lists_every_public_module_class():
    listed = set(rnnlab.safe_globals())
    public = [getattr(mod, n) for mod in (rnnlab, models) for n in mod.__all__]
    classes = [c for c in public if isinstance(c, type) and issubclass(c, nn.Module)]
    assert classes and [c for c in classes if c not in listed] == []
    assert rnnlab.safe_globals(Tagger)[-1] is Tagger


def test_a_layer_pickled_with_the_engine_number_as_mode_still_loads(backend):
    m = rnnlab.GRU(3, 4)
    state = dict(m.__dict__, mode=3, _flat_weights_names=["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"])
    old = rnnlab.GRU.__new__(rnnlab.GRU)
    old.__setstate__(state)
    assert old.mode == "GRU" and "_flat_weights_names" not in old.__dict__
    x = torch.randn(5, 2, 3)
    assert torch.equal(old(x)[0], m(x)[0])


# -- a standard torch.nn training script with the classes swapped ---------------------------------------------------
class RNNModel(nn.Module):
    """pytorch/examples' word_language_model RNNModel, cut down: encoder (embedding) → 2-layer LSTM → decoder
    (Linear); no dropout, so both runs draw nothing random after the initial weights."""

    def __init__(self, lstm_class, ntoken: int, ninp: int, nhid: int, nlayers: int) -> None:
        super().__init__()
        self.ntoken, self.nhid, self.nlayers = ntoken, nhid, nlayers
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = lstm_class(ninp, nhid, nlayers)
        self.decoder = nn.Linear(nhid, ntoken)

    def forward(self, input, hidden):
        output, hidden = self.rnn(self.encoder(input), hidden)
        return self.decoder(output).view(-1, self.ntoken), hidden

    def init_hidden(self, bsz: int):
        weight = next(self.parameters())
        return weight.new_zeros(self.nlayers, bsz, self.nhid), weight.new_zeros(self.nlayers, bsz, self.nhid)


def repackage_hidden(h):
    """Wrap hidden states in new Tensors, to detach them from their history (pytorch/examples)."""
    if isinstance(h, torch.Tensor):
        return h.detach()
    return tuple(repackage_hidden(v) for v in h)


def batchify(data, bsz):
    nbatch = data.size(0) // bsz
    return data[:nbatch * bsz].view(bsz, -1).t().contiguous()  # (T, bsz)


def get_batch(source, i, bptt):
    seq_len = min(bptt, len(source) - 1 - i)
    return source[i:i + seq_len], source[i + 1:i + 1 + seq_len].reshape(-1)


NTOKENS, BSZ, BPTT, STEPS, LR, CLIP = 40, 8, 12, 20, 20.0, 0.25


def token_stream(n: int, seed: int):
    """A fixed random token stream with structure to learn: a random sparse Markov chain (3 likely successors)."""
    g = torch.Generator().manual_seed(1234)
    successors = torch.randint(0, NTOKENS, (NTOKENS, 3), generator=g)
    g.manual_seed(seed)
    tokens = [0]
    for _ in range(n - 1):
        nxt = successors[tokens[-1], torch.randint(0, 3, (), generator=g)] if torch.rand((), generator=g) < 0.9 \
            else torch.randint(0, NTOKENS, (), generator=g)
        tokens.append(int(nxt))
    return torch.tensor(tokens)


def train_save_reload_eval(model, path, load):
    """The script: STEPS steps of SGD with gradient clipping over the training stream carrying the detached hidden
    state, torch.save of the whole model, reload (``load``), flatten_parameters, held-out loss."""
    train_data = batchify(token_stream(STEPS * BPTT * BSZ + BSZ, seed=1), BSZ)
    val_data = batchify(token_stream(50 * 4 + 4, seed=2), 4)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    model.train()
    hidden = model.init_hidden(BSZ)
    losses = []
    for i in range(0, STEPS * BPTT, BPTT):
        data, targets = get_batch(train_data, i, BPTT)
        hidden = repackage_hidden(hidden)
        optimizer.zero_grad()
        output, hidden = model(data, hidden)
        loss = criterion(output, targets)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        losses.append(loss.item())
    torch.save(model, path)
    model = load(path)
    model.rnn.flatten_parameters()
    model.eval()
    total, hidden = 0.0, model.init_hidden(4)
    with torch.no_grad():
        for i in range(0, val_data.size(0) - 1, 10):
            data, targets = get_batch(val_data, i, 10)
            output, hidden = model(data, hidden)
            total += len(data) * criterion(output, targets).item()
            hidden = repackage_hidden(hidden)
    return model, losses, total / (len(val_data) - 1)


# The two runs are the same computation in a different order: torch's fused LSTM kernel and rnnlab's loop add the
# same products in different orders, so in float32 each result differs by rounding, a few units in the last place
# (ulp: 2.4e-7 for numbers in [2, 4), where these losses lie), growing a little over 20 steps of SGD at lr 20 on
# clipped gradients. Measured here: at most 1.7e-6 on a loss (3.5 ulp), 1.2e-6 on the eval loss and 1.1e-5 on a
# weight. The bounds allow about ten times that, for other CPUs' kernels and thread counts, and stay far below what
# a difference in the math gives (a wrong gate or gradient moves the first losses by >= 1e-3). float64 shows it is
# rounding: the same script agrees there to ~1e-15.
TOLERANCE = {torch.float32: (2e-5, 2e-4), torch.float64: (1e-12, 1e-12)}  # (losses, weights after training)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_nn_training_script_with_the_classes_swapped(dtype, tmp_path, backend):
    torch.manual_seed(0)
    reference = RNNModel(nn.LSTM, NTOKENS, 16, 32, 2).to(dtype)
    ours = RNNModel(rnnlab.LSTM, NTOKENS, 16, 32, 2).to(dtype)
    ours.load_state_dict(reference.state_dict())  # the same initial weights

    def load_rnnlab(path):
        with torch.serialization.safe_globals(rnnlab.safe_globals(RNNModel)):
            return torch.load(path, weights_only=True)

    ref_model, ref_losses, ref_eval = train_save_reload_eval(
        reference, tmp_path / "torch.pt", lambda path: torch.load(path, weights_only=False))
    model, losses, eval_loss = train_save_reload_eval(ours, tmp_path / "rnnlab.pt", load_rnnlab)
    assert type(model.rnn) is rnnlab.LSTM and type(ref_model.rnn) is nn.LSTM
    assert sum(ref_losses[-5:]) / 5 < sum(ref_losses[:5]) / 5 - 0.1  # it learns, so every step's update matters
    assert ref_eval < math.log(NTOKENS)
    tol, weight_tol = TOLERANCE[dtype]
    assert max(abs(a - b) for a, b in zip(losses, ref_losses)) <= tol, list(zip(losses, ref_losses))
    assert abs(eval_loss - ref_eval) <= tol
    torch.testing.assert_close(model.state_dict(), ref_model.state_dict(), rtol=0, atol=weight_tol)
