"""Diagnostics while training (rnnlab.diagnose.during.TrainingDiagnostics, --diagnose-every, --tensorboard).

Oracles: ||dL/dh_t|| by autograd through torch.nn.LSTM run one step at a time with every h_t retained; the gate
saturation from the LSTM equations written out in float64 on the same sequences; the spectra from
torch.linalg on the weights the step started from; the clip counts from the pre-clip norms of an identical run."""
import copy
import json

import pytest
import torch
import torch.nn.functional as F
from cli_helpers import cli, one_line_error

import rnnlab
from rnnlab.data.text import LMStream
from rnnlab.diagnose import report
from rnnlab.diagnose.during import TrainingDiagnostics, history, read_records, tensorboard_available
from rnnlab.diagnose.measure import SIGMOID_HIGH, SIGMOID_LOW, TANH_HIGH, measure
from rnnlab.models.classifier import SequenceClassifier
from rnnlab.models.lm import RecurrentLM
from rnnlab.train.lm import LMTask
from rnnlab.train.supervised import ClassificationTask
from rnnlab.train.trainer import Trainer, TrainOptions

V, T, B = 11, 9, 5


def lm(layers=2, hidden=6, scale=1.0):
    torch.manual_seed(0)
    model = RecurrentLM(V, cell="lstm", layers=layers, hidden=hidden, emb=4).double()
    with torch.no_grad():  # larger weights: some gate values saturate, so the saturation check has something to count
        for name, p in model.rnn.named_parameters():
            p.mul_(scale)
        model.encoder.weight.normal_()
    return model


def stream(n=400, seed=1):
    g = torch.Generator().manual_seed(seed)
    return LMStream(torch.randint(0, V, (n,), generator=g), B, T)


def fit(model, data, tmp_path, *, every, steps, callbacks=None, **opts):
    cb = TrainingDiagnostics(model, every=every) if callbacks is None else callbacks
    options = TrainOptions(epochs=1, max_steps=steps, quiet=True, **opts)
    Trainer(model, LMTask(model), data, None, options, out_dir=tmp_path, print_fn=lambda s: None,
            callbacks=[cb]).fit()
    return read_records(tmp_path)


def test_records_have_every_key_at_steps_1_and_multiples_of_every(tmp_path):
    model = lm()
    records = fit(model, stream(), tmp_path, every=3, steps=7)
    assert [r["step"] for r in records] == [1, 3, 6]
    for r in records:
        assert {"kind", "step", "epoch", "batch", "loss", "lr", "grad_norm", "clipped", "clip_fraction",
                "window_steps", "window_from", "fault", "layers", "seconds"} <= set(r)
        assert r["fault"] is None and r["grad_norm"] > 0
        assert [(x["module"], x["layer"], x["direction"]) for x in r["layers"]] == [("rnn", 0, 0), ("rnn", 1, 0)]
        for x in r["layers"]:
            assert x["cell"] == "lstm" and x["calls"] == 1
            assert len(x["grad_norms"]) == T and all(v > 0 for v in x["grad_norms"])
            assert set(x["spectral_norm"]) == {"i", "f", "g", "o", "all"}
            assert set(x["spectral_radius"]) == {"i", "f", "g", "o"}
            assert set(x["saturation"]) == {"i", "f", "g", "o"}
    assert [r["window_steps"] for r in records] == [1, 3, 3]  # step 1; steps 1-3; steps 4-6
    # the heatmap's input: one row per record and layer
    h = history(records)
    assert set(h) == {("rnn", 0, 0), ("rnn", 1, 0)}
    assert [s for s, _ in h[("rnn", 1, 0)]] == [1, 3, 6] and h[("rnn", 1, 0)][0][1].shape == (T,)


