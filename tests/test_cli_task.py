"""``rnnlab task parity|adding|copy`` end to end on tiny settings, through ``main()`` in-process: the report, the
checkpoints and metrics under --out, an exact resume, and every bad value as one line ``rnnlab: error: ...`` with
exit code 2."""
from __future__ import annotations

import json

import pytest
import torch

from rnnlab.cli.main import main
from rnnlab.train.checkpoint import load_checkpoint
from rnnlab.train.supervised import load_sequence_model

from cli_helpers import check_checkpoint_every, cli, one_line_error

TINY = ["--hidden", "8", "--batch-size", "16", "--batches", "4", "--epochs", "2", "--valid-size", "40",
        "--test-size", "100", "--quiet"]


def _checkpoint_written(out, kind):
    for sub in ("last", "best"):
        assert (out / sub / "model.safetensors").exists() and (out / sub / "checkpoint.json").exists()
    meta = json.loads((out / "best" / "checkpoint.json").read_text(encoding="utf-8"))
    assert meta["model"]["kind"] == kind and meta["run"]["kind"] == "task"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["kind"] for r in records] == ["epoch", "epoch", "test"]
    model, _ = load_sequence_model(out)
    assert model.config == meta["model"]
    return records[-1]


def test_task_parity(tmp_path, capsys):
    out = tmp_path / "parity"
    rc, stdout, err = cli(capsys, "task", "parity", "--max-len", "6", "--test-min-len", "40", "--test-max-len", "62",
                          "--bidirectional", "--pooling", "max", "--out", out, *TINY)
    assert rc == 0, err
    assert "epoch   2/2  train loss" in stdout
    assert "test (best/ weights): 100 strings of lengths 40-62 (trained on 1-6)" in stdout
    for bucket in ("lengths     40-49", "lengths     50-59", "lengths     60-62"):
        assert bucket in stdout
    assert "overall: accuracy" in stdout and "(chance 50%)" in stdout
    assert "class 0 (odd b's): precision" in stdout and "confusion (rows: true class 0, 1" in stdout
    test = _checkpoint_written(out, "sequence_classifier")
    assert test["n"] == 100 and 0 <= test["accuracy"] <= 1 and len(test["confusion"]) == 2
    assert [b["lengths"] for b in test["by_length"]] == ["40-49", "50-59", "60-62"]


def test_task_adding(tmp_path, capsys):
    out = tmp_path / "adding"
    rc, stdout, err = cli(capsys, "task", "adding", "--length", "8", "--cell", "rnn_relu", "--init", "identity",
                          "--out", out, *TINY)
    assert rc == 0, err
    assert "model: 1 x rnnlab RNN-RELU(8), identity init, last pooling → value" in stdout
    assert "test (best/ weights): 100 sequences of T = 8: MSE " in stdout
    assert "always predicting 1: MSE " in stdout and "(expected 0.167)" in stdout
    test = _checkpoint_written(out, "sequence_classifier")
    assert test["mse"] >= 0 and test["mae"] >= 0 and 0.05 < test["baseline_mse"] < 0.35


def test_task_copy(tmp_path, capsys):
    out = tmp_path / "copy"
    rc, stdout, err = cli(capsys, "task", "copy", "--symbols", "3", "--alphabet", "4", "--delay", "2",
                          "--max-delay", "5", "--cell", "gru", "--out", out, *TINY)
    assert rc == 0, err
    assert "data: copy 3 symbols of 4 after a delay of 2-5" in stdout
    assert "per-symbol accuracy" in stdout and "(chance 25.0%)" in stdout and "all 3 symbols right in" in stdout
    test = _checkpoint_written(out, "sequence_tagger")
    assert test["steps"] == 300 and 0 <= test["accuracy"] <= 1


def test_resume_reaches_the_weights_of_an_uninterrupted_run(tmp_path, capsys):
    args = ["task", "parity", "--max-len", "5", "--test-size", "20", *TINY]
    assert cli(capsys, *args, "--out", tmp_path / "full")[0] == 0
    rc, stdout, err = cli(capsys, *args, "--out", tmp_path / "part", "--max-steps", "5")
    assert rc == 0, err
    assert "stopped: reached max_steps=5 at epoch 2, batch 1/4" in stdout
    rc, stdout, err = cli(capsys, "task", "parity", "--resume", tmp_path / "part")
    assert rc == 0, err
    assert "resuming" in stdout and "epoch 2, batch 1" in stdout
    full = load_checkpoint(tmp_path / "full" / "last").model_state()
    resumed = load_checkpoint(tmp_path / "part" / "last").model_state()
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)
    one_line_error(capsys, "task", "parity", "--resume", tmp_path / "part", "--hidden", "9",
                   must=["--hidden cannot change when resuming (the run used 8)"])
    one_line_error(capsys, "task", "copy", "--resume", tmp_path / "part",
                   must=["holds an 'rnnlab task parity' run; use 'rnnlab task parity --resume ...'"])
    one_line_error(capsys, *args, "--out", tmp_path / "part", must=["already holds a run", "--resume"])


