"""Data-parallel training (rnnlab.train.distributed): two processes on the CPU with gloo must train exactly what one
process trains with the same global batch, write nothing but through rank 0, and hand checkpoints back and forth
with single-process runs.

The oracle is single-process training (in this process, through ``main()`` or the Trainer) with the same flags. The
two-process runs go through torchrun (``python -m torch.distributed.run --standalone``: a free port of its own), each
rank in a directory of its own, so a file written by rank 1 would show up in rank1/; the library-level test uses
``torch.multiprocessing.spawn``.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rnnlab.cli.main import main
from rnnlab.data.seq2seq import Seq2SeqBatch
from rnnlab.data.synthetic import IGNORE, SeqBatch
from rnnlab.models.classifier import SequenceTagger
from rnnlab.train import TrainOptions, Trainer
from rnnlab.train import distributed as ddp
from rnnlab.train.supervised import PerStepTask
from rnnlab.train.tagging import TagBatch

from cli_helpers import one_line_error

SRC = Path(__file__).resolve().parents[1] / "src"
TEXT = ("the quick brown fox jumps over the lazy dog\n"
        "pack my box with five dozen liquor jugs\n") * 6  # 453 training characters: 14 chunks of 4 x 8 per epoch
# --eval-batch-size 3: the two ranks evaluate 2 and 1 columns of the validation stream (uneven shards).
LM = ["--hidden", "12", "--bptt", "8", "--batch-size", "4", "--eval-batch-size", "3", "--epochs", "2", "--quiet"]
ATOL = 1e-5  # float32 sums in another order (per-rank means, all-reduced gradients): ~1e-7 measured


def rnnlab(*args) -> int:
    """``rnnlab ARGS`` in this process: the one-process oracle."""
    return main([str(a) for a in args])


def _weights(run_or_ckpt: Path) -> dict:
    path = run_or_ckpt / "model.safetensors"
    return load_file(path if path.exists() else run_or_ckpt / "last" / "model.safetensors")


def _assert_close(got: dict, want: dict, what: str) -> None:
    assert sorted(got) == sorted(want), f"{what}: parameter names differ: {sorted(got)} vs {sorted(want)}"
    for k in want:
        assert torch.allclose(got[k], want[k], atol=ATOL, rtol=0), \
            f"{what}: {k} differs by {(got[k] - want[k]).abs().max().item():.3g}"


def _records(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def torchrun(cwd: Path, *args) -> subprocess.CompletedProcess:
    """``rnnlab ARGS`` in 2 processes (gloo, 1 thread each); rank r runs in cwd/rank<r>."""
    for r in (0, 1):
        (cwd / f"rank{r}").mkdir(exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8",  # output read as UTF-8 in any locale
               PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--no-python",
           "sh", "-c", 'cd "rank$RANK" && exec "$0" -m rnnlab "$@"', sys.executable, *map(str, args)]
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, encoding="utf-8", timeout=300,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"torchrun failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-4000:]
    return r


# -- sharding (no processes) -----------------------------------------------------------------------------------------
def _ranks(world: int) -> list[ddp.Distributed]:
    return [ddp.Distributed(r, world, r, torch.device("cpu"), "gloo") for r in range(world)]


def _cat(parts: list, dim: int):
    """Put shards back together: the oracle of sharding is that the shards, in rank order, are the batch."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts, dim)
    if isinstance(first, TagBatch):
        return TagBatch(*(_cat([getattr(p, f) for p in parts], dim) for f in ("words", "chars", "lengths", "tags",
                                                                                "index")))
    if isinstance(first, list):
        return [v for p in parts for v in p]
    items = [_cat([p[i] for p in parts], dim) for i in range(len(first))]
    return type(first)(*items) if hasattr(first, "_fields") else type(first)(items)


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, TagBatch):
        return all(_equal(getattr(a, f), getattr(b, f)) for f in ("words", "chars", "lengths", "tags", "index"))
    if isinstance(a, (list, tuple)) and a and isinstance(a[0], (torch.Tensor, tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def _batches(B: int):
    g = torch.Generator().manual_seed(B)
    T = 5
    lm = (torch.randint(0, 9, (T, B), generator=g), torch.randint(0, 9, (T, B), generator=g))  # (T, B) each
    seq = SeqBatch(torch.randn(B, T, 3, generator=g), torch.randint(1, T + 1, (B,), generator=g),
                   torch.randint(0, 2, (B,), generator=g))
    tag = TagBatch(torch.randint(0, 9, (B, T), generator=g), torch.randint(0, 9, (B, T, 4), generator=g),
                   torch.randint(1, T + 1, (B,), generator=g), torch.randint(0, 3, (B, T), generator=g),
                   list(range(10, 10 + B)))
    s2s = Seq2SeqBatch(*(torch.randint(0, 9, (B, T), generator=g) for _ in range(2)),
                       torch.randint(0, 9, (B, T + 1), generator=g), torch.randint(0, 9, (B, T + 1), generator=g),
                       torch.randint(1, T + 2, (B,), generator=g))
    return [(lm, 1), (seq, 0), (tag, 0), (s2s, 0)]


@pytest.mark.parametrize("B,world", [(4, 2), (5, 2), (7, 3), (6, 1)])
def test_shards_in_rank_order_are_the_batch(B, world):
    for batch, dim in _batches(B):
        shards = [r.shard(batch, dim) for r in _ranks(world)]
        assert all(real for _, real in shards)
        sizes = [ddp.batch_dim_size(s, dim) for s, _ in shards]
        assert sizes == _ranks(world)[0].sizes(B) and max(sizes) - min(sizes) <= 1, sizes
        assert _equal(_cat([s for s, _ in shards], dim), batch), type(batch).__name__


def test_a_rank_without_examples_runs_the_first_one_flagged():
    for batch, dim in _batches(1):
        (s0, real0), (s1, real1) = (r.shard(batch, dim) for r in _ranks(2))
        assert real0 and not real1
        assert _equal(s0, batch) and _equal(s1, batch)  # rank 1 computes example 0 again, with weight 0


def test_batch_size_must_divide_over_the_ranks():
    _ranks(4)[0].check_batch_size(32)
    with pytest.raises(ValueError, match=r"--batch-size 30: .* multiple of 4; use --batch-size 28 or 32"):
        _ranks(4)[0].check_batch_size(30, "--batch-size")
    with pytest.raises(ValueError, match=r"use batch_size 4$"):
        _ranks(4)[1].check_batch_size(3)


def test_not_launched_is_a_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert ddp.setup(torch.device("cpu")) == torch.device("cpu") and ddp.current() is None


def test_half_a_launch_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for v in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(v, raising=False)
    with pytest.raises(ValueError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT are not; start the run with "
                                         "torchrun"):
        ddp.setup(torch.device("cpu"))
    assert ddp.current() is None


# -- two processes through the CLI ---------------------------------------------------------------------------------
def test_lm_two_processes_equal_one_and_checkpoints_cross_over(tmp_path):
    """One process trains steps 1-5, two processes resume it for steps 6-19 (over the epoch end, stopping mid-epoch
    2 with a carried state), one process resumes that to the end (28 steps): the weights of every stage are the
    one-process run's."""
    text = tmp_path / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    assert rnnlab("train", "lm", "--train", text, "--out", tmp_path / "full", *LM) == 0
    assert rnnlab("train", "lm", "--train", text, "--out", tmp_path / "ref19", "--max-steps", "19", *LM) == 0
    assert rnnlab("train", "lm", "--train", text, "--out", tmp_path / "first5", "--max-steps", "5", *LM) == 0

    r = torchrun(tmp_path, "train", "lm", "--resume", tmp_path / "first5", "--out", "run", "--max-steps", "14")
    run = tmp_path / "rank0" / "run"
    assert list((tmp_path / "rank1").iterdir()) == [], "rank 1 wrote files"
    assert r.stdout.count("train: adam") == 1, r.stdout  # rank 1 prints nothing
    assert "stopped: reached max_steps=14 at epoch 2, batch 5/14, step 19" in r.stdout
    _assert_close(_weights(run / "last"), _weights(tmp_path / "ref19" / "last"), "2 processes, step 19")
    # The carried LSTM state of all 4 columns (each rank held 2) is in the checkpoint.
    carry, want = load_file(run / "last" / "state.safetensors"), load_file(tmp_path / "ref19" / "last" /
                                                                           "state.safetensors")
    assert {k: v.shape for k, v in carry.items()} == {k: v.shape for k, v in want.items()}
    _assert_close(carry, want, "carried state at step 19")
    # Epoch 1 ended under 2 processes: its train and (sharded) validation loss are the one-process run's.
    got, ref = _records(run, "epoch"), _records(tmp_path / "full", "epoch")
    assert len(got) == 1 and got[0]["epoch"] == 1
    for k in ("train_loss", "valid_loss"):
        assert got[0][k] == pytest.approx(ref[0][k], abs=ATOL), k

    assert rnnlab("train", "lm", "--resume", run) == 0  # one process again, to the end
    _assert_close(_weights(run / "last"), _weights(tmp_path / "full" / "last"), "resumed in 1 process, the end")


def test_classify_with_an_uneven_last_batch(tmp_path):
    """33 training texts in batches of 8: the last batch has 1 text, so rank 1 gets none (weight 0); the
    validation batches of 5 split 3 + 2."""
    rng = random.Random(0)
    words = "the a film plot was very not good bad story".split()

    def lines(n):
        return "".join(f"{' '.join(rng.choice(words) for _ in range(rng.randint(2, 7)))}\t{rng.choice('AB')}\n"
                       for _ in range(n))

    (tmp_path / "train.tsv").write_text(lines(33), encoding="utf-8")
    (tmp_path / "dev.tsv").write_text(lines(9), encoding="utf-8")
    args = ["train", "classify", "--train", tmp_path / "train.tsv", "--valid", tmp_path / "dev.tsv", "--dropout", "0",
            "--emb", "8", "--hidden", "8", "--batch-size", "8", "--eval-batch-size", "5", "--epochs", "2",
            "--lr", "0.02", "--quiet"]
    assert rnnlab(*args, "--out", tmp_path / "one") == 0
    torchrun(tmp_path, *args, "--out", "run")
    assert list((tmp_path / "rank1").iterdir()) == [], "rank 1 wrote files"
    run = tmp_path / "rank0" / "run"
    _assert_close(_weights(run / "last"), _weights(tmp_path / "one" / "last"), "2 processes vs 1")
    for got, want in zip(_records(run, "epoch"), _records(tmp_path / "one", "epoch"), strict=True):
        for k in ("train_loss", "valid_loss"):
            assert got[k] == pytest.approx(want[k], abs=ATOL), (k, got, want)


def test_a_batch_that_does_not_divide_is_one_line(tmp_path, monkeypatch, capsys):
    """As rank 0 of 2 (the launch is faked: the refusal comes before any collective)."""
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    monkeypatch.setattr(ddp, "_current", _ranks(2)[0])
    line = one_line_error(capsys, "train", "lm", "--train", tmp_path / "text.txt", "--out", tmp_path / "run", *LM,
                          "--batch-size", "5")
    assert line == ("rnnlab: error: --batch-size 5: the global batch is split evenly over the 2 processes of this "
                    "torchrun launch, so it must be a multiple of 2; use --batch-size 4 or 6")
    assert not (tmp_path / "run").exists()


# -- two processes through the Trainer: unequal token counts, a NaN on one rank, a stop on one rank ----------------
POISON = 99.0  # x[b, 0, 1]: a marked sequence makes its batch's loss NaN


def _per_step_batches() -> list[SeqBatch]:
    """6 batches of 4 sequences with 1-5 scored steps each (unequal token counts per shard); in batch 2 sequence 3
    (rank 1's half) is poisoned: its loss is NaN on rank 1 only."""
    g = torch.Generator().manual_seed(0)
    out = []
    for b in range(6):
        x = torch.randn(4, 6, 2, generator=g)  # (B, T, F)
        lengths = torch.randint(2, 7, (4,), generator=g)  # (B,)
        y = torch.randint(0, 3, (4, 6), generator=g)  # (B, T)
        keep = torch.rand(4, 6, generator=g) < 0.6
        keep[:, 0] = True  # every sequence has a target step
        y = y.masked_fill(~keep | (torch.arange(6) >= lengths[:, None]), IGNORE)
        if b == 2:
            x[3, 0, 1] = POISON
        out.append(SeqBatch(x, lengths, y))
    return out


class _PoisonedTask(PerStepTask):
    """PerStepTask whose loss is NaN when its batch (or this rank's slice of it) holds a poisoned sequence."""

    def __init__(self, model) -> None:
        super().__init__(model)
        self.seen = []  # (sequences, poisoned) of each training batch this process computed

    def step(self, batch, state):
        loss, n, state = super().step(batch, state)
        poisoned = bool((batch.x[:, 0, 1] == POISON).any())
        if self.model.training:
            self.seen.append((batch.x.shape[0], poisoned))
        return (loss * float("nan") if poisoned else loss), n, state


class _StopOnRank1:
    """Ctrl-C on one rank only: rank 1 asks to stop after step 3."""

    def after_step(self, trainer, info):
        if trainer.dist is not None and trainer.dist.rank == 1 and info["step"] == 3:
            trainer.request_stop()


def _train(out: Path, dist, callbacks=()) -> tuple[dict, dict, list]:
    torch.manual_seed(0)
    model = SequenceTagger(3, input_size=2, hidden=6, cell="gru")
    task = _PoisonedTask(model)
    trainer = Trainer(model, task, _per_step_batches(), options=TrainOptions(epochs=2, lr=0.05, quiet=True,
                      log_every=1), out_dir=out, distributed=dist, callbacks=callbacks)
    summary = trainer.fit()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, summary, task.seen


def _worker(rank: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ddp.setup(torch.device("cpu"))  # joins the group the environment names
    dist = ddp.current()
    weights, summary, seen = _train(Path(tmp) / "ddp", dist)
    _, stopped, _ = _train(Path(tmp) / f"stop{rank}", dist, [_StopOnRank1()])
    torch.save({"weights": weights, "summary": summary, "seen": seen, "stopped": stopped},
               Path(tmp) / f"rank{rank}.pt")
    ddp.shutdown()


def test_trainer_two_processes_unequal_tokens_nan_on_one_rank_and_a_stop_on_one_rank(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    want, summary, seen = _train(tmp_path / "one", None)
    # Each rank computed 2 of every 4 sequences; only rank 1 saw the poisoned one, yet both skipped its batch.
    assert seen == [(4, b == 2) for _ in range(2) for b in range(6)]
    assert got[0]["seen"] == [(2, False)] * 12 and got[1]["seen"] == [(2, b == 2) for _ in range(2) for b in range(6)]
    assert summary["skipped_batches"] == 2 and got[0]["summary"] == got[1]["summary"] == summary
    for r in (0, 1):
        _assert_close(got[r]["weights"], want, f"rank {r} of 2 processes vs 1 (unequal tokens, a NaN batch)")
    faults = [r for r in map(json.loads, (tmp_path / "ddp" / "metrics.jsonl").read_text(encoding="utf-8").splitlines())
              if r["kind"] == "fault"]
    assert [(r["step"], r["fault"], r["action"]) for r in faults] == [(3, "nonfinite_loss", "skipped"),
                                                                     (9, "nonfinite_loss", "skipped")]
    assert [(g["stopped"]["stopped"], g["stopped"]["steps"]) for g in got] == [("interrupted", 3)] * 2
    assert (tmp_path / "stop0" / "last").is_dir() and not (tmp_path / "stop1").exists()
