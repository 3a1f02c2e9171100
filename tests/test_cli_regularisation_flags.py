"""The recurrent-regularisation flags reach the model of every training command that builds rnnlab layers (lm and
classify are covered in tests/test_variants_regularisation.py): tag, regress and seq2seq."""
import json

import pytest

from cli_helpers import cli, one_line_error

CONLLU = "# text = a b\n1\ta\ta\tDET\t_\t_\t0\troot\t_\t_\n2\tb\tb\tNOUN\t_\t_\t1\tdep\t_\t_\n\n"


def _files(tmp_path):
    (tmp_path / "t.conllu").write_text(CONLLU * 3, encoding="utf-8")
    (tmp_path / "s.csv").write_text("x,y\n" + "".join(f"{i},{i % 7}\n" for i in range(200)), encoding="utf-8")


@pytest.mark.parametrize("command, flags, expected", [
    (("train", "tag", "--train", "{d}/t.conllu", "--dropout", "0", "--hidden", "8", "--char-hidden", "4"),
     ("--weight-drop", "0.3", "--locked-dropout", "0.2", "--zoneout", "0.1"),
     {"weight_drop": 0.3, "locked_dropout": 0.2, "zoneout": 0.1}),
    (("train", "regress", "--train", "{d}/s.csv", "--target", "y", "--window", "5", "--hidden", "8"),
     ("--zoneout", "0.1,0.05", "--output-dropout", "0.2"),
     {"zoneout": [0.1, 0.05], "output_dropout": 0.2}),
    (("train", "seq2seq", "--task", "reverse", "--max-len", "6", "--batches", "2", "--valid-size", "8",
      "--hidden", "8", "--emb", "8"),
     ("--weight-drop", "0.3", "--recurrent-dropout", "0.2"),
     {"weight_drop": 0.3, "recurrent_dropout": 0.2}),
])
def test_flags_reach_the_model_config(capsys, tmp_path, command, flags, expected):
    _files(tmp_path)
    args = [a.format(d=tmp_path) for a in command]
    rc, _, err = cli(capsys, *args, *flags, "--epochs", "1", "--threads", "1", "--quiet", "--out", tmp_path / "run")
    assert rc == 0, err
    config = json.loads((tmp_path / "run" / "last" / "checkpoint.json").read_text(encoding="utf-8"))["model"]
    assert config["rnn_options"] == expected
    # without the flags the config has no rnn_options at all
    rc, _, err = cli(capsys, *args, "--epochs", "1", "--threads", "1", "--quiet", "--out", tmp_path / "plain")
    assert rc == 0, err
    plain = json.loads((tmp_path / "plain" / "last" / "checkpoint.json").read_text(encoding="utf-8"))
    assert "rnn_options" not in plain["model"]


def test_two_zoneout_values_need_an_lstm(capsys, tmp_path):
    _files(tmp_path)
    one_line_error(capsys, "train", "regress", "--train", tmp_path / "s.csv", "--target", "y", "--cell", "gru",
                   "--zoneout", "0.1,0.2", "--out", tmp_path / "x", must=["--zoneout", "--cell gru"])
