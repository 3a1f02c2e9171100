"""The trainer: it learns, repeats exactly, clips, schedules, stops early, keeps the best checkpoint, logs metrics —
and stays ignorant of RNNs (the recurrent state is the task's business)."""
import ast
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import rnnlab.train.trainer as trainer_module
from rnnlab.data import LMStream, build_corpus
from rnnlab.models import RecurrentLM
from rnnlab.train import LMTask, Trainer, TrainingError, TrainOptions, load_checkpoint

TIMING = {"tokens_per_s", "elapsed_s", "epoch_s"}


def quiet(**kw):
    return TrainOptions(quiet=True, progress=False, **kw)


def lm_setup(text="abcdefgh" * 60, hidden=16, seed=0, dropout=0.0, bptt=8):
    corpus = build_corpus(text, level="char")
    torch.manual_seed(seed)
    model = RecurrentLM(len(corpus.vocab), hidden=hidden, dropout=dropout)
    return model, LMTask(model, char_level=True), LMStream(corpus.train, 4, bptt), LMStream(corpus.valid, 2, bptt)


def test_trainer_does_not_know_about_rnns():
    tree = ast.parse(Path(trainer_module.__file__).read_text(encoding="utf-8"))
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not any(m.endswith(("layers", "models", "engine", "cells")) or "rnnlab" in m for m in imported), imported


def test_lstm_lm_learns_a_periodic_text():
    model, task, train, valid = lm_setup()
    lines = []
    summary = Trainer(model, task, train, valid, quiet(epochs=6, lr=1e-2), print_fn=lines.append).fit()
    # A cycle of 8 characters: after one period every next character is certain; ln 8 = 2.08 at the start.
    assert summary["best_valid_loss"] < 0.1
    assert len(lines) == 6 and lines[0].startswith("epoch   1/6  train loss") and "bpc" in lines[0]


