"""The cell variants of ``rnnlab.variants`` in every model and every training command: the one factory
(``recurrent_layer``) and its refusals; each model kind × each variant builds the expected layer, runs, and rebuilds
from its config to identical outputs; padding changes no classifier prediction; a layer-normalised LSTM's state
carries across LM chunks and its decoder steps one at a time; the Skip RNN's budget loss reaches the training loss;
every command trains each variant to a checkpoint that holds it, resumes it exactly, and refuses what it cannot do
in one line."""
from __future__ import annotations

import json

import pytest
import torch

import rnnlab
from rnnlab import variants
from rnnlab.cli.structure import BudgetTask, budget_task
from rnnlab.models import BiRNNTagger, RecurrentLM, Seq2Seq, SequenceClassifier, SequenceTagger, build_model, \
    build_seq2seq, build_sequence_model, build_tagger
from rnnlab.train.checkpoint import load_checkpoint
from rnnlab.train.supervised import ClassificationTask

from cli_helpers import cli, one_line_error
from test_mnist import write_mnist

# (cell, structure keywords, the layer class the factory must build)
VARIANTS = [
    ("layernorm_lstm", {}, rnnlab.LayerNormLSTM),
    ("layernorm_gru", {}, rnnlab.LayerNormGRU),
    ("lstm", {"dilations": [1, 2]}, rnnlab.DilatedRNN),
    ("layernorm_gru", {"dilations": [1, 3]}, rnnlab.DilatedRNN),
    ("gru", {"skip": True, "skip_budget": 0.01}, rnnlab.SkipRNN),
]
IDS = ["ln_lstm", "ln_gru", "dilated_lstm", "dilated_ln_gru", "skip_gru"]
NEW_FIELDS = ("dilations", "skip", "skip_budget")


# -- the factory ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell, kw, cls", VARIANTS + [("rnn_relu", {}, rnnlab.RNN), ("lstm", {}, rnnlab.LSTM)],
                         ids=IDS + ["plain_rnn", "plain_lstm"])
def test_factory_builds_the_layer_and_its_state(cell, kw, cls):
    layer = rnnlab.recurrent_layer(cell, 3, 4, bidirectional=True, **kw)
    assert type(layer) is cls and layer.hidden_size == 4 and layer.num_directions == 2
    out, state = layer(torch.randn(6, 2, 3))  # (T, B, I)
    assert out.shape == (6, 2, 8)
    L = len(kw.get("dilations", [1]))
    assert layer.num_layers == L
    if variants.has_cell_state(cell):
        assert isinstance(state, tuple) and [s.shape for s in state] == [(2 * L, 2, 4)] * 2
    else:
        assert state.shape == (2 * L, 2, 4)


@pytest.mark.parametrize("kw, match", [
    ({"cell": "transformer"}, "cell must be one of lstm, gru, rnn_tanh, rnn_relu, layernorm_lstm, layernorm_gru"),
    ({"cell": "layernorm_lstm", "skip": True}, "skip runs SkipRNN over a plain cell"),
    ({"cell": "lstm", "skip": True, "dilations": [1, 2]}, "do not combine"),
    ({"cell": "lstm", "dilations": [1, 2], "num_layers": 3}, "Leave num_layers at 1 or set it to 2"),
    ({"cell": "lstm", "dilations": [0, 2]}, "positive integers, one per layer"),
    ({"cell": "lstm", "skip_budget": 0.1}, "skip is off"),
    ({"cell": "lstm", "skip": True, "skip_budget": -1.0}, "skip_budget must be a number >= 0"),
    ({"cell": "layernorm_gru", "rnn_options": {"zoneout": 0.1}}, r"\(zoneout\) are implemented by the plain"),
    ({"cell": "gru", "dilations": [2], "rnn_options": {"weight_drop": 0.1}}, "with dilations"),
    ({"cell": "gru", "skip": True, "rnn_options": {"weight_drop": 0.1}}, "with skip"),
])
def test_factory_refuses_impossible_combinations(kw, match):
    cell = kw.pop("cell")
    with pytest.raises(ValueError, match=match):
        rnnlab.recurrent_layer(cell, 3, 4, **kw)


def test_regularisation_still_reaches_a_plain_layer():
    layer = rnnlab.recurrent_layer("lstm", 3, 4, 2, rnn_options={"weight_drop": 0.3, "zoneout": [0.1, 0.2]})
    assert type(layer) is rnnlab.LSTM and layer.weight_drop == 0.3 and layer.zoneout == (0.1, 0.2)


