#!/usr/bin/env python3
"""What the token cache changes at the start of ``rnnlab train lm`` on a large plain-text file: the time to the first
update and the peak memory, for the first start (tokenise and write the cache), a later start (map the cache),
``--resume``, ``rnnlab eval`` and the in-memory path (``--no-cache``, what every start cost before the cache); and
the training speed (tokens/s) on the large corpus against a small one.

The corpus: --source (default: ../shared/data/tinyshakespeare/input.txt next to the repository, or
$RNNLAB_DATA/tinyshakespeare/input.txt; else the Python standard library's source) repeated to --size-mb MB (and to
1 GB with --big) in a temporary directory, removed at the end (--keep keeps it).

Each case is one ``python -m rnnlab ...`` process with a small model (--hidden 64, batches of 8 x 32, --max-steps
--steps) and ``--log-every 1``: the first update is when its first progress line arrives. Peak RSS is the child's
``ru_maxrss`` (os.wait4); its resident memory is also sampled every 20 ms from /proc/PID/status and split into
anonymous (the process's own allocations) and file-backed pages (mapped files: the code, torch's libraries, and a
memory-mapped cache). The eval cases stop after --eval-batches batches (a wrapper around the command's evaluate()):
a whole 100 MB file would take minutes on a CPU and say nothing more about memory. "Tokens ready": ``load_corpus``
alone, in and out of the cache, timed after torch and rnnlab are imported (a start of the CLI spends ~3 s importing
torch, building the model and the optimizer whatever the data). tokens/s: train lm's defaults for the batches
(32 x 64), --rate-steps steps, the median of the interval rates in metrics.jsonl after the first.

    python benchmarks/corpus_cache.py                 # 100 MB, char and word level (~5 min on 2 cores)
    python benchmarks/corpus_cache.py --big           # and 1 GB at char level (~3 more minutes, 2 GB of disk)
    python benchmarks/corpus_cache.py --size-mb 3 --levels char --steps 2 --rate-steps 0 --eval-batches 2
                                                      # a smoke run

The parent process does not import torch, so a child's ru_maxrss is its own. Nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
SMALL_MODEL = ["--hidden", "64", "--batch-size", "8", "--bptt", "32", "--eval-batch-size", "8"]
FIRST_STEP = re.compile(r"^\s+epoch \d+ batch \d+/")  # the trainer's progress line (--log-every 1, no --quiet)
EVAL_START = "corpus_cache: evaluation starts"

# `python -c` wrapper of 'rnnlab eval': prints a line when evaluation starts (the tokens are ready) and evaluates
# only the first K batches. argv: K, then the command line.
EVAL_HARNESS = f"""
import itertools, sys
import rnnlab.cli.eval as command
from rnnlab.cli.main import main
K, real = int(sys.argv[1]), command.evaluate

class First:
    def __init__(self, stream):
        self.stream, self.batch_size = stream, stream.batch_size
    def batches(self, epoch=0, start=0):
        return itertools.islice(self.stream.batches(epoch, start), K)
    def num_batches(self, epoch=0):
        return min(K, self.stream.num_batches(epoch))

def first_batches(model, stream, level=None):
    print({EVAL_START!r}, flush=True)
    return real(model, First(stream), level)

