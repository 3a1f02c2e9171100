"""``rnnlab predict RUN_DIR --ensemble RUN_DIR ...``: several classifiers' class probabilities averaged. Oracle: the
mean of the models' own softmax outputs, computed here from the loaded checkpoints."""
from __future__ import annotations

import pytest
import torch

from rnnlab.cli.main import main
from rnnlab.cli.options import UsageError
from rnnlab.data.labeled import TextVocab, collate_labeled, encode_labeled, parse_labeled
from rnnlab.train.supervised import load_sequence_model

from test_cli_classify import TINY, data, run_predict  # noqa: F401  (data: the fixture of tiny labelled files)
from test_cli_tag import TINY as TAG_TINY
from test_cli_tag import conllu_text


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):  # noqa: F811
    """Three classifiers on the same data, differing in seed and size, trained only one epoch so they disagree."""
    out = []
    for seed, hidden in ((0, "16"), (1, "8"), (2, "12")):
        d = tmp_path_factory.mktemp("ensemble") / f"s{seed}"
        args = [*TINY]
        args[args.index("--hidden") + 1] = hidden
        assert main(["train", "classify", "--train", str(data / "train.tsv"), "--valid", str(data / "dev.tsv"),
                     "--epochs", "1", "--seed", str(seed), "--lr", "0.003", "--out", str(d), *args]) == 0
        out.append(d)
    return out


def _probs(run, text_file):
    model, ckpt = load_sequence_model(run)
    vocab = TextVocab.from_json(ckpt.meta["vocab"])
    data = parse_labeled(text_file.read_text(encoding="utf-8"), str(text_file), format="tsv")
    encoded = encode_labeled(data, vocab)
    x, lengths, _ = collate_labeled(encoded, list(range(len(encoded))), vocab.pad_id)  # (N, T), (N,)
    with torch.no_grad():
        return model(x, lengths).softmax(1), vocab.labels, [e.label for e in data.examples]


def test_ensemble_averages_the_probabilities(runs, data, tmp_path, capsys):  # noqa: F811
    assert run_predict(runs[0], "--ensemble", runs[1], runs[2], "--file", data / "dev.tsv",
                       "--output", tmp_path / "o.tsv") == 0
    err = capsys.readouterr().err
    got = [line.split("\t")[0] for line in (tmp_path / "o.tsv").read_text(encoding="utf-8").splitlines()]
    each = [_probs(r, data / "dev.tsv") for r in runs]
    labels, gold = each[0][1], each[0][2]
    mean = torch.stack([p for p, _, _ in each]).mean(0)  # (3, N, K) → (N, K)
    assert got == [labels[k] for k in mean.argmax(1).tolist()]
    alone = [[labels[k] for k in p.argmax(1).tolist()] for p, _, _ in each]
    assert any(a != got for a in alone)  # the members disagree somewhere, so the average decided something
    acc = sum(g == p for g, p in zip(gold, got)) / len(gold)
    assert "an ensemble of 3" in err and f"accuracy against the file's labels {100 * acc:.2f}%" in err
    assert "(members alone: " + ", ".join(f"{100 * sum(g == p for g, p in zip(gold, a)) / len(gold):.2f}%"
                                          for a in alone) + ")" in err


def test_ensemble_refusals(runs, data, tmp_path, capsys):  # noqa: F811
    (tmp_path / "other.tsv").write_text("".join(f"text {i}\t{'a' if i % 2 else 'b'}\n" for i in range(20)),
                                        encoding="utf-8")
    other = tmp_path / "other"
    assert main(["train", "classify", "--train", str(tmp_path / "other.tsv"), "--epochs", "1", "--out", str(other),
                 *TINY]) == 0
    with pytest.raises(UsageError, match=r"--ensemble .*other: its labels \(a, b\) differ from RUN_DIR's \(neg, pos\)"):
        run_predict(runs[0], "--ensemble", other, "--file", data / "dev.tsv")
    (tmp_path / "t.conllu").write_text(conllu_text(8, 0), encoding="utf-8")
    tagger = tmp_path / "tagger"
    assert main(["train", "tag", "--train", str(tmp_path / "t.conllu"), "--epochs", "1", "--out", str(tagger),
                 *TAG_TINY]) == 0
    with pytest.raises(UsageError, match="--ensemble averages classifiers' class probabilities; RUN_DIR .* holds a "
                                         "tagger"):
        run_predict(tagger, "--ensemble", runs[0], "--file", tmp_path / "t.conllu")
