"""``rnnlab`` command: argparse wiring for the subcommands (one module each in this package).

Every user error ends here as ONE line on stderr, ``rnnlab: error: ...``, and exit code 2 — no traceback unless
``--debug`` is given; so does a missing optional package (``rnnlab._optional.MissingExtra``, naming the extra to
install). An unexpected failure is also one line (exit code 1), with a hint to rerun with ``--debug``.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import traceback

from .._optional import MissingExtra
from . import demo, diagnose, predict, task, train
from . import eval as eval_cmd
from . import export as export_cmd
from . import generate as generate_cmd
from . import translate
from .options import UsageError

PROG = "rnnlab"

# Each subcommand module provides add_parser(subparsers, parents) and run(args) -> int.
SUBCOMMANDS = (demo, train, task, eval_cmd, generate_cmd, predict, translate, diagnose, export_cmd)

EPILOG = """\
examples:
  rnnlab demo                         a 20-second engine check: a small LSTM on the parity task, then the
                                      gradient-through-time probe of the last batch (writes nothing)
  rnnlab demo --steps 300 --hidden 32 a fixed number of steps instead of the time budget
  rnnlab demo --backend python        force the pure-PyTorch engine (same as RNNLAB_BACKEND=python)
  rnnlab train lm --stdlib-demo       the main demo ('make demo' runs it for 3 minutes): a char-level LSTM on
                                      Python's own source, checkpoints in --out, then samples
  rnnlab train tag --train en_ewt-ud-train.conllu --valid en_ewt-ud-dev.conllu
                                      a BiLSTM part-of-speech tagger from CoNLL-U
  rnnlab train classify --train stsa.binary.train --valid stsa.binary.dev
                                      a sentence classifier from a labelled text file (TSV, CSV, "label text")
  rnnlab train regress --train series.csv --target value --window 30
                                      next-value forecasting on a numeric CSV, against the last-value baseline
  rnnlab train classify-series --train X_TRAIN.ts --test X_TEST.ts
                                      classify numeric sequences (UEA/UCR .ts or NPZ), e.g. speech or motion
  rnnlab task parity                  a memory task (parity, adding, copy) or sequential MNIST, trained and tested
  rnnlab diagnose --task adding --cell rnn_tanh --length 100
                                      does the gradient vanish or explode through time? figures + report.html
  rnnlab predict runs/tagger --file sentences.txt
                                      tag (or classify) new sentences with a trained tagger (or classifier)
  rnnlab export runs/tagger --onnx tagger.onnx
                                      an ONNX graph of a trained LM, classifier or tagger (any batch and length)
  rnnlab --debug demo ...             show the full traceback when something fails
  rnnlab demo --help                  every option of a subcommand

environment:
  RNNLAB_BACKEND=cpp|python           force an engine backend (default: the C++ one when it builds)
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a parse error is raised as UsageError so that main() prints it as one line."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{_tidy(message)} (see '{self.prog} --help')")


def _tidy(message: str) -> str:
    # "argument --steps: got 0; ..." -> "--steps: got 0; ..."; "argument command: invalid choice" -> "invalid command"
    message = re.sub(r"^argument COMMAND: invalid choice", "unknown command", message)
    return re.sub(r"^argument ([^:]+): ", lambda m: m.group(1).split("/")[-1] + ": ", message)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback when something fails")
    parser = _Parser(
        prog=PROG,
        description="rnnlab: recurrent networks for PyTorch with a readable BPTT engine and a gradient-through-time probe.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", parser_class=_Parser)
    for module in SUBCOMMANDS:
        module.add_parser(sub, [common])
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rnnlab")
    except PackageNotFoundError:  # running from a source tree that was not pip-installed
        return "(not installed)"


def _tolerant_streams() -> None:
    """Under a locale that cannot encode the CLI's own characters (LANG=C with an ASCII stdout: '→', 'λ', '×'), write
    them as backslash escapes instead of failing with UnicodeEncodeError in the middle of a run."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if hasattr(stream, "reconfigure") and encoding != "utf8":
            stream.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _tolerant_streams()
    debug = "--debug" in argv or os.environ.get("RNNLAB_DEBUG", "") not in ("", "0")
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError(f"no command given; try '{PROG} demo' (see '{PROG} --help')")
        return int(args.run(args) or 0)
    except (UsageError, MissingExtra) as exc:  # MissingExtra: an optional package missing, the line names its extra
        if debug:
            traceback.print_exc()
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rnnlab demo | head`: the reader left; say nothing more
        try:
            sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - keep the interpreter from failing at exit
        finally:
            return 1  # noqa: B012
    except Exception as exc:  # noqa: BLE001 - one line for users, the traceback with --debug
        if debug:
            traceback.print_exc()
            print(f"{PROG}: error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        else:
            print(f"{PROG}: error: {type(exc).__name__}: {_one_line(exc)} (rerun with --debug for the traceback)",
                  file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or "(no message)"


if __name__ == "__main__":
    sys.exit(main())