command.evaluate = first_batches
sys.exit(main(sys.argv[2:]))
"""


def source_text(path: str | None) -> tuple[bytes, str]:
    """(the text to repeat, where it came from)."""
    candidates = [Path(path)] if path else [SHARED]
    if not path and os.environ.get("RNNLAB_DATA"):
        candidates.insert(0, Path(os.environ["RNNLAB_DATA"]) / "tinyshakespeare" / "input.txt")
    for c in candidates:
        if c.is_file():
            return c.read_bytes(), str(c)
    if path:
        sys.exit(f"corpus_cache.py: --source {path}: no such file")
    code = "from rnnlab.data.text import stdlib_corpus; import sys; sys.stdout.write(stdlib_corpus(1_000_000))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, env=child_env(), check=True)
    return out.stdout, "the Python standard library's source (rnnlab.data.text.stdlib_corpus, 1 MB)"


def make_corpus(text: bytes, size: int, path: Path) -> Path:
    """``text`` repeated to ``size`` bytes, cut at a line end."""
    with open(path, "wb") as f:
        written = 0
        while written + len(text) <= size:
            f.write(text)
            written += len(text)
        rest = text[:size - written]
        f.write(rest[:rest.rfind(b"\n") + 1])
    return path


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def _status(pid: int) -> dict:
    try:
        with open(f"/proc/{pid}/status") as f:
            return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f)
                    if k in ("RssAnon", "RssFile", "RssShmem")}
    except (OSError, ValueError):
        return {}


def measure(args: list[str], marker, timeout: float) -> dict:
    """Run ``python ARGS``; seconds to the first stdout line ``marker`` matches, total seconds, peak RSS (MB), the
    sampled peaks of anonymous and file-backed resident memory (MB), the exit code and the output."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            encoding="utf-8", env=child_env())
    peaks = {"RssAnon": 0, "RssFile": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            for k, v in _status(proc.pid).items():
                if k in peaks:
                    peaks[k] = max(peaks[k], v)
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
    reader.start()
    first, out = None, []
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    for line in proc.stdout:
        out.append(line)
        if first is None and (marker(line) if callable(marker) else marker in line):
            first = time.monotonic() - t0
    _, status, usage = os.wait4(proc.pid, 0)
    total = time.monotonic() - t0
    timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    reader.join()
    return {"first": first, "total": total, "rss": usage.ru_maxrss / 1024, "anon": peaks["RssAnon"] / 1024,
            "file": peaks["RssFile"] / 1024, "rc": proc.returncode, "out": "".join(out), "err": "".join(err)}


def train(corpus: Path, level: str, out: Path, steps: int, extra: list[str]) -> list[str]:
    return ["-m", "rnnlab", "train", "lm", "--train", str(corpus), "--level", level, *SMALL_MODEL, "--max-steps",
            str(steps), "--log-every", "1", "--out", str(out), *extra]


def eval_cmd(run: Path, corpus: Path, batches: int, extra: list[str]) -> list[str]:
    return ["-c", EVAL_HARNESS, str(batches), "eval", str(run), "--file", str(corpus), "--batch-size", "8",
            "--bptt", "32", *extra]


def rate(corpus: Path, out: Path, steps: int, extra: list[str], timeout: float) -> float | None:
    """Median tokens/s of the training intervals after the first (train lm's default batches, a small model)."""
    every = max(1, steps // 4)
    r = measure(["-m", "rnnlab", "train", "lm", "--train", str(corpus), "--hidden", "64", "--max-steps", str(steps),
                 "--log-every", str(every), "--quiet", "--out", str(out), *extra], "\0", timeout)
    if r["rc"] != 0:
        print(r["err"][-2000:], file=sys.stderr)
        return None
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    rates = [x["tokens_per_s"] for x in recs if x.get("kind") == "train"][1:]
    return statistics.median(rates) if rates else None


READY = """
import sys, time
import torch
from rnnlab.data.text import load_corpus
before = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) if sys.platform == "linux" else 0
t = time.perf_counter()
c = load_corpus(sys.argv[1], level=sys.argv[2], cache_dir=sys.argv[3] or None)
print(f"ready {time.perf_counter() - t:.3f} {before}")
"""


def ready(corpus: Path, level: str, cache: Path | None, timeout: float) -> dict:
    """Seconds of ``load_corpus`` alone (rnnlab and torch already imported) and the peak RSS above the imports."""
    r = measure(["-c", READY, str(corpus), level, str(cache or "")], "\0", timeout)
    words = next((line.split() for line in r["out"].splitlines() if line.startswith("ready ")), None)
    if r["rc"] != 0 or words is None:
        print(r["err"][-2000:], file=sys.stderr)
        return {"seconds": None, "above": None}
    return {"seconds": float(words[1]), "above": r["rss"] - int(words[2]) / 1024}


def fmt(v, spec=".1f") -> str:
    return "-" if v is None else format(v, spec)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--source", help="the text to repeat (default: tiny shakespeare if present)")
    p.add_argument("--size-mb", type=float, default=100, help="size of the corpus in MB (default: %(default)s)")
    p.add_argument("--big", action="store_true", help="also a 1 GB corpus (char level; no in-memory case: it would "
                   "need ~20 GB)")
    p.add_argument("--levels", default="char,word", help="comma-separated (default: %(default)s)")
    p.add_argument("--steps", type=int, default=5, help="updates per training case (default: %(default)s)")
    p.add_argument("--eval-batches", type=int, default=20, help="batches of an eval case (default: %(default)s)")
    p.add_argument("--rate-steps", type=int, default=300, help="updates of each tokens/s run; 0: none "
                   "(default: %(default)s)")
    p.add_argument("--rate-reps", type=int, default=3, help="tokens/s runs of each corpus, alternating small and "
                   "large (default: %(default)s)")
    p.add_argument("--dir", help="where to make the directory for the corpora, the cache and the runs (default: the "
                   "system's temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep that directory (its path is printed)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per process (default: %(default)s)")
    a = p.parse_args()
    levels = [x for x in a.levels.split(",") if x]
    if not levels or set(levels) - {"char", "word", "bpe"}:
        p.error(f"--levels takes char, word and/or bpe, comma-separated; got {a.levels!r}")

    if a.dir:
        Path(a.dir).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="rnnlab-corpus-cache-", dir=a.dir))  # a new directory: all of it is ours
    text, where = source_text(a.source)
    print(f"corpus_cache.py: working in {root}", file=sys.stderr, flush=True)
    load0 = os.getloadavg()
    print(f"# corpus_cache.py — {datetime.datetime.now().isoformat(timespec='seconds')}, torch "
          f"{metadata.version('torch')}, Python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
          f"{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; corpus: {where} repeated; model --hidden 64, batches 8 x 32",
          flush=True)
    sizes = [int(a.size_mb * 1_000_000)] + ([1_000_000_000] if a.big else [])
    rows, rates, readies = [], [], []
    small = make_corpus(text, 100_000, root / "small.txt")
    try:
        for size in sizes:
            corpus = make_corpus(text, size, root / f"corpus-{size // 1_000_000}MB.txt")
            label = f"{corpus.stat().st_size / 1e6:,.0f} MB"
            for level in (levels if size == sizes[0] else ["char"]):
                cache, runs = root / f"cache-{size}-{level}", root / f"runs-{size}-{level}"
                shutil.rmtree(cache, ignore_errors=True)
                shutil.rmtree(runs, ignore_errors=True)
                cases = []
                if size == sizes[0]:
                    cases.append(("100 KB file, in memory (the process's floor)",
                                  train(small, level, runs / "floor", a.steps, ["--no-cache"]), FIRST_STEP.match))
                    cases.append(("in memory (--no-cache)",
                                  train(corpus, level, runs / "nocache", a.steps, ["--no-cache"]), FIRST_STEP.match))
                with_cache = ["--cache-dir", str(cache)]
                cases += [
                    ("first start: tokenise + cache", train(corpus, level, runs / "first", a.steps, with_cache),
                     FIRST_STEP.match),
                    ("later start: cache", train(corpus, level, runs / "later", a.steps, with_cache), FIRST_STEP.match),
                    ("--resume: cache", ["-m", "rnnlab", "train", "lm", "--resume", str(runs / "later"), "--max-steps",
                                         str(a.steps), *with_cache], FIRST_STEP.match),
                    (f"eval, first start: tokenise + cache ({a.eval_batches} batches)",
                     eval_cmd(runs / "later", corpus, a.eval_batches, with_cache), EVAL_START),
                    (f"eval, later start: cache ({a.eval_batches} batches)",
                     eval_cmd(runs / "later", corpus, a.eval_batches, with_cache), EVAL_START),
                ]
                if size == sizes[0]:
                    cases.append((f"eval, in memory (--no-cache) ({a.eval_batches} batches)",
                                  eval_cmd(runs / "later", corpus, a.eval_batches, ["--no-cache"]), EVAL_START))
                for name, cmd, marker in cases:
                    r = measure(cmd, marker, a.timeout)
                    if r["rc"] != 0:
                        print(f"{label} {level} {name}: exit code {r['rc']}\n{r['err'][-3000:]}", file=sys.stderr)
                    rows.append((label, level, name, r))
                    print(f"  {label} {level:4s} {name}: first update {fmt(r['first'])} s, total {r['total']:.1f} s, "
                          f"peak RSS {r['rss']:.0f} MB (anon {r['anon']:.0f}, file {r['file']:.0f})",
                          file=sys.stderr, flush=True)
                for name, c in ((("in memory (load_corpus)", None),) if size == sizes[0] else ()) + \
                        (("cache, later start", cache),):  # in memory, 1 GB takes ~16 GB and minutes
                    r = ready(corpus, level, c, a.timeout)
                    readies.append((label, level, name, r))
                    print(f"  {label} {level:4s} tokens ready, {name}: {fmt(r['seconds'], '.2f')} s, "
                          f"+{fmt(r['above'], '.0f')} MB", file=sys.stderr, flush=True)
                if level == "char" and a.rate_steps:
                    source = Path(where) if Path(where).is_file() else small
                    got = {"source file (in memory)": [], f"{label} (cache)": []}
                    for rep in range(a.rate_reps):  # alternating: the machine's load drifts
                        for i, (name, f, extra) in enumerate((("source file (in memory)", source, ["--no-cache"]),
                                                              (f"{label} (cache)", corpus, with_cache))):
                            got[name].append(rate(f, runs / f"rate-{i}-{rep}", a.rate_steps, extra, a.timeout))
                    rates += [(f"{name}, vs {label}", v) for name, v in got.items()]
            corpus.unlink()
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    load1 = os.getloadavg()
    print("\n| corpus | level | case | first update (s) | total (s) | peak RSS (MB) | anon (MB) | file-backed (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, level, name, r in rows:
        bad = "" if r["rc"] == 0 else f" (exit {r['rc']})"
        print(f"| {label} | {level} | {name}{bad} | {fmt(r['first'])} | {r['total']:.1f} | {r['rss']:.0f} | "
              f"{r['anon']:.0f} | {r['file']:.0f} |")
    print("\n| corpus | level | tokens ready (after the imports) | seconds | peak RSS above the imports (MB) |")
    print("|---|---|---|---|---|")
    for label, level, name, r in readies:
        print(f"| {label} | {level} | {name} | {fmt(r['seconds'], '.2f')} | {fmt(r['above'], '.0f')} |")
    if rates:
        print("\n| training text (char level, batches 32 x 64, --hidden 64) | tokens/s, median | each run |")
        print("|---|---|---|")
        for name, v in rates:
            ok = [x for x in v if x is not None]
            print(f"| {name} | {fmt(statistics.median(ok) if ok else None, ',.0f')} | "
                  f"{', '.join(fmt(x, ',.0f') for x in v)} |")
    print(f"\nload average at the end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    return 1 if any(r["rc"] != 0 for *_, r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