def test_init_applies_to_every_dilated_layer_and_refuses_ln_biases():
    torch.manual_seed(1)
    m = SequenceClassifier(2, input_size=3, hidden=5, cell="gru", dilations=[1, 2, 4], init="orthogonal")
    assert [type(s) for s in m.rnn.layers] == [rnnlab.GRU] * 3
    for sub in m.rnn.layers:
        for block in sub.weight_hh_l0.detach().chunk(3, 0):  # each gate's H x H block: orthogonal
            torch.testing.assert_close(block @ block.T, torch.eye(5), atol=1e-5, rtol=0)
        assert torch.count_nonzero(sub.bias_ih_l0) == 0
    with pytest.raises(ValueError, match="LN shifts"):
        variants.init_recurrent_(rnnlab.LayerNormLSTM(3, 4), "chrono", 10)


# -- every model kind × every variant -------------------------------------------------------------------------------
def _same(a, b):
    if isinstance(a, (tuple, list)):
        return all(_same(x, y) for x, y in zip(a, b))
    return torch.equal(a, b)


def _round_trip(model, build, call):
    """The model rebuilt from its config with its state_dict gives exactly its outputs (eval mode)."""
    config = json.loads(json.dumps(model.config))  # as a checkpoint stores it
    twin = build(config)
    twin.load_state_dict(model.state_dict())
    assert twin.config == model.config
    model.eval()
    twin.eval()
    with torch.no_grad():
        assert _same(call(model), call(twin))
    return config


def _check_config(config, kw):
    for k in NEW_FIELDS:
        assert config.get(k) == kw.get(k), k  # recorded exactly when used


@pytest.mark.parametrize("cell, kw, cls", VARIANTS, ids=IDS)
def test_classifier_and_sequence_tagger(cell, kw, cls):
    x = torch.randint(0, 9, (4, 7))  # (B, T)
    lengths = torch.tensor([7, 3, 5, 1])
    for make in (lambda: SequenceClassifier(3, vocab_size=9, emb=6, hidden=5, bidirectional=True, pooling="last",
                                            cell=cell, **kw),
                 lambda: SequenceTagger(3, vocab_size=9, one_hot=True, hidden=5, cell=cell, **kw)):
        model = make()
        assert type(model.rnn) is cls
        config = _round_trip(model, build_sequence_model, lambda m: m(x, lengths))
        _check_config(config, kw)
        assert config["layers"] == len(kw.get("dilations", [1]))


@pytest.mark.parametrize("cell, kw, cls", VARIANTS, ids=IDS)
def test_padding_changes_no_classifier_prediction(cell, kw, cls):
    model = SequenceClassifier(3, input_size=2, hidden=5, bidirectional=True, pooling="mean", cell=cell, **kw).eval()
    lengths = [6, 2, 4, 1]
    seqs = [torch.randn(n, 2) for n in lengths]
    padded = torch.full((4, 9, 2), 7.0)  # (B, T, F): junk in the padding, and more of it than any sequence needs
    for b, s in enumerate(seqs):
        padded[b, :len(s)] = s
    with torch.no_grad():
        batch = model(padded, torch.tensor(lengths))  # (B, 3)
        alone = torch.cat([model(s[None], None) for s in seqs])  # each sequence unpadded, on its own
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell, kw, cls", [v for v in VARIANTS if "dilations" not in v[1]],
                         ids=[i for i, v in zip(IDS, VARIANTS) if "dilations" not in v[1]])
def test_language_model(cell, kw, cls):
    model = RecurrentLM(11, hidden=6, layers=2, cell=cell, **kw)
    assert type(model.rnn) is cls
    tokens = torch.randint(0, 11, (8, 3))  # (T, B)
    state = model.init_state(3)
    assert isinstance(state, tuple) == variants.has_cell_state(cell)
    _check_config(_round_trip(model, build_model, lambda m: m(tokens, m.init_state(3))), kw)
    if cell.startswith("layernorm"):  # the carried state: two chunks give the one-call logits
        with torch.no_grad():
            whole, _ = model(tokens, state)
            first, carried = model(tokens[:5], state)
            second, _ = model(tokens[5:], carried)
        torch.testing.assert_close(torch.cat([first, second]), whole, atol=1e-6, rtol=1e-6)


def test_language_model_refuses_dilations():
    with pytest.raises(ValueError, match="carries its state from one TBPTT chunk"):
        RecurrentLM(11, hidden=6, dilations=[1, 2])


