"""Helpers of the command-line tests (tests/test_cli_*.py, tests/test_mnist.py): run ``rnnlab`` in-process through
``main()`` and check that a bad input fails as one line ``rnnlab: error: ...`` with exit code 2."""
from __future__ import annotations

from rnnlab.cli.main import main


def cli(capsys, *args):
    """(exit code, stdout, stderr) of ``rnnlab ARGS`` (each argument passed through ``str``)."""
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(capsys, *args, must=()):
    """The one error line of ``rnnlab ARGS``, which must exit with code 2; it must contain every string in ``must``."""
    rc, out, err = cli(capsys, *args)
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error: "), err
    for m in must:
        assert m in lines[0], (m, lines[0])
    return lines[0]
