"""Bad input never crashes the tool: every malformed file (tests/bad_inputs/, plus binary files and damaged
checkpoints made here), every checkpoint given to the wrong command, every nonsensical flag makes ``rnnlab`` exit
with code 2 and print exactly one line ``rnnlab: error: ...`` that names the file (and line) or the flag, says what
is wrong and what to do — no traceback. And nothing already saved is lost: the trained runs this module starts from,
and any run a case points at, are byte for byte the same afterwards.

Each case is one test id: ``CASES`` maps it to the command line (built from the paths in ``Ctx``) and the strings the
error line must contain."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import random
import shutil
from pathlib import Path

import pytest

from rnnlab.cli.main import main

from cli_helpers import cli

BAD = Path(__file__).resolve().parent / "bad_inputs"
TEXT = ("the quick brown fox jumps over the lazy dog\n" "pack my box with five dozen liquor jugs\n") * 6
TINY = {
    "lm": ["--hidden", "8", "--bptt", "8", "--batch-size", "4", "--eval-batch-size", "2"],
    "tag": ["--emb", "4", "--char-emb", "4", "--char-hidden", "4", "--hidden", "4", "--layers", "1"],
    "classify": ["--emb", "4", "--hidden", "4"],
    "seq2seq": ["--emb", "4", "--hidden", "4"],
    "regress": ["--target", "value", "--window", "5", "--hidden", "4"],
    "classify-series": ["--hidden", "4"],
}
# A well-formed .ts file for 'rnnlab train classify-series': two classes of 2-dimensional cases, 3-5 steps.
SERIES_TS = "@problemName Ok\n@dimensions 2\n@equalLength false\n@classLabel true up down\n@data\n" + "".join(
    f"{','.join(str(k + t) for t in range(3 + k % 3))}:{','.join('1' for _ in range(3 + k % 3))}:"
    f"{'up' if k % 2 else 'down'}\n" for k in range(12))


# -- the data and the trained runs the cases start from ------------------------------------------------------------
def _conllu(n: int) -> str:
    rng = random.Random(0)
    tags = {"ing": "VERB", "ly": "ADV", "tion": "NOUN"}
    out = []
    for k in range(n):
        words = [rng.choice(["ba", "ko", "mi"]) + rng.choice(list(tags)) for _ in range(rng.randint(2, 5))]
        rows = [f"{i}\t{w}\t_\t{tags[next(s for s in tags if w.endswith(s))]}\t_\t_\t_\t_\t_\t_"
                for i, w in enumerate(words, start=1)]
        out.append(f"# sent_id = {k + 1}\n" + "\n".join(rows) + "\n\n")
    return "".join(out)


def _labelled(n: int) -> str:
    rng = random.Random(0)
    lines = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        words = ["good", "great", "fine"] if label == "pos" else ["bad", "awful", "poor"]
        lines.append(f"{label}\t{rng.choice(words)} movie {rng.choice(words)}\n")
    return "".join(lines)


class Ctx:
    """Paths a case's command line is built from: ``data`` (well-formed files), ``runs`` (trained runs, by kind),
    ``gen`` (generated bad files), ``tmp`` (the case's own directory) and ``damaged(kind, how)`` (a copy of a run,
    damaged)."""

    def __init__(self, data: Path, runs: dict, gen: Path, tmp: Path) -> None:
        self.data, self.runs, self.gen, self.tmp = data, runs, gen, tmp
        self.text, self.series = data / "text.txt", data / "series.csv"
        self.conllu, self.labels, self.pairs = data / "train.conllu", data / "train.tsv", data / "pairs.tsv"
        self.series_ts = data / "train.ts"

    def damaged(self, kind: str, how: str) -> Path:
        run = self.tmp / f"{kind}-{how}"
        shutil.copytree(self.runs[kind], run)
        for sub in ("best", "last"):
            if (run / sub).is_dir():
                DAMAGE[how](run / sub)
        return run


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(data dir, {kind: trained run dir}, generated-files dir): one tiny run of each trained kind (1 epoch)."""
    data = tmp_path_factory.mktemp("data")
    (data / "text.txt").write_text(TEXT, encoding="utf-8")
    (data / "train.conllu").write_text(_conllu(16), encoding="utf-8")
    (data / "train.tsv").write_text(_labelled(30), encoding="utf-8")
    (data / "pairs.tsv").write_text("".join(f"{s}\t{s[::-1]}\n" for s in ["abc", "abd", "bca", "cab", "dab"] * 4),
                                    encoding="utf-8")
    (data / "series.csv").write_text("t,value\n" + "".join(f"{i},{(i % 7) / 7:.3f}\n" for i in range(120)),
                                     encoding="utf-8")
    (data / "train.ts").write_text(SERIES_TS, encoding="utf-8")
    root = tmp_path_factory.mktemp("runs")
    files = {"lm": data / "text.txt", "tag": data / "train.conllu", "classify": data / "train.tsv",
             "seq2seq": data / "pairs.tsv", "regress": data / "series.csv", "classify-series": data / "train.ts"}
    runs = {}
    for kind, f in files.items():
        runs[kind] = root / kind
        argv = ["train", kind, "--train", str(f), *TINY[kind], "--epochs", "1", "--quiet", "--out", str(runs[kind])]
        if kind in ("tag", "classify", "seq2seq"):
            argv += ["--valid", str(f)]
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            assert main(argv) == 0, err.getvalue()
    gen = tmp_path_factory.mktemp("generated")
    (gen / "binary.bin").write_bytes(bytes(range(256)) * 2)
    (gen / "latin1.txt").write_bytes("caf\xe9 au lait\nna\xefve\n".encode("latin-1"))
    (gen / "latin1.conllu").write_bytes("1\tcaf\xe9\t_\tNOUN\t_\t_\t_\t_\t_\t_\n".encode("latin-1"))
    (gen / "utf16.tsv").write_text("pos\tgood movie\nneg\tbad movie\n", encoding="utf-16")
    (gen / "nul.csv").write_bytes(b"t,value\n1,0.5\x00\n2,0.6\n")
    (gen / "huge_quote.csv").write_bytes(b't,value\n1,"' + b"x" * 140_000 + b"\n2,3\n")
    (gen / "a_file").write_text("not a directory\n", encoding="utf-8")
    return data, runs, gen


