#!/usr/bin/env python3
"""Engine benchmark: rnnlab's RNN / LSTM / GRU against torch.nn's, forward+backward, on the CPU.

What it prints (see benchmarks/README.md for how to read it):

1. tokens/s of forward+backward (loss.backward() of the whole output sequence, input gradient included) for
   rnnlab.LSTM, torch.nn.LSTM and a naive Python loop over torch.nn.LSTMCell (autograd); rnnlab.GRU, torch.nn.GRU;
   rnnlab.RNN, torch.nn.RNN (tanh) — for H in {128, 256, 512, 1024}, B in {1, 16, 64}, T = 64, input size = H,
   one layer, float32. Every implementation of a point, and an fp32 GEMM ((4096 x H) @ (H x 4H) + bias, the input
   projection of 4096 tokens, through torch.addmm/MKL and through oneDNN), run round-robin in one process, several
   rounds, median per implementation. The
   ratio columns (rnnlab / torch.nn) compare numbers taken side by side; absolute numbers drift +-20% between
   processes on a shared machine, ratios much less.
   Achieved GFLOP/s counts 3 x 2*G*H*(I+H) FLOPs per token (forward, and the two backward products: dW and
   dx/dh), G = 4 (LSTM), 3 (GRU), 1 (RNN); "% GEMM" divides it by the faster GEMM's rate in the same rounds.
2. Peak memory of forward+backward at H=512, B=64, T=256 for rnnlab.LSTM vs torch.nn.LSTM, each in its own
   subprocess: the peak RSS of the step over the RSS right after setup. The high-water mark is reset with
   /proc/self/clear_refs and read as VmHWM from /proc/self/status — the figure getrusage's ru_maxrss reports,
   but without what ru_maxrss inherits across fork+exec (the parent's RSS, here ~1 GB of benchmark state).
   Falls back to ru_maxrss where /proc is missing.
3. The gradient-probe overhead: rnnlab.LSTM forward+backward with and without ``rnnlab.probe()``, interleaved.

The allocator changes the ratios (torch.nn.LSTM page-faults heavily under glibc's default malloc thresholds): by
default the script re-executes itself with MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=100000000000;
``--default-malloc`` measures under glibc's defaults instead. Report both. Nothing here asserts a time.

    python benchmarks/engine.py --quick            # a smoke run, a minute or two
    python benchmarks/engine.py                     # the full grid, a few minutes on 2 cores
    python benchmarks/engine.py --default-malloc    # the same under glibc's default malloc
    python benchmarks/engine.py --points 256x16,512x64 --threads 1 --markdown
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "1000000000", "MALLOC_TRIM_THRESHOLD_": "100000000000"}
_REEXEC_FLAG = "_RNNLAB_BENCH_MALLOC_SET"
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
FULL_POINTS = [(h, b) for h in (128, 256, 512, 1024) for b in (1, 16, 64)]
QUICK_POINTS = [(128, 1), (256, 16), (512, 64)]
GEMM_ROWS = 4096


class UsageError(Exception):
    pass


def parse_points(text: str) -> list[tuple[int, int]]:
    points = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise argparse.ArgumentTypeError(
                f"got {item.strip()!r}; each point must be HxB with positive integers, e.g. 256x16,512x64")
        points.append((int(parts[0]), int(parts[1])))
    return points


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"got {text!r}; must be an integer >= 1")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like the rnnlab command
        raise UsageError(message.replace("argument ", "", 1))


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = _Parser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("Nothing here asserts a time.")[1],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: points {','.join(f'{h}x{b}' for h, b in QUICK_POINTS)}, 3 rounds, one probe point")
    p.add_argument("--points", type=parse_points, default=None, metavar="HxB,...",
                   help="the (hidden size, batch) points to time, e.g. 256x16,512x64; also the probe-overhead points "
                        "(default: the full grid; probe at 128x1,256x16,512x64)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="torch.set_num_threads(N) (default: torch's choice, one per core)")
    p.add_argument("--markdown", action="store_true", help="print the tables as markdown (as in docs/engine.md)")
    p.add_argument("--backend", choices=("auto", "cpp", "python"), default=None,
                   help="rnnlab's engine backend (sets RNNLAB_BACKEND; default: as the environment says)")
    p.add_argument("--default-malloc", action="store_true",
                   help="measure under glibc's default malloc thresholds instead of the tuned ones")
    p.add_argument("--repeats", type=positive_int, default=None, metavar="R",
                   help="timed rounds per point (default: 5, --quick: 3)")
    p.add_argument("--seq-len", type=positive_int, default=64, metavar="T", help="sequence length (default: 64)")
    p.add_argument("--min-time", type=float, default=None, metavar="S",
                   help="seconds one timed sample lasts at least, repeating the call (default: 0.1, --quick: 0.05)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--no-probe", action="store_true", help="skip the probe-overhead measurement")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)  # internal: one memory measurement
    p.add_argument("--memory-shape", default="512,64,256", help=argparse.SUPPRESS)  # H,B,T for --memory-child
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    if args.min_time is None:
        args.min_time = 0.05 if args.quick else 0.1
    args.points_given = args.points is not None
    if args.points is None:
        args.points = QUICK_POINTS if args.quick else FULL_POINTS
    return args


def ensure_malloc(args: argparse.Namespace, argv: list[str]) -> None:
    """Re-exec the running script (engine.py, or another script that imports it) with the malloc settings
    requested: glibc reads them once, at process start."""
    tuned_now = all(os.environ.get(k) == v for k, v in TUNED_MALLOC.items())
    if tuned_now == (not args.default_malloc) or os.environ.get(_REEXEC_FLAG):
        return
    env = dict(os.environ)
    env[_REEXEC_FLAG] = "1"
    for key, value in TUNED_MALLOC.items():
        if args.default_malloc:
            env.pop(key, None)
        else:
            env[key] = value
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(sys.argv[0]), *argv], env)  # the script that was run


def malloc_mode() -> str:
    if all(os.environ.get(k) == v for k, v in TUNED_MALLOC.items()):
        return "tuned (" + " ".join(f"{k}={v}" for k, v in TUNED_MALLOC.items()) + ")"
    if any(k in os.environ for k in TUNED_MALLOC):
        return "custom (" + " ".join(f"{k}={os.environ[k]}" for k in TUNED_MALLOC if k in os.environ) + ")"
    return "glibc default"


def cpu_description() -> str:
    """Model name and the SIMD level that decides the GEMM kernels (AVX-512 or not)."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == (platform.processor() or "unknown CPU"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        return model
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model} ({simd}, {os.cpu_count()} CPUs)"


