"""``rnnlab train seq2seq`` and ``rnnlab translate``: a tiny reversal run end to end through ``main()`` (checkpoints,
metrics, the exact-match lines by length), decoding a file greedily and with a beam, a run on TSV files, and bad
input as one line ``rnnlab: error: ...`` with exit code 2; ``--help`` has examples."""
from __future__ import annotations

import json

import pytest

from rnnlab.cli.main import main
from rnnlab.train.seq2seq import load_seq2seq

from cli_helpers import check_checkpoint_every, cli, one_line_error

TINY = ["--max-len", "8", "--batches", "20", "--epochs", "2", "--valid-size", "40", "--emb", "8", "--hidden", "16",
        "--batch-size", "16", "--lr", "0.01", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "rev"
    assert main(["train", "seq2seq", "--task", "reverse", "--out", str(out), *TINY]) == 0
    return out


def test_train_seq2seq_end_to_end(trained, tmp_path, capsys):
    out = trained
    assert (out / "best" / "model.safetensors").exists() and (out / "last" / "checkpoint.json").exists()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]
    test = [r for r in records if r["kind"] == "test"][0]
    assert test["n"] == 40 and 0 <= test["exact_match"] <= 1 and test["by_length"]
    model, vocab, ckpt = load_seq2seq(out)
    assert ckpt.path.name == "best" and model.config["hidden"] == 16 and vocab.level == "char"


def test_train_prints_exact_match_by_length(tmp_path, capsys):
    rc, out, _ = cli(capsys, "train", "seq2seq", "--task", "copy", "--out", tmp_path / "c", "--bucket-width", "4",
                     *TINY)
    assert rc == 0
    assert "test (best weights): exact match" in out and "token accuracy" in out
    assert "source length   sequences   exact match" in out and " 5-7 " in out


def test_translate_a_file(trained, tmp_path, capsys):
    f = tmp_path / "in.txt"
    f.write_text("abcde\nhgfe\tefgh\n", encoding="utf-8")
    rc, out, err = cli(capsys, "translate", trained, "--file", f)
    assert rc == 0 and len(out.splitlines()) == 2
    assert "decoded 2 lines (greedy)" in err
    rc, out, err = cli(capsys, "translate", trained, "--file", f, "--beam", "3", "--show-attention",
                       "--output", tmp_path / "o.txt")
    lines = (tmp_path / "o.txt").read_text(encoding="utf-8").splitlines()
    assert rc == 0 and len(lines) == 4 and lines[1].startswith("# attention: ") and "beam 3" in err


def test_train_on_tsv_files(tmp_path, capsys):
    pairs = "".join(f"{w}\t{w[::-1]}\n" for w in ["abc", "bca", "cab", "aab", "bba", "cca", "abab", "baca"])
    (tmp_path / "train.tsv").write_text(pairs, encoding="utf-8")
    rc, out, _ = cli(capsys, "train", "seq2seq", "--train", tmp_path / "train.tsv", "--valid",
                     tmp_path / "train.tsv", "--epochs", "1", "--hidden", "8", "--emb", "4", "--out",
                     tmp_path / "r", "--quiet")
    assert rc == 0 and "data: " in out and "8 pairs" in out and "valid (best weights): exact match" in out