@pytest.mark.parametrize("cell, kw, cls", VARIANTS, ids=IDS)
def test_bi_rnn_tagger(cell, kw, cls):
    if cell in ("rnn_tanh", "rnn_relu"):
        pytest.skip("the tagger's cells are gated")
    model = BiRNNTagger(10, 8, 4, emb=6, char_emb=4, char_hidden=3, hidden=5, cell=cell, **kw)
    assert type(model.rnn) is cls and type(model.char_rnn) is rnnlab.LSTM  # the char RNN stays plain
    words, chars = torch.randint(2, 10, (3, 5)), torch.randint(1, 8, (3, 5, 4))
    lengths = torch.tensor([5, 2, 4])
    _check_config(_round_trip(model, build_tagger, lambda m: m(words, chars, lengths)), kw)


@pytest.mark.parametrize("cell, kw, cls", VARIANTS, ids=IDS)
def test_seq2seq_encoder_takes_the_structure_and_the_decoder_the_cell(cell, kw, cls):
    model = Seq2Seq(10, 12, emb=6, hidden=5, dec_hidden=5, cell=cell, **kw)
    assert type(model.encoder) is cls
    assert type(model.decoder) is type(rnnlab.recurrent_layer(cell, 1, 1))  # the cell, stacked plainly
    assert model.decoder.num_layers == model.layers == len(kw.get("dilations", [1]))
    src, tgt = torch.randint(4, 10, (3, 6)), torch.randint(4, 12, (3, 4))
    src_lengths = torch.tensor([6, 2, 5])
    _check_config(_round_trip(model, build_seq2seq, lambda m: m(src, src_lengths, tgt)), kw)
    # The decoder one step at a time (greedy, beam search, input feeding) gives the one-call logits.
    with torch.no_grad():
        mem = model.encode(src, src_lengths)
        whole = model.decode(mem, tgt)  # (B, T, V)
        state, steps = mem.state, []
        for t in range(tgt.shape[1]):
            logits, state, _, _ = model._step(tgt[:, t], state, None, mem)  # (B, V)
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), whole, atol=1e-5, rtol=1e-5)
    assert len(model.greedy(src, src_lengths, max_len=3)) == 3


# -- the Skip RNN's budget loss in the training loss ----------------------------------------------------------------
def test_budget_task_adds_the_budget_loss_in_training_only():
    torch.manual_seed(0)
    model = SequenceClassifier(2, input_size=2, hidden=4, layers=2, cell="lstm", skip=True, skip_budget=0.5)
    batch = (torch.randn(3, 6, 2), torch.tensor([6, 4, 2]), torch.tensor([0, 1, 1]))
    plain = ClassificationTask(model, "cpu")
    task = budget_task(plain, model)
    assert isinstance(task, BudgetTask) and task.model is model and task.metrics(1.0) == {"loss": 1.0}
    torch.manual_seed(0)
    loss, n, _ = task.step(batch, None)
    updates = model.rnn.updates  # (L, N): u_t of each layer at each packed step
    assert updates.shape == (2, 12) and n == 3
    torch.manual_seed(0)
    task_loss, _, _ = plain.step(batch, None)
    torch.testing.assert_close(loss, task_loss + 0.5 * updates.sum() / 3)  # λ Σ_t u_t per sequence
    loss.backward()  # the straight-through estimator carries the budget's gradient to the update gates
    assert model.rnn.update_bias_l0.grad is not None and model.rnn.update_bias_l0.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(task.step(batch, None)[0], plain.step(batch, None)[0])
    no_budget = SequenceClassifier(2, input_size=2, hidden=4, skip=True)
    assert budget_task(plain, no_budget) is plain


# -- the commands ---------------------------------------------------------------------------------------------------
CONLLU = "# text = a b c\n1\ta\ta\tDET\t_\t_\t0\troot\t_\t_\n2\tb\tb\tNOUN\t_\t_\t1\tdep\t_\t_\n" \
         "3\tc\tc\tVERB\t_\t_\t1\tdep\t_\t_\n\n"
