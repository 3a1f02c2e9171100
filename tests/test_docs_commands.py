"""Every ``rnnlab ...`` command line in README.md and docs/*.md parses with the real ``rnnlab`` parser, so a renamed
or misspelt flag in the docs fails a test instead of a reader.

What counts as a command: a line of a fenced code block (```, ```sh, ```bash, ```shell, ```zsh; ```console lines
after a ``$ `` prompt; other languages — python, text, output — are skipped) whose simple command is ``rnnlab ARGS``,
``python -m rnnlab ARGS`` or ``torchrun ... -m rnnlab ARGS``. The line is read as a shell would: lines ending in
``\\`` are joined, ``# comments`` dropped, ``;``, ``&&``, ``||``, ``|`` and ``&`` separate commands (``for ...; do``,
``done``, ``if`` ... are shell around them), redirections and their targets are removed, leading ``NAME=value``
assignments (``RNNLAB_BACKEND=cpp rnnlab ...``) skipped, quotes removed and brace expansions (``runs/s{1,2}``,
``{1..4}``) expanded. A word holding a shell variable or command substitution (``$U/train.txt``, ``${D}``,
``$(...)``) is accepted wherever a value goes: its type and choices cannot be checked.

The check (``command_error``): argparse must accept the words — no unknown or abbreviated flag (an abbreviation
works today and becomes ambiguous when a flag with the same prefix arrives), no missing required argument, every
literal value of the right type and among the choices. Nothing runs: data paths may be placeholders. Then the pure
option checks a command makes before it reads anything (which flags go together: ``_resolve`` of the ``train``
commands, ``_check`` of ``task`` and ``diagnose``) run on the parsed options, unless the line resumes a run (its
options come from the checkpoint).

Each command is one test, named ``FILE:LINE`` (the line where the command starts).
"""
from __future__ import annotations

import argparse
import functools
import io
import re
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rnnlab.cli.main import build_parser
from rnnlab.cli.options import UsageError

ROOT = Path(__file__).resolve().parents[1]
SHELL_BLOCKS = {"", "sh", "bash", "shell", "zsh", "console"}
PROMPT_BLOCKS = {"console"}  # only the lines after a '$ ' prompt are commands
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`{]*)")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SHELL_WORDS = {"do", "then", "else", "elif", "if", "while", "until", "time", "!", "{", "nohup", "exec", "env"}


def doc_files() -> list[Path]:
    return [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))] if p.is_file()]


# -- reading shell lines -------------------------------------------------------------------------------------------
@dataclass
class Word:
    chars: list = field(default_factory=list)  # (character, quoted) pairs
    dynamic: bool = False  # holds $VAR, ${...}, $(...) or `...`: its value is known only to the shell

    @property
    def text(self) -> str:
        return "".join(c for c, _ in self.chars)


def _lex(line: str) -> list:
    """Words (``Word``) and operators (``("op", text)``, ``("redirect", text)``) of one logical shell line."""
    tokens, word, i, n = [], None, 0, len(line)

    def flush():
        nonlocal word
        if word is not None:
            tokens.append(word)
        word = None

    def add(text, quoted):
        nonlocal word
        word = word or Word()
        word.chars.extend((c, quoted) for c in text)

    while i < n:
        c = line[i]
        if c == "#" and word is None:  # a comment runs to the end of the line
            break
        if c in " \t":
            flush()
            i += 1
        elif c == "\\":
            add(line[i + 1:i + 2], True)
            i += 2
        elif c == "'":
            j = line.find("'", i + 1)
            j = n if j < 0 else j
            add(line[i + 1:j], True)
            i = j + 1
        elif c == '"':
            i += 1
            add("", True)
            while i < n and line[i] != '"':
                if line[i] == "\\" and i + 1 < n and line[i + 1] in '"\\$`':
                    add(line[i + 1], True)
                    i += 2
                    continue
                if line[i] in "$`":
                    word.dynamic = True
                add(line[i], True)
                i += 1
            i += 1
        elif c == "$" or c == "`":
            add("", False)
            word.dynamic = True
            if c == "`" or line[i + 1:i + 2] in ("(", "{"):  # $(...), ${...}, `...`: one opaque piece of the word
                close = {"(": ")", "{": "}"}.get(line[i + 1:i + 2], "`")
                opener = line[i + 1] if c == "$" else "`"
                depth, j = 0, i + 1
                while j < n:
                    if line[j] == opener and opener != "`":
                        depth += 1
                    elif line[j] == close:
                        depth -= 1
                        if depth <= 0 and (opener != "`" or j > i):
                            break
                    j += 1
                add(line[i:j + 1], True)
                i = j + 1
            else:
                add("$", True)
                i += 1
        elif c in "<>" or (c == "&" and line[i + 1:i + 2] == ">"):
            if word is not None and word.text.isdigit() and not any(q for _, q in word.chars):
                word = None  # the 2 of 2>file
            flush()
            m = re.match(r"&>>|&>|>>|>&|>\||>|<<<|<<|<&|<>|<", line[i:])
            tokens.append(("redirect", m.group(0)))
            i += len(m.group(0))
        elif c in ";|&()":
            flush()
            m = re.match(r"&&|\|\||;;|\|&|[;|&()]", line[i:])
            tokens.append(("op", m.group(0)))
            i += len(m.group(0))
        else:
            add(c, False)
            i += 1
    flush()
    return tokens


