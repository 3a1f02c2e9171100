"""Reading CoNLL-U for tagging (multiword tokens and empty nodes skipped, UPOS or XPOS), the vocabularies, the
writers, and every bad file as a DataError naming the file, the line and the fix."""
from __future__ import annotations

import pytest

from rnnlab.data.conllu import (PAD, UNK, SymbolVocab, TaggingVocab, format_conllu, format_slash, parse_conllu,
                                parse_plain, read_conllu, read_conllu_sentences, word_chars)
from rnnlab.data.text import DataError


def row(i, form, upos, xpos, lemma="_"):
    return f"{i}\t{form}\t{lemma}\t{upos}\t{xpos}\t_\t_\t_\t_\t_"


# "I don't know." with a multiword token (2-3) and an empty node (3.1), then a second sentence.
DOC = "\n".join([
    "# sent_id = 1",
    "# text = I don't know.",
    row(1, "I", "PRON", "PRP"),
    "2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_",
    row(2, "do", "AUX", "VBP"),
    row(3, "n't", "PART", "RB"),
    "3.1\tknow\tknow\tVERB\tVB\t_\t_\t_\t2:conj\tCopyOf=4",
    row(4, "know", "VERB", "VB"),
    row(5, ".", "PUNCT", "."),
    "",
    "# sent_id = 2",
    row(1, "Dogs", "NOUN", "NNS"),
    row(2, "bark", "VERB", "VBP"),
    "",
]) + "\n"


@pytest.fixture
def doc(tmp_path):
    f = tmp_path / "doc.conllu"
    f.write_text(DOC, encoding="utf-8")
    return f


def test_reads_syntactic_words_and_skips_ranges_and_empty_nodes(doc):
    assert read_conllu(doc) == [(["I", "do", "n't", "know", "."], ["PRON", "AUX", "PART", "VERB", "PUNCT"]),
                                (["Dogs", "bark"], ["NOUN", "VERB"])]
    assert read_conllu(doc, column="xpos")[0][1] == ["PRP", "VBP", "RB", "VB", "."]
    s = read_conllu_sentences(doc)[1]
    assert s.line_no == 11 and s.lines[0] == "# sent_id = 2" and s.word_lines == [1, 2]


def test_a_last_sentence_without_a_blank_line_and_crlf_line_ends_are_read():
    text = DOC.strip().replace("\n", "\r\n")
    assert [s.words for s in parse_conllu(text)] == [["I", "do", "n't", "know", "."], ["Dogs", "bark"]]


def test_bad_column_is_a_value_error_with_the_choices():
    with pytest.raises(ValueError, match="column must be one of upos, xpos"):
        parse_conllu(DOC, column="deprel")


@pytest.mark.parametrize("text, line, must", [
    ("hello world\nthis is text\n", 1, ["not a CoNLL-U line", "10 tab-separated columns"]),
    (DOC.replace(row(4, "know", "VERB", "VB"), "4\tknow\tknow"), 8, ["3 tab-separated columns",
                                                                     "UPOS column (column 4) is missing"]),
    (DOC.replace(row(2, "bark", "VERB", "VBP"), row(2, "bark", "_", "VBP")), 13, ["'bark' has no UPOS tag",
                                                                                 "--column xpos"]),
    (DOC.replace(row(2, "bark", "VERB", "VBP"), row("x", "bark", "VERB", "VBP")), 13, ["not a CoNLL-U word line"]),
    (DOC.replace(row(1, "Dogs", "NOUN", "NNS"), row(3, "Dogs", "NOUN", "NNS")), 12, ["word ID 3 where 1"]),
    (DOC.replace("\n\n# sent_id = 2\n", "\n"), 10, ["a blank line must separate sentences"]),
])
def test_bad_files_name_file_line_and_fix(tmp_path, text, line, must):
    f = tmp_path / "bad.conllu"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_conllu(f)
    msg = str(info.value)
    assert msg.startswith(f"{f}: line {line}: "), msg
    for m in must:
        assert m in msg, (m, msg)