def test_fault_flags_reach_the_trainer_and_may_change_on_resume(tmp_path, capsys):
    out = tmp_path / "run"
    rc, _, err = cli(capsys, "task", "adding", "--length", "5", *TINY, "--max-steps", "2", "--spike-factor", "0",
                     "--spike-window", "7", "--fault-patience", "2", "--fault-lr-factor", "0.25", "--max-rollbacks",
                     "1", "--out", out)
    assert rc == 0, err
    meta = load_checkpoint(out / "last").meta
    faults = ("spike_factor", "spike_window", "fault_patience", "fault_lr_factor", "max_rollbacks")
    assert [meta["train_options"][k] for k in faults] == [None, 7, 2, 0.25, 1]  # --spike-factor 0: no spike check
    # Resumed: a fault flag given anew replaces the run's; the others keep the run's value, not the defaults.
    rc, stdout, err = cli(capsys, "task", "adding", "--resume", out, "--max-steps", "1", "--max-rollbacks", "6")
    assert rc == 0, err
    assert "resuming" in stdout
    meta = load_checkpoint(out / "last").meta
    assert meta["trainer"]["step"] == 3
    assert [meta["train_options"][k] for k in faults] == [None, 7, 2, 0.25, 6]
    assert meta["run"]["max_rollbacks"] == 6
    one_line_error(capsys, "task", "adding", "--resume", out, "--fault-lr-factor", "2",
                   must=["--fault-lr-factor", "got 2", "<= 1"])
    # Not given: TrainOptions' defaults.
    rc, _, err = cli(capsys, "task", "parity", "--max-len", "4", *TINY, "--max-steps", "1", "--out", tmp_path / "p")
    assert rc == 0, err
    meta = load_checkpoint(tmp_path / "p" / "last").meta
    assert [meta["train_options"][k] for k in faults] == [10.0, 50, 3, 0.5, 5]


def test_help_lists_tasks_and_examples(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["task", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "parity" in out and "adding" in out and "copy" in out
    assert "examples:" in out and "rnnlab task adding --cell rnn_relu --init identity" in out
    with pytest.raises(SystemExit):
        main(["task", "copy", "--help"])
    out = capsys.readouterr().out
    for flag in ("--delay", "--symbols", "--cell", "--init", "--max-minutes", "--out", "--resume", "--spike-factor F",
                 "--spike-window N", "--fault-patience K", "--fault-lr-factor F", "--max-rollbacks N"):
        assert flag in out
    assert "--pooling" not in out


@pytest.mark.parametrize("args, must", [
    (["task"], ["choose a task: parity, adding, copy"]),
    (["task", "juggle"], ["task", "juggle"]),
    (["task", "parity", "--hidden", "0"], ["--hidden", "got 0"]),
    (["task", "parity", "--lr", "fast"], ["--lr", "'fast'", "number"]),
    (["task", "parity", "--min-len", "9", "--max-len", "3"], ["--min-len 9 is larger than --max-len 3"]),
    (["task", "parity", "--test-min-len", "90"], ["--test-min-len 90 is larger than --test-max-len 80"]),
    (["task", "adding", "--length", "1"], ["--length", "got 1", "from 2"]),
    (["task", "adding", "--one-hot"], ["unrecognized arguments: --one-hot"]),
    (["task", "adding", "--init", "identity"], ["--init identity", "--cell lstm", "--cell rnn_relu"]),
    (["task", "copy", "--delay", "5", "--max-delay", "2"], ["--max-delay 2 is smaller than --delay 5"]),
    (["task", "copy", "--pooling", "max"], ["unrecognized arguments: --pooling"]),
    (["task", "copy", "--one-hot", "--emb", "4"], ["--one-hot", "--emb 4"]),
    (["task", "parity", "--cell", "transformer"], ["--cell", "transformer"]),
])
def test_bad_values_are_one_line_errors(capsys, tmp_path, args, must):
    out = ["--out", tmp_path / "never"] if len(args) > 2 else []  # a task's own flags only after its name
    one_line_error(capsys, *args, *out, must=must)
    assert not (tmp_path / "never").exists()  # nothing was trained or written


@pytest.mark.parametrize("task", ["parity", "copy"])
def test_checkpoint_every_saves_last_within_an_epoch(task, tmp_path, capsys, monkeypatch):
    check_checkpoint_every(capsys, monkeypatch, ("task", task), [*TINY, "--batches", "6"], tmp_path / "run")
