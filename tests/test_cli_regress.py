"""``rnnlab train regress`` end to end on a generated noisy sine wave: the model beats the last-value forecast on
the test rows (in the target's own units), checkpoints and metrics are written and load back, a stopped run resumes
to the weights of an uninterrupted one, the per-step shape trains, and bad input is one line ``rnnlab: error: ...``
with exit code 2."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from rnnlab.cli.main import main
from rnnlab.train.checkpoint import load_checkpoint
from rnnlab.train.supervised import load_sequence_model

from cli_helpers import check_checkpoint_every, cli, one_line_error

TINY = ["--window", "16", "--hidden", "12", "--lr", "0.01", "--batch-size", "32", "--threads", "1", "--quiet"]


def sine_csv(path, n: int = 600, noise: float = 0.2, seed: int = 0):
    """date, value = 5 + sin(i / 4) + noise (the target), junk = uniform noise (a useless feature)."""
    rng = np.random.default_rng(seed)
    lines = ["date,value,junk"]
    for i in range(n):
        day = np.datetime64("2020-01-01") + i
        lines.append(f"{day},{5 + math.sin(i / 4) + rng.normal(0, noise):.5f},{rng.random():.4f}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    return sine_csv(tmp_path_factory.mktemp("series") / "sine.csv")


def test_the_model_beats_the_last_value_forecast(series, tmp_path, capsys):
    out = tmp_path / "run"
    rc, stdout, err = cli(capsys, "train", "regress", "--train", series, "--target", "value", "--epochs", "6",
                          "--out", out, *TINY)
    assert rc == 0, err
    assert "time column 'date' (not a feature)" in stdout and "features value, junk; target value" in stdout
    assert "train rows 1-480" in stdout and "test rows 541-600" in stdout
    assert "test (best weights): 60 windows, value in its own units: MSE" in stdout
    assert "-> the model beats the last-value baseline" in stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 3, 4, 5, 6]
    test = next(r for r in records if r["kind"] == "test")
    assert test["n"] == 60 and test["beats_baseline"] and test["mse"] < 0.8 * test["baseline_mse"], test
    assert test["baseline_mse"] > 0.05  # original units: 2 * 0.2^2 of noise plus the step, not normalised ~1

    # checkpoints: the model loads back and, de-normalised, predicts the next value in the file's units
    assert (out / "best" / "model.safetensors").exists() and (out / "last" / "checkpoint.json").exists()
    model, ckpt = load_sequence_model(out)
    s = ckpt.meta["series"]
    assert s["targets"] == ["value"] and s["window"] == 16 and abs(s["normalizer"]["mean"][0] - 5) < 0.1
    values = np.loadtxt(series, delimiter=",", skiprows=1, usecols=(1, 2))
    mean, std = np.array(s["normalizer"]["mean"]), np.array(s["normalizer"]["std"])
    x = torch.tensor((values[-17:-1] - mean) / std, dtype=torch.float32)[None]  # the 16 rows before the last
    pred = float(model.predict(x)[0, 0]) * std[0] + mean[0]
    assert abs(pred - (5 + math.sin(599 / 4))) < 0.5


def test_resume_reaches_the_weights_of_an_uninterrupted_run(series, tmp_path, capsys):
    args = ["train", "regress", "--train", series, "--target", "value", "--features", "value", "--epochs", "2",
            *TINY]
    assert cli(capsys, *args, "--out", tmp_path / "full")[0] == 0
    rc, stdout, err = cli(capsys, *args, "--out", tmp_path / "part", "--max-steps", "20")
    assert rc == 0, err
    assert "stopped: reached max_steps=20 at epoch 2, batch 5/15" in stdout and "test (" not in stdout
    rc, stdout, err = cli(capsys, "train", "regress", "--resume", tmp_path / "part")
    assert rc == 0, err
    assert "resuming" in stdout and "epoch 2, batch 5" in stdout and "test (best weights)" in stdout
    full = load_checkpoint(tmp_path / "full" / "last").model_state()
    resumed = load_checkpoint(tmp_path / "part" / "last").model_state()
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)
    one_line_error(capsys, "train", "regress", "--resume", tmp_path / "part", "--window", "9",
                   must=["--window cannot change when resuming (the run used 16)"])
    one_line_error(capsys, *args, "--out", tmp_path / "part", must=["already holds a run", "--resume"])


def test_per_step_and_several_steps_ahead(series, tmp_path, capsys):
    rc, stdout, err = cli(capsys, "train", "regress", "--train", series, "--target", "2", "--features", "value",
                          "--per-step", "--horizon", "3", "--epochs", "1", "--out", tmp_path / "r", *TINY)
    assert rc == 0, err
    assert "16 rows → the next 3 values at every step" in stdout and "(3 outputs per step)" in stdout
    assert "last value (x[t+1..t+3] = x[t])" in stdout and "windows of 16 steps" in stdout
    model, _ = load_sequence_model(tmp_path / "r")
    assert model.config["kind"] == "sequence_tagger" and model.config["task"] == "regress"
    assert model.predict(torch.zeros(2, 16, 1)).shape == (2, 16, 3)


def test_bad_input_is_one_line_with_exit_code_2(series, tmp_path, capsys):
    out = ["--out", tmp_path / "never"]
    one_line_error(capsys, "train", "regress", "--target", "value", must=["--train FILE is required"])
    one_line_error(capsys, "train", "regress", "--train", series, *out, must=["--target COLS is required"])
    one_line_error(capsys, "train", "regress", "--train", tmp_path / "nope.csv", "--target", "v", *out,
                   must=["--train ", "nope.csv: no such file"])
    one_line_error(capsys, "train", "regress", "--train", series, "--target", "close", *out,
                   must=["target 'close': no such column", "1=date, 2=value, 3=junk"])
    one_line_error(capsys, "train", "regress", "--train", series, "--target", "value", "--features", "value,,junk",
                   *out, must=["an empty column name"])
    one_line_error(capsys, "train", "regress", "--train", series, "--target", "value", "--window", "500", *out,
                   must=["the train part has 480 rows", "needs at least 501"])
    one_line_error(capsys, "train", "regress", "--train", series, "--target", "value", "--valid-fraction", "0",
                   "--patience", "2", *out, must=["--patience 2 watches the validation loss"])
    one_line_error(capsys, "train", "regress", "--train", series, "--target", "value", "--valid-fraction", "0.5",
                   "--test-fraction", "0.5", *out, must=["less than 10% of the rows to train on"])
    one_line_error(capsys, "train", "regress", "--train", series, "--target", "value", "--window", "0", *out,
                   must=["--window: got 0"])
    bad = tmp_path / "gap.csv"
    lines = series.read_text(encoding="utf-8").splitlines()
    lines[4] = "2020-01-04,,0.5"  # line 5 of the file: an empty 'value' cell
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    one_line_error(capsys, "train", "regress", "--train", bad, "--target", "value", *out,
                   must=["gap.csv: line 5, column 2 ('value'): a missing value", "Fill it"])
    one_line_error(capsys, "train", "regress", "--train", series, "--target", "value", "--time-column", "junk",
                   "--features", "date", *out, must=["line 2, column 1 ('date')", "is not a number", "--time-column"])
    assert not (tmp_path / "never").exists()  # nothing was trained or written
    one_line_error(capsys, "train", "tag", "--resume", tmp_path / "nothing", must=["--resume"])


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "regress", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "rnnlab train regress --train prices.csv --target close" in out
    for flag in ("--target", "--features", "--time-column", "--window", "--horizon", "--per-step", "--patience",
                 "--max-minutes", "--resume", "--cell", "--dropout"):
        assert flag in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "regress" in capsys.readouterr().out


def test_checkpoint_every_saves_last_within_an_epoch(series, tmp_path, capsys, monkeypatch):
    # 480 training rows, windows of 16 in batches of 32: about 15 batches per epoch
    check_checkpoint_every(capsys, monkeypatch, ("train", "regress"), ["--train", series, "--target", "value", *TINY],
                           tmp_path / "run")