class OtherLoad:
    """How much CPU other processes took while we measured: /proc/stat's busy time minus our own (and our
    children's) CPU time, as a share of all CPUs over the wall time. A busy shared machine skews the numbers."""

    def __init__(self):
        self.t0, self.busy0, self.own0 = time.perf_counter(), self._busy(), self._own()

    @staticmethod
    def _busy() -> float | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def share(self) -> float | None:
        busy = self._busy()
        if busy is None or self.busy0 is None:
            return None
        wall = time.perf_counter() - self.t0
        others = (busy - self.busy0) - (self._own() - self.own0)
        return max(0.0, others / (wall * (os.cpu_count() or 1)))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# What is timed: one forward+backward per call.
# ---------------------------------------------------------------------------------------------------------------

def layer_step(module, x, grad_out, probe=None):
    """forward + backward of a whole-sequence layer; x.grad and parameter grads cleared as a training step would."""
    params = [p for p in module.parameters()]

    def step():
        for p in params:
            p.grad = None
        x.grad = None
        if probe is None:
            out, _ = module(x)
            out.backward(grad_out)
        else:
            with probe():
                out, _ = module(x)
                out.backward(grad_out)

    return step


def cell_loop_step(cell, x, grad_out):
    """The naive way: a Python loop over time calling torch.nn.LSTMCell, autograd recording every step."""
    import torch

    params = [p for p in cell.parameters()]
    T, B, _ = x.shape
    H = cell.hidden_size

    def step():
        for p in params:
            p.grad = None
        x.grad = None
        h = x.new_zeros(B, H)
        c = x.new_zeros(B, H)
        outs = []
        for t in range(T):
            h, c = cell(x[t], (h, c))
            outs.append(h)
        torch.stack(outs).backward(grad_out)

    return step


def gemm_steps(H: int) -> dict:
    """The reference GEMM, (4096 x H) @ (H x 4H) + bias, two ways: torch.addmm (MKL, what per-step code calls) and
    oneDNN's linear (what torch.nn.LSTM's kernels use). On some CPUs they differ 2x (MKL may not take the AVX-512
    path on AMD CPUs where oneDNN does), so both are timed and the faster one is the peak the RNNs are held to."""
    import torch

    a = torch.randn(GEMM_ROWS, H)
    w = torch.randn(4 * H, H)
    bias = torch.randn(4 * H)
    out = torch.empty(GEMM_ROWS, 4 * H)
    wt = w.t()

    def addmm():
        torch.addmm(bias, a, wt, out=out)

    steps = {"GEMM addmm": addmm}
    try:
        a_mkldnn, w_mkldnn = a.to_mkldnn(), w.to_mkldnn()
        torch._C._nn.mkldnn_linear(a_mkldnn, w_mkldnn, bias)

        def onednn():
            torch._C._nn.mkldnn_linear(a_mkldnn, w_mkldnn, bias)

        steps["GEMM oneDNN"] = onednn
    except Exception:  # noqa: BLE001 - a torch build without oneDNN: addmm alone
        pass
    return steps