def test_missing_empty_and_non_utf8_files(tmp_path):
    with pytest.raises(DataError, match="no such file; check the path"):
        read_conllu(tmp_path / "nope.conllu")
    (tmp_path / "empty.conllu").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        read_conllu(tmp_path / "empty.conllu")
    (tmp_path / "latin1.conllu").write_bytes(row(1, "caf\xe9", "NOUN", "NN").encode("latin-1"))
    with pytest.raises(DataError, match="line 1: invalid UTF-8.*iconv"):
        read_conllu(tmp_path / "latin1.conllu")
    (tmp_path / "comments.conllu").write_text("# only a comment\n", encoding="utf-8")
    with pytest.raises(DataError, match="no sentences"):
        read_conllu(tmp_path / "comments.conllu")


def test_untagged_sentences_are_allowed_only_for_tagging():
    text = DOC.replace("PRON", "_").replace("AUX", "_").replace("PART", "_").replace("\tVERB\tVB\t", "\t_\tVB\t")
    text = text.replace("PUNCT", "_")
    first, second = parse_conllu(text, require_tags=False)
    assert first.tags is None and second.tags == ["NOUN", "VERB"]
    with pytest.raises(DataError, match="has no UPOS tag"):
        parse_conllu(text)
    with pytest.raises(DataError, match="line 12: word 'Dogs' has no UPOS tag.*all its tags or none"):
        parse_conllu(text.replace("NOUN", "_"), require_tags=False)


def test_vocabularies_min_count_specials_and_unseen_tags():
    sents = [(["the", "dog", "the"], ["DET", "NOUN", "DET"]), (["a", "cat"], ["DET", "NOUN"])]
    v = TaggingVocab.build(sents, min_count=2)
    assert v.words.itos == [PAD, UNK, "the"] and v.words.pad_id == 0 and v.words.unk_id == 1
    assert v.tags.itos == ["DET", "NOUN"] and v.tags.unk_id is None
    assert v.encode_words(["the", "cat"]) == [2, 1] and v.is_unknown("cat") and not v.is_unknown("the")
    assert v.encode_tags(["NOUN", "INTJ"]) == [1, -100]
    assert v.chars.itos[:2] == [PAD, UNK] and all(c in v.chars for c in "thedogact")
    assert v.encode_chars(["d\u00e9"]) == [[v.chars.id("d"), v.chars.unk_id]]
    again = TaggingVocab.from_json(v.to_json())
    assert again == v and again.words.stoi == v.words.stoi
    with pytest.raises(ValueError, match="min_count must be an integer >= 1"):
        SymbolVocab.build({}, min_count=0)


def test_long_words_keep_their_first_and_last_characters():
    url = "http://www.example.com/a/very/long/path/index.html"
    assert word_chars(url, 8) == "httphtml" and word_chars(url, 9) == "http.html"
    assert word_chars("short", 8) == "short"


def test_writers_fill_the_chosen_column_and_keep_everything_else(doc):
    sents = read_conllu_sentences(doc)
    pred = [["X", "Y", "Z", "W", "V"], ["A", "B"]]
    out = format_conllu(sents, pred, "upos")
    again = parse_conllu(out)
    assert [s.tags for s in again] == pred and [s.words for s in again] == [s.words for s in sents]
    assert "2-3\tdon't\t_" in out and "3.1\tknow\tknow\tVERB" in out and "# text = I don't know." in out
    assert parse_conllu(format_conllu(sents, pred, "xpos"), column="xpos")[1].tags == ["A", "B"]
    assert format_slash(sents, pred) == "I/X do/Y n't/Z know/W ./V\nDogs/A bark/B\n"
    with pytest.raises(ValueError, match="1 tags for 2 words"):
        format_slash(sents, [pred[0], ["A"]])


def test_plain_text_becomes_sentences_that_write_as_conllu():
    sents = parse_plain("The dog barks .\n\n  Hi  there\n")
    assert [s.words for s in sents] == [["The", "dog", "barks", "."], ["Hi", "there"]]
    out = format_conllu(sents, [["DET", "NOUN", "VERB", "PUNCT"], ["INTJ", "ADV"]])
    assert parse_conllu(out)[1].tags == ["INTJ", "ADV"]
    with pytest.raises(DataError, match="no words"):
        parse_plain("\n \n", "in.txt")
