"""`rnnlab diagnose`, end to end through main(): a fresh model on a built-in task, a run of 'rnnlab task', --compare,
and bad input as one line with exit code 2. Tiny sizes: these check behaviour, not the numbers of a real run."""
import json

import pytest
import torch
from cli_helpers import cli, one_line_error

TINY = ("--hidden", "8", "--batch-size", "8", "--jacobian-sequences", "2", "--threads", "1")
PNG = b"\x89PNG\r\n\x1a\n"


def _check_report(out, figures):
    for name in figures:
        assert (out / name).read_bytes()[:8] == PNG, name
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") >= len(figures)
    return page


def test_diagnose_a_fresh_tanh_rnn_on_the_adding_task(capsys, tmp_path):
    out = tmp_path / "d"
    rc, stdout, err = cli(capsys, "diagnose", "--task", "adding", "--cell", "rnn_tanh", "--length", "40", *TINY,
                          "--out", out)
    assert rc == 0, err
    assert "untrained" in stdout
    assert "verdict: VANISHING" in stdout  # torch.nn's default init: the tanh RNN forgets within a few steps
    assert "remedies:" in stdout and "--cell lstm" in stdout
    page = _check_report(out, ["decay.png", "saturation.png"])
    assert "verdict: VANISHING" in page
    data = json.loads((out / "diagnostics.json").read_text(encoding="utf-8"))
    assert data["verdict"]["status"] == "vanishing"
    assert data["diagnostics"]["length"] == 40
    assert len(data["diagnostics"]["layers"][0]["grad_norms"]) == 40


def test_diagnose_after_training_then_diagnose_that_run(capsys, tmp_path):
    out = tmp_path / "d"
    rc, stdout, err = cli(capsys, "diagnose", "--task", "adding", "--cell", "lstm", "--length", "12", *TINY,
                          "--steps", "4", "--history-every", "2", "--out", out)
    assert rc == 0, err
    assert "4 updates" in stdout and "verdict: " in stdout
    _check_report(out, ["decay.png", "saturation.png", "loss.png", "history.png"])
    assert (out / "run" / "last").is_dir()  # the trained model is a run of 'rnnlab task' ...
    rc, stdout, err = cli(capsys, "diagnose", out / "run", "--batch-size", "4", "--jacobian-sequences", "1",
                          "--out", tmp_path / "again")
    assert rc == 0, err  # ... that diagnose reads back, on a batch of its own task regenerated from its options
    assert "lstm on the adding task" in stdout and "(step 4)" in stdout
    assert "verdict: " in stdout
    _check_report(tmp_path / "again", ["decay.png", "saturation.png", "loss.png"])


def test_diagnose_compare_tiny(capsys, tmp_path):
    out = tmp_path / "cmp"
    rc, stdout, err = cli(capsys, "diagnose", "--compare", "--length", "10", *TINY, "--steps", "2", "--out", out)
    assert rc == 0, err
    for name in ("tanh RNN", "LSTM", "IRNN"):
        assert f"== {name} ==" in stdout
    assert "horizon k" in stdout  # the side-by-side table
    page = _check_report(out, ["loss.png", "decay.png", "saturation-lstm.png", "history-irnn.png"])
    for name in ("tanh RNN", "LSTM", "IRNN"):
        assert f"<h2>{name}</h2>" in page
    runs = json.loads((out / "diagnostics.json").read_text(encoding="utf-8"))["runs"]
    assert set(runs) == {"tanh RNN", "LSTM", "IRNN"}
    assert runs["IRNN"]["diagnostics"]["layers"][0]["cell"] == "rnn_relu"


def test_diagnose_compare_two_lengths_one_report(capsys, tmp_path):
    out = tmp_path / "cmp"
    rc, stdout, err = cli(capsys, "diagnose", "--compare", "--lengths", "8,12", *TINY, "--steps", "2", "--out", out)
    assert rc == 0, err
    assert "at T = 8" in stdout and "at T = 12" in stdout
    assert stdout.count("== LSTM ==") == 2
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "T = 8: side by side" in page and "T = 12: side by side" in page
    for t in (8, 12):
        runs = json.loads((out / f"T{t}" / "diagnostics.json").read_text(encoding="utf-8"))["runs"]
        assert set(runs) == {"tanh RNN", "LSTM", "IRNN"}
        assert runs["LSTM"]["diagnostics"]["layers"][0]["cell"] == "lstm"
        assert (out / f"T{t}" / "decay.png").is_file()


@pytest.mark.parametrize("args, must", [
    (("--compare", "--cell", "lstm"), ["--compare", "--cell"]),
    (("--lengths", "100,200"), ["--lengths", "--compare"]),
    (("--compare", "--lengths", "100,200", "--length", "50"), ["--lengths", "--length"]),
    (("--compare", "--lengths", "100,x"), ["--lengths"]),
    (("--compare", "--task", "parity", "--lengths", "10,20"), ["--lengths", "adding"]),
    (("--task", "adding", "--init", "identity", "--cell", "lstm"), ["--init identity"]),
    (("--task", "copy", "--length", "5"), ["--length 5"]),
    (("--length", "1"), ["--length"]),
    (("--horizon-fraction", "2"), ["--horizon-fraction"]),
    (("--task", "mnist"), ["--task"]),
])
def test_bad_input_is_one_line(capsys, tmp_path, args, must):
    one_line_error(capsys, "diagnose", *args, "--out", tmp_path / "x", must=must)


def test_bad_run_dirs_are_one_line(capsys, tmp_path):
    one_line_error(capsys, "diagnose", tmp_path / "nowhere", must=["RUN_DIR"])
    one_line_error(capsys, "diagnose", tmp_path, "--cell", "gru", must=["RUN_DIR", "--cell"])
    one_line_error(capsys, "diagnose", tmp_path, "--compare", must=["--compare"])
    # a checkpoint that is not a run of 'rnnlab task': a classifier trained by the Trainer directly
    from rnnlab.models.classifier import SequenceClassifier
    from rnnlab.train.trainer import Trainer, TrainOptions

    model = SequenceClassifier(2, vocab_size=3, hidden=4)
    batch = (torch.randint(0, 3, (2, 5)), torch.tensor([5, 3]), torch.tensor([0, 1]))
    loss = lambda b: torch.nn.functional.cross_entropy(model(b[0], b[1]), b[2])  # noqa: E731
    Trainer(model, loss, [batch], None, TrainOptions(epochs=1, quiet=True), out_dir=tmp_path / "plain",
            print_fn=lambda s: None).fit()
    one_line_error(capsys, "diagnose", tmp_path / "plain", "--out", tmp_path / "x", must=["not a run of 'rnnlab task'"])


def test_refuses_to_run_under_torchrun_with_several_processes(capsys, tmp_path, monkeypatch):
    # Every rank would train the same probe models and write the same report into the same --out.
    for k, v in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(k, v)
    one_line_error(capsys, "diagnose", "--task", "adding", "--steps", "2", "--out", tmp_path / "d",
                   must=["runs in one process; torchrun started 2 (WORLD_SIZE)"])
    assert not (tmp_path / "d").exists()
