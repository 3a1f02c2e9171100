"""Checkpoints: exact round trips without pickle, atomic replacement, clear errors, and a resumed run that reaches
bit-for-bit the weights of an uninterrupted one."""
import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

import rnnlab.train.checkpoint as ckpt_module
from rnnlab.data import LMStream, build_corpus
from rnnlab.models import NGramLM, RecurrentLM
from rnnlab.train import CheckpointError, LMTask, Trainer, TrainOptions, load_checkpoint, save_checkpoint
from rnnlab.train.checkpoint import flatten, rng_state, set_rng_state, unflatten


def test_flatten_roundtrip_keeps_types():
    obj = {"state": {0: {"step": torch.tensor(3.0), "m": torch.ones(2, 2)}}, "groups": [{"betas": (0.9, 0.99),
           "lr": 1e-3, "params": [0, 1], "nesterov": False, "foreach": None}], "best": math.inf}
    tensors = {}
    skel = flatten(obj, "o", tensors)
    back = unflatten(json.loads(json.dumps(skel, allow_nan=False)), tensors)
    assert back["state"][0]["m"].equal(torch.ones(2, 2)) and back["groups"][0]["betas"] == (0.9, 0.99)
    assert back["best"] == math.inf and list(back["state"]) == [0]


def test_rng_state_roundtrip():
    torch.manual_seed(3)
    random.seed(4)
    np.random.seed(5)
    saved = json.loads(json.dumps(rng_state()))
    a = (torch.rand(3), random.random(), np.random.rand())
    set_rng_state(saved)
    b = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_save_load_roundtrip_tied_weights_stored_once(tmp_path, monkeypatch):
    model = RecurrentLM(11, hidden=6, emb=6, tie=True, cell="gru")
    opt = torch.optim.Adam(model.parameters())
    model(torch.randint(0, 11, (4, 2)))[0].sum().backward()
    opt.step()
    carry = (torch.randn(1, 2, 6), torch.randn(1, 2, 6))
    path = save_checkpoint(tmp_path / "c", model, opt, {"model": model.config, "note": "hi"}, carry=carry)
    assert sorted(p.name for p in path.iterdir()) == ["checkpoint.json", "model.safetensors", "optim.safetensors",
                                                      "state.safetensors"]
    # Loading must never unpickle.
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    c = load_checkpoint(path)
    assert c.meta["note"] == "hi" and c.meta["aliases"] == {"decoder.weight": "encoder.weight"}
    twin = RecurrentLM(11, hidden=6, emb=6, tie=True, cell="gru")
    c.load_model(twin)
    for (k, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), k
    assert twin.decoder.weight is twin.encoder.weight
    opt2 = torch.optim.Adam(twin.parameters())
    opt2.load_state_dict(c.optimizer_state())
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for i in s1["state"]:
        for k in s1["state"][i]:
            assert torch.equal(s1["state"][i][k], s2["state"][i][k])
    got = c.carry()
    assert isinstance(got, tuple) and torch.equal(got[1], carry[1])


