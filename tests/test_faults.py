"""Training faults: a NaN/Inf loss or gradient, or a loss spike, skips the update and never reaches the weights; a run
of them rolls back and lowers the lr; too many stop the run with a clear TrainingError, last/ saved and best/ kept;
all of it logged, and resumed exactly. And SIGTERM, like Ctrl-C, stops a real `rnnlab train lm` process with a
resumable last/."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from rnnlab.cli.common import given_flags, train_options
from rnnlab.cli.main import main
from rnnlab.train import Trainer, TrainingError, TrainOptions, load_checkpoint

from cli_helpers import cli, one_line_error

TIMING = {"tokens_per_s", "elapsed_s", "epoch_s"}


class NanGrad(torch.autograd.Function):
    """Identity forward; NaN gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class Injected:
    """Linear regression whose loss goes bad on chosen batches: each batch is (x, y, mark), mark one of "ok", "nan",
    "inf", "spike" (x 1e4), "nangrad" (finite loss, NaN gradient); ``poison_after`` makes every training call after
    that many NaN. Records the weights each training call sees."""

    def __init__(self, model, poison_after=None):
        self.model, self.poison_after, self.seen = model, poison_after, []

    def step(self, batch, state):
        x, y, mark = batch
        if self.model.training:
            self.seen.append([p.detach().clone() for p in self.model.parameters()])
            if self.poison_after is not None and len(self.seen) > self.poison_after:
                mark = "nan"
        loss = ((self.model(x).squeeze(-1) - y) ** 2).mean()
        if mark == "nan":
            loss = loss * float("nan")
        elif mark == "inf":
            loss = loss + float("inf")
        elif mark == "spike":
            loss = loss * 1e4
        elif mark == "nangrad":
            loss = NanGrad.apply(loss)
        return loss, 1, state