def test_bad_input_is_one_line(trained, tmp_path, capsys):
    one_line_error(capsys, "train", "seq2seq", must=["give --task reverse|sort|copy|dates or --train FILE"])
    one_line_error(capsys, "train", "seq2seq", "--task", "reverse", "--train", "x.tsv",
                   must=["--task reverse generates its data"])
    one_line_error(capsys, "train", "seq2seq", "--task", "dates", "--alphabet", "5", must=["--alphabet shapes"])
    one_line_error(capsys, "train", "seq2seq", "--task", "copy", "--attention", "dot", must=["--attention"])
    one_line_error(capsys, "train", "seq2seq", "--task", "copy", "--attention", "none", "--input-feeding",
                   must=["--input-feeding feeds back"])
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\tc\n", encoding="utf-8")
    one_line_error(capsys, "train", "seq2seq", "--train", bad, "--out", tmp_path / "r",
                   must=["--train", "bad.tsv: line 1: 2 tabs"])
    one_line_error(capsys, "translate", trained, "--file", bad, must=["bad.tsv: line 1: 2 tabs"])
    one_line_error(capsys, "translate", tmp_path / "nothing", "--file", bad, must=["RUN_DIR", "no such checkpoint"])
    one_line_error(capsys, "train", "seq2seq", "--task", "reverse", "--out", trained, must=["already holds a run"])


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "seq2seq", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "--task reverse" in out and "--attention" in out and "--sampling-prob" in out
    with pytest.raises(SystemExit):
        main(["translate", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--beam" in out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "translate" in capsys.readouterr().out


PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    pytest.importorskip("matplotlib")
    out = tmp_path_factory.mktemp("runs") / "cmp"
    rc = main(["train", "seq2seq", "--task", "reverse", "--attention", "additive", "--compare-attention",
               "--bucket-width", "2", "--out", str(out), *TINY])
    return rc, out


def test_compare_attention_trains_both_and_draws_the_length_curves(compared, capsys):
    rc, out = compared
    assert rc == 0
    for kind in ("none", "additive"):
        model, _, ckpt = load_seq2seq(out / kind)
        assert model.config["attention"] == kind and ckpt.path == out / kind / "best"
    # The same budget: the same number of updates in each run.
    steps = [[r["step"] for r in map(json.loads, (out / k / "metrics.jsonl").read_text(encoding="utf-8").splitlines())
              if r["kind"] == "epoch"] for k in ("none", "additive")]
    assert steps[0] == steps[1] and len(steps[0]) == 2
    assert (out / "length-curves.png").read_bytes()[:8] == PNG
    curves = json.loads((out / "length-curves.json").read_text(encoding="utf-8"))
    assert set(curves["exact_match"]) == {"none", "additive"}
    lengths = {int(k) for k in curves["n"]}
    assert lengths <= set(range(5, 9)) and len(lengths) >= 3 and sum(curves["n"].values()) == 40
    for kind in ("none", "additive"):
        assert set(curves["exact_match"][kind]) == {str(k) for k in lengths}
        assert all(0 <= v <= 1 for v in curves["exact_match"][kind].values())


def test_compare_attention_prints_both_curves(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rc, out, _ = cli(capsys, "train", "seq2seq", "--task", "copy", "--compare-attention", "--out", tmp_path / "c",
                     "--bucket-width", "4", "--epochs", "1", *TINY[:2], "--batches", "5", "--valid-size", "16",
                     "--emb", "4", "--hidden", "6", "--quiet")
    assert rc == 0
    assert "== attention none: " in out and "== attention multiplicative: " in out
    table = out[out.index("exact match by source length (valid, best weights of each run):"):]
    assert "source length   sequences          none   multiplicative" in table and " 5-7 " in table
    assert f"wrote {tmp_path / 'c' / 'length-curves.png'}" in out


def test_compare_attention_bad_input(tmp_path, capsys):
    one_line_error(capsys, "train", "seq2seq", "--task", "copy", "--compare-attention", "--attention", "none",
                   must=["--compare-attention compares --attention none with additive or multiplicative"])
    (tmp_path / "p.tsv").write_text("ab\tba\n", encoding="utf-8")
    one_line_error(capsys, "train", "seq2seq", "--train", tmp_path / "p.tsv", "--compare-attention",
                   must=["--compare-attention", "give --valid FILE"])
    one_line_error(capsys, "train", "seq2seq", "--resume", tmp_path / "r", "--compare-attention",
                   must=["--compare-attention starts two new runs"])


def test_translate_draws_attention_heatmaps(trained, compared, tmp_path, capsys):
    f = tmp_path / "in.txt"
    f.write_text("abcde\nhgfe\tefgh\ncab\n", encoding="utf-8")
    png = tmp_path / "attn.png"
    rc, out, err = cli(capsys, "translate", trained, "--file", f, "--attention-png", png)
    assert rc == 0 and len(out.splitlines()) == 3
    assert png.read_bytes()[:8] == PNG and f"attention heatmap {png}" in err
    rc, out, err = cli(capsys, "translate", trained, "--file", f, "--attention-png", png, "--attention-lines", "2",
                       "--beam", "2")
    assert rc == 0
    for i in (1, 2):
        assert (tmp_path / f"attn-{i}.png").read_bytes()[:8] == PNG
    assert not (tmp_path / "attn-3.png").exists() and "attention heatmaps " in err
    one_line_error(capsys, "translate", trained, "--file", f, "--attention-png", tmp_path / "a.jpg",
                   must=["--attention-png", "*.png"])
    one_line_error(capsys, "translate", trained, "--file", f, "--attention-png", tmp_path / "no" / "a.png",
                   must=["does not exist"])
    one_line_error(capsys, "translate", trained, "--file", f, "--attention-lines", "2",
                   must=["--attention-lines 2 needs --attention-png"])
    one_line_error(capsys, "translate", compared[1] / "none", "--file", f, "--attention-png", png,
                   must=["no attention", "--attention none"])


def test_checkpoint_every_saves_last_within_an_epoch(tmp_path, capsys, monkeypatch):
    # --batches 20 per epoch
    check_checkpoint_every(capsys, monkeypatch, ("train", "seq2seq"), ["--task", "reverse", *TINY], tmp_path / "run")