def test_replacing_is_atomic_when_a_write_fails(tmp_path, monkeypatch):
    model = NGramLM(5, order=2, hidden=3)
    save_checkpoint(tmp_path / "last", model, None, {"n": 1})
    real = ckpt_module._write_synced

    def fail_on_json(path, data):
        if path.name == "checkpoint.json":
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(ckpt_module, "_write_synced", fail_on_json)
    with torch.no_grad():
        model.out.weight.add_(1)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "last", model, None, {"n": 2})
    old = load_checkpoint(tmp_path / "last")  # the previous checkpoint is still whole
    assert old.meta["n"] == 1
    assert not torch.equal(old.model_state()["out.weight"], model.out.weight)
    monkeypatch.setattr(ckpt_module, "_write_synced", real)
    save_checkpoint(tmp_path / "last", model, None, {"n": 3})
    assert load_checkpoint(tmp_path / "last").meta["n"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no temporary directories left


def test_load_errors_say_what_to_pass(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="not a checkpoint .* OUT/best or OUT/last"):
        load_checkpoint(tmp_path)
    (tmp_path / "checkpoint.json").write_text('{"format": "other"}', encoding="utf-8")
    with pytest.raises(CheckpointError, match="not an rnnlab checkpoint"):
        load_checkpoint(tmp_path)


def test_run_directory_resolves_to_best_or_last(tmp_path):
    model = NGramLM(5, order=2, hidden=3)
    save_checkpoint(tmp_path / "last", model, None, {"which": "last"})
    assert load_checkpoint(tmp_path, prefer="best").meta["which"] == "last"  # falls back when best/ is missing
    save_checkpoint(tmp_path / "best", model, None, {"which": "best"})
    assert load_checkpoint(tmp_path).meta["which"] == "best"
    assert load_checkpoint(tmp_path, prefer="last").meta["which"] == "last"


def lm_run(out, seed, options):
    rng = random.Random(0)
    text = "".join(rng.choice("abcde fg\n") for _ in range(900))
    corpus = build_corpus(text, level="char")
    torch.manual_seed(seed)  # a different seed changes the initial weights; restore() must overwrite them
    model = RecurrentLM(len(corpus.vocab), hidden=12, layers=2, dropout=0.3)
    train = LMStream(corpus.train, 4, 10, random_bptt=True, seed=1)
    valid = LMStream(corpus.valid, 2, 10)
    return model, Trainer(model, LMTask(model, True), train, valid, options, out_dir=out)


def test_resume_mid_epoch_reaches_the_same_weights_bit_for_bit(tmp_path):
    opts = dict(epochs=3, optimizer="adam", lr=3e-3, clip_norm=0.5, schedule="step", decay_start=1, log_every=4,
                seed=5, quiet=True, progress=False)
    model_a, trainer = lm_run(tmp_path / "a", 0, TrainOptions(**opts))
    trainer.fit()

    _, first = lm_run(tmp_path / "b", 0, TrainOptions(**opts, max_steps=27))  # stops inside epoch 2
    assert first.fit()["stopped"] == "max_steps"
    last = load_checkpoint(tmp_path / "b" / "last")
    assert last.meta["trainer"]["epoch"] == 1 and last.meta["trainer"]["batch"] > 0 and last.carry() is not None
    model_b, second = lm_run(tmp_path / "b", 99, TrainOptions(**opts))
    second.restore(last)
    assert second.fit()["stopped"] == "done"

    for (k, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), k

    def records(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        return [{k: v for k, v in json.loads(ln).items() if k not in ("tokens_per_s", "elapsed_s", "epoch_s")}
                for ln in lines if json.loads(ln)["kind"] != "stop"]

    assert records("a") == records("b")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to save from")
def test_checkpoint_saved_on_gpu_loads_on_cpu(tmp_path):
    model = RecurrentLM(9, hidden=8).cuda()
    opt = torch.optim.Adam(model.parameters())
    model(torch.randint(0, 9, (5, 2), device="cuda"))[0].sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "c", model, opt, {"model": model.config}, carry=model.init_state(2))
    c = load_checkpoint(tmp_path / "c")
    cpu = c.load_model(RecurrentLM(9, hidden=8))
    assert all(torch.equal(a.cpu(), b) for a, b in zip(model.state_dict().values(), cpu.state_dict().values()))
    torch.optim.Adam(cpu.parameters()).load_state_dict(c.optimizer_state())
    assert c.carry()[0].device.type == "cpu"


# -- no code in checkpoints ---------------------------------------------------------------------------------------
class _Evil:
    """Unpickling this creates the file ``marker`` (any code could run instead)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_files_are_refused_and_never_unpickled(tmp_path, monkeypatch):
    import io
    import pickle

    model = NGramLM(5, order=2, hidden=3)
    marker = tmp_path / "code-ran"
    evil = _Evil(marker)
    zipped, legacy = io.BytesIO(), io.BytesIO()
    torch.save({"w": evil, **model.state_dict()}, zipped)
    torch.save({"w": evil}, legacy, _use_new_zipfile_serialization=False)
    payloads = {"zip": zipped.getvalue(), "legacy": legacy.getvalue(), "pickle": pickle.dumps(evil, protocol=4)}
    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, lambda *a, **k: pytest.fail("pickle used"))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))

    def fresh(name):
        return save_checkpoint(tmp_path / name, model, torch.optim.Adam(model.parameters()), {"n": 1})

    never = "rnnlab never unpickles"
    for kind, data in payloads.items():
        path = fresh(kind)
        (path / "model.safetensors").write_bytes(data)
        with pytest.raises(CheckpointError, match=rf"{kind}/model\.safetensors: holds a .*; {never}"):
            load_checkpoint(path)
    path = fresh("json")
    (path / "checkpoint.json").write_bytes(payloads["pickle"])
    with pytest.raises(CheckpointError, match=rf"json/checkpoint\.json: holds a pickle \(protocol 4.*{never}"):
        load_checkpoint(path)
    for extra in ("weights.pt", "opt.pkl"):
        path = fresh(extra)
        (path / extra).write_bytes(payloads["zip"])
        with pytest.raises(CheckpointError, match=rf"{extra}: holds a \.(pt|pkl) file .*{never}"):
            load_checkpoint(path)
    # A file swapped after the checkpoint was opened is refused when it is read.
    c = load_checkpoint(fresh("late"))
    (c.path / "optim.safetensors").write_bytes(payloads["legacy"])
    with pytest.raises(CheckpointError, match=rf"optim\.safetensors: holds a pickle .*{never}"):
        c.optimizer_state()
    assert not marker.exists()
    # A real safetensors file whose header length happens to begin like a pickle (0x80 0x02) still loads.
    assert load_checkpoint(fresh("ok")).model_state()


# -- SIGKILL in the middle of saves ---------------------------------------------------------------------------------
_KILLER = r'''
import json, os, random, signal, sys, time
from pathlib import Path
import torch
from torch import nn
from rnnlab.train import Trainer, TrainOptions, load_checkpoint, save_checkpoint
from rnnlab.train.checkpoint import rng_state

torch.set_num_threads(1)
out, kills, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
data = [torch.randn(8, 64, generator=torch.Generator().manual_seed(i)) for i in range(4)]


def build(**kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 160), nn.Tanh(), nn.Linear(160, 64))
    trainer = Trainer(model, lambda x: (model(x) - x).pow(2).mean(), data, None,
                      TrainOptions(epochs=1000, quiet=True, progress=False, **kw), print_fn=lambda s: None)
    return model, trainer


model, trainer = build()
model(data[0]).sum().backward()
trainer.optimizer.step()  # Adam state to save


def save(i):
    """Checkpoint i: every weight, optimizer tensor, carried and extra tensor equals i, so a mixture shows."""
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(i)
        for st in trainer.optimizer.state.values():
            for t in st.values():
                t.fill_(i)
    trainer.progress["step"] = i
    meta = {"i": i, "trainer": trainer.progress, "rng": rng_state(), "model": None}
    save_checkpoint(out / "last", model, trainer.optimizer, meta, carry=(torch.full((2, 3), float(i)),),
                    extra={"x": torch.full((7,), float(i))})


def check(c, i):
    assert all(bool((t == i).all()) for t in c.model_state().values()), i
    state = c.optimizer_state()["state"]
    assert state and all(bool((t == i).all()) for st in state.values() for t in st.values()), i
    assert bool((c.carry()[0] == i).all()) and bool((c.extra()["x"] == i).all()), i


i, mid_save = 1, 0
save(1)  # a complete checkpoint before the first kill
for k in range(kills):
    pid = os.fork()
    if pid == 0:  # the child saves checkpoints i+1, i+2, ... until it is killed
        try:
            j = i
            while True:
                j += 1
                save(j)
        finally:
            os._exit(0)
    if k % 3 == 0:
        # Every third child is first allowed to complete a save (on a loaded machine a save can take longer than
        # the random sleep below, and then no child would ever finish one), so the run always makes progress.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if load_checkpoint(out / "last").meta["i"] > i:
                    break
            except Exception:  # caught between the child's two renames: look again
                pass
            time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.12))  # a save takes tens of ms (its fsyncs): kills land in all its phases
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    mid_save += any(p.name != "last" for p in out.iterdir())  # killed with a temporary directory left
    c = load_checkpoint(out / "last")
    j = c.meta["i"]
    assert j >= i, (j, i)  # never an older checkpoint than one already seen
    check(c, j)
    i = j
    # Resume from it: the trainer restores it and trains on.
    m2, t2 = build(max_steps=2)
    t2.restore(c)
    assert t2.fit()["stopped"] == "max_steps" and t2.progress["step"] == j + 2
    assert all(bool(torch.isfinite(p).all()) and not bool((p == j).all()) for p in m2.parameters())
save(i + 1)  # the next save removes the temporary directories the killed writers left
assert sorted(p.name for p in out.iterdir()) == ["last"], sorted(out.iterdir())
print(json.dumps({"kills": kills, "last": i, "killed_mid_save": mid_save}))
'''


def test_sigkill_during_saves_always_leaves_a_loadable_resumable_checkpoint(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    r = subprocess.run([sys.executable, "-c", _KILLER, str(tmp_path / "run"), "30", "7"], capture_output=True,
                       encoding="utf-8", env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["kills"] == 30 and report["last"] > 1  # the children did save


# -- damaged checkpoints: a CheckpointError naming the file, what is wrong and what to do ----------------------------
def _stopped_lm_run(tmp_path):
    opts = TrainOptions(epochs=1, optimizer="adam", lr=3e-3, max_steps=3, seed=5, quiet=True, progress=False)
    _, trainer = lm_run(tmp_path / "run", 0, opts)
    assert trainer.fit()["stopped"] == "max_steps"
    return opts, load_checkpoint(tmp_path / "run" / "last")


def _edited(checkpoint, edit):
    meta = json.loads(json.dumps(checkpoint.meta))
    edit(meta)
    return ckpt_module.Checkpoint(checkpoint.path, meta)


@pytest.mark.parametrize("edit, must", [
    (lambda m: m.pop("trainer"), r"holds no trainer state \('trainer'\).*or retrain"),
    (lambda m: m.pop("rng"), r"holds no RNG states \('rng'\), so the run cannot continue exactly"),
    (lambda m: m["rng"].update(torch="AAAA"), r"its RNG states \('rng'\) are malformed"),
    (lambda m: m["rng"].pop("numpy"), r"its RNG states \('rng'\) are malformed \('numpy' is missing\)"),
    (lambda m: m.update(trainer={"epoch": "x"}), r"the trainer state \('trainer'\) has 'epoch' = 'x', not an "
                                                 r"integer >= 0"),
    (lambda m: m.update(trainer=[1, 2]), r"the trainer state \('trainer'\) is a list, not a mapping"),
    (lambda m: m["trainer"].pop("step"), r"has no 'step'"),
    (lambda m: m["trainer"]["acc"].pop("tokens"), r"has no 'acc.tokens'"),
    (lambda m: m["trainer"]["faults"].update(recent=["a"]), r"has 'faults.recent' = \['a'\], not a list of"),
])
def test_restore_refuses_a_damaged_trainer_state_and_changes_nothing(tmp_path, edit, must):
    opts, last = _stopped_lm_run(tmp_path)
    model, fresh = lm_run(tmp_path / "other", 7, opts)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    progress = json.dumps(fresh.progress)
    torch.manual_seed(11)
    rng = torch.get_rng_state()
    with pytest.raises(CheckpointError, match=must) as exc:
        fresh.restore(_edited(last, edit))
    msg = str(exc.value)
    assert msg.startswith(f"{last.path / 'checkpoint.json'}: ") and msg.endswith("retrain")
    # Nothing was restored: the trainer, its weights and the global RNG are as they were.
    assert json.dumps(fresh.progress) == progress and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_restore_an_older_trainer_state_fills_in_what_it_lacks(tmp_path):
    opts, last = _stopped_lm_run(tmp_path)
    old = _edited(last, lambda m: [m["trainer"].pop(k) for k in ("faults", "last_valid_loss", "bad_epochs")]
                  + [m["trainer"]["acc"].pop("skipped")])
    _, trainer = lm_run(tmp_path / "other", 7, opts)
    trainer.restore(old)
    p = trainer.progress
    assert p["step"] == 3 and p["faults"]["rollbacks"] == 0 and p["bad_epochs"] == 0 and p["acc"]["skipped"] == 0
    assert p["last_valid_loss"] is None


def test_optimizer_state_that_does_not_fit_is_a_checkpoint_error(tmp_path):
    opts, last = _stopped_lm_run(tmp_path)
    _, trainer = lm_run(tmp_path / "other", 7, opts)

    def two_groups(meta):
        groups = meta["optimizer"]["param_groups"]
        groups.append(dict(groups[0]))
    with pytest.raises(CheckpointError, match=r"last: its optimizer state does not fit the adam optimizer of this "
                                              r"model \(.*parameter groups\); the checkpoint is damaged: .*retrain"):
        trainer.restore(_edited(last, two_groups))
    missing = _edited(last, lambda m: m["optimizer"]["state"]["__items__"][0][1]["exp_avg"].update(
        __tensor__="no.such"))
    with pytest.raises(CheckpointError, match=r"checkpoint\.json: 'optimizer' names tensor 'no\.such', which "
                                              r"optim\.safetensors does not hold; .*retrain"):
        missing.optimizer_state()


def test_dangling_alias_and_damaged_files_say_what_to_do(tmp_path):
    model = RecurrentLM(11, hidden=6, emb=6, tie=True, cell="gru")
    path = save_checkpoint(tmp_path / "last", model, None, {"model": model.config})
    c = load_checkpoint(path)
    c.meta["aliases"] = {"decoder.weight": "no.such.tensor"}
    with pytest.raises(CheckpointError, match=r"last/checkpoint\.json: 'aliases' maps 'decoder\.weight' to "
                                              r"'no\.such\.tensor', which model\.safetensors does not hold; the "
                                              r"checkpoint is damaged: use the run's other one .* or retrain"):
        c.model_state()
    c.meta["aliases"] = ["decoder.weight"]
    with pytest.raises(CheckpointError, match=r"'aliases' is a list, not a mapping"):
        c.load_model(model)
    (path / "model.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{junk")
    with pytest.raises(CheckpointError, match=r"not a readable safetensors file \(.*\); the checkpoint is damaged: "
                                              r"use the run's other one \(best/ instead of last/.*or retrain"):
        load_checkpoint(path).model_state()
    (path / "checkpoint.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"not valid JSON .*; the checkpoint is damaged: .*or retrain"):
        load_checkpoint(path)
    (path / "checkpoint.json").write_text('{"format": "other"}', encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"not an rnnlab checkpoint \(format is not 'rnnlab-checkpoint'\); pass "
                                              r"the directory an rnnlab training run wrote .*or retrain"):
        load_checkpoint(path)


def test_a_damaged_metrics_log_is_a_checkpoint_error_with_the_fix(tmp_path):
    opts, last = _stopped_lm_run(tmp_path)
    with open(tmp_path / "run" / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write("{half a record\n")
    _, trainer = lm_run(tmp_path / "run", 7, opts)
    with pytest.raises(CheckpointError, match=r"run/metrics\.jsonl: not a metrics log that can be rewound to step 3 "
                                              r"\(.*\); move it aside and resume again"):
        trainer.restore(last)