RUN = ["--epochs", "1", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("variant-data")
    (d / "t.txt").write_text("abc de\nfa bd ce\n" * 40, encoding="utf-8")
    (d / "c.tsv").write_text("".join(f"{'good ' * (i % 2)}x y z{i % 5}\t{'pos' if i % 2 else 'neg'}\n"
                                     for i in range(40)), encoding="utf-8")
    (d / "t.conllu").write_text(CONLLU * 6, encoding="utf-8")
    (d / "s.csv").write_text("x,y\n" + "".join(f"{i},{i % 7}\n" for i in range(120)), encoding="utf-8")
    write_mnist(d / "mnist", n_train=40, n_test=16)
    return d


COMMANDS = {
    "lm": ["train", "lm", "--train", "{d}/t.txt", "--hidden", "6", "--bptt", "8", "--batch-size", "4"],
    "classify": ["train", "classify", "--train", "{d}/c.tsv", "--emb", "6", "--hidden", "6", "--min-count", "1"],
    "tag": ["train", "tag", "--train", "{d}/t.conllu", "--hidden", "6", "--char-hidden", "3", "--emb", "6"],
    "regress": ["train", "regress", "--train", "{d}/s.csv", "--target", "y", "--window", "6", "--hidden", "6"],
    "seq2seq": ["train", "seq2seq", "--task", "reverse", "--max-len", "6", "--batches", "2", "--valid-size", "8",
                "--hidden", "6", "--emb", "6"],
    "parity": ["task", "parity", "--max-len", "6", "--test-min-len", "7", "--test-max-len", "9", "--hidden", "6",
               "--batches", "2", "--batch-size", "8", "--valid-size", "16", "--test-size", "16"],
    "adding": ["task", "adding", "--length", "8", "--hidden", "6", "--batches", "2", "--batch-size", "8",
               "--valid-size", "16", "--test-size", "16"],
    "copy": ["task", "copy", "--symbols", "2", "--alphabet", "3", "--delay", "2", "--hidden", "6", "--batches", "2",
             "--batch-size", "8", "--valid-size", "16", "--test-size", "16"],
    "mnist": ["task", "mnist", "--data-dir", "{d}/mnist", "--valid-size", "8", "--hidden", "6", "--batch-size", "8"],
}
# What each command's checkpoint model calls its recurrent layer.
LAYER = {"lm": "rnn", "classify": "rnn", "tag": "rnn", "regress": "rnn", "seq2seq": "encoder", "parity": "rnn",
         "adding": "rnn", "copy": "rnn", "mnist": "rnn"}
FLAGS = {
    "layernorm": (["--cell", "layernorm_lstm"], rnnlab.LayerNormLSTM, {}),
    "dilated": (["--dilations", "1,2"], rnnlab.DilatedRNN, {"dilations": [1, 2]}),
    "skip": (["--skip", "--skip-budget", "0.01"], rnnlab.SkipRNN, {"skip": True, "skip_budget": 0.01}),
}
BUILD = {"rnn": build_model, "sequence_classifier": build_sequence_model, "sequence_tagger": build_sequence_model,
         "bi_rnn_tagger": build_tagger, "seq2seq": build_seq2seq}


def _args(command, d):
    return [a.format(d=d) for a in COMMANDS[command]]


def _checkpoint_model(out, command):
    ckpt = load_checkpoint(out / "last")
    config = ckpt.meta["model"]
    model = BUILD[config["kind"]](config)
    ckpt.load_model(model)
    return getattr(model, LAYER[command]), config


@pytest.mark.parametrize("variant", FLAGS)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_trains_every_variant(command, variant, files, tmp_path, capsys):
    flags, cls, fields = FLAGS[variant]
    if command == "lm" and variant == "dilated":
        one_line_error(capsys, *_args(command, files), *flags, "--out", tmp_path / "x",
                       must=["--dilations 1,2", "carries its state", "drop --dilations"])
        assert not (tmp_path / "x").exists()
        return
    out = tmp_path / "run"
    rc, stdout, err = cli(capsys, *_args(command, files), *flags, *RUN, "--max-steps", "2", "--out", out)
    assert rc == 0, err
    layer, config = _checkpoint_model(out, command)
    assert type(layer) is cls
    for k in NEW_FIELDS:
        assert config.get(k) == fields.get(k), k
    if variant == "dilated":
        assert layer.dilations == (1, 2) and config["layers"] == 2


def test_resume_rebuilds_the_variant_and_matches_an_uninterrupted_run(files, tmp_path, capsys):
    args = [*_args("classify", files), "--dilations", "1,3", "--epochs", "2", "--batch-size", "8", "--threads", "1",
            "--quiet"]
    assert cli(capsys, *args, "--out", tmp_path / "full")[0] == 0
    rc, stdout, err = cli(capsys, *args, "--out", tmp_path / "part", "--max-steps", "7")
    assert rc == 0, err
    rc, stdout, err = cli(capsys, "train", "classify", "--resume", tmp_path / "part")
    assert rc == 0, err
    assert "resuming" in stdout
    full = load_checkpoint(tmp_path / "full" / "last").model_state()
    resumed = load_checkpoint(tmp_path / "part" / "last").model_state()
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)
    layer, _ = _checkpoint_model(tmp_path / "part", "classify")
    assert type(layer) is rnnlab.DilatedRNN and layer.dilations == (1, 3)
    one_line_error(capsys, "train", "classify", "--resume", tmp_path / "part", "--dilations", "1,2",
                   must=["--dilations cannot change when resuming"])