def gemm_flops(H: int) -> float:
    return 2.0 * GEMM_ROWS * H * 4 * H


def build_point(H: int, B: int, T: int):
    """All the implementations timed at one point: name -> (step, tokens or FLOPs per call, kind)."""
    import torch
    from torch import nn

    import rnnlab

    x = torch.randn(T, B, H, requires_grad=True)
    grad_out = torch.randn(T, B, H)
    impls = {}
    notes = []
    for kind, ref_cls in (("LSTM", nn.LSTM), ("GRU", nn.GRU), ("RNN", nn.RNN)):
        ref = ref_cls(H, H)
        impls[f"torch.nn.{kind}"] = (layer_step(ref, x, grad_out), kind)
        try:
            mine = getattr(rnnlab, kind)(H, H)
            mine.load_state_dict(ref.state_dict())  # same parameters, so the outputs can be compared
        except Exception as exc:  # noqa: BLE001 - a missing layer is reported, not fatal
            notes.append(f"rnnlab.{kind} unavailable: {type(exc).__name__}: {exc}")
            continue
        with torch.no_grad():
            diff = (mine(x)[0] - ref(x)[0]).abs().max().item()
        if not diff < 1e-4:
            notes.append(f"H={H} B={B}: rnnlab.{kind} output differs from torch.nn.{kind} by {diff:.2e} (max abs)")
        impls[f"rnnlab.{kind}"] = (layer_step(mine, x, grad_out), kind)
        if kind == "LSTM":
            cell = nn.LSTMCell(H, H)
            impls["LSTMCell loop"] = (cell_loop_step(cell, x, grad_out), kind)
    for name, step in gemm_steps(H).items():
        impls[name] = (step, "GEMM")
    return impls, notes


def time_round_robin(steps: dict, repeats: int, min_time: float) -> dict[str, list[float]]:
    """Seconds per call of each step in every round, timed round-robin (the starting one rotates every round)."""
    calls = {}
    for name, step in steps.items():  # warm-up: oneDNN builds its primitives on the first call of a shape
        step()
        step()
        t0 = time.perf_counter()
        step()
        calls[name] = max(1, math.ceil(min_time / max(time.perf_counter() - t0, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            step, n = steps[name], calls[name]
            t0 = time.perf_counter()
            for _ in range(n):
                step()
            samples[name].append((time.perf_counter() - t0) / n)
    return samples


def paired_ratio(samples: dict[str, list[float]], a: str, b: str) -> str:
    """Throughput of a over that of b: the median of the per-round ratios, with their range over the rounds.

    Taking the ratio within each round cancels most of the drift a shared machine adds between rounds."""
    if a not in samples or b not in samples:
        return "n/a"
    per_round = sorted(tb / ta for ta, tb in zip(samples[a], samples[b]))
    mid = statistics.median(per_round)
    if len(per_round) < 3:
        return f"{mid:.2f}x"
    return f"{mid:.2f}x ({per_round[0]:.2f}-{per_round[-1]:.2f})"


# ---------------------------------------------------------------------------------------------------------------
# Peak memory, one subprocess per measurement.
# ---------------------------------------------------------------------------------------------------------------

def memory_child(which: str, shape: str, threads: int | None) -> None:
    import torch
    from torch import nn

    import rnnlab

    H, B, T = (int(v) for v in shape.split(","))
    if threads:
        torch.set_num_threads(threads)
    cls = {"rnnlab.LSTM": rnnlab.LSTM, "torch.nn.LSTM": nn.LSTM}[which]
    module = cls(H, H)
    # Load code paths (the C++ extension, oneDNN kernels) at a tiny shape, so that the measured step allocates
    # only what the shape needs.
    tiny = torch.randn(2, 1, H, requires_grad=True)
    layer_step(module, tiny, torch.randn(2, 1, H))()
    x = torch.randn(T, B, H, requires_grad=True)
    grad_out = torch.randn(T, B, H)
    step = layer_step(module, x, grad_out)
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:  # reset this process's RSS high-water mark (VmHWM)
            f.write("5")
        method = "VmHWM after resetting it through /proc/self/clear_refs, over VmRSS after setup"
        base_kib = _proc_status_kib("VmRSS")
    except OSError:
        method = "getrusage ru_maxrss (the high-water mark could not be reset: start-up peaks may hide part of it)"
        base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    step()
    seconds = time.perf_counter() - t0
    if method.startswith("VmHWM"):
        peak_kib = _proc_status_kib("VmHWM")
    else:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"which": which, "base_mib": base_kib / 1024, "peak_over_base_mib": (peak_kib - base_kib) / 1024,
                      "seconds": seconds, "method": method}))


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def measure_memory(args: argparse.Namespace, runs: int) -> list[dict]:
    results = []
    for _ in range(runs):
        for which in ("rnnlab.LSTM", "torch.nn.LSTM"):
            cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", which, "--memory-shape", "512,64,256"]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            r = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            if r.returncode != 0:
                tail = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
                results.append({"which": which, "error": tail})
                continue
            results.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return results