def batches(marks, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for m in marks:
        x = torch.randn(16, 3, generator=g)
        out.append((x, x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3, m))
    return out


def run(marks, out=None, valid=None, poison_after=None, **kw):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    task = Injected(model, poison_after)
    opts = dict(epochs=1, optimizer="adam", lr=0.01, spike_window=4, quiet=True, progress=False)
    lines = []
    trainer = Trainer(model, task, batches(marks), valid, TrainOptions(**{**opts, **kw}), out_dir=out,
                      print_fn=lines.append)
    return trainer, task, lines


def records(path, kind=None):
    recs = [json.loads(ln) for ln in (path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r for r in recs if kind is None or r["kind"] == kind]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def weights(checkpoint):
    """A checkpoint's Linear weights in parameter order (weight, bias), like Injected.seen."""
    state = checkpoint.model_state()
    return [state["weight"], state["bias"]]


def finite(ws):
    return all(bool(torch.isfinite(w).all()) for w in ws)


def test_bad_batches_are_skipped_logged_and_never_reach_the_weights(tmp_path):
    marks = ["ok"] * 5 + ["nan", "ok", "inf", "ok", "nangrad", "ok", "spike", "ok", "ok"]
    trainer, task, lines = run(marks, tmp_path)
    summary = trainer.fit()
    assert summary["stopped"] == "done" and summary["skipped_batches"] == 4 and summary["rollbacks"] == 0
    bad = [i for i, m in enumerate(marks) if m != "ok"]
    for i in bad:  # the batch after a bad one sees the weights the bad one saw: no update
        assert same(task.seen[i], task.seen[i + 1]), marks[i]
    for i in set(range(len(marks) - 1)) - set(bad):  # every good batch did update
        assert not same(task.seen[i], task.seen[i + 1]), i
    assert all(finite(w) for w in task.seen) and finite(trainer.model.parameters())

    faults = records(tmp_path, "fault")
    assert [(r["step"], r["fault"], r["action"]) for r in faults] == [
        (6, "nonfinite_loss", "skipped"), (8, "nonfinite_loss", "skipped"), (10, "nonfinite_grad", "skipped"),
        (12, "spike", "skipped")]
    assert faults[0]["loss"] is None and faults[1]["loss"] is None  # NaN / Inf are null in JSON
    assert faults[3]["loss"] > 10 * faults[3]["recent_mean"] and faults[3]["in_a_row"] == 1
    assert lines[0] == "  fault at epoch 1 batch 6/14 (step 6): the loss became nan; skipped the update (1 in a " \
                       "row; a rollback after 3)"
    assert "the gradient norm became nan" in lines[2] and "loss spike: " in lines[3] and "x the largest recent loss" in lines[3]
    epoch = records(tmp_path, "epoch")[0]
    assert epoch["skipped_batches"] == 4 and "(4 bad batches skipped)" in lines[-1]


def test_spike_check_waits_for_a_full_window_and_can_be_turned_off():
    marks = ["ok", "spike", "ok", "ok", "ok", "ok", "spike", "ok"]
    assert run(marks)[0].fit()["skipped_batches"] == 1  # the first spike comes before 4 good batches
    assert run(marks, spike_factor=None)[0].fit()["skipped_batches"] == 0


def test_consecutive_faults_roll_back_weights_and_optimizer_and_lower_the_lr(tmp_path):
    marks = ["ok"] * 5 + ["nan"] * 3 + ["ok"] * 3
    trainer, task, lines = run(marks, tmp_path, fault_lr_factor=0.25)
    summary = trainer.fit()
    assert summary["stopped"] == "done" and summary["rollbacks"] == 1 and summary["lr"] == pytest.approx(0.0025)
    # Rollback points: after every 4 fault-free updates, so the state after step 4 = what batch 5 saw.
    assert same(task.seen[8], task.seen[4]) and not same(task.seen[8], task.seen[5])
    faults = records(tmp_path, "fault")
    assert [r["action"] for r in faults] == ["skipped", "skipped", "rolled_back"]
    assert faults[-1]["rolled_back_to_step"] == 4 and faults[-1]["lr"] == pytest.approx(0.0025)
    assert "3 bad batches in a row: rolled back to step 4, lr 0.01 -> 0.0025 (rollback 1 of at most 5)" in lines[2]
    # The optimizer state went back too: Adam has counted the updates up to step 4, then those after the rollback.
    assert int(trainer.optimizer.state_dict()["state"][0]["step"]) == 4 + 3
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0025)


def test_too_many_faults_stop_with_a_clear_error_saving_last_keeping_best(tmp_path):
    marks = ["ok"] * 12
    trainer, task, lines = run(marks, tmp_path, valid=batches(["ok"] * 2, seed=1), poison_after=12, epochs=5,
                               max_rollbacks=2)
    with pytest.raises(TrainingError) as exc:
        trainer.fit()
    msg = str(exc.value)
    assert msg.startswith("training keeps failing: the loss became nan at epoch 2 batch 9/12 (step 21); 3 bad "
                          "batches in a row came back after 2 rollbacks (lr now 0.00125).")
    assert f"Saved {tmp_path / 'last'} (rolled back to step 12, lr 0.00125; resume from it)" in msg
    assert f"kept {tmp_path / 'best'}" in msg and "Lower the learning rate" in msg and "max_rollbacks" in msg
    assert all(finite(w) for w in task.seen)

    best = load_checkpoint(tmp_path / "best")  # epoch 1's, untouched: the weights epoch 2 started from
    assert best.meta["trainer"]["epoch"] == 1 and same(weights(best), task.seen[12])
    last = load_checkpoint(tmp_path / "last")
    assert last.meta["trainer"]["step"] == 21 and last.meta["trainer"]["faults"]["rollbacks"] == 3
    assert same(weights(last), task.seen[12])  # rolled back to the point taken at step 12
    assert last.meta["trainer"]["lr"] == pytest.approx(0.00125)
    recs = records(tmp_path)
    assert [r["action"] for r in recs if r["kind"] == "fault"] == ["skipped", "skipped", "rolled_back"] * 2 + [
        "skipped", "skipped", "aborted"]
    assert recs[-1] == {"kind": "stop", "reason": "faults", "epoch": 2, "batch": 9, "step": 21}
    assert lines[-1].endswith("3 bad batches in a row once more after 2 rollbacks: giving up")

    # Resuming with a larger max_rollbacks goes on from the rolled-back state (and stops again: NaN forever).
    again, task2, _ = run(marks, tmp_path, valid=batches(["ok"] * 2, seed=1), poison_after=0, epochs=5,
                          max_rollbacks=3)
    again.restore(last)
    with pytest.raises(TrainingError, match="at epoch 2 batch 12/12 .step 24.; 3 bad batches in a row came back "
                                            "after 3 rollbacks"):
        again.fit()
    assert same(task2.seen[0], task.seen[12])


@pytest.mark.parametrize("stop_at", [3, 6, 9, 13])
def test_resume_through_faults_is_exact(tmp_path, stop_at):
    # Each epoch: a spike (after a full window), then 3 NaN in a row (a rollback), over 3 epochs.
    marks = ["ok"] * 5 + ["spike", "ok", "nan", "nan", "nan", "ok", "ok"]
    kw = dict(epochs=3, log_every=2)
    full, _, _ = run(marks, tmp_path / "a", **kw)
    full.fit()
    part, _, _ = run(marks, tmp_path / "b", max_steps=stop_at, **kw)
    assert part.fit()["stopped"] == "max_steps"
    rest, _, _ = run(marks, tmp_path / "b", **kw)
    torch.manual_seed(123)  # must not matter
    rest.restore(load_checkpoint(tmp_path / "b" / "last"))
    assert rest.fit()["rollbacks"] == 3
    assert same(full.model.parameters(), rest.model.parameters())

    def recs(run_dir):
        return [{k: v for k, v in r.items() if k not in TIMING} for r in records(run_dir) if r["kind"] != "stop"]

    assert recs(tmp_path / "a") == recs(tmp_path / "b")
    assert [r["action"] for r in recs(tmp_path / "a") if r["kind"] == "fault"].count("rolled_back") == 3


def test_fault_flags_reach_train_options(capsys):
    with pytest.raises(SystemExit):
        main(["train", "lm", "--help"])
    out = capsys.readouterr().out
    for flag in ("--spike-factor F", "--spike-window N", "--fault-patience K", "--fault-lr-factor F",
                 "--max-rollbacks N"):
        assert flag in out
    assert re.search(r"\(default:\s+10\.0\)", out)
    assert re.search(r"rollback\s+N\+1\s+is\s+needed\s+\(default:\s+5\)", out)

    from argparse import Namespace
    args = Namespace(epochs=2, spike_factor=0.0, spike_window=None, fault_patience=4, fault_lr_factor=0.1,
                     max_rollbacks=0)
    given = given_flags(args, ["epochs"])
    assert given == {"epochs": 2, "spike_factor": 0.0, "fault_patience": 4, "fault_lr_factor": 0.1,
                     "max_rollbacks": 0}
    o = train_options(given)
    assert (o.spike_factor, o.spike_window, o.fault_patience, o.fault_lr_factor, o.max_rollbacks) == (None, 50, 4,
                                                                                                      0.1, 0)
    one_line_error(capsys, "train", "lm", "--train", "x.txt", "--spike-factor", "0.5",
                   must=["--spike-factor", "got 0.5; must be a number > 1"])
    one_line_error(capsys, "train", "lm", "--train", "x.txt", "--max-rollbacks", "-1",
                   must=["--max-rollbacks", "got -1"])


# -- SIGTERM -----------------------------------------------------------------------------------------------------------
TINY_LM = ["--hidden", "8", "--bptt", "8", "--batch-size", "4", "--eval-batch-size", "4", "--epochs", "100000",
           "--log-every", "1"]


def test_sigterm_saves_a_resumable_last_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RNNLAB_BACKEND", "python")  # the same engine in the process and here; no C++ build
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 40, encoding="utf-8")
    part, full = tmp_path / "part", tmp_path / "full"
    args = ["train", "lm", "--train", text, *TINY_LM, "--max-rollbacks", "2"]
    env = {**os.environ, "RNNLAB_BACKEND": "python", "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.Popen([sys.executable, "-m", "rnnlab", *map(str, args), "--out", str(part)], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8")
    try:
        head = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # training has started once an interval line is out
            line = proc.stdout.readline()
            if not line:
                break
            head.append(line)
            if line.startswith("  epoch 1 batch "):
                break
        assert head and head[-1].startswith("  epoch 1 batch "), (head, proc.poll())
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "stopped: interrupted by SIGTERM at epoch " in stdout and "(resume from it)" in stdout
    last = load_checkpoint(part / "last")
    step = last.meta["trainer"]["step"]
    assert step >= 1 and last.meta["run"]["max_rollbacks"] == 2
    assert json.loads((part / "metrics.jsonl").read_text(encoding="utf-8").splitlines()[-1])["reason"] == "interrupted"

    # Resume it (a fault flag may change on resume), and compare with an uninterrupted run of as many steps. Both
    # here run on 1 thread, as the process above did (OMP_NUM_THREADS=1): bit for bit holds for the same arithmetic,
    # and torch may split a reduction or a GEMM differently over another number of threads.
    rc, out, err = cli(capsys, "train", "lm", "--resume", part, "--max-steps", "3", "--max-rollbacks", "4",
                       "--threads", "1")
    assert rc == 0, err
    assert f"resuming {part / 'last'}" in out
    resumed = load_checkpoint(part / "last")
    assert resumed.meta["trainer"]["step"] == step + 3 and resumed.meta["train_options"]["max_rollbacks"] == 4
    rc, out, err = cli(capsys, *args, "--out", full, "--max-steps", step + 3, "--threads", "1")
    assert rc == 0, err
    a, b = load_checkpoint(full / "last").model_state(), resumed.model_state()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_nan_validation_loss_still_saves_a_checkpoint(tmp_path):
    """checkpoint.json is strict JSON: an epoch whose validation loss is NaN must still write last/ (the NaN is
    stored as 'none measured'), never become best/, and the run must resume from it."""
    trainer, _, _ = run(["ok", "ok", "ok"], out=tmp_path, valid=batches(["nan"], seed=1), epochs=2)
    trainer.fit()
    ckpt = load_checkpoint(tmp_path, prefer="last")
    assert ckpt.meta["trainer"]["last_valid_loss"] is None
    assert not (tmp_path / "best").exists()
    assert [r["best"] for r in records(tmp_path, "epoch")] == [False, False]


def test_a_hard_batch_of_a_well_fitted_model_is_not_a_spike():
    """Once the loss is small (mean 0.012 here), an ordinary hard batch can be 10x the mean; the spike test compares
    with the largest recent good loss, so only a real blow-up counts (seen on row MNIST: batches at 0.16 skipped)."""
    trainer, _, _ = run(["ok"], spike_window=50)
    trainer.progress["faults"]["recent"] = [0.01] * 49 + [0.1]  # mean 0.0118, largest 0.1
    assert not trainer._is_spike(0.16)  # 13x the mean: a hard batch, kept
    assert trainer._is_spike(1.5)  # 15x the largest recent loss: a blow-up