def _brace_expand(chars: list) -> list:
    """Bash's brace expansion of one word: ``a{b,c}d`` → ``abd``, ``acd``; ``{1..3}`` → ``1``, ``2``, ``3``."""
    for i, (c, quoted) in enumerate(chars):
        if c != "{" or quoted:
            continue
        depth, commas = 0, []
        for j in range(i, len(chars)):
            cj, qj = chars[j]
            if qj:
                continue
            if cj == "{":
                depth += 1
            elif cj == "}":
                depth -= 1
                if depth == 0:
                    break
            elif cj == "," and depth == 1:
                commas.append(j)
        else:
            continue
        pre, inner, post = chars[:i], chars[i + 1:j], chars[j + 1:]
        if commas:
            bounds = [i, *commas, j]
            parts = [chars[a + 1:b] for a, b in zip(bounds, bounds[1:])]
        else:
            m = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", "".join(ch for ch, _ in inner))
            if not m:
                continue
            a, b = int(m.group(1)), int(m.group(2))
            step = 1 if b >= a else -1
            parts = [[(ch, True) for ch in str(v)] for v in range(a, b + step, step)]
        return [w for part in parts for w in _brace_expand(pre + part + post)]
    return [chars]


def _simple_commands(tokens: list) -> list:
    """The word lists of the simple commands in ``tokens``, redirections and their targets left out."""
    commands, words, skip_next = [], [], False
    for t in tokens:
        if isinstance(t, Word):
            if skip_next:
                skip_next = False
            else:
                words.append(t)
        elif t[0] == "redirect":
            skip_next = True
        else:
            commands.append(words)
            words = []
    commands.append(words)
    return [w for w in commands if w]


def rnnlab_args(words: list) -> list | None:
    """The argument words after ``rnnlab`` (or ``python -m rnnlab``, ``torchrun ... -m rnnlab``) in one simple
    command, or None when it runs something else."""
    words = list(words)
    while words and (words[0].text in SHELL_WORDS or ASSIGNMENT.match(words[0].text)):
        words.pop(0)
    if not words:
        return None
    if words[0].text.rsplit("/", 1)[-1] == "rnnlab":
        return words[1:]
    if re.search(r"python|torchrun", words[0].text.rsplit("/", 1)[-1]):
        texts = [w.text for w in words]
        for k in range(1, len(texts) - 1):
            if texts[k] == "-m" and texts[k + 1] == "rnnlab":
                return words[k + 2:]
    return None


@dataclass
class Command:
    where: str  # FILE:LINE
    line: str  # the logical line, as written (continuations joined)
    argv: list  # the words after 'rnnlab', quotes removed, braces expanded
    dynamic: frozenset  # the words (and --flag=VALUE values) whose value only the shell knows


