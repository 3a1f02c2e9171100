"""``rnnlab train classify-series`` and ``rnnlab predict`` with its runs, on tiny synthetic ``.ts`` files written
here (three shapes of a 2-dimensional signal, 6-14 steps): a run far above chance, the normaliser in the checkpoint
(fitted on the cases trained on: another test file changes nothing), predicting a labelled, an unlabelled and an
NPZ file, an exact resume, bad input as one line ``rnnlab: error: ...`` with exit code 2, the examples in
``--help``; and a short run on the real BasicMotions files when the shared data is there (``RNNLAB_DATA``)."""
from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnlab.cli.main import main
from rnnlab.data.uea import read_ts
from rnnlab.train.checkpoint import load_checkpoint

from cli_helpers import cli, one_line_error

DATA = Path(os.environ.get("RNNLAB_DATA") or Path(__file__).parents[2] / "shared" / "data")
BASIC_MOTIONS = DATA / "uea" / "BasicMotions"
LABELS = ["rise", "fall", "wave"]
TINY = ["--hidden", "12", "--batch-size", "8", "--lr", "0.01", "--quiet", "--threads", "1"]


def cases(n: int, seed: int, scale: float = 1.0) -> list[tuple[str, np.ndarray]]:
    """(label, (T, 2) values): a rising ramp, a falling ramp or a sine in dimension 1, noise in dimension 2."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        label = LABELS[k % 3]
        T = rng.randint(6, 14)
        t = np.arange(T) / T
        shape = {"rise": t, "fall": 1 - t, "wave": 0.5 + 0.5 * np.sin(2 * math.pi * t)}[label]
        noise = np.array([rng.gauss(0, 0.05) for _ in range(T)])
        out.append((label, scale * np.stack([shape + noise, 3 + noise * 10], 1)))
    return out


def ts_text(items, labelled: bool = True) -> str:
    head = "# toy data\n@problemName Toy\n@univariate false\n@dimensions 2\n@equalLength false\n"
    head += "@classLabel true " + " ".join(LABELS) + "\n@data\n" if labelled else "@classLabel false\n@data\n"
    rows = [":".join(",".join(f"{v:.5f}" for v in x[:, d]) for d in range(2)) + (f":{y}" if labelled else "")
            for y, x in items]
    return head + "\n".join(rows) + "\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("series")
    (d / "train.ts").write_text(ts_text(cases(60, 0)), encoding="utf-8")
    (d / "test.ts").write_text(ts_text(cases(30, 1)), encoding="utf-8")
    (d / "other_test.ts").write_text(ts_text(cases(30, 2, scale=100.0)), encoding="utf-8")
    (d / "unlabelled.ts").write_text(ts_text(cases(9, 3), labelled=False), encoding="utf-8")
    items = cases(30, 1)
    X = np.zeros((30, 14, 2))
    for k, (_, x) in enumerate(items):
        X[k, :len(x)] = np.round(x, 5)
    np.savez(d / "test.npz", X=X, lengths=np.array([len(x) for _, x in items]),
             y=np.array([y for y, _ in items]), classes=np.array(LABELS))
    (d / "one_dim.ts").write_text("@classLabel true rise fall wave\n@data\n1,2,3:rise\n", encoding="utf-8")
    (d / "text.tsv").write_text("pos\tgood\nneg\tbad\n", encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    rc = main(["train", "classify-series", "--train", str(data / "train.ts"), "--test", str(data / "test.ts"),
               "--epochs", "12", "--out", str(out), *TINY])
    assert rc == 0
    return out


def test_a_run_learns_the_shapes_and_stores_the_normaliser(trained, data):
    metrics = [json.loads(line) for line in (trained / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    test = [m for m in metrics if m.get("kind") == "test"][-1]
    assert test["accuracy"] >= 0.8 and test["labels"] == LABELS and test["weights"] == "best"
    meta = load_checkpoint(trained / "best").meta
    assert meta["task"] == "series_classification" and meta["run"]["kind"] == "classify-series"
    info = meta["series_classes"]
    assert info["labels"] == LABELS and info["features"] == 2 and info["missing"] == "refuse"
    assert len(info["valid_cases"]) == 12 and info["valid_fraction"] == 0.2  # 4 of each class's 20 held out
    train = read_ts(data / "train.ts")
    held = {i - 1 for i in info["valid_cases"]}
    steps = np.concatenate([v for i, v in enumerate(train.values) if i not in held])  # the cases trained on
    np.testing.assert_allclose(info["normalizer"]["mean"], steps.mean(0))
    np.testing.assert_allclose(info["normalizer"]["std"], steps.std(0))
    assert {y for i, y in enumerate(train.labels) if i in held} == set(LABELS)  # stratified
    assert meta["model"]["input_size"] == 2 and meta["model"]["n_outputs"] == 3 and meta["model"]["emb"] is None


def test_the_output_names_the_split_and_the_report(data, tmp_path, capsys):
    rc, out, err = cli(capsys, "train", "classify-series", "--train", data / "train.ts", "--test", data / "test.ts",
                       "--epochs", "1", "--out", tmp_path / "r", *TINY)
    assert rc == 0, err
    assert "(.ts Toy): 60 cases, 2 features, lengths 6-14; labels rise: 20, fall: 20, wave: 20" in out
    assert "48 to train on, 12 held out for validation (a stratified 0.2 of each class, seed 0)" in out
    assert "model: 2 features → 1 x rnnlab BiGRU(12) → max pooling → 3 classes" in out
    assert "valid (best weights): accuracy" in out and "test (best weights): accuracy" in out
    assert "(30 cases)" in out and "confusion matrix" in out


def test_another_test_file_changes_no_statistic(data, tmp_path, capsys):
    common = ["train", "classify-series", "--train", data / "train.ts", "--epochs", "1", "--max-steps", "2", *TINY]
    assert cli(capsys, *common, "--test", data / "test.ts", "--out", tmp_path / "a")[0] == 0
    assert cli(capsys, *common, "--test", data / "other_test.ts", "--out", tmp_path / "b")[0] == 0
    a, b = (load_checkpoint(tmp_path / r / "last").meta["series_classes"] for r in ("a", "b"))
    assert a == b
    sa, sb = (load_checkpoint(tmp_path / r / "last").model_state() for r in ("a", "b"))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_predict_a_labelled_file_prints_labels_and_the_accuracy(trained, data, tmp_path, capsys):
    rc, out, err = cli(capsys, "predict", trained, "--file", data / "test.ts")
    assert rc == 0, err
    labels = out.splitlines()
    assert len(labels) == 30 and set(labels) <= set(LABELS)
    metrics = [json.loads(line) for line in (trained / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    acc = [m for m in metrics if m.get("kind") == "test"][-1]["accuracy"]
    assert f"classified 30 cases, 2 features, lengths 6-14 with {trained / 'best'}" in err
    assert f"accuracy against the file's labels {100 * acc:.2f}%" in err  # the same as the run's test report
    # the same cases as NPZ: the same labels
    rc, out_npz, err = cli(capsys, "predict", trained, "--file", data / "test.npz")
    assert rc == 0 and out_npz == out, err
    # to a file
    rc, out2, err = cli(capsys, "predict", trained, "--file", data / "test.ts", "--output", tmp_path / "p.txt")
    assert rc == 0 and out2 == "" and (tmp_path / "p.txt").read_text(encoding="utf-8") == out
    # an ensemble of the run with itself: the same predictions
    rc, out3, err = cli(capsys, "predict", trained, "--ensemble", trained, "--file", data / "test.ts")
    assert rc == 0 and out3 == out and "an ensemble of 2" in err


def test_predict_an_unlabelled_file(trained, data, capsys):
    rc, out, err = cli(capsys, "predict", trained, "--file", data / "unlabelled.ts")
    assert rc == 0, err
    assert len(out.splitlines()) == 9 and "accuracy" not in err


def test_resume_reaches_the_weights_of_an_uninterrupted_run(data, tmp_path, capsys):
    args = ["train", "classify-series", "--train", data / "train.ts", "--epochs", "2", *TINY]
    assert cli(capsys, *args, "--out", tmp_path / "full")[0] == 0
    rc, out, err = cli(capsys, *args, "--out", tmp_path / "part", "--max-steps", "8")
    assert rc == 0, err
    assert "stopped: reached max_steps=8 at epoch 2, batch 2/6" in out and "valid (" not in out
    rc, out, err = cli(capsys, "train", "classify-series", "--resume", tmp_path / "part")
    assert rc == 0, err
    assert "resuming" in out and "valid (best weights)" in out
    full = load_checkpoint(tmp_path / "full" / "last").model_state()
    resumed = load_checkpoint(tmp_path / "part" / "last").model_state()
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)
    one_line_error(capsys, "train", "classify-series", "--resume", tmp_path / "part", "--hidden", "9",
                   must=["--hidden cannot change when resuming (the run used 12)"])


def test_bad_input_is_one_line_with_exit_code_2(trained, data, tmp_path, capsys):
    out = ["--out", tmp_path / "never"]
    train = ["train", "classify-series", "--train", data / "train.ts"]
    one_line_error(capsys, "train", "classify-series", *out, must=["--train FILE is required"])
    one_line_error(capsys, *train, "--valid", data / "test.ts", "--valid-fraction", "0.3", *out,
                   must=["--valid-fraction 0.3 holds out part of --train", "drop --valid-fraction"])
    one_line_error(capsys, *train, "--valid-fraction", "0", "--patience", "3", *out,
                   must=["--patience 3 watches the validation loss"])
    one_line_error(capsys, *train, "--valid-fraction", "0.9", *out, must=["--valid-fraction: got 0.9"])
    one_line_error(capsys, *train, "--test", data / "one_dim.ts", *out,
                   must=["--test ", "one_dim.ts: 1 dimension per case where the training file"])
    one_line_error(capsys, "train", "classify-series", "--train", data / "text.tsv", *out,
                   must=["--train ", "text.tsv: line 1: a case", "with no @data line above it", "is this a .ts file?",
                         "'rnnlab train classify'"])
    one_line_error(capsys, "train", "classify", "--train", data / "train.ts", *out,
                   must=["--train ", "train.ts: a file of numeric series", "'rnnlab train classify-series'"])
    one_line_error(capsys, *train, "--cell", "gru", "--init", "chrono", *out, must=["--init chrono", "--cell lstm"])
    assert not (tmp_path / "never").exists()
    one_line_error(capsys, "predict", trained, "--file", data / "one_dim.ts",
                   must=["--file ", "one_dim.ts: 1 dimensions per case where the model was trained on 2"])
    one_line_error(capsys, "predict", trained, "--file", data / "test.ts", "--input-format", "text",
                   must=["--input-format text reads text", ".ts or .npz"])
    one_line_error(capsys, "predict", trained, "--file", data / "test.ts", "--format", "slash",
                   must=["--format slash is a tagger's output"])
    one_line_error(capsys, "predict", trained, "--file", data / "test.ts", "--output", data / "test.ts",
                   must=["--output", "is the input file"])


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "classify-series", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "rnnlab train classify-series --train JapaneseVowels_TRAIN.ts" in out
    for flag in ("--valid-fraction", "--missing", "--format", "--pooling", "--bidirectional", "--patience"):
        assert flag in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "classify-series" in capsys.readouterr().out


@pytest.mark.skipif(not BASIC_MOTIONS.is_dir(), reason=f"shared data not present at {BASIC_MOTIONS} (set RNNLAB_DATA)")
def test_basic_motions_quick_run(tmp_path, capsys):
    rc, out, err = cli(capsys, "train", "classify-series", "--train", BASIC_MOTIONS / "BasicMotions_TRAIN.ts",
                       "--test", BASIC_MOTIONS / "BasicMotions_TEST.ts", "--epochs", "15", "--quiet", "--threads",
                       "1", "--out", tmp_path / "bm")
    assert rc == 0, err
    assert "40 cases, 6 features, length 100" in out and "32 to train on, 8 held out" in out
    test = [json.loads(line) for line in (tmp_path / "bm" / "metrics.jsonl").read_text().splitlines()
            if '"kind": "test"' in line][-1]
    assert test["n"] == 40 and test["accuracy"] >= 0.7  # 4 classes: chance is 0.25
