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


def check_checkpoint_every(capsys, monkeypatch, command, args, out, every=2):
    """``rnnlab COMMAND ARGS --out OUT --checkpoint-every EVERY --max-steps EVERY+1`` (the first epoch must have more
    than EVERY + 1 batches) writes last/ on disk after EVERY steps, within the first epoch, with the flag in its
    training options; then ``rnnlab COMMAND --resume OUT`` may change --checkpoint-every, and the resumed run uses
    the new value. ``command``: the words before the flags, e.g. ("train", "tag")."""
    import json

    from rnnlab.train.trainer import Trainer

    saves = []  # what last/checkpoint.json held right after each save of last/
    original = Trainer._save

    def recording_save(self, which, carry):
        original(self, which, carry)
        if which == "last":
            meta = json.loads((self.out_dir / "last" / "checkpoint.json").read_text(encoding="utf-8"))
            p = meta["trainer"]
            saves.append({"epoch": p["epoch"], "batch": p["batch"], "step": p["step"],
                          "batches": self.train_data.num_batches(p["epoch"]),
                          "checkpoint_every": meta["train_options"]["checkpoint_every"]})

    monkeypatch.setattr(Trainer, "_save", recording_save)
    rc, stdout, err = cli(capsys, *command, *args, "--out", out, "--checkpoint-every", every, "--max-steps", every + 1)
    assert rc == 0, err
    mid = [s for s in saves if s["step"] == every]
    assert mid, saves  # saved by --checkpoint-every: --max-steps saves one step later
    assert mid[0]["epoch"] == 0 and mid[0]["batch"] == every < mid[0]["batches"], mid  # within the first epoch
    assert mid[0]["checkpoint_every"] == every
    assert saves[-1]["step"] == every + 1  # the --max-steps stop
    saves.clear()
    rc, stdout, err = cli(capsys, *command, "--resume", out, "--checkpoint-every", every + 1, "--max-steps", 1)
    assert rc == 0, err  # --checkpoint-every may change on --resume
    assert saves and saves[-1]["step"] == every + 2 and saves[-1]["checkpoint_every"] == every + 1, saves
