"""Pretrained word vectors (rnnlab.data.vectors): GloVe / word2vec text formats, gzip, the lowercase fallback, and
the errors a wrong file gives."""
import gzip

import pytest
import torch

from rnnlab.data.text import DataError
from rnnlab.data.vectors import load_into, read_vectors

GLOVE = "the 0.1 0.2 0.3\ngood 1 2 3\nBad -1 -2 -3\nbad 4 5 6\n. . . 7 8 9\nmovie 0.5 0.5 0.5\n"


def _write(tmp_path, text, name="vec.txt"):
    p = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(p, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def test_exact_rows_and_missing_words(tmp_path):
    words = ["<pad>", "<unk>", "good", "movie", "plot"]
    rows = read_vectors(_write(tmp_path, GLOVE), words)
    assert rows.dim == 3
    assert rows.found.tolist() == [False, False, True, True, False]
    assert torch.equal(rows.vectors[2], torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(rows.vectors[3], torch.tensor([0.5, 0.5, 0.5]))
    assert torch.equal(rows.vectors[4], torch.zeros(3))


def test_lowercase_fallback_never_beats_an_exact_match(tmp_path):
    # "The" has no row of its own: it takes "the"'s. "Bad" has its own row, which wins over "bad"'s whichever
    # comes first in the file; "bad" itself gets its exact row.
    words = ["The", "Bad", "bad", "the"]
    for text in (GLOVE, "bad 4 5 6\nBad -1 -2 -3\nthe 0.1 0.2 0.3\n"):
        rows = read_vectors(_write(tmp_path, text), words)
        assert rows.found.all()
        assert torch.allclose(rows.vectors[0], torch.tensor([0.1, 0.2, 0.3]))
        assert torch.equal(rows.vectors[1], torch.tensor([-1.0, -2.0, -3.0]))
        assert torch.equal(rows.vectors[2], torch.tensor([4.0, 5.0, 6.0]))
        assert torch.allclose(rows.vectors[3], torch.tensor([0.1, 0.2, 0.3]))


def test_a_cased_file_word_does_not_fill_a_lowercase_vocabulary_word(tmp_path):
    rows = read_vectors(_write(tmp_path, "Apple 1 1\nother 2 2\n"), ["apple", "other"])
    assert rows.found.tolist() == [False, True]


def test_word2vec_header_gzip_and_words_with_spaces(tmp_path):
    text = "3 2\nnew york 1 2\ncat 3 4\ndog 5 6\n"
    for name in ("v.vec", "v.vec.gz"):
        rows = read_vectors(_write(tmp_path, text, name), ["new york", "dog", "cow"])
        assert rows.dim == 2
        assert rows.found.tolist() == [True, True, False]
        assert torch.equal(rows.vectors[0], torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize("text, message", [
    ("good 1 2 3\nbad 1 2\n", "line 2: 2 numbers, but the first vector has 3"),
    ("good 1 x 3\n", "line 1: a value of 'good' is not a number"),
    ("\n\n", "no vectors in the file"),
    ("justaword\n", "line 1: expected 'word v_1 ... v_E'"),
])
def test_bad_files_name_the_line_and_the_rule(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        read_vectors(_write(tmp_path, text), ["good", "bad"])


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such vectors file"):
        read_vectors(tmp_path / "nope.txt", ["a"])


def test_load_into_copies_found_rows_only_and_checks_sizes(tmp_path):
    words = ["<pad>", "good", "plot"]
    rows = read_vectors(_write(tmp_path, "<pad> 9 9 9\ngood 1 2 3\n"), words)
    emb = torch.nn.Embedding(3, 3, padding_idx=0)
    before = emb.weight.detach().clone()
    assert load_into(emb, rows, skip=(0,)) == 1
    assert torch.equal(emb.weight[0], before[0])  # padding is never overwritten
    assert torch.equal(emb.weight[1].detach(), torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(emb.weight[2], before[2])  # not in the file: keeps its initialisation
    with pytest.raises(ValueError, match="the vectors have 3 dimensions but the embedding has 4; build the model "
                                         "with emb=3"):
        load_into(torch.nn.Embedding(3, 4), rows)
    with pytest.raises(ValueError, match="cover 3 words but the embedding has 5 rows"):
        load_into(torch.nn.Embedding(5, 3), rows)


# -- the CLI: rnnlab train classify / tag --embeddings FILE [--freeze-embeddings] ----------------------------------
from cli_helpers import cli, one_line_error  # noqa: E402
from test_cli_classify import TINY as CLASSIFY_TINY  # noqa: E402
from test_cli_classify import examples  # noqa: E402
from test_cli_tag import TINY as TAG_TINY  # noqa: E402
from test_cli_tag import conllu_text  # noqa: E402

from rnnlab.data.conllu import TaggingVocab  # noqa: E402
from rnnlab.data.labeled import TextVocab  # noqa: E402
from rnnlab.train.supervised import load_sequence_model  # noqa: E402
from rnnlab.train.tagging import load_tagger  # noqa: E402


def _vectors_file(tmp_path, words, dim, seed=0):
    """A GloVe file with a random vector for each of ``words`` (and one word no vocabulary has)."""
    g = torch.Generator().manual_seed(seed)
    table = {w: torch.randn(dim, generator=g) for w in [*words, "zzznotaword"]}
    path = tmp_path / "vectors.txt"
    path.write_text("".join(f"{w} " + " ".join(f"{v:.6f}" for v in vec.tolist()) + "\n" for w, vec in table.items()),
                    encoding="utf-8")
    return path, {w: torch.tensor([float(f"{v:.6f}") for v in vec.tolist()]) for w, vec in table.items()}


@pytest.fixture(scope="module")
def classify_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("vectors-classify")
    (d / "train.tsv").write_text("".join(f"{t}\t{y}\n" for y, t in examples(64, 0)), encoding="utf-8")
    (d / "dev.tsv").write_text("".join(f"{t}\t{y}\n" for y, t in examples(16, 1)), encoding="utf-8")
    return d


def _tiny(args, emb_value):
    """The command's TINY flags without --emb (the vectors set it)."""
    i = args.index("--emb")
    assert args[i + 1] == emb_value
    return [*args[:i], *args[i + 2:]]


@pytest.mark.parametrize("freeze", [True, False])
def test_train_classify_starts_from_the_vectors(classify_data, tmp_path, capsys, freeze):
    path, table = _vectors_file(tmp_path, ["good", "movie", "plot"], 6)
    out = tmp_path / "run"
    rc, stdout, err = cli(capsys, "train", "classify", "--train", classify_data / "train.tsv", "--valid",
                          classify_data / "dev.tsv", "--epochs", "2", "--embeddings", path, "--out", out,
                          *(["--freeze-embeddings"] if freeze else []), *_tiny(CLASSIFY_TINY[:-1], "16"))
    assert rc == 0, err
    assert f"embeddings: {path}: 3 of " in stdout and ("fixed" if freeze else "fine-tuned") in stdout
    model, ckpt = load_sequence_model(out, prefer="last")
    vocab = TextVocab.from_json(ckpt.meta["vocab"])
    assert model.config["emb"] == 6
    for w in ("good", "movie", "plot"):
        row = model.embedding.weight[vocab.words.stoi[w]].detach()
        if freeze:  # fixed: exactly the file's vector after training
            assert torch.allclose(row, table[w], atol=1e-6)
        else:  # fine-tuned: moved away from it, but it started there (same run frozen keeps it)
            assert not torch.allclose(row, table[w], atol=1e-6)
            assert torch.allclose(row, table[w], atol=0.5)


def test_resume_keeps_the_embedding_frozen(classify_data, tmp_path, capsys):
    path, table = _vectors_file(tmp_path, ["good"], 6)
    out = tmp_path / "run"
    args = ["train", "classify", "--train", classify_data / "train.tsv", "--embeddings", path, "--freeze-embeddings",
            *_tiny(CLASSIFY_TINY, "16")]
    assert cli(capsys, *args, "--epochs", "2", "--max-steps", "2", "--out", out)[0] == 0
    assert cli(capsys, "train", "classify", "--resume", out, "--epochs", "2", "--quiet")[0] == 0
    model, ckpt = load_sequence_model(out, prefer="last")
    assert ckpt.meta["trainer"]["step"] > 2
    vocab = TextVocab.from_json(ckpt.meta["vocab"])
    assert torch.allclose(model.embedding.weight[vocab.words.stoi["good"]].detach(), table["good"], atol=1e-6)


def test_train_tag_starts_from_the_vectors(tmp_path, capsys):
    (tmp_path / "train.conllu").write_text(conllu_text(20, 0), encoding="utf-8")
    words = sorted({line.split("\t")[1] for line in conllu_text(20, 0).splitlines()
                    if line and line[0].isdigit() and "-" not in line.split("\t")[0] and "." not in
                    line.split("\t")[0]})
    path, table = _vectors_file(tmp_path, words[:3], 5)
    out = tmp_path / "run"
    rc, stdout, err = cli(capsys, "train", "tag", "--train", tmp_path / "train.conllu", "--epochs", "1",
                          "--embeddings", path, "--freeze-embeddings", "--out", out, *_tiny(TAG_TINY[:-1], "8"))
    assert rc == 0, err
    assert f"embeddings: {path}: 3 of " in stdout
    model, vocab, _ = load_tagger(out, prefer="last")
    assert isinstance(vocab, TaggingVocab) and model.config["emb"] == 5
    for w in words[:3]:
        assert torch.allclose(model.embed.weight[vocab.words.stoi[w]].detach(), table[w], atol=1e-6)


def test_embedding_flag_errors_are_one_line(classify_data, tmp_path, capsys):
    path, _ = _vectors_file(tmp_path, ["good"], 6)
    base = ["train", "classify", "--train", classify_data / "train.tsv", "--out", tmp_path / "x", "--quiet"]
    one_line_error(capsys, *base, "--embeddings", path, "--emb", "16",
                   must=["--emb 16 contradicts", "have 6 dimensions", "give --emb 6"])
    one_line_error(capsys, *base, "--freeze-embeddings", must=["no --embeddings FILE was given"])
    one_line_error(capsys, *base, "--embeddings", tmp_path / "missing.txt", must=["no such vectors file"])
    (tmp_path / "bad.txt").write_text("good 1 2\nbad 1\n", encoding="utf-8")
    one_line_error(capsys, *base, "--embeddings", tmp_path / "bad.txt", must=["line 2: 1 numbers"])


def test_a_rare_training_word_with_a_vector_keeps_its_row(tmp_path, capsys):
    # "plotx" occurs once in training: below --min-count 2 it would be <unk>, but the file has a vector for it.
    rows = [f"{t}\t{y}\n" for y, t in examples(40, 0)] + ["a plotx film\tpos\n", "a onlyonce film\tneg\n"]
    (tmp_path / "train.tsv").write_text("".join(rows), encoding="utf-8")
    path, table = _vectors_file(tmp_path, ["good", "plotx"], 4)
    out = tmp_path / "run"
    tiny = _tiny(CLASSIFY_TINY, "16")
    tiny[tiny.index("--min-count") + 1] = "2"
    rc, _, err = cli(capsys, "train", "classify", "--train", tmp_path / "train.tsv", "--epochs", "1", "--embeddings",
                     path, "--freeze-embeddings", "--out", out, *tiny)
    assert rc == 0, err
    model, ckpt = load_sequence_model(out, prefer="last")
    vocab = TextVocab.from_json(ckpt.meta["vocab"])
    assert "plotx" in vocab.words and "onlyonce" not in vocab.words  # kept for its vector; the other is <unk>
    assert torch.allclose(model.embedding.weight[vocab.words.stoi["plotx"]].detach(), table["plotx"], atol=1e-6)
