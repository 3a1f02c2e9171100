"""Checkpoints: a directory of safetensors files and one JSON file, written atomically, read without unpickling.

    CHECKPOINT/
      model.safetensors   the model's weights (a weight tied to another is stored once; see "aliases")
      optim.safetensors   the optimizer's state tensors, flattened ("state.0.exp_avg" ...)
      state.safetensors   the state carried across batches at the save point (the RNN's hidden state mid-epoch)
      extra.safetensors   optional: more tensors the trainer keeps (the in-memory rollback point of last/)
      checkpoint.json     model config, vocabulary, trainer state (epoch, batch, step, best loss, schedule ...),
                          the optimizer's scalars and hyperparameters, RNG states, the run's options

Atomic: everything is written into a temporary sibling directory, each file and the directory are fsynced, and
only then is it swapped in for the old checkpoint (one atomic rename-exchange on Linux; elsewhere two renames, the
old directory moved aside only once the new one is complete). A crash — even a SIGKILL in the middle of a save —
leaves either the old checkpoint or the new one, never a mixture; the temporary directories of a killed writer are
removed by the next save. Loading uses ``safetensors`` and ``json`` only — no ``torch.load``, no pickle — and maps
every tensor to the CPU, so a checkpoint saved on a GPU loads anywhere. A checkpoint directory holding a pickle
(a ``.pt`` / ``.pkl`` file, or a ``.safetensors`` file replaced by ``torch.save`` output) is refused by name:
unpickling can run arbitrary code, and rnnlab never does it.
"""
from __future__ import annotations

import base64
import ctypes
import json
import math
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from torch import Tensor, nn

FORMAT, VERSION = "rnnlab-checkpoint", 1
MODEL, OPTIM, STATE, META = "model.safetensors", "optim.safetensors", "state.safetensors", "checkpoint.json"
EXTRA = "extra.safetensors"
# File endings of pickle-based formats (torch.save, pickle, joblib, Lightning .ckpt, HF pytorch_model.bin).
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib")


class CheckpointError(ValueError):
    """A path that is not a readable rnnlab checkpoint; the message says what is wrong and what to pass."""


# What to do about a checkpoint whose files are damaged: a run directory holds two (last/ and best/).
DAMAGED = ("the checkpoint is damaged: use the run's other one (best/ instead of last/, or last/ instead of best/) "
           "or retrain")