def test_same_seed_repeats_metrics_exactly(tmp_path):
    records = []
    for run in ("a", "b"):
        model, task, train, valid = lm_setup(dropout=0.3, seed=1)
        Trainer(model, task, train, valid, quiet(epochs=2, log_every=5, seed=7), out_dir=tmp_path / run).fit()
        recs = [json.loads(ln) for ln in (tmp_path / run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
        records.append([{k: v for k, v in r.items() if k not in TIMING} for r in recs])
    assert len(records[0]) > 4 and records[0] == records[1]
    kinds = [r["kind"] for r in records[0]]
    assert kinds.count("epoch") == 2 and kinds.count("train") >= 4
    train_rec = next(r for r in records[0] if r["kind"] == "train")
    assert {"loss", "ppl", "bpc", "lr", "grad_norm", "grad_norm_max", "step", "epoch", "batch"} <= set(train_rec)


def test_state_is_detached_through_the_task_hook():
    model, task, train, _ = lm_setup()
    Trainer(model, task, train, None, quiet(epochs=1)).fit()

    class NoDetach:  # the LM task without its detach_state hook: the graph grows across chunks
        def __init__(self, task):
            self.init_state, self.step = task.init_state, task.step

    model, task, train, _ = lm_setup()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        Trainer(model, NoDetach(task), train, None, quiet(epochs=1)).fit()


def regression(n=8):
    torch.manual_seed(0)
    x = torch.randn(n, 16, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3
    return [(x[i], y[i]) for i in range(n)]


def test_plain_loss_callable_and_list_data():
    model = nn.Linear(3, 1)
    fn = lambda b: ((model(b[0]).squeeze(-1) - b[1]) ** 2).mean()  # noqa: E731
    data = regression()
    before = sum(float(fn(b).detach()) for b in data)
    Trainer(model, fn, data, data, quiet(epochs=30, lr=0.05)).fit()
    assert sum(float(fn(b).detach()) for b in data) < before / 100


def test_clip_norm_logs_preclip_norm_and_clips(tmp_path):
    model = nn.Linear(3, 1)
    fn = lambda b: 1000 * ((model(b[0]).squeeze(-1) - b[1]) ** 2).mean()  # noqa: E731
    data = regression(1)
    # The pre-clip norm, computed by hand on the same batch.
    model.zero_grad()
    fn(data[0]).backward()
    expect = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
    w0 = [p.detach().clone() for p in model.parameters()]
    Trainer(model, fn, data, None, quiet(epochs=1, optimizer="sgd", lr=1.0, clip_norm=0.5, log_every=1),
            out_dir=tmp_path).fit()
    rec = json.loads((tmp_path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert rec["grad_norm"] == pytest.approx(expect, rel=1e-5) and expect > 0.5
    step = torch.cat([(p.detach() - w).flatten() for p, w in zip(model.parameters(), w0)])
    assert step.norm().item() == pytest.approx(0.5, rel=1e-5)  # SGD lr 1: the step is the clipped gradient


def test_clip_value_clamps_each_element():
    model = nn.Linear(3, 1)
    fn = lambda b: 1000 * ((model(b[0]).squeeze(-1) - b[1]) ** 2).mean()  # noqa: E731
    w0 = [p.detach().clone() for p in model.parameters()]
    Trainer(model, fn, regression(1), None, quiet(epochs=1, optimizer="sgd", lr=1.0, clip_value=0.01)).fit()
    step = torch.cat([(p.detach() - w).flatten() for p, w in zip(model.parameters(), w0)])
    assert step.abs().max().item() == pytest.approx(0.01)


class Scripted:
    """A task whose validation loss follows a script: epoch e's validation loss is script[e]."""

    def __init__(self, model, script):
        self.model, self.script, self.evals = model, list(script), 0

    def step(self, batch, state):
        if batch == "valid":
            self.evals += 1
            return torch.tensor(self.script[self.evals - 1]), 1, state
        return (self.model.weight ** 2).sum(), 1, state


def scripted_run(script, tmp_path=None, **kw):
    model = nn.Linear(2, 1)
    task = Scripted(model, script)
    t = Trainer(model, task, ["train"], ["valid"], quiet(**kw), out_dir=tmp_path)
    lrs = []
    orig = t._end_epoch

    def spy(*a):
        out = orig(*a)
        lrs.append(t.optimizer.param_groups[0]["lr"])
        return out

    t._end_epoch = spy
    return t.fit(), lrs


def test_step_decay_from_an_epoch():
    _, lrs = scripted_run([1.0] * 5, epochs=5, lr=1.0, schedule="step", lr_decay=0.5, decay_start=2)
    assert lrs == [1.0, 0.5, 0.25, 0.125, 0.0625]  # epochs 1-2 at lr 1, then halved after each epoch


def test_plateau_divides_when_validation_stops_improving():
    _, lrs = scripted_run([3.0, 2.0, 2.5, 1.0, 1.0], epochs=5, lr=1.0, schedule="plateau", lr_decay=0.25)
    assert lrs == [1.0, 1.0, 0.25, 0.25, 0.0625]


def test_early_stopping_and_best_checkpoint(tmp_path):
    summary, _ = scripted_run([3.0, 2.0, 2.5, 2.1, 1.0], tmp_path, epochs=5, patience=2)
    assert summary["stopped"] == "patience" and summary["epochs"] == 4 and summary["best_valid_loss"] == 2.0
    best = load_checkpoint(tmp_path / "best")
    assert best.meta["trainer"]["epoch"] == 2 and best.meta["trainer"]["best_valid_loss"] == 2.0
    assert load_checkpoint(tmp_path / "last").meta["trainer"]["epoch"] == 4


def test_nan_loss_is_skipped_not_fatal():
    model = nn.Linear(2, 1)
    w0 = model.weight.detach().clone()
    lines = []
    summary = Trainer(model, lambda b: model.weight.sum() * float("nan"), ["x"], None, quiet(epochs=1),
                      print_fn=lines.append).fit()
    assert summary["stopped"] == "done" and summary["skipped_batches"] == 1 and torch.equal(model.weight, w0)
    assert lines[0].startswith("  fault at epoch 1 batch 1/1 (step 1): the loss became nan; skipped the update")
    assert "train loss nan" in lines[1] and "(1 bad batches skipped)" in lines[1]


def test_bad_options_fail_loudly():
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adam, adamw; got 'rmsprop'"):
        TrainOptions(optimizer="rmsprop")
    with pytest.raises(ValueError, match="not both"):
        TrainOptions(clip_norm=1.0, clip_value=1.0)
    with pytest.raises(ValueError, match="lr must be a number > 0; got -1"):
        TrainOptions(lr=-1)
    with pytest.raises(ValueError, match="momentum is an SGD option"):
        TrainOptions(momentum=0.9)
    with pytest.raises(ValueError, match="spike_factor must be a number > 1 .* or None"):
        TrainOptions(spike_factor=1.0)
    with pytest.raises(ValueError, match="fault_lr_factor must be a number > 0 and <= 1"):
        TrainOptions(fault_lr_factor=0)
    with pytest.raises(ValueError, match="max_rollbacks must be an integer >= 0"):
        TrainOptions(max_rollbacks=-1)
    with pytest.raises(ValueError, match="fault_patience must be an integer >= 1"):
        TrainOptions(fault_patience=0)
    model = nn.Linear(2, 1)
    with pytest.raises(ValueError, match="'plateau' .* no validation data"):
        Trainer(model, lambda b: model.weight.sum(), ["x"], None, TrainOptions(schedule="plateau"))


def test_progress_lines_unless_quiet():
    model, task, train, _ = lm_setup()
    lines = []
    Trainer(model, task, train, None, TrainOptions(epochs=1, log_every=5, progress=False),
            print_fn=lines.append).fit()
    assert any(ln.startswith("  epoch 1 batch 5/") and "tok/s" in ln for ln in lines)
    assert lines[-1].startswith("epoch   1/1")


def test_progress_bar_goes_to_stderr(capsys):
    model, task, train, _ = lm_setup()
    Trainer(model, task, train, None, TrainOptions(epochs=1, progress=True, log_every=2)).fit()
    out, err = capsys.readouterr()
    assert "epoch 1/1" in err and "tok/s" in err and "loss" in err  # the bar, with its postfix
    assert out.startswith("epoch   1/1  train loss")  # the summary line still goes to stdout