def test_skip_budget_run_resumes_exactly(tmp_path, capsys):
    args = [*COMMANDS["adding"], "--skip", "--skip-budget", "0.05", "--epochs", "2", "--threads", "1", "--quiet"]
    assert cli(capsys, *args, "--out", tmp_path / "full")[0] == 0
    assert cli(capsys, *args, "--out", tmp_path / "part", "--max-steps", "3")[0] == 0
    rc, _, err = cli(capsys, "task", "adding", "--resume", tmp_path / "part")
    assert rc == 0, err
    full = load_checkpoint(tmp_path / "full" / "last").model_state()
    resumed = load_checkpoint(tmp_path / "part" / "last").model_state()
    assert all(torch.equal(full[k], resumed[k]) for k in full)


@pytest.mark.parametrize("command, flags, must", [
    ("classify", ["--skip", "--cell", "layernorm_gru"], ["--skip runs a Skip RNN over a plain cell",
                                                         "--cell layernorm_gru"]),
    ("regress", ["--skip-budget", "0.1"], ["--skip-budget 0.1", "add --skip"]),
    ("seq2seq", ["--dilations", "1,2", "--skip"], ["--dilations 1,2 and --skip", "choose one"]),
    ("tag", ["--dilations", "1,2,4", "--layers", "2"], ["gives 3 layers", "--layers 2", "--layers 3"]),
    ("parity", ["--dilations", "1,2", "--layers", "3"], ["gives 2 layers", "--layers 3"]),
    ("lm", ["--cell", "layernorm_lstm", "--weight-drop", "0.2"], ["--weight-drop", "plain stacked layers only",
                                                                  "--cell layernorm_lstm"]),
    ("adding", ["--skip", "--zoneout", "0.1"], ["--zoneout", "not with --skip"]),
    ("copy", ["--dilations", "1,2", "--diagnose-every", "5"], ["--diagnose-every", "not with --dilations"]),
    ("classify", ["--dilations", "1,0"], ["--dilations", "integer >= 1"]),
    ("adding", ["--cell", "layernorm_lstm", "--init", "chrono"], ["--init chrono", "--cell layernorm_lstm"]),
])
def test_bad_combinations_are_one_line_errors(command, flags, must, files, tmp_path, capsys):
    one_line_error(capsys, *_args(command, files), *flags, "--out", tmp_path / "never", must=must)
    assert not (tmp_path / "never").exists()


def test_task_accepts_the_regularisation_flags(tmp_path, capsys):
    out = tmp_path / "run"
    rc, _, err = cli(capsys, *COMMANDS["copy"], "--weight-drop", "0.3", "--zoneout", "0.1,0.2", *RUN,
                     "--max-steps", "2", "--out", out)
    assert rc == 0, err
    layer, config = _checkpoint_model(out, "copy")
    assert config["rnn_options"] == {"weight_drop": 0.3, "zoneout": [0.1, 0.2]}
    assert type(layer) is rnnlab.LSTM and layer.weight_drop == 0.3 and layer.zoneout == (0.1, 0.2)
    one_line_error(capsys, *COMMANDS["parity"], "--cell", "gru", "--zoneout", "0.1,0.2", "--out", tmp_path / "x",
                   must=["--zoneout", "--cell gru"])


def test_export_and_diagnose_refuse_a_variant_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(capsys, *COMMANDS["parity"], "--cell", "layernorm_gru", *RUN, "--max-steps", "2", "--out", out)[0] == 0
    one_line_error(capsys, "export", out, "--onnx", tmp_path / "m.onnx", "--no-check",
                   must=["ONNX export rebuilds the plain rnnlab layers", "LayerNormGRU"])
    one_line_error(capsys, "diagnose", out, "--out", tmp_path / "diag",
                   must=["diagnose measures the gradient flow of the plain rnnlab layers", "--cell layernorm_gru"])