# -- nested Python objects with tensors <-> (JSON skeleton, flat tensor dict) ---------------------------------------
def flatten(obj, prefix: str, tensors: dict[str, Tensor]):
    """A JSON-able copy of ``obj`` in which every tensor is replaced by ``{"__tensor__": key}`` and stored in
    ``tensors[key]``. Tuples, non-string dict keys and non-finite floats are marked so ``unflatten`` restores
    them exactly."""
    if isinstance(obj, Tensor):
        key = prefix or "t"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: flatten(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[k, flatten(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint (at {prefix!r})")


def unflatten(skel, tensors: dict[str, Tensor]):
    if isinstance(skel, list):
        return [unflatten(v, tensors) for v in skel]
    if isinstance(skel, dict):
        if "__tensor__" in skel:
            return tensors[skel["__tensor__"]]
        if "__float__" in skel:
            return float(skel["__float__"])
        if "__tuple__" in skel:
            return tuple(unflatten(v, tensors) for v in skel["__tuple__"])
        if "__items__" in skel:
            return {k: unflatten(v, tensors) for k, v in skel["__items__"]}
        return {k: unflatten(v, tensors) for k, v in skel.items()}
    return skel


# -- random number generators ---------------------------------------------------------------------------------------
def rng_state() -> dict:
    """torch / Python / numpy global RNG states as JSON (base64 bytes and lists)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii"),
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": {"kind": kind, "keys": [int(k) for k in keys], "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode("ascii") for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch"])), dtype=torch.uint8))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)
                                      for s in cuda])


# -- writing ------------------------------------------------------------------------------------------------------
def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _model_tensors(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The state_dict with each shared tensor (tied weights) kept once; aliases maps the other names to it."""
    tensors, aliases, seen = {}, {}, {}
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if t.numel() and key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            tensors[name] = t.detach().cpu().contiguous()
    return tensors, aliases


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process, or not a pid: leave its directory alone
    return True


def _clean_stale(final: Path) -> None:
    """Remove the temporary siblings (``.NAME.tmp-PID``, ``.NAME.old-PID``) of writers that died mid-save. Where a
    writer without rename-exchange died between its two renames, NAME is missing and its ``.old`` directory is the
    last complete checkpoint: it is moved back first."""
    mine = os.getpid()
    for kind in ("old", "tmp"):
        for d in sorted(final.parent.glob(f".{final.name}.{kind}-*")):
            pid = d.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or int(pid) == mine or _pid_alive(int(pid)):
                continue
            if kind == "old" and not final.exists() and (d / META).is_file():
                os.rename(d, final)
            else:
                shutil.rmtree(d, ignore_errors=True)


def save_checkpoint(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    meta: dict | None = None, carry=None, extra=None) -> Path:
    """Write a checkpoint directory atomically (see the module doc) and return its path. ``meta`` (JSON-able)
    goes into checkpoint.json; ``carry`` is a tensor or nested tuples/lists of tensors (or None); ``extra``
    (optional) is any nesting of dicts, lists, tuples, numbers and tensors, its tensors stored in
    extra.safetensors (``Checkpoint.extra()`` reads it back)."""
    final = Path(directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(final)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    weights, aliases = _model_tensors(model)
    _write_synced(tmp / MODEL, safetensors.torch.save(weights))
    doc = {"format": FORMAT, "version": VERSION, **(meta or {}), "aliases": aliases}
    if optimizer is not None:
        opt_tensors: dict[str, Tensor] = {}
        doc["optimizer"] = flatten(optimizer.state_dict(), "optim", opt_tensors)
        _write_synced(tmp / OPTIM, safetensors.torch.save(opt_tensors))
    carry_tensors: dict[str, Tensor] = {}
    doc["carry"] = flatten(carry, "carry", carry_tensors)
    _write_synced(tmp / STATE, safetensors.torch.save(carry_tensors))
    if extra is not None:
        extra_tensors: dict[str, Tensor] = {}
        doc["extra"] = flatten(extra, "extra", extra_tensors)
        _write_synced(tmp / EXTRA, safetensors.torch.save(extra_tensors))
    _write_synced(tmp / META, json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False).encode("utf-8"))
    _fsync_dir(tmp)
    if not final.exists():
        os.rename(tmp, final)
    elif _exchange(tmp, final):
        shutil.rmtree(tmp)  # tmp now holds the previous checkpoint
    else:  # the new one is complete before the old one is moved aside
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old)
    _fsync_dir(final.parent)
    return final


# -- reading ------------------------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """A checkpoint directory opened for reading: ``meta`` is checkpoint.json; tensors are read on demand, on CPU."""

    path: Path
    meta: dict

    def _tensors(self, name: str) -> dict[str, Tensor]:
        f = self.path / name
        if not f.exists():
            raise CheckpointError(f"{self.path}: {name} is missing; the checkpoint is incomplete — use another one "
                                  "(e.g. best/ instead of last/) or retrain")
        _refuse_pickle(f)
        try:
            return safetensors.torch.load_file(str(f), device="cpu")
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for corrupt files
            raise CheckpointError(f"{f}: not a readable safetensors file ({' '.join(str(exc).split())}); "
                                  f"{DAMAGED}") from None

    def model_state(self) -> dict[str, Tensor]:
        """The full state_dict (tied names filled in from their alias)."""
        tensors = self._tensors(MODEL)
        aliases = self.meta.get("aliases", {})
        if not isinstance(aliases, dict):
            raise CheckpointError(f"{self.path / META}: 'aliases' is a {type(aliases).__name__}, not a mapping of "
                                  f"tied weight names; {DAMAGED}")
        for name, target in aliases.items():
            if not isinstance(target, str) or target not in tensors:
                raise CheckpointError(f"{self.path / META}: 'aliases' maps {name!r} to {target!r}, which {MODEL} "
                                      f"does not hold; {DAMAGED}")
            tensors[name] = tensors[target]
        return tensors

    def load_model(self, model: nn.Module) -> nn.Module:
        try:
            model.load_state_dict(self.model_state(), strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{self.path}: the weights do not fit the model its config builds "
                                  f"({' '.join(str(exc).split())[:300]})") from None
        return model

    def optimizer_state(self) -> dict:
        if "optimizer" not in self.meta:
            raise CheckpointError(f"{self.path}: holds no optimizer state, so training cannot resume from it; "
                                  "resume from a checkpoint a training run wrote (OUT/last or OUT/best) or retrain")
        return self._unflatten("optimizer", OPTIM)

    def carry(self):
        return self._unflatten("carry", STATE)

    def extra(self):
        """What ``save_checkpoint(..., extra=...)`` stored, or None."""
        return self._unflatten("extra", EXTRA)

    def _unflatten(self, key: str, name: str):
        """``meta[key]`` with its tensors read from ``name`` (None when there is no ``key``)."""
        skel = self.meta.get(key)
        if skel is None:
            return None
        tensors = self._tensors(name)
        try:
            return unflatten(skel, tensors)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            what = f"names tensor {exc.args[0]!r}, which {name} does not hold" if isinstance(exc, KeyError) \
                else f"is malformed ({type(exc).__name__}: {' '.join(str(exc).split())[:100]})"
            raise CheckpointError(f"{self.path / META}: {key!r} {what}; {DAMAGED}") from None


def _pickle_payload(f: Path) -> str | None:
    """What kind of pickle ``f`` holds (judged by its name and first bytes, never by unpickling), or None."""
    if f.suffix.lower() in PICKLE_SUFFIXES:
        return f"a {f.suffix} file (a torch.save / pickle format)"
    try:
        with open(f, "rb") as fh:
            head = fh.read(16)
        size = f.stat().st_size
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (torch.save's format, a pickle inside)"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        # A safetensors file starts with its header length (8 bytes, little-endian), then the JSON header's "{";
        # such a length can begin with the same two bytes as a pickle, so rule that out first.
        n = int.from_bytes(head[:8], "little")
        if not (len(head) > 8 and head[8:9] == b"{" and 8 + n <= size):
            return f"a pickle (protocol {head[1]}, e.g. torch.save output)"
    return None


def _refuse_pickle(f: Path) -> None:
    what = _pickle_payload(f)
    if what is not None:
        raise CheckpointError(f"{f}: holds {what}; rnnlab never unpickles (loading a pickle can run arbitrary "
                              "code), so this checkpoint is refused. rnnlab checkpoints are safetensors + JSON "
                              "only: remove the file, or, if you trust where it came from, convert it yourself "
                              "with safetensors.torch.save_file")


def _refuse_pickles(directory: Path) -> None:
    for f in sorted(directory.iterdir()):
        if f.is_file():
            _refuse_pickle(f)


def _read_meta(path: Path) -> dict | None:
    f = path / META
    if not f.is_file():
        return None
    try:
        meta = json.loads(f.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _refuse_pickle(f)
        raise CheckpointError(f"{f}: not valid JSON ({exc}); {DAMAGED}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{f}: not an rnnlab checkpoint (format is not {FORMAT!r}); pass the directory an "
                              "rnnlab training run wrote (its --out, or OUT/best or OUT/last) — if it is one, "
                              f"{DAMAGED}")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{f}: checkpoint format version {meta.get('version')!r}; this rnnlab reads "
                              f"version {VERSION}")
    return meta


def load_checkpoint(path: str | Path, prefer: str = "best") -> Checkpoint:
    """Open a checkpoint. ``path`` is a checkpoint directory, or a run directory holding ``best/`` and ``last/``:
    then ``prefer`` ('best' or 'last') picks one, falling back to the other."""
    if prefer not in ("best", "last"):
        raise ValueError(f"prefer must be 'best' or 'last'; got {prefer!r}")
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint directory; pass the directory a training run wrote "
                              "(its --out, or OUT/best or OUT/last)")
    if not p.is_dir():
        raise CheckpointError(f"{p}: is a file, not a checkpoint directory; pass the directory a training run "
                              "wrote (its --out, or OUT/best or OUT/last)")
    meta = _read_meta(p)
    if meta is None:
        other = "last" if prefer == "best" else "best"
        for sub in (prefer, other):
            meta = _read_meta(p / sub)
            if meta is not None:
                p = p / sub
                break
    if meta is None:
        raise CheckpointError(f"{p}: not a checkpoint (no {META} in it, nor in best/ or last/); pass the directory "
                              "a training run wrote (its --out, or OUT/best or OUT/last)")
    _refuse_pickles(p)
    return Checkpoint(p, meta)