def autograd_grad_norms(model, x, y):
    """||dL/dh_t|| per layer for the LM's mean cross-entropy, through torch.nn.LSTM one step at a time."""
    layer_in = model.encoder(x)  # (T, B, E)
    retained = {}
    for layer in range(model.rnn.num_layers):
        ref = torch.nn.LSTM(layer_in.shape[-1], model.rnn.hidden_size).double()
        ref.load_state_dict(dict(zip(["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"],
                                     model.rnn._weights(layer, 0))))
        h = torch.zeros(1, x.shape[1], model.rnn.hidden_size, dtype=torch.float64)
        state, steps = (h, h), []
        for t in range(x.shape[0]):
            o, new = ref(layer_in[t:t + 1], state)  # (1, B, H): h_t
            o.retain_grad()
            retained[(layer, t)] = o
            state = (o, new[1])  # h_t itself goes on, so its .grad is the total gradient
            steps.append(o)
        layer_in = torch.cat(steps)  # (T, B, H)
    logits = model.decoder(layer_in)  # (T, B, V)
    F.cross_entropy(logits.reshape(-1, V), y.reshape(-1)).backward()
    return {layer: torch.stack([retained[(layer, t)].grad.norm() for t in range(x.shape[0])])
            for layer in range(model.rnn.num_layers)}