def commands_in(text: str, name: str) -> list[Command]:
    """The rnnlab command lines in the fenced shell blocks of a markdown text; ``name`` goes into ``where``."""
    lines, out, fence, lang, i = text.splitlines(), [], None, "", 0
    while i < len(lines):
        line = lines[i]
        m = FENCE.match(line)
        if fence is None:
            if m:
                fence, lang = m.group(2), m.group(3).lower()
            i += 1
            continue
        if m and m.group(2)[0] == fence[0] and len(m.group(2)) >= len(fence) and not m.group(3):
            fence = None
            i += 1
            continue
        start, logical = i, line
        # an odd number of trailing backslashes: the command goes on on the next line (not past the block's end)
        while re.search(r"(?<!\\)(\\\\)*\\$", logical) and i + 1 < len(lines) and not FENCE.match(lines[i + 1]):
            i += 1
            logical = logical[:-1] + " " + lines[i]
        i += 1
        if lang not in SHELL_BLOCKS:
            continue
        stripped = logical.strip()
        if lang in PROMPT_BLOCKS:
            if not stripped.startswith("$ "):
                continue
            stripped = stripped[2:]
        elif stripped.startswith("$ "):
            stripped = stripped[2:]
        found = [a for a in map(rnnlab_args, _simple_commands(_lex(stripped))) if a is not None]
        for k, words in enumerate(found):
            argv, dynamic = [], set()
            for w in words:
                for chars in _brace_expand(w.chars):
                    text = "".join(c for c, _ in chars)
                    argv.append(text)
                    if w.dynamic:
                        dynamic.add(text)
                        if text.startswith("-") and "=" in text:
                            dynamic.add(text.split("=", 1)[1])
            where = f"{name}:{start + 1}" + (f"#{k + 1}" if len(found) > 1 else "")
            out.append(Command(where, stripped, argv, frozenset(dynamic)))
    return out


def doc_commands() -> list[Command]:
    return [c for path in doc_files() for c in commands_in(path.read_text(encoding="utf-8"),
                                                            str(path.relative_to(ROOT)))]


# -- checking a command --------------------------------------------------------------------------------------------
class _Choices(list):
    """The choices of an option, plus every value only the shell knows."""

    def __init__(self, choices, dynamic):
        super().__init__(choices)
        self.dynamic = dynamic

    def __contains__(self, value):
        return value in self.dynamic or super().__contains__(value)


def _strict_parser(dynamic: frozenset) -> argparse.ArgumentParser:
    """``rnnlab``'s parser (``build_parser``: a parse error raises ``UsageError``) with abbreviated flags refused and
    the shell's values (``dynamic``) let through every type and choice check."""
    parser = build_parser()
    seen, todo = set(), [parser]
    while todo:
        p = todo.pop()
        if id(p) in seen:
            continue
        seen.add(id(p))
        p.allow_abbrev = False
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
                continue
            if callable(action.type):
                action.type = _let_through(action.type, dynamic)
            if action.choices is not None:
                action.choices = _Choices(action.choices, dynamic)
    return parser


def _let_through(convert, dynamic):
    @functools.wraps(convert)
    def wrapped(text):
        return text if text in dynamic else convert(text)
    return wrapped


def _validate(ns: argparse.Namespace) -> None:
    """The pure option checks a command makes after parsing and before reading anything (UsageError)."""
    from rnnlab.cli import diagnose, task, train, train_classify, train_classify_series, train_regress, train_seq2seq, \
        train_tag
    from rnnlab.cli.common import given_flags

    if ns.command is None:
        raise UsageError("no command given")
    run = getattr(ns, "run", None)
    if run in (train._no_model, task._no_task):
        run(ns)
    if getattr(ns, "resume", None):
        return  # the run's options come from its checkpoint
    if run is train.run:
        train._resolve(ns.model_kind, given_flags(ns, train._FLAGS))
    for module, keep_false in ((train_tag, False), (train_regress, False), (train_classify, True),
                               (train_classify_series, True), (train_seq2seq, True)):
        if run is module.run:
            module._resolve(given_flags(ns, module._FLAGS, keep_false=keep_false))
    if run is task.run:
        task._check(ns)
    if run is diagnose.run:
        diagnose._check(ns)


def command_error(argv: list, dynamic: frozenset = frozenset()) -> str | None:
    """Why ``rnnlab ARGV`` would be refused before it starts (argparse or the option checks), or None."""
    parser = _strict_parser(dynamic)
    printed = io.StringIO()
    try:
        with redirect_stdout(printed), redirect_stderr(printed):
            ns = parser.parse_args(argv)
    except UsageError as exc:
        return str(exc)
    except SystemExit as exc:  # --help, --version
        return None if exc.code in (0, None) else f"exit code {exc.code}: {printed.getvalue().strip()}"
    try:
        _validate(ns)
    except UsageError as exc:
        return f"rnnlab refuses the options: {exc}"
    except (TypeError, ValueError, AttributeError):
        if not dynamic:  # a shell value where the check wants a number: nothing to say about the doc
            raise
    return None


# -- the tests -----------------------------------------------------------------------------------------------------
COMMANDS = doc_commands()


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_doc_command_parses(command):
    error = command_error(command.argv, command.dynamic)
    assert error is None, f"{command.where}: {command.line}\n  -> {error}"