# ---------------------------------------------------------------------------------------------------------------
# Tables.
# ---------------------------------------------------------------------------------------------------------------

def render(headers: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" for _ in headers) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def tok(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.memory_child is None:
        ensure_malloc(args, argv)
    if args.backend is not None:
        if args.backend == "auto":
            os.environ.pop("RNNLAB_BACKEND", None)
        else:
            os.environ["RNNLAB_BACKEND"] = args.backend
    if args.memory_child is not None:
        memory_child(args.memory_child, args.memory_shape, args.threads)
        return 0

    import torch

    import rnnlab

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        backend = rnnlab.backend_name()
    except (ValueError, RuntimeError) as exc:
        raise UsageError(" ".join(str(exc).split())) from exc
    torch.manual_seed(0)
    T = args.seq_len
    md = args.markdown
    cpu = cpu_description()
    header = (f"rnnlab engine benchmark, {datetime.date.today()}: torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, {cpu}, malloc {malloc_mode()}, rnnlab backend {backend}; "
              f"forward+backward, T={T}, input=hidden, 1 layer, float32, median of {args.repeats} interleaved rounds")
    print(("_" + header + "_") if md else header, flush=True)

    load = OtherLoad()
    results: dict[tuple[int, int], dict[str, float]] = {}
    ratios: dict[tuple[int, int], dict[str, str]] = {}
    all_notes: list[str] = []
    for H, B in args.points:
        t0 = time.perf_counter()
        gc.collect()
        impls, notes = build_point(H, B, T)
        all_notes += notes
        samples = time_round_robin({n: v[0] for n, v in impls.items()}, args.repeats, args.min_time)
        secs = {n: statistics.median(s) for n, s in samples.items()}
        res = {}
        for name, (_, kind) in impls.items():
            if kind == "GEMM":
                res[name] = gemm_flops(H) / secs[name] / 1e9  # GFLOP/s
            else:
                res[name] = B * T / secs[name]  # tokens/s
        res["GEMM"] = max(v for n, v in res.items() if n.startswith("GEMM "))  # the peak the RNNs are held to
        results[(H, B)] = res
        ratios[(H, B)] = {kind: paired_ratio(samples, f"rnnlab.{kind}", f"torch.nn.{kind}") for kind in GATES}
        ratios[(H, B)]["loop"] = paired_ratio(samples, "LSTMCell loop", "torch.nn.LSTM")
        del impls
        log(f"H={H:5d} B={B:3d}: {time.perf_counter() - t0:5.1f} s  "
            + "  ".join(f"{n} {f'{v:.0f} GF/s' if n.startswith('GEMM') else tok(v)}" for n, v in res.items()
                        if n != "GEMM"))

    def gflops(kind: str, H: int, tokens_per_s: float | None) -> float | None:
        return None if tokens_per_s is None else 3 * 2 * GATES[kind] * H * (H + H) * tokens_per_s / 1e9

    def eff(kind: str, H: int, B: int, name: str) -> str:
        g = gflops(kind, H, results[(H, B)].get(name))
        return "n/a" if g is None else f"{g:.1f} ({100 * g / results[(H, B)]['GEMM']:.0f}%)"

    print()
    print(("### " if md else "") + "LSTM: tokens/s (GFLOP/s, % of the GEMM's rate in the same rounds)")
    rows = []
    for (H, B), r in results.items():
        gemms = " / ".join(f"{r[n]:.0f}" for n in ("GEMM addmm", "GEMM oneDNN") if n in r)
        rows.append([str(H), str(B), gemms, tok(r.get("torch.nn.LSTM")), eff("LSTM", H, B, "torch.nn.LSTM"),
                     tok(r.get("rnnlab.LSTM")), eff("LSTM", H, B, "rnnlab.LSTM"),
                     ratios[(H, B)]["LSTM"], ratios[(H, B)]["loop"]])
    print(render(["H", "B", "GEMM GF/s addmm / oneDNN", "torch.nn.LSTM", "GF/s (%GEMM)", "rnnlab.LSTM", "GF/s (%GEMM)",
                  "rnnlab / nn (range)", "LSTMCell loop / nn (range)"], rows, md))
    for kind in ("GRU", "RNN"):
        print()
        print(("### " if md else "") + f"{kind}{' (tanh)' if kind == 'RNN' else ''}: tokens/s (GFLOP/s, % GEMM)")
        rows = []
        for (H, B), r in results.items():
            rows.append([str(H), str(B), tok(r.get(f"torch.nn.{kind}")), eff(kind, H, B, f"torch.nn.{kind}"),
                         tok(r.get(f"rnnlab.{kind}")), eff(kind, H, B, f"rnnlab.{kind}"),
                         ratios[(H, B)][kind]])
        print(render(["H", "B", f"torch.nn.{kind}", "GF/s (%GEMM)", f"rnnlab.{kind}", "GF/s (%GEMM)", "rnnlab / nn (range)"],
                     rows, md))
    print(f"\ntokens/s: median over the rounds. Ratios: median of the per-round throughput ratios (their range over "
          f"the rounds in brackets). GEMM: ({GEMM_ROWS} x H) @ (H x 4H) + bias, fp32, timed in the same rounds with "
          "torch.addmm (MKL) and oneDNN's linear; % GEMM is of the faster of the two. "
          "FLOPs per token: 3 x 2*G*H*(I+H), G = 4 LSTM, 3 GRU, 1 RNN.")

    if not args.no_probe:
        probe_points = args.points if args.points_given else [(256, 16)] if args.quick else [(128, 1), (256, 16), (512, 64)]
        rows = []
        for H, B in probe_points:
            log(f"probe overhead at H={H} B={B} ...")
            x = torch.randn(T, B, H, requires_grad=True)
            grad_out = torch.randn(T, B, H)
            lstm = rnnlab.LSTM(H, H)
            samples = time_round_robin({"plain": layer_step(lstm, x, grad_out),
                                        "probe": layer_step(lstm, x, grad_out, probe=rnnlab.probe)},
                                       max(args.repeats, 5), args.min_time)
            slow = sorted(100 * (tp / tn - 1) for tn, tp in zip(samples["plain"], samples["probe"]))
            rows.append([str(H), str(B), tok(B * T / statistics.median(samples["plain"])),
                         tok(B * T / statistics.median(samples["probe"])),
                         f"{statistics.median(slow):+.1f}% ({slow[0]:+.1f} to {slow[-1]:+.1f})"])
        print()
        print(("### " if md else "") + "Gradient-probe overhead: rnnlab.LSTM forward+backward inside rnnlab.probe()")
        print(render(["H", "B", "without probe tok/s", "with probe tok/s", "slowdown (range over rounds)"], rows, md))

    if not args.no_memory:
        log("peak memory (subprocesses) ...")
        mem = measure_memory(args, 1 if args.quick else 2)
        rows = []
        for m in mem:
            if "error" in m:
                rows.append([m["which"], "failed: " + m["error"], "", ""])
            else:
                rows.append([m["which"], f"+{m['peak_over_base_mib']:.0f} MiB", f"{m['base_mib']:.0f} MiB",
                             f"{m['seconds']:.2f} s"])
        print()
        print(("### " if md else "") + "Peak memory of one forward+backward, H=512, B=64, T=256 (one subprocess each)")
        print(render(["layer", "peak RSS over baseline", "baseline RSS", "time of the step"], rows, md))
        method = next((m["method"] for m in mem if "method" in m), "")
        if method:
            print(f"(measured with {method})")

    share = load.share()
    if share is not None:
        all_notes.append(f"other processes used {100 * share:.0f}% of the {os.cpu_count()} CPUs during this run"
                         + (" — the machine was busy: the numbers, ratios included, are unreliable"
                            + ("; with other work on the cores, multi-threaded torch ops wait on descheduled threads "
                               "(seen: torch.nn.LSTM 1000x slower at H=128, B=1), so compare with --threads 1"
                               if torch.get_num_threads() > 1 else "")
                            if share > 0.1 else ""))
    for note in all_notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except UsageError as exc:
        print(f"engine.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("engine.py: interrupted", file=sys.stderr)
        sys.exit(130)