def lstm_gates(model, x):
    """{(layer, gate): values (T, n, H)} of the LSTM equations, written out in float64."""
    layer_in, out = model.encoder(x).detach(), {}
    H = model.rnn.hidden_size
    for layer in range(model.rnn.num_layers):
        w_ih, w_hh, b_ih, b_hh = (w.detach() for w in model.rnn._weights(layer, 0))
        h = c = torch.zeros(x.shape[1], H, dtype=torch.float64)
        vals, hs = {g: [] for g in "ifgo"}, []
        for t in range(x.shape[0]):
            a = layer_in[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh  # (n, 4H)
            i, f, g, o = torch.sigmoid(a[:, :H]), torch.sigmoid(a[:, H:2 * H]), torch.tanh(a[:, 2 * H:3 * H]), \
                torch.sigmoid(a[:, 3 * H:])
            c = f * c + i * g
            h = o * torch.tanh(c)
            for name, v in zip("ifgo", (i, f, g, o)):
                vals[name].append(v)
            hs.append(h)
        for name in "ifgo":
            out[(layer, name)] = torch.stack(vals[name])
        layer_in = torch.stack(hs)
    return out


def test_recorded_values_equal_the_oracles_on_the_same_batch(tmp_path):
    model = lm(scale=6.0)
    before = copy.deepcopy(model)
    data = stream()
    x, y = next(iter(data.batches(0)))
    (rec,) = fit(model, data, tmp_path, every=100, steps=1)
    assert rec["step"] == 1
    expected = autograd_grad_norms(before, x, y)
    gates = lstm_gates(before, x[:, :4])  # the replay takes the batch's first 4 sequences
    for layer, got in zip(range(2), rec["layers"]):
        torch.testing.assert_close(torch.tensor(got["grad_norms"], dtype=torch.float64), expected[layer],
                                   rtol=5e-6, atol=0)  # 6 significant digits kept: <= 5e-6 off
        w_hh = before.rnn._weights(layer, 0)[1].detach()
        assert got["spectral_norm"]["all"] == pytest.approx(float(torch.linalg.matrix_norm(w_hh, 2)), rel=1e-5)
        for name, block in zip("ifgo", w_hh.chunk(4)):
            assert got["spectral_norm"][name] == pytest.approx(float(torch.linalg.matrix_norm(block, 2)), rel=1e-5)
            assert got["spectral_radius"][name] == pytest.approx(float(torch.linalg.eigvals(block).abs().max()),
                                                                 rel=1e-5)
            v = gates[(layer, name)]
            sat = (v.abs() > TANH_HIGH) if name == "g" else ((v < SIGMOID_LOW) | (v > SIGMOID_HIGH))
            assert got["saturation"][name] == pytest.approx(float(sat.double().mean()), abs=1e-6)
    assert any(0 < v < 1 for x_ in rec["layers"] for v in x_["saturation"].values())  # the check had work to do
    # the pre-clip global norm of the same backward
    params = list(before.parameters())
    logits, _ = before(x)
    loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
    grads = torch.autograd.grad(loss, params)
    assert rec["grad_norm"] == pytest.approx(float(torch.sqrt(sum((g * g).sum() for g in grads))), rel=1e-10)
    assert rec["loss"] == pytest.approx(float(loss.detach()), rel=1e-12)


def test_clip_flags_and_fractions_match_the_pre_clip_norms(tmp_path):
    # SGD with a negligible lr: the weights (and so the per-batch norms) stay the same whether or not steps clip.
    opts = {"optimizer": "sgd", "lr": 1e-12}
    free = fit(lm(), stream(), tmp_path / "free", every=1, steps=8, **opts)
    norms = [r["grad_norm"] for r in free]
    clip = (sorted(norms)[3] + sorted(norms)[4]) / 2  # four steps above it, four below, none near it
    clipped = fit(lm(), stream(), tmp_path / "clip", every=1, steps=8, clip_norm=clip, **opts)
    assert [r["clipped"] for r in clipped] == [n > clip for n in norms] == [r["grad_norm"] > clip for r in clipped]
    assert sum(r["clipped"] for r in clipped) == 4
    # every 4 steps with --log-every 4: the same windows as the trainer's "train" records
    run = tmp_path / "windows"
    recs = fit(lm(), stream(), run, every=4, steps=8, clip_norm=clip, log_every=4, **opts)
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    train = {r["step"]: r for r in json.loads("[" + ",".join(lines) + "]") if r["kind"] == "train"}
    assert [r["step"] for r in recs] == [1, 4, 8]
    for r in recs[1:]:
        assert r["window_steps"] == 4 and r["window_from"] == r["step"] - 3
        hand = sum(n > clip for n in norms[r["step"] - 4:r["step"]]) / 4
        assert r["clip_fraction"] == hand == train[r["step"]]["clip_fraction"]


def test_a_skipped_batch_is_recorded_without_gradient_norms(tmp_path):
    torch.manual_seed(0)
    rnn = rnnlab.GRU(2, 3).double()
    batches = [torch.randn(4, 2, 2, dtype=torch.float64) for _ in range(3)]
    batches[1][2, 0, 1] = float("nan")
    loss = lambda x: rnn(x)[0].pow(2).mean()  # noqa: E731
    Trainer(rnn, loss, batches, None, TrainOptions(epochs=1, quiet=True), out_dir=tmp_path, print_fn=lambda s: None,
            callbacks=[TrainingDiagnostics(rnn, every=1)]).fit()
    recs = read_records(tmp_path)
    assert [r["fault"] for r in recs] == [None, "nonfinite_loss", None]
    assert recs[1]["layers"][0]["grad_norms"] is None and recs[1]["grad_norm"] is None
    assert recs[1]["layers"][0]["spectral_norm"]["all"] > 0
    assert [r["window_steps"] for r in recs] == [1, 0, 1]  # a skipped batch is no update
    assert set(history(recs)) == {("GRU", 0, 0)} and [s for s, _ in history(recs)[("GRU", 0, 0)]] == [1, 3]


def test_packed_variable_length_batches_agree_with_measure(tmp_path):
    """A bidirectional classifier on a PackedSequence batch of 4 (all replayed): the record equals
    rnnlab.diagnose.measure on the same batch with the same weights."""
    torch.manual_seed(0)
    model = SequenceClassifier(3, vocab_size=7, hidden=5, bidirectional=True, cell="gru").double()
    x = torch.randint(0, 7, (4, 8))
    batch = (x, torch.tensor([8, 3, 6, 5]), torch.tensor([0, 2, 1, 1]))
    task = ClassificationTask(model)
    twin = copy.deepcopy(model)
    d = measure(twin, batch, ClassificationTask(twin), jacobian_sequences=1)
    Trainer(model, task, [batch], None, TrainOptions(epochs=1, quiet=True), out_dir=tmp_path,
            print_fn=lambda s: None, callbacks=[TrainingDiagnostics(model, every=1)]).fit()
    (rec,) = read_records(tmp_path)
    assert len(rec["layers"]) == len(d.layers) == 2
    for got, want in zip(rec["layers"], d.layers):
        assert (got["module"], got["layer"], got["direction"]) == want.key
        torch.testing.assert_close(torch.tensor(got["grad_norms"], dtype=torch.float64), want.grad_norms,
                                   rtol=5e-6, atol=1e-300)
        assert got["saturation"] == pytest.approx(want.saturation, abs=1e-6)
        assert got["spectral_norm"] == pytest.approx(want.spectral_norm, rel=1e-5)


def test_bad_arguments_fail_loudly():
    with pytest.raises(ValueError, match="every must be an integer >= 1"):
        TrainingDiagnostics(lm(), every=0)
    with pytest.raises(ValueError, match="no rnnlab recurrent layer"):
        TrainingDiagnostics(torch.nn.Linear(2, 2))


def test_plot_training_and_history_from_records(tmp_path):
    records = fit(lm(), stream(), tmp_path / "run", every=2, steps=5)
    path = report.plot_training(records, tmp_path / "training.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path = report.plot_history(history(records)[("rnn", 0, 0)], tmp_path / "h.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="--diagnose-every"):
        report.plot_training([], tmp_path / "none.png")


def test_tensorboard_writer(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = lm()
    cb = TrainingDiagnostics(model, every=2, tensorboard_dir=tmp_path / "tb")
    records = fit(model, stream(), tmp_path / "run", every=2, steps=4, callbacks=cb)
    cb.close()
    ea = EventAccumulator(str(tmp_path / "tb"))
    ea.Reload()
    got = [(e.step, e.value) for e in ea.Scalars("diagnostics/grad_norm")]
    assert [s for s, _ in got] == [r["step"] for r in records] == [1, 2, 4]
    assert [v for _, v in got] == pytest.approx([r["grad_norm"] for r in records], rel=1e-6)
    assert "spectral_norm/rnn/l1/all" in ea.Tags()["scalars"]


# -- the command line ----------------------------------------------------------------------------------------------
TEXT = "the cat sat on the mat; the dog sat on the log.\n" * 20
LM_ARGS = ("--hidden", "8", "--layers", "2", "--bptt", "10", "--batch-size", "4", "--threads", "1", "--quiet")


def test_train_lm_flag_survives_resume_and_feeds_diagnose(capsys, tmp_path):
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    run = tmp_path / "run"
    rc, out, err = cli(capsys, "train", "lm", "--train", tmp_path / "t.txt", *LM_ARGS, "--max-steps", "3",
                       "--diagnose-every", "2", "--out", run)
    assert rc == 0, err
    assert [r["step"] for r in read_records(run)] == [1, 2]
    rc, out, err = cli(capsys, "train", "lm", "--resume", run, "--max-steps", "2", "--quiet")
    assert rc == 0, err
    assert [r["step"] for r in read_records(run)] == [1, 2, 4]  # the run's own --diagnose-every 2
    rc, out, err = cli(capsys, "train", "lm", "--resume", run, "--max-steps", "2", "--diagnose-every", "0")
    assert rc == 0, err
    assert [r["step"] for r in read_records(run)] == [1, 2, 4]  # given anew: off
    rc, out, err = cli(capsys, "diagnose", run, "--out", tmp_path / "d")
    assert rc == 0, err
    assert "3 diagnostics records" in out and "rnn layer 1:" in out
    for name in ("training.png", "history-training-rnn-l0.png", "history-training-rnn-l1.png"):
        assert (tmp_path / "d" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "d" / "report.html").read_text(encoding="utf-8")
    assert "diagnostics recorded while training" in page and page.count("data:image/png;base64,") == 3


def test_task_flag_and_diagnose_of_that_run(capsys, tmp_path):
    run = tmp_path / "task"
    rc, out, err = cli(capsys, "task", "parity", "--hidden", "4", "--batch-size", "4", "--batches", "3",
                       "--valid-size", "4", "--test-size", "4", "--max-len", "6", "--test-min-len", "6",
                       "--test-max-len", "8", "--max-steps", "3", "--diagnose-every", "2", "--threads", "1",
                       "--quiet", "--out", run)
    assert rc == 0, err
    recs = read_records(run)
    assert [r["step"] for r in recs] == [1, 2]
    rc, out, err = cli(capsys, "diagnose", run, "--batch-size", "4", "--jacobian-sequences", "1",
                       "--out", tmp_path / "d")
    assert rc == 0, err
    assert "verdict: " in out and "2 diagnostics records" in out
    assert (tmp_path / "d" / "training.png").exists()


def test_cli_errors_are_one_line(capsys, tmp_path):
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    one_line_error(capsys, "train", "ngram", "--train", tmp_path / "t.txt", "--max-steps", "1", "--diagnose-every",
                   "5", "--out", tmp_path / "ng", must=["--diagnose-every 5", "no rnnlab recurrent layer"])
    one_line_error(capsys, "train", "lm", "--train", tmp_path / "t.txt", "--diagnose-every", "-1",
                   must=["--diagnose-every"])
    if not tensorboard_available():
        one_line_error(capsys, "train", "lm", "--train", tmp_path / "t.txt", *LM_ARGS, "--max-steps", "1",
                       "--tensorboard", tmp_path / "tb", "--out", tmp_path / "r",
                       must=["--tensorboard", "pip install tensorboard"])