def test_the_docs_have_rnnlab_commands():
    assert any(c.where.startswith("README.md:") for c in COMMANDS), "no rnnlab command found in README.md"


SNIPPET = """\
Some prose with `rnnlab train lm --not-checked` inline.

```sh
rnnlab train lm --trian input.txt          # misspelt
rnnlab train lm --train input.txt --epochs 3 > log.txt 2>&1 &
RNNLAB_BACKEND=cpp rnnlab task parity --cell gru | tee out.txt   # a comment with --bogus
for s in 0 1; do rnnlab task copy --seed $s --out runs/copy-s$s; done
torchrun --standalone --nproc-per-node 2 -m rnnlab train tag --train $U/train.conllu \\
    --valid "${U}/dev.conllu" --batch-size 64
python -m rnnlab predict runs/sst2-s0 --ensemble runs/sst2-s{1,2} --file 'my file.txt'
cat x | grep rnnlab
rnnlab train lm --epochs ten --train x.txt
rnnlab eval runs/lm
rnnlab task parity --cell lstmm
rnnlab train lm --tra x.txt
rnnlab train classify --train a.tsv --patience 3
rnnlab train lm --resume runs/lm --epochs 20
```

```python
subprocess.run(["rnnlab", "train", "lm", "--trian", "x"])
```

```console
$ rnnlab demo --steps 10
rnnlab 0.1 output line
```
"""


def test_commands_are_read_as_the_shell_would():
    cmds = {c.where: c for c in commands_in(SNIPPET, "x.md")}
    assert list(cmds) == ["x.md:4", "x.md:5", "x.md:6", "x.md:7", "x.md:8", "x.md:10", "x.md:12", "x.md:13",
                          "x.md:14", "x.md:15", "x.md:16", "x.md:17", "x.md:25"]
    assert cmds["x.md:4"].argv == ["train", "lm", "--trian", "input.txt"]
    assert cmds["x.md:5"].argv == ["train", "lm", "--train", "input.txt", "--epochs", "3"]
    assert cmds["x.md:6"].argv == ["task", "parity", "--cell", "gru"]
    assert cmds["x.md:7"].argv == ["task", "copy", "--seed", "$s", "--out", "runs/copy-s$s"]
    assert cmds["x.md:7"].dynamic == {"$s", "runs/copy-s$s"}
    assert cmds["x.md:8"].argv == ["train", "tag", "--train", "$U/train.conllu", "--valid", "${U}/dev.conllu",
                                   "--batch-size", "64"]
    assert cmds["x.md:10"].argv == ["predict", "runs/sst2-s0", "--ensemble", "runs/sst2-s1", "runs/sst2-s2",
                                    "--file", "my file.txt"]
    assert cmds["x.md:25"].argv == ["demo", "--steps", "10"]


@pytest.mark.parametrize("where, must", [
    ("x.md:4", ["unrecognized arguments: --trian"]),  # a misspelt flag
    ("x.md:12", ["--epochs", "'ten'"]),  # a literal value of the wrong type
    ("x.md:13", ["--file"]),  # a required flag missing
    ("x.md:14", ["--cell", "'lstmm'"]),  # not among the choices
    ("x.md:15", ["unrecognized arguments: --tra"]),  # an abbreviation: argparse would take it as --train
    ("x.md:16", ["refuses the options", "--patience 3", "--valid"]),  # a flag combination the command refuses
])
def test_a_bad_command_in_a_doc_is_reported(where, must):
    command = {c.where: c for c in commands_in(SNIPPET, "x.md")}[where]
    error = command_error(command.argv, command.dynamic)
    assert error is not None, command
    for m in must:
        assert m in error, (m, error)


@pytest.mark.parametrize("where", ["x.md:5", "x.md:6", "x.md:7", "x.md:8", "x.md:10", "x.md:17", "x.md:25"])
def test_a_good_command_in_a_doc_passes(where):
    command = {c.where: c for c in commands_in(SNIPPET, "x.md")}[where]
    assert command_error(command.argv, command.dynamic) is None


def test_a_misspelt_flag_fails_the_doc_test():
    """What a reader of the test output sees: the file and line, the command, and argparse's complaint."""
    [command] = commands_in("Train:\n\n```sh\nrnnlab train lm --trian x.txt\n```\n", "README.md")
    with pytest.raises(AssertionError) as failed:
        test_doc_command_parses(command)
    message = str(failed.value)
    assert "README.md:4: rnnlab train lm --trian x.txt" in message
    assert "-> unrecognized arguments: --trian x.txt (see 'rnnlab --help')" in message