@pytest.fixture
def ctx(world, tmp_path) -> Ctx:
    return Ctx(*world, tmp_path)


# -- ways to damage a checkpoint directory (best/ or last/) ---------------------------------------------------------
def _edit_meta(fn):
    def damage(d: Path) -> None:
        meta = json.loads((d / "checkpoint.json").read_text(encoding="utf-8"))
        fn(meta)
        (d / "checkpoint.json").write_text(json.dumps(meta), encoding="utf-8")
    return damage


def _truncate(d: Path) -> None:
    raw = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(raw[:len(raw) // 2])


def _resize(meta: dict) -> None:
    v = meta["vocab"]
    if "itos" in v:  # LM: 5 tokens where the model has ~28
        v["itos"] = v["itos"][:5]
    elif "tags" in v:  # tagger: a word vocabulary of 3
        v["words"]["itos"] = v["words"]["itos"][:3]
    elif "labels" in v:  # classifier: an extra label
        v["labels"] = v["labels"] + ["zzz"]
    else:  # seq2seq: a target vocabulary of 5
        v["tgt"]["itos"] = v["tgt"]["itos"][:5]


def _grow(meta: dict) -> None:
    meta["vocab"]["itos"] = meta["vocab"]["itos"] + [f"extra{i}" for i in range(7)]


DAMAGE = {
    "truncated": _truncate,
    "not_json": lambda d: (d / "checkpoint.json").write_text("{not json", encoding="utf-8"),
    "json_list": lambda d: (d / "checkpoint.json").write_text("[1, 2]", encoding="utf-8"),
    "binary_json": lambda d: (d / "checkpoint.json").write_bytes(b"\xff\xfe\x00garbage"),
    "no_weights": lambda d: (d / "model.safetensors").unlink(),
    "vocab_resized": _edit_meta(_resize),
    "vocab_grown": _edit_meta(_grow),
    "no_vocab": _edit_meta(lambda m: m.pop("vocab")),
    "no_model": _edit_meta(lambda m: m.pop("model")),
    "bad_model": _edit_meta(lambda m: m["model"].update(hidden=-3)),
    "dup_vocab": _edit_meta(lambda m: m["vocab"].update(itos=["a", "a"])),
    "bad_normalizer": _edit_meta(lambda m: m["series"].update(normalizer=3)),
    # Damage that only the trainer (Trainer.restore) or the checkpoint reader (Checkpoint.model_state) notices.
    "no_rng": _edit_meta(lambda m: m.pop("rng")),
    "bad_trainer": _edit_meta(lambda m: m.update(trainer={"epoch": "x"})),
    "dangling_alias": _edit_meta(lambda m: m.update(aliases={"decoder.weight": "no.such.tensor"})),
    # A tagger's or classifier's word vocabulary without <unk>: a word outside it cannot be read at all.
    "no_unk": _edit_meta(lambda m: m["vocab"]["words"].update(specials=["<pad>"])),
    # A series classifier's labels and normaliser (checkpoint.json 'series_classes').
    "bad_series_classes": _edit_meta(lambda m: m["series_classes"].update(normalizer=3)),
}

# The case table: id -> (argv builder, strings the error line must contain). `c` is a Ctx.
FLAG_FIX = ["got", "must be"]  # "--lr: got -1; must be a number > 0 and <= 1000"


def _t(kind, *a):  # rnnlab train KIND ... with a well-formed training file
    return ["train", kind, *a]


CASES = {
    # -- empty, blank, binary, not UTF-8, for every reader ---------------------------------------------------------
    **{f"{kind}-{name}": ((lambda c, kind=kind, name=name, extra=extra: _t(kind, "--train", BAD / name, *extra,
                                                                          "--out", c.tmp / "o")),
                          ["--train", name, "empty"])
       for kind, extra in (("lm", []), ("tag", []), ("classify", []), ("seq2seq", []), ("regress", ["--target", "1"]),
                           ("classify-series", []))
       for name in ("empty.txt", "blank.txt")},
    **{f"{kind}-binary": ((lambda c, kind=kind, extra=extra: _t(kind, "--train", c.gen / "binary.bin", *extra,
                                                                "--out", c.tmp / "o")),
                          ["--train", "binary.bin", "line 2", "invalid UTF-8", "byte offset 128"])
       for kind, extra in (("lm", []), ("tag", []), ("classify", []), ("seq2seq", []), ("regress", ["--target", "1"]),
                           ("classify-series", []))},
    **{f"{kind}-latin1": ((lambda c, kind=kind, extra=extra: _t(kind, "--train", c.gen / "latin1.txt", *extra,
                                                                "--out", c.tmp / "o")),
                          ["--train", "latin1.txt", "line 1", "invalid UTF-8", "iconv"])
       for kind, extra in (("lm", []), ("tag", []), ("classify", []), ("seq2seq", []), ("regress", ["--target", "1"]),
                           ("classify-series", []))},
    "classify-utf16": (lambda c: _t("classify", "--train", c.gen / "utf16.tsv", "--out", c.tmp / "o"),
                       ["--train", "utf16.tsv", "invalid UTF-8", "convert the file to UTF-8"]),
    "eval-empty": (lambda c: ["eval", c.runs["lm"], "--file", BAD / "empty.txt"], ["--file", "empty.txt", "empty"]),
    "eval-binary": (lambda c: ["eval", c.runs["lm"], "--file", c.gen / "binary.bin"],
                    ["--file", "binary.bin", "invalid UTF-8"]),
    "predict-tagger-empty": (lambda c: ["predict", c.runs["tag"], "--file", BAD / "empty.txt"],
                             ["--file", "empty.txt", "empty"]),
    "predict-tagger-latin1": (lambda c: ["predict", c.runs["tag"], "--file", c.gen / "latin1.conllu"],
                              ["--file", "latin1.conllu", "line 1", "invalid UTF-8"]),
    "predict-classifier-binary": (lambda c: ["predict", c.runs["classify"], "--file", c.gen / "binary.bin"],
                                  ["--file", "binary.bin", "line 2", "invalid UTF-8"]),
    "translate-blank": (lambda c: ["translate", c.runs["seq2seq"], "--file", BAD / "blank.txt"],
                        ["--file", "blank.txt", "no pairs", "source<TAB>target"]),
    "translate-latin1": (lambda c: ["translate", c.runs["seq2seq"], "--file", c.gen / "latin1.txt"],
                         ["--file", "latin1.txt", "line 1", "invalid UTF-8"]),
    "lm-directory": (lambda c: _t("lm", "--train", c.data, "--out", c.tmp / "o"), ["--train", "is a directory"]),
    "lm-missing-file": (lambda c: _t("lm", "--train", c.tmp / "nope.txt", "--out", c.tmp / "o"),
                        ["--train", "nope.txt", "no such file"]),
    # the token cache reads files in chunks: the same errors, and nothing written to the cache directory
    "lm-cached-latin1": (lambda c: _t("lm", "--train", c.gen / "latin1.txt", "--cache-dir", c.tmp / "cache", "--out",
                                      c.tmp / "o"), ["--train", "latin1.txt", "line 1", "invalid UTF-8", "iconv"]),
    "lm-cached-empty-valid": (lambda c: _t("lm", "--train", c.text, "--valid", BAD / "empty.txt", "--cache-dir",
                                           c.tmp / "cache", "--out", c.tmp / "o"), ["--valid", "empty.txt", "empty"]),
    "lm-cached-directory": (lambda c: _t("lm", "--train", c.data, "--cache-dir", c.tmp / "cache", "--out",
                                         c.tmp / "o"), ["--train", "is a directory"]),
    "eval-cached-binary": (lambda c: ["eval", c.runs["lm"], "--file", c.gen / "binary.bin", "--cache-dir",
                                      c.tmp / "cache"], ["--file", "binary.bin", "line 2", "invalid UTF-8"]),
    # -- CoNLL-U -----------------------------------------------------------------------------------------------------
    "conllu-wrong-columns": (lambda c: _t("tag", "--train", BAD / "conllu_wrong_columns.conllu", "--out", c.tmp / "o"),
                             ["--train", "conllu_wrong_columns.conllu", "line 3", "8 tab-separated columns",
                              "10 tab-separated columns"]),
    "conllu-skipped-id": (lambda c: _t("tag", "--train", BAD / "conllu_skipped_id.conllu", "--out", c.tmp / "o"),
                          ["conllu_skipped_id.conllu", "line 3", "word ID 3 where 2 was expected", "count 1, 2, 3"]),
    "conllu-bad-id": (lambda c: _t("tag", "--train", BAD / "conllu_bad_id.conllu", "--out", c.tmp / "o"),
                      ["conllu_bad_id.conllu", "line 2", "'x' is not a valid ID", "10 tab-separated columns"]),
    "conllu-bad-range": (lambda c: _t("tag", "--train", BAD / "conllu_bad_range.conllu", "--out", c.tmp / "o"),
                         ["conllu_bad_range.conllu", "line 2", "'1-x' is not a valid ID"]),
    "conllu-plain-text": (lambda c: _t("tag", "--train", BAD / "conllu_plain_text.conllu", "--out", c.tmp / "o"),
                          ["conllu_plain_text.conllu", "line 1", "no tabs", "is this a CoNLL-U file?"]),
    "conllu-missing-tag": (lambda c: _t("tag", "--train", BAD / "conllu_missing_tag.conllu", "--out", c.tmp / "o"),
                           ["conllu_missing_tag.conllu", "line 1", "no UPOS tag", "--column xpos"]),
    "conllu-only-comments": (lambda c: _t("tag", "--train", BAD / "conllu_only_comments.conllu", "--out",
                                          c.tmp / "o"), ["conllu_only_comments.conllu", "no sentences"]),
    "conllu-as-valid": (lambda c: _t("tag", "--train", c.conllu, "--valid", BAD / "conllu_bad_id.conllu", "--out",
                                     c.tmp / "o"), ["--valid", "conllu_bad_id.conllu", "line 2"]),
    "predict-conllu-wrong-columns": (lambda c: ["predict", c.runs["tag"], "--file",
                                                BAD / "conllu_wrong_columns.conllu"],
                                     ["--file", "conllu_wrong_columns.conllu", "line 3", "--input-format text"]),
    # -- labelled text -------------------------------------------------------------------------------------------
    "labels-missing-column": (lambda c: _t("classify", "--train", BAD / "labels_missing_column.tsv", "--out",
                                           c.tmp / "o"),
                              ["labels_missing_column.tsv", "line 3", "has no tab", "--format space"]),
    "labels-extra-column": (lambda c: _t("classify", "--train", BAD / "labels_extra_column.tsv", "--out", c.tmp / "o"),
                            ["labels_extra_column.tsv", "line 2", "3 tab-separated fields where line 1 has 2"]),
    "labels-empty-label": (lambda c: _t("classify", "--train", BAD / "labels_empty_label.tsv", "--out", c.tmp / "o"),
                           ["labels_empty_label.tsv", "line 2", "the label is missing"]),
    "labels-one-class": (lambda c: _t("classify", "--train", BAD / "labels_one_class.tsv", "--out", c.tmp / "o"),
                         ["labels_one_class.tsv", "only 1 distinct label", "--label-column"]),
    "labels-bad-quote": (lambda c: _t("classify", "--train", BAD / "labels_bad_quote.csv", "--out", c.tmp / "o"),
                         ["labels_bad_quote.csv", "line 3", "not valid CSV", "quote"]),
    "labels-huge-quote": (lambda c: _t("classify", "--train", c.gen / "huge_quote.csv", "--out", c.tmp / "o"),
                          ["huge_quote.csv", "line 2", "not valid CSV"]),
    "labels-unseen-in-valid": (lambda c: _t("classify", "--train", c.labels, "--valid",
                                            BAD / "labels_unseen_label.tsv", "--out", c.tmp / "o"),
                               ["--valid", "labels_unseen_label.tsv", "line 2", "label 'neutral' does not occur in "
                                "the training data", "add examples of it"]),
    "labels-unseen-in-test": (lambda c: _t("classify", "--train", c.labels, "--test", BAD / "labels_unseen_label.tsv",
                                           "--out", c.tmp / "o"),
                              ["--test", "labels_unseen_label.tsv", "line 2", "'neutral'"]),
    "labels-unseen-in-predict": (lambda c: ["predict", c.runs["classify"], "--file", BAD / "labels_unseen_label.tsv",
                                            "--input-format", "labeled"],
                                 ["--file", "labels_unseen_label.tsv", "line 2", "'neutral'"]),
    "labels-column-out-of-range": (lambda c: _t("classify", "--train", c.labels, "--label-column", "7", "--out",
                                                c.tmp / "o"), ["--label-column '7'", "out of range", "0 to 1"]),
    # -- numeric series -------------------------------------------------------------------------------------------
    "series-text-cell": (lambda c: _t("regress", "--train", BAD / "series_text_cell.csv", "--target", "value",
                                      "--out", c.tmp / "o"),
                         ["series_text_cell.csv", "line 3", "column 2", "'high' is not a number", "fix the cell"]),
    "series-missing-cell": (lambda c: _t("regress", "--train", BAD / "series_missing_cell.csv", "--target", "value",
                                         "--out", c.tmp / "o"),
                            ["series_missing_cell.csv", "line 3", "a missing value ('NA')", "Fill it"]),
    "series-infinite": (lambda c: _t("regress", "--train", BAD / "series_infinite.csv", "--target", "value", "--out",
                                     c.tmp / "o"), ["series_infinite.csv", "line 3", "'inf' is not a finite number"]),
    "series-ragged": (lambda c: _t("regress", "--train", BAD / "series_ragged.csv", "--target", "value", "--out",
                                   c.tmp / "o"), ["--train", "series_ragged.csv", "line 3 has 1 cell"]),
    "series-header-only": (lambda c: _t("regress", "--train", BAD / "series_header_only.csv", "--target", "value",
                                        "--out", c.tmp / "o"), ["series_header_only.csv", "no data rows"]),
    "series-only-delimiters": (lambda c: _t("regress", "--train", BAD / "series_only_delimiters.csv", "--target", "1",
                                            "--out", c.tmp / "o"), ["series_only_delimiters.csv", "no cells"]),
    "series-nul-byte": (lambda c: _t("regress", "--train", c.gen / "nul.csv", "--target", "value", "--out",
                                     c.tmp / "o"), ["nul.csv", "line 2", "is not a number"]),
    "series-huge-quote": (lambda c: _t("regress", "--train", c.gen / "huge_quote.csv", "--target", "value", "--out",
                                       c.tmp / "o"),
                          ["huge_quote.csv", "line ", "not readable as CSV", "unclosed quote"]),
    "series-no-such-target": (lambda c: _t("regress", "--train", c.series, "--target", "nope", "--out", c.tmp / "o"),
                              ["series.csv", "target 'nope'", "no such column", "1=t, 2=value"]),
    "series-window-too-long": (lambda c: _t("regress", "--train", c.series, "--target", "value", "--window", "500",
                                            "--out", c.tmp / "o"), ["series.csv", "window of 500", "shorter window"]),
    # -- numeric series to classify (.ts) --------------------------------------------------------------------------
    **{f"ts-{name}": ((lambda c, name=name: _t("classify-series", "--train", BAD / f"ts_{name}.ts", "--out",
                                                c.tmp / "o")), ["--train", f"ts_{name}.ts", *must])
       for name, must in (
           ("wrong_dimensions", ["line 8", "3 dimensions where @dimensions says 2", "separate dimensions with ':'"]),
           ("text_value", ["line 7, dimension 1, value 3", "'x1' is not a number", "fix the value"]),
           ("unknown_label", ["line 7", "the class label 'sideways' is not in @classLabel (up, down)"]),
           ("no_data", ["line 3", "with no @data line above it", "then a line '@data'"]),
           ("ragged_case", ["line 7", "dimension 2 has 2 values where dimension 1 has 3", "the same length"]),
           ("missing_value", ["line 7, dimension 1, value 2", "a missing value ('?')", "--missing fill"]),
           ("no_labels", ["@classLabel false", "no class labels", "@classLabel true LABEL1"]),
           ("one_class", ["only 1 distinct label", "at least two classes"]),
           ("unequal_length", ["line 7", "4 values per dimension where @seriesLength says 3", "@equalLength false"]),
           ("unknown_header", ["line 2", "unknown header line '@clasLabel'", "check the spelling"]))},
    "ts-unknown-label-in-test": (lambda c: _t("classify-series", "--train", c.series_ts, "--test",
                                              BAD / "ts_unknown_label.ts", "--out", c.tmp / "o"),
                                 ["--test", "ts_unknown_label.ts", "line 7", "'sideways'"]),
    "ts-to-train-classify": (lambda c: _t("classify", "--train", BAD / "ts_text_value.ts", "--out", c.tmp / "o"),
                             ["--train", "ts_text_value.ts", "a file of numeric series", "classify-series"]),
    "ts-predict-unknown-label": (lambda c: ["predict", c.runs["classify-series"], "--file",
                                            BAD / "ts_unknown_label.ts"],
                                 ["--file", "ts_unknown_label.ts", "line 7", "'sideways'"]),
    "ts-predict-missing-value": (lambda c: ["predict", c.runs["classify-series"], "--file",
                                            BAD / "ts_missing_value.ts"],
                                 ["--file", "ts_missing_value.ts", "line 7", "a missing value"]),
    "ts-predict-text-file": (lambda c: ["predict", c.runs["classify-series"], "--file", BAD / "ok.txt"],
                             ["--file", "ok.txt", "line 1", "with no @data line above it"]),
    "ts-predict-damaged-normaliser": (lambda c: ["predict", c.damaged("classify-series", "bad_series_classes"),
                                                 "--file", c.series_ts],
                                      ["RUN_DIR", "checkpoint.json has no readable series classifier data"]),
    "series-classifier-to-generate": (lambda c: ["generate", c.runs["classify-series"]],
                                      ["'rnnlab train classify-series' run", "not a language model"]),
    "series-classifier-to-resume-classify": (lambda c: _t("classify", "--resume", c.runs["classify-series"]),
                                             ["--resume", "holds an 'rnnlab train classify-series' run",
                                              "use 'rnnlab train classify-series --resume"]),
    "flag-classify-series-valid-fraction": (lambda c: _t("classify-series", "--train", c.series_ts,
                                                         "--valid-fraction", "0.7", "--out", c.tmp / "o"),
                                            ["--valid-fraction:", *FLAG_FIX]),
    # -- seq2seq pairs ------------------------------------------------------------------------------------------------
    "pairs-no-tab": (lambda c: _t("seq2seq", "--train", BAD / "pairs_no_tab.tsv", "--out", c.tmp / "o"),
                     ["--train", "pairs_no_tab.tsv", "line 1", "no tab", "exactly one tab"]),
    "pairs-two-tabs": (lambda c: _t("seq2seq", "--train", BAD / "pairs_two_tabs.tsv", "--out", c.tmp / "o"),
                       ["pairs_two_tabs.tsv", "line 2", "2 tabs"]),
    "pairs-empty-target": (lambda c: _t("seq2seq", "--train", BAD / "pairs_empty_target.tsv", "--out", c.tmp / "o"),
                           ["pairs_empty_target.tsv", "line 2", "target (after the tab) is empty"]),
    "pairs-empty-source": (lambda c: _t("seq2seq", "--train", BAD / "pairs_empty_source.tsv", "--out", c.tmp / "o"),
                           ["pairs_empty_source.tsv", "line 1", "source (before the tab) is empty"]),
    "translate-two-tabs": (lambda c: ["translate", c.runs["seq2seq"], "--file", BAD / "pairs_two_tabs.tsv"],
                           ["--file", "pairs_two_tabs.tsv", "line 2", "2 tabs"]),
    # -- damaged checkpoints ----------------------------------------------------------------------------------------
    "generate-truncated-weights": (lambda c: ["generate", c.damaged("lm", "truncated")],
                                   ["CHECKPOINT", "model.safetensors", "not a readable safetensors file",
                                    "best/ instead of last/", "retrain"]),
    "eval-truncated-weights": (lambda c: ["eval", c.damaged("lm", "truncated"), "--file", c.text],
                               ["model.safetensors", "damaged"]),
    "resume-truncated-weights": (lambda c: _t("lm", "--resume", c.damaged("lm", "truncated")),
                                 ["--resume", "last/model.safetensors", "damaged"]),
    "predict-truncated-weights": (lambda c: ["predict", c.damaged("tag", "truncated"), "--file", BAD / "ok.txt"],
                                  ["RUN_DIR", "model.safetensors"]),
    "translate-truncated-weights": (lambda c: ["translate", c.damaged("seq2seq", "truncated"), "--file", c.pairs],
                                    ["RUN_DIR", "model.safetensors"]),
    "predict-missing-weights": (lambda c: ["predict", c.damaged("classify", "no_weights"), "--file", BAD / "ok.txt"],
                                ["RUN_DIR", "model.safetensors is missing", "retrain"]),
    "generate-json-not-json": (lambda c: ["generate", c.damaged("lm", "not_json")],
                               ["checkpoint.json", "not valid JSON", "damaged", "retrain"]),
    "predict-json-not-json": (lambda c: ["predict", c.damaged("tag", "not_json"), "--file", BAD / "ok.txt"],
                              ["RUN_DIR", "checkpoint.json", "not valid JSON"]),
    "resume-json-not-json": (lambda c: _t("tag", "--resume", c.damaged("tag", "not_json")),
                             ["--resume", "checkpoint.json", "not valid JSON"]),
    "translate-json-binary": (lambda c: ["translate", c.damaged("seq2seq", "binary_json"), "--file", c.pairs],
                              ["RUN_DIR", "checkpoint.json"]),
    "generate-json-a-list": (lambda c: ["generate", c.damaged("lm", "json_list")],
                             ["checkpoint.json", "not an rnnlab checkpoint", "pass the directory", "retrain"]),
    "generate-no-vocab": (lambda c: ["generate", c.damaged("lm", "no_vocab")],
                          ["CHECKPOINT", "no readable vocabulary", "retrain"]),
    "resume-no-vocab": (lambda c: _t("classify", "--resume", c.damaged("classify", "no_vocab")),
                        ["--resume", "no readable vocabulary", "retrain"]),
    "translate-no-model": (lambda c: ["translate", c.damaged("seq2seq", "no_model"), "--file", c.pairs],
                           ["RUN_DIR", "no readable model config", "retrain"]),
    "resume-no-model": (lambda c: _t("regress", "--resume", c.damaged("regress", "no_model")),
                        ["--resume", "retrain"]),
    "generate-bad-model-config": (lambda c: ["generate", c.damaged("lm", "bad_model")],
                                  ["CHECKPOINT", "checkpoint.json", "hidden must be an integer >= 1; got -3",
                                   "retrain"]),
    "resume-bad-model-config": (lambda c: _t("seq2seq", "--resume", c.damaged("seq2seq", "bad_model")),
                                ["--resume", "hidden must be an integer >= 1; got -3", "retrain"]),
    "generate-duplicate-vocab": (lambda c: ["generate", c.damaged("lm", "dup_vocab")],
                                 ["checkpoint.json", "must be unique", "retrain"]),
    "resume-duplicate-vocab": (lambda c: _t("lm", "--resume", c.damaged("lm", "dup_vocab")),
                               ["--resume", "must be unique", "retrain"]),
    "resume-bad-normalizer": (lambda c: _t("regress", "--resume", c.damaged("regress", "bad_normalizer")),
                              ["--resume", "normalizer", "retrain"]),
    # -- a vocabulary that does not fit the weights ---------------------------------------------------------------
    "generate-vocab-smaller": (lambda c: ["generate", c.damaged("lm", "vocab_resized")],
                               ["CHECKPOINT", "vocabulary in checkpoint.json has 5 entries", "'vocab_size'"]),
    "generate-vocab-larger": (lambda c: ["generate", c.damaged("lm", "vocab_grown")],
                              ["CHECKPOINT", "entries but the model was built for", "retrain"]),
    "eval-vocab-larger": (lambda c: ["eval", c.damaged("lm", "vocab_grown"), "--file", c.text],
                          ["CHECKPOINT", "does not belong to these weights"]),
    "resume-lm-vocab-smaller": (lambda c: _t("lm", "--resume", c.damaged("lm", "vocab_resized")),
                                ["--resume", "has 5 entries", "'vocab_size'"]),
    "predict-tagger-vocab": (lambda c: ["predict", c.damaged("tag", "vocab_resized"), "--file", BAD / "ok.txt"],
                             ["RUN_DIR", "word vocabulary", "has 3 entries", "'num_words'"]),
    "resume-tagger-vocab": (lambda c: _t("tag", "--resume", c.damaged("tag", "vocab_resized")),
                            ["--resume", "word vocabulary", "'num_words'"]),
    "predict-classifier-labels": (lambda c: ["predict", c.damaged("classify", "vocab_resized"), "--file",
                                             BAD / "ok.txt"], ["RUN_DIR", "label list", "has 3 entries",
                                                               "'n_outputs'"]),
    "resume-classifier-labels": (lambda c: _t("classify", "--resume", c.damaged("classify", "vocab_resized")),
                                 ["--resume", "label list", "'n_outputs'"]),
    "translate-vocab": (lambda c: ["translate", c.damaged("seq2seq", "vocab_resized"), "--file", c.pairs],
                        ["RUN_DIR", "target vocabulary", "has 5 entries", "'tgt_vocab'"]),
    "resume-seq2seq-vocab": (lambda c: _t("seq2seq", "--resume", c.damaged("seq2seq", "vocab_resized")),
                             ["--resume", "target vocabulary", "'tgt_vocab'"]),
    # -- a run given to the wrong command ---------------------------------------------------------------------------
    "lm-to-predict": (lambda c: ["predict", c.runs["lm"], "--file", BAD / "ok.txt"],
                      ["RUN_DIR", "'rnnlab train lm' run", "not a tagger or a text classifier",
                       "read it with 'rnnlab generate / eval'", "'rnnlab train tag' or 'rnnlab train classify'"]),
    "lm-to-translate": (lambda c: ["translate", c.runs["lm"], "--file", c.pairs],
                        ["RUN_DIR", "'rnnlab train lm' run", "'rnnlab train seq2seq'"]),
    "lm-to-diagnose": (lambda c: ["diagnose", c.runs["lm"], "--out", c.tmp / "d"],
                       ["RUN_DIR", "'rnnlab train lm' run", "'rnnlab task'"]),
    "tagger-to-generate": (lambda c: ["generate", c.runs["tag"]],
                           ["CHECKPOINT", "'rnnlab train tag' run (model 'bi_rnn_tagger')", "not a language model",
                            "read it with 'rnnlab predict'", "'rnnlab train lm'"]),
    "tagger-to-eval": (lambda c: ["eval", c.runs["tag"], "--file", c.text], ["CHECKPOINT", "not a language model"]),
    "classifier-to-generate": (lambda c: ["generate", c.runs["classify"]],
                               ["'rnnlab train classify' run", "not a language model"]),
    "classifier-to-diagnose": (lambda c: ["diagnose", c.runs["classify"], "--out", c.tmp / "d"],
                               ["RUN_DIR", "not a run of 'rnnlab task'", "pass a run directory written by"]),
    "seq2seq-to-predict": (lambda c: ["predict", c.runs["seq2seq"], "--file", BAD / "ok.txt"],
                           ["RUN_DIR", "'rnnlab train seq2seq' run", "read it with 'rnnlab translate'"]),
    "regress-to-predict": (lambda c: ["predict", c.runs["regress"], "--file", BAD / "ok.txt"],
                           ["RUN_DIR", "'rnnlab train regress' run", "without a text vocabulary"]),
    "regress-to-generate": (lambda c: ["generate", c.runs["regress"]],
                            ["'rnnlab train regress' run", "not a language model"]),
    "tagger-to-resume-lm": (lambda c: _t("lm", "--resume", c.runs["tag"]),
                            ["--resume", "holds an 'rnnlab train tag' run", "use 'rnnlab train tag --resume"]),
    "lm-to-resume-tag": (lambda c: _t("tag", "--resume", c.runs["lm"]), ["--resume", "rnnlab train lm --resume"]),
    "lm-to-resume-task": (lambda c: ["task", "parity", "--resume", c.runs["lm"]],
                          ["--resume", "holds an 'rnnlab train lm' run", "use 'rnnlab train lm --resume"]),
    "text-file-to-generate": (lambda c: ["generate", c.text], ["CHECKPOINT", "text.txt", "is a file"]),
    "data-dir-to-predict": (lambda c: ["predict", c.data, "--file", BAD / "ok.txt"],
                            ["RUN_DIR", "not a checkpoint", "--out"]),
    # -- nonsensical flags ----------------------------------------------------------------------------------------
    **{f"flag-lm-{f[0][2:]}-{f[1]}": ((lambda c, f=f: _t("lm", "--train", c.text, *f, "--out", c.tmp / "o")),
                                 [f[0] + ":", *FLAG_FIX])
       for f in (("--bptt", "0"), ("--lr", "-1"), ("--lr", "nan"), ("--lr", "inf"), ("--epochs", "0"),
                 ("--hidden", "0"), ("--hidden", "-4"), ("--emb", "0"), ("--layers", "0"), ("--dropout", "1.5"),
                 ("--dropout", "-0.1"), ("--batch-size", "-3"), ("--eval-batch-size", "0"), ("--clip-norm", "0"),
                 ("--max-minutes", "0"), ("--max-steps", "-1"), ("--seed", "-1"), ("--threads", "0"),
                 ("--momentum", "2"), ("--weight-decay", "-1"), ("--lr-decay", "0"), ("--valid-fraction", "1"),
                 ("--samples", "-1"), ("--bpe-vocab", "10"), ("--epochs", "many"))},
    "flag-tag-char-hidden": (lambda c: _t("tag", "--train", c.conllu, "--char-hidden", "-1", "--out", c.tmp / "o"),
                             ["--char-hidden:", *FLAG_FIX]),
    "flag-classify-hidden": (lambda c: _t("classify", "--train", c.labels, "--hidden", "0", "--out", c.tmp / "o"),
                             ["--hidden:", *FLAG_FIX]),
    "flag-regress-window": (lambda c: _t("regress", "--train", c.series, "--target", "value", "--window", "0", "--out",
                                         c.tmp / "o"), ["--window:", *FLAG_FIX]),
    "flag-regress-horizon": (lambda c: _t("regress", "--train", c.series, "--target", "value", "--horizon", "-2",
                                          "--out", c.tmp / "o"), ["--horizon:", *FLAG_FIX]),
    "flag-seq2seq-min-len": (lambda c: _t("seq2seq", "--task", "reverse", "--min-len", "0", "--out", c.tmp / "o"),
                             ["--min-len:", *FLAG_FIX]),
    "flag-seq2seq-min-above-max": (lambda c: _t("seq2seq", "--task", "reverse", "--min-len", "9", "--max-len", "3",
                                                "--out", c.tmp / "o"), ["--min-len 9", "--max-len 3", "swap them"]),
    "flag-task-hidden": (lambda c: ["task", "parity", "--hidden", "0", "--out", c.tmp / "o"], ["--hidden:", *FLAG_FIX]),
    "flag-diagnose-length": (lambda c: ["diagnose", "--task", "adding", "--length", "1", "--out", c.tmp / "d"],
                             ["--length:", *FLAG_FIX]),
    "flag-generate-temperature": (lambda c: ["generate", c.runs["lm"], "--temperature", "0"],
                                  ["--temperature:", *FLAG_FIX]),
    "flag-generate-top-p": (lambda c: ["generate", c.runs["lm"], "--top-p", "1.5"], ["--top-p:", *FLAG_FIX]),
    "flag-generate-max-tokens": (lambda c: ["generate", c.runs["lm"], "--max-tokens", "0"],
                                 ["--max-tokens:", *FLAG_FIX]),
    "flag-eval-bptt": (lambda c: ["eval", c.runs["lm"], "--file", c.text, "--bptt", "0"], ["--bptt:", *FLAG_FIX]),
    "flag-translate-beam": (lambda c: ["translate", c.runs["seq2seq"], "--file", c.pairs, "--beam", "0"],
                            ["--beam:", *FLAG_FIX]),
    "flag-predict-batch-size": (lambda c: ["predict", c.runs["tag"], "--file", BAD / "ok.conllu", "--batch-size",
                                           "0"],
                                ["--batch-size:", *FLAG_FIX]),
    "flag-lm-batch-too-big": (lambda c: _t("lm", "--train", c.text, "--batch-size", "400", "--out", c.tmp / "o"),
                              ["--batch-size 400", "too few", "smaller batch size"]),
    **{f"device-{cmd}": (build, ["--device 'bogus'", "not a torch device name", "cpu"]) for cmd, build in (
        ("generate", lambda c: ["generate", c.runs["lm"], "--device", "bogus"]),
        ("eval", lambda c: ["eval", c.runs["lm"], "--file", c.text, "--device", "bogus"]),
        ("predict-tagger", lambda c: ["predict", c.runs["tag"], "--file", BAD / "ok.txt", "--device", "bogus"]),
        ("predict-classifier", lambda c: ["predict", c.runs["classify"], "--file", BAD / "ok.txt", "--device",
                                          "bogus"]),
        ("translate", lambda c: ["translate", c.runs["seq2seq"], "--file", c.pairs, "--device", "bogus"]))},
    "device-train": (lambda c: _t("lm", "--train", c.text, "--device", "bogus", "--out", c.tmp / "o"),
                     ["--device", "bogus", "--device cpu"]),
    # -- output directories ---------------------------------------------------------------------------------------
    "out-is-a-file": (lambda c: _t("lm", "--train", c.text, *TINY["lm"], "--out", c.gen / "a_file"),
                      ["--out", "a_file", "is a file", "choose a directory"]),
    "out-is-a-file-task": (lambda c: ["task", "parity", "--out", c.gen / "a_file"],
                           ["--out", "a_file", "is a file", "choose a directory"]),
    "out-inside-a-file": (lambda c: _t("tag", "--train", c.conllu, "--out", c.gen / "a_file" / "run"),
                          ["--out", "which is a file"]),
    "out-is-a-checkpoint": (lambda c: _t("lm", "--train", c.text, "--out", c.runs["lm"] / "last"),
                            ["--out", "is a checkpoint directory", "its parent or a new one"]),
    "out-holds-a-run": (lambda c: _t("lm", "--train", c.text, "--test", BAD / "empty.txt", "--out", c.runs["lm"]),
                        ["--out", "already holds a run", "--resume"]),
    "resume-into-another-run": (lambda c: _t("lm", "--resume", c.runs["lm"], "--out", c.runs["tag"], "--epochs", "2"),
                                ["--out", "already holds another run", "would overwrite", "choose an empty"]),
    # -- resuming a finished run with a bad file: it must stop before touching the run --------------------------------
    "resume-with-bad-test-tag": (lambda c: _t("tag", "--resume", c.runs["tag"], "--epochs", "2", "--test",
                                              BAD / "conllu_skipped_id.conllu"),
                                 ["--test", "conllu_skipped_id.conllu", "line 3"]),
    "resume-with-bad-test-classify": (lambda c: _t("classify", "--resume", c.runs["classify"], "--epochs", "2",
                                                   "--test", BAD / "labels_unseen_label.tsv"),
                                      ["--test", "labels_unseen_label.tsv", "line 2", "'neutral'"]),
    "resume-with-changed-flag": (lambda c: _t("lm", "--resume", c.runs["lm"], "--lr", "0.5"),
                                 ["--lr cannot change when resuming", "drop it"]),
    # -- damage only Trainer.restore or Checkpoint.model_state notices ----------------------------------------------
    "resume-without-rng-state": (lambda c: _t("lm", "--resume", c.damaged("lm", "no_rng")),
                                 ["--resume", "last/checkpoint.json", "no RNG states ('rng')", "retrain"]),
    "resume-bad-trainer-state": (lambda c: _t("classify", "--resume", c.damaged("classify", "bad_trainer")),
                                 ["--resume", "last/checkpoint.json", "trainer state", "'epoch' = 'x'",
                                  "an integer >= 0", "best/ instead of last/", "retrain"]),
    "generate-dangling-alias": (lambda c: ["generate", c.damaged("lm", "dangling_alias")],
                                ["CHECKPOINT", "checkpoint.json", "'aliases' maps 'decoder.weight' to "
                                 "'no.such.tensor'", "model.safetensors does not hold", "retrain"]),
    # -- input outside a vocabulary without <unk> (the LM's characters: its training text had every one it met) ------
    "eval-unknown-characters": (lambda c: ["eval", c.runs["lm"], "--file", BAD / "lm_unknown_chars.txt"],
                                ["--file", "lm_unknown_chars.txt", "4 of 20 characters", "not in the model's "
                                 "vocabulary ('T' ×1, 'Q' ×1, 'B' ×1, 'F' ×1)", "no <unk>", "retrain"]),
    "generate-unknown-prompt": (lambda c: ["generate", c.runs["lm"], "--prompt", "Über"],
                                ["1 of 4 characters in --prompt", "'Ü' U+00DC ×1", "no <unk>", "remove"]),
    "predict-tagger-no-unk": (lambda c: ["predict", c.damaged("tag", "no_unk"), "--file", BAD / "ok.txt", "--output",
                                         c.tmp / "o"],
                              ["--file", "ok.txt", "4 of 4 words", "'The' ×1", "no <unk>", "remove these words"]),
    "predict-classifier-no-unk": (lambda c: ["predict", c.damaged("classify", "no_unk"), "--file", BAD / "ok.txt",
                                             "--output", c.tmp / "o"],
                                  ["--file", "ok.txt", "4 of 4 words", "'barks' ×1", "no <unk>"]),
}


def _hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _check_one_line(capsys, argv, must) -> str:
    rc, out, err = cli(capsys, *argv)
    assert "Traceback" not in err + out, err
    lines = err.strip().splitlines()
    assert rc == 2, (rc, out, err)
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error: "), err
    for m in must:
        assert m in lines[0], (m, lines[0])
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_with_exit_code_2_and_loses_nothing(case, ctx, world, capsys):
    build, must = CASES[case]
    argv = build(ctx)
    runs_root = world[1]["lm"].parent
    before, before_tmp = _hashes(runs_root), _hashes(ctx.tmp)
    _check_one_line(capsys, argv, must)
    assert _hashes(runs_root) == before, "a trained run was changed"
    assert _hashes(ctx.tmp) == before_tmp, "a damaged checkpoint or an output was written"
    assert not (ctx.tmp / "o").exists() and not (ctx.tmp / "d").exists()


def test_the_corpus_is_small_and_every_file_is_used():
    files = sorted(p.name for p in BAD.iterdir() if p.suffix != ".md")
    assert all((BAD / f).stat().st_size <= 500 for f in files)
    used = " ".join(str(a) for build, _ in CASES.values() for a in build(_Recorder()))
    assert [f for f in files if f not in used] == []


class _Recorder(Ctx):
    """A Ctx whose paths are only names, to list the files the cases use without running anything."""

    def __init__(self) -> None:
        super().__init__(Path("data"), {k: Path("runs") / k for k in TINY}, Path("gen"), Path("tmp"))

    def damaged(self, kind: str, how: str) -> Path:
        return Path("tmp") / f"{kind}-{how}"


def test_device_errors_cut_torch_messages_at_a_word(monkeypatch):
    from rnnlab.cli import common
    from rnnlab.cli.options import UsageError, clip_words

    assert clip_words("short  text\n here") == "short text here"
    long = "the CUDA driver on this machine is too old for the installed torch build please update " * 3
    cut = clip_words(long, 60)
    assert len(cut) <= 60 and cut.endswith(" …") and long.startswith(cut[:-2])
    assert long[len(cut) - 2] == " "  # the cut ends a word
    monkeypatch.setattr(common.torch, "empty", lambda *a, **k: (_ for _ in ()).throw(RuntimeError(long)))
    with pytest.raises(UsageError) as exc:
        common.torch_device("cuda:3", None)
    msg = str(exc.value)
    assert msg.startswith("--device cuda:3: not usable on this machine (the CUDA driver") and msg.endswith(
        " …); use --device cpu")
    why = msg[msg.index("(") + 1:msg.index(" …)")]
    assert long.startswith(why) and long[len(why)] == " "
