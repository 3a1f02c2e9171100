"""The token cache: a text file tokenised once, kept on disk as a flat array of token ids, and memory-mapped by every
later run (``rnnlab train lm --resume``, ``rnnlab eval``, each process of a torchrun launch).

Why: tokenising in memory holds the whole text as a Python string and its ids as int64 — about 16 bytes of RAM per
character of a plain-text file, paid again by every run. The cache is written by streaming the file in chunks
(never the whole text, never a Python list of all its ids); a later run maps the ids (1, 2 or 4 bytes each) as
tensors, and ``LMStream`` reads each batch's rows from the array with ``pread`` (see ``LMStream.__init__``: a
mapped page stays in the RSS once touched, a read one only in the page cache).

What an entry is, in the cache directory (``default_cache_dir``):

- ``NAME.json``: the format version, the settings the ids depend on (``key``: level, files, split, vocabulary
  options), each source file's size / mtime / ctime / inode / sha256 / characters, the vocabulary, and the arrays
  and where each split lies in them;
- ``NAME.BUILD.ARRAY.bin``: one array of ids per source file (uint8, int16 or int32, the smallest that holds the
  vocabulary), as nanoGPT's train.bin. BUILD is new on every build, so a reader never sees a half-written array.

NAME is the training file's name, the level and a hash of ``key``: a different level or vocabulary option is another
entry; an edited source rebuilds its entry in place.

When an entry is used: its JSON parses, has this format and this key, each array has the size the JSON gives, and
each source is unchanged. "Unchanged" is checked by size, mtime, ctime and inode (no reading) when the mtime is
older than the last hash of the file by ``TRUST_NS``; otherwise the file is hashed again (sha256, ~0.1 s per 100 MB)
and compared with the stored hash. A changed source is tokenised again; a damaged entry (bad JSON, a truncated or
missing array) is rebuilt with a one-line note on stderr, never used.

Concurrency: a build holds an exclusive lock (``NAME.lock``, fcntl) and writes to temporary files that are renamed
into place (the arrays, then the JSON), so a second process (another DDP rank, another run) waits for the build and
then maps the finished entry. Old arrays are removed after the new JSON is in place.

Identical results: the ids, the vocabulary and the train / validation split of an entry are exactly those of
``build_corpus`` on the whole text (tests/test_token_cache.py compares them on many files). Char level: code points
mapped through a numpy lookup table. Word level: lines split on "\\n", words on whitespace, one ``<eos>`` per line.
BPE: the tokenizer is trained from an iterator over the training lines and encodes pieces cut where its
pre-tokenizer cannot join across the cut (see ``_safe_cut``).
"""
from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .text import LEVELS, UNK, Corpus, DataError, Vocab, _bpe_module, check_file, empty_file, invalid_utf8

try:  # POSIX: the lock that makes one process build while the others wait
    import fcntl
except ImportError:  # pragma: no cover - Windows: each process builds on its own (atomic renames keep readers safe)
    fcntl = None

FORMAT = 1  # the entry layout; an entry of another format is rebuilt
# Bytes (or characters) read at a time: per-chunk Python work is then negligible, while a chunk's decoded text, code
# points and ids (~25 bytes per character at most) stay in the tens of MB.
CHUNK = 1 << 22
# The default cache directory is used for inputs of 1 MB or more: smaller ones tokenise in memory in well under a
# second, and an entry per small (often temporary) file would only fill the directory. --cache-dir caches any size.
MIN_BYTES = 1_000_000
# A source's size + mtime are trusted as "unchanged" only when its mtime is older than its last hash by this much: a
# write within the same clock tick as the hash (2 s on FAT) would otherwise look like no change.
TRUST_NS = 2_000_000_000
MAX_CODE = 0x110000  # Unicode code points
SPLITS = ("train", "valid", "test")


class SourceError(DataError):
    """A DataError about one input file (missing, a directory, empty, not UTF-8); ``split`` names which one
    ('train', 'valid', 'test' or 'file'), so a command can name its flag."""

    def __init__(self, message: str, split: str) -> None:
        super().__init__(message)
        self.split = split


class CacheUnavailable(OSError):
    """The cache directory cannot be written (or read); the caller tokenises in memory instead."""


@dataclass
class CacheInfo:
    """Where an entry is and whether this call built it (and in how many seconds)."""

    path: Path
    built: bool
    seconds: float = 0.0

    def describe(self) -> str:
        if self.built:
            return f"tokens cached in {self.path.parent} ({self.seconds:.1f} s)"
        return f"tokens from the cache in {self.path.parent}"


def default_cache_dir() -> Path:
    """``$RNNLAB_CACHE/tokens``, else ``~/.cache/rnnlab/tokens``: the same root as the C++ engine's build cache
    (``rnnlab.engine._cpp``), so one variable moves both."""
    root = os.environ.get("RNNLAB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "rnnlab")
    return Path(root) / "tokens"


def choose_cache_dir(cache_dir: str | Path | None, no_cache: bool, paths) -> Path | None:
    """The directory to cache ``paths`` in, or None for tokenising in memory: None with ``no_cache``; ``cache_dir``
    when given; else ``default_cache_dir()`` when the files add up to ``MIN_BYTES`` or more."""
    if no_cache:
        return None
    if cache_dir is not None:
        return Path(cache_dir)
    size = 0
    for p in paths:
        with contextlib.suppress(OSError):
            if p is not None and os.path.isfile(p):
                size += os.path.getsize(p)
    return default_cache_dir() if size >= MIN_BYTES else None


def say(note: str) -> None:
    """The default way a note reaches the user: one line ``rnnlab: note: ...`` on stderr."""
    print(f"rnnlab: note: {note}", file=sys.stderr)


# -- reading a source in chunks ------------------------------------------------------------------------------------
STAT = ("size", "mtime_ns", "ctime_ns", "ino")  # what says "unchanged" without reading a file


def _stat(p: Path) -> dict:
    st = os.stat(p)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino}


def scan(path: str | Path, split: str = "file") -> dict:
    """One pass over a file: the checks of ``read_text`` (exists, not a directory, not empty, strict UTF-8 — the
    same messages, as ``SourceError``), its sha256, its length in characters and its stat. Reads CHUNK bytes at a
    time."""
    try:
        p = check_file(path)
    except DataError as exc:
        raise SourceError(str(exc), split) from None
    verified = time.time_ns()
    try:
        before = _stat(p)
        h, dec = hashlib.sha256(), codecs.getincrementaldecoder("utf-8")("strict")
        chars = offset = lines = 0
        has_text = False
        with open(p, "rb") as f:
            while True:
                chunk = f.read(CHUNK)
                pending = len(dec.getstate()[0])  # bytes of a character cut by the previous chunk
                try:
                    chars += len(dec.decode(chunk, final=not chunk))
                except UnicodeDecodeError as exc:
                    start = offset - pending + exc.start
                    f.seek(start)
                    line = lines + chunk.count(b"\n", 0, max(0, start - offset)) + 1
                    raise SourceError(str(invalid_utf8(p, start, f.read(4), line)), split) from None
                if not chunk:
                    break
                h.update(chunk)
                has_text = has_text or bool(chunk.strip())
                lines += chunk.count(b"\n")
                offset += len(chunk)
        after = _stat(p)
    except OSError as exc:
        raise SourceError(f"{p}: cannot be read ({exc.strerror or exc}); check its permissions", split) from None
    if not has_text:
        raise SourceError(str(empty_file(p)), split)
    if after != before:
        raise SourceError(f"{p}: the file changed while it was being read; run again once it is written", split)
    return {**before, "sha256": h.hexdigest(), "chars": chars, "verified_ns": verified}


def _chunks(p: Path) -> Iterator[str]:
    """The file's text, CHUNK characters at a time (no newline translation)."""
    with open(p, encoding="utf-8", newline="") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _line_blocks(p: Path) -> Iterator[str]:
    """The file's text in blocks of whole lines (each ends with "\\n", but the file's last one may not)."""
    rest = ""
    for chunk in _chunks(p):
        chunk = rest + chunk if rest else chunk
        j = chunk.rfind("\n") + 1
        rest = chunk[j:]
        if j:
            yield chunk[:j]
    if rest:
        yield rest


def _line_split(blocks: Iterator[str], cut: int | None) -> Iterator[tuple[str, str]]:
    """(training part, validation part) of each block: ``split_text`` for the word and BPE levels, streamed. The
    training text is the lines whose "\\n" is before character ``cut``, or the first line when there is none (the
    cut moves forward); None: all training text."""
    pos = 0
    for b in blocks:
        if cut is None:
            yield b, ""
            continue
        j = b.rfind("\n", 0, max(0, cut - pos)) + 1
        if j == 0 and pos == 0:
            j = b.find("\n") + 1 or len(b)
        yield b[:j], b[j:]
        pos += len(b)


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # (len(text),) code points


def _dtype(vocab_size: int) -> np.dtype:
    # The smallest integer type torch also has that holds every id (torch has no uint16 / uint32 arithmetic).
    if vocab_size <= 1 << 8:
        return np.dtype(np.uint8)
    if vocab_size <= 1 << 15:
        return np.dtype(np.int16)
    return np.dtype(np.int32)


# -- building the vocabulary from the files --------------------------------------------------------------------------
def _too_short(name: str, train_chars: int) -> DataError:
    return DataError(f"{name}: too short to split off a validation part ({train_chars} characters); give a "
                     "validation file or use a longer text")


def _build_vocab(level: str, files: dict, cut: int | None, names: tuple, *, min_count: int, max_vocab: int | None,
                 bpe_vocab: int, vocab: Vocab | None) -> Vocab:
    """The vocabulary ``build_corpus`` builds (or checks ``vocab``), from one streamed pass over the training file
    (and, at char level, over the validation / test files, which decide whether the vocabulary needs <unk>). Also
    raises the error of a split that leaves no validation text."""
    train = files["train"]
    if level == "char":
        seen_train, seen_other, seen_valid = (np.zeros(MAX_CODE, dtype=bool) for _ in range(3))
        pos = 0
        for chunk in _chunks(train):
            codes = _codes(chunk)
            k = len(codes) if cut is None else min(max(cut - pos, 0), len(codes))
            seen_train[codes[:k]] = True
            seen_valid[codes[k:]] = True
            pos += len(codes)
        if cut is not None and all(chr(c).isspace() for c in np.flatnonzero(seen_valid)):
            raise _too_short(names[0], cut)
        if vocab is not None:
            return vocab
        for split in ("valid", "test"):
            if files.get(split) is not None:
                for chunk in _chunks(files[split]):
                    seen_other[_codes(chunk)] = True
        unseen = bool((seen_other | seen_valid)[~seen_train].any())
        return Vocab.of_chars([chr(c) for c in np.flatnonzero(seen_train)], unseen)

    state = {"train_chars": 0, "valid_text": False}

    def train_parts() -> Iterator[str]:
        for tr, va in _line_split(_line_blocks(train), cut):
            state["train_chars"] += len(tr)
            state["valid_text"] = state["valid_text"] or bool(va.strip())
            if tr:
                yield tr

    def check_split():
        if cut is not None and not state["valid_text"]:
            raise _too_short(names[0], state["train_chars"])

    try:
        if vocab is not None or level == "word":
            counts: Counter = Counter()
            for part in train_parts():
                if vocab is None:
                    counts.update(part.split())  # the words of words_of(part), in text order, without <eos>
            check_split()
            return vocab if vocab is not None else Vocab.of_word_counts(counts, min_count=min_count,
                                                                        max_size=max_vocab)
        built = Vocab.of_bpe((part.splitlines(keepends=True) for part in train_parts()), bpe_vocab)
        check_split()
        return built
    except ValueError as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(str(exc)) from None


# -- encoding a file into an array ---------------------------------------------------------------------------------
@dataclass
class _Encoded:
    length: int  # ids written
    split_at: int | None  # ids of the training part (a split file)
    unknown: Counter  # tokens not in the vocabulary, first-seen order (char: characters; word: words)
    total: int  # tokens read (characters; words without <eos>): what the unknown-token note counts against
    unk_ids: int  # ids equal to <unk>'s (literal "<unk>" words included)
    first_unknown: int | None  # character offset of the first unknown character (char level)


def _encode(level: str, vocab: Vocab, path: Path, cut: int | None, out, dtype: np.dtype,
            collect: bool = False) -> _Encoded:
    """Write the ids of the file at ``path`` to the binary file ``out`` (chunk by chunk), as ``Vocab.encode`` gives
    them for the whole text — or, with ``cut``, for its training part then its validation part. ``collect``: count
    the unknown words too (characters are always counted)."""
    unknown: Counter = Counter()
    res = _Encoded(0, None, unknown, 0, 0, None)
    unk = vocab.unk_id

    def write(ids: np.ndarray) -> None:
        if unk is not None:
            res.unk_ids += int(np.count_nonzero(ids == unk))
        ids.astype(dtype).tofile(out)
        res.length += len(ids)

    if level == "char":
        table = np.full(MAX_CODE, -1, dtype=np.int32)
        for i, t in enumerate(vocab.itos):
            if len(t) == 1:
                table[ord(t)] = i
        pos = 0
        for chunk in _chunks(path):
            codes = _codes(chunk)
            ids = table[codes]  # (len(chunk),)
            bad = np.flatnonzero(ids < 0)
            if len(bad):
                if res.first_unknown is None:
                    res.first_unknown = pos + int(bad[0])
                kinds, first, counts = np.unique(codes[bad], return_index=True, return_counts=True)
                for j in np.argsort(first, kind="stable"):  # first-seen order, as a Counter over the text keeps
                    unknown[chr(int(kinds[j]))] += int(counts[j])
                ids[bad] = -1 if unk is None else unk
            res.total += len(codes)
            pos += len(codes)
            write(ids)
        res.split_at = cut
        return res

    if level == "word":
        get, eos = vocab.stoi.get, vocab.eos_id
        stoi = vocab.stoi

        def part_ids(part: str) -> np.ndarray:
            lines = part.split("\n")
            if part.endswith("\n"):
                lines.pop()  # the line end closes the last line; it does not open another (a last line without
                # one still gets its <eos>: Vocab.encode's final_eos)
            ids: list[int] = []
            for line in lines:
                words = line.split()
                res.total += len(words)
                ids.extend([get(w, -1) for w in words])
                ids.append(eos)
            out = np.array(ids, dtype=np.int64)
            bad = out < 0
            if bad.any():  # the words are read again only for a part that has unknown ones
                if collect or unk is None:
                    unknown.update(w for w in part.split() if w not in stoi)
                if unk is None and res.first_unknown is None:
                    res.first_unknown = -1  # a word vocabulary without <unk>: not one rnnlab builds
                out[bad] = -1 if unk is None else unk
            return out
    else:
        tok = vocab._tok
        pending: list[str] = []

        def part_ids(part: str, last: bool = False) -> np.ndarray:
            pending.append(part)
            text = "".join(pending)
            p = len(text) if last else _safe_cut(text)
            pending[:] = [text[p:]] if p < len(text) else []
            return np.array(tok.encode(text[:p]).ids if p else [], dtype=np.int64)

    for tr, va in _line_split(_line_blocks(path), cut):
        if tr:
            write(part_ids(tr))
        if va and res.split_at is None:
            if level == "bpe":
                write(part_ids("", last=True))  # the training part ends here: encode its rest on its own
            res.split_at = res.length
        if va:
            write(part_ids(va))
    if level == "bpe":
        write(part_ids("", last=True))
    if cut is None:
        res.split_at = None
    elif res.split_at is None:
        res.split_at = res.length
    return res


def _safe_cut(text: str, min_piece: int | None = None) -> int:
    """0, or a position p (after ``min_piece`` characters at least) where encoding text[:p] and text[p:] apart gives
    the ids of the whole: text[p-1] is "\\n" and neither text[p-2] nor text[p] is whitespace. The byte-level BPE's
    pre-tokenizer (GPT-2's pattern: letters, digits, other symbols, each with an optional leading space; runs of
    whitespace) then ends a piece at p-1 ("\\n" alone, followed by non-space, with or without the rest) and starts
    one at p, so no piece spans the cut and none changes with it."""
    if len(text) < (CHUNK if min_piece is None else min_piece):
        return 0
    i = len(text) - 1
    while True:
        i = text.rfind("\n", 0, i)
        if i < 1:
            return 0
        if i + 1 < len(text) and not text[i + 1].isspace() and not text[i - 1].isspace():
            return i + 1


# -- the entries ---------------------------------------------------------------------------------------------------
class _Damaged(Exception):
    pass


class OpenFile:
    """A file open for reading (``fd``), closed when nothing refers to it any more."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))

    def __del__(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            os.close(self.fd)


def _vocab_digest(vocab: Vocab) -> str:
    return hashlib.sha256(json.dumps(vocab.to_json(), sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:60] or "text"


class _Entry:
    def __init__(self, cache_dir: Path, key: dict, stem: str) -> None:
        self.dir, self.key = cache_dir, key
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        self.name = f"{_safe_name(stem)}-{key['level']}-{digest}"
        self.json = cache_dir / f"{self.name}.json"

    # -- reading ---------------------------------------------------------------------------------------------------
    def read(self) -> dict | None:
        """The entry's JSON, checked against the key and its arrays' sizes; None when there is none; _Damaged."""
        try:
            text = self.json.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise _Damaged(f"cannot read it: {exc}") from None
        try:
            meta = json.loads(text)
        except ValueError:
            raise _Damaged("not JSON") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("key") != self.key:
            raise _Damaged("not an entry of this format and settings")
        try:
            for a in meta["arrays"].values():
                f = self.dir / a["file"]
                size = f.stat().st_size if f.exists() else None
                want = a["length"] * np.dtype(a["dtype"]).itemsize
                if size != want:
                    raise _Damaged(f"{a['file']} has {'no file' if size is None else f'{size:,} bytes'} where "
                                   f"{want:,} bytes were written")
            for s in meta["splits"].values():
                if s[0] not in meta["arrays"] or not 0 <= s[1] <= s[2] <= meta["arrays"][s[0]]["length"]:
                    raise _Damaged("a split lies outside its array")
            meta["vocab_obj"] = Vocab.from_json(meta["vocab"])
            if not isinstance(meta["sources"], dict):
                raise _Damaged("no sources")
            if self.key["kind"] == "stream":  # the counts of the unknown-token note
                meta["unknown_obj"] = Counter({str(t): int(n) for t, n in meta["unknown"]})
                meta["total"], meta["unk_ids"] = int(meta["total"]), int(meta["unk_ids"])
        except (KeyError, TypeError, ValueError, IndexError, OSError) as exc:
            raise _Damaged(f"malformed: {type(exc).__name__} {exc}") from None
        return meta

    def sources_state(self, meta: dict, paths: dict) -> list[str]:
        """The splits whose file must be hashed again: its stat differs from the recorded one, or is too recent to
        be trusted (see TRUST_NS)."""
        recheck = []
        for split, p in paths.items():
            rec = meta["sources"].get(split)
            if not isinstance(rec, dict) or rec.get("path") != str(p) or not isinstance(rec.get("sha256"), str):
                raise _Damaged(f"no record of {p}")
            try:
                now = _stat(p)
            except OSError:
                recheck.append(split)  # scan() says what is wrong with it
                continue
            if any(rec.get(k) != v for k, v in now.items()) or now["mtime_ns"] >= rec.get("verified_ns", 0) - TRUST_NS:
                recheck.append(split)
        return recheck

    def splits(self, meta: dict) -> dict:
        """{split: 1-D tensor of its ids}, memory-mapped from the arrays. Each tensor carries ``_rnnlab_file`` (the
        array open for reading, byte offset of its first id, dtype), by which ``LMStream`` reads its batches from
        the file instead: the same file as the map's even when a later build replaces it."""
        out, maps, files = {}, {}, {}
        for split, (name, lo, hi) in meta["splits"].items():
            a = meta["arrays"][name]
            if a["length"] == 0:
                out[split] = torch.zeros(0, dtype=torch.from_numpy(np.zeros(0, a["dtype"])).dtype)
                continue
            if name not in maps:
                files[name] = OpenFile(self.dir / a["file"])
                # Copy-on-write: a writable view for torch (no warning), pages read from the file on demand, shared
                # with the page cache and with every other process mapping it.
                maps[name] = torch.from_numpy(np.memmap(self.dir / a["file"], dtype=a["dtype"], mode="c",
                                                        shape=(a["length"],)))
            t = maps[name][lo:hi]
            t._rnnlab_file = (files[name], lo * np.dtype(a["dtype"]).itemsize, a["dtype"])
            out[split] = t
        return out

    # -- writing ---------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self):
        """Hold the entry's lock (a CacheUnavailable when the directory cannot be written)."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            f = open(self.dir / f"{self.name}.lock", "a+b")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise CacheUnavailable(f"{self.dir}: {exc.strerror or exc}") from None
        try:
            if fcntl is not None:
                with contextlib.suppress(OSError):  # a file system without locks: the renames still keep readers
                    fcntl.flock(f, fcntl.LOCK_EX)  # safe; two processes may then both build
            yield
        finally:
            f.close()  # releases the lock

    def write_json(self, meta: dict) -> None:
        meta = {k: v for k, v in meta.items() if not k.endswith("_obj")}  # the objects read() adds
        tmp = self.dir / f"{self.name}.json.{os.getpid()}.{time.time_ns()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(meta, f, ensure_ascii=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.json)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def remove_old(self, old: dict | None, keep: dict) -> None:
        """Remove the arrays of earlier builds and temporary files a killed build left. A process still reading an
        old array keeps it: it is mapped, and open (see ``splits``)."""
        names = {a.get("file") for a in ((old or {}).get("arrays") or {}).values() if isinstance(a, dict)}
        if fcntl is not None:  # under the lock no other build is running: every other file of the entry is old
            names |= {f.name for f in self.dir.glob(f"{self.name}.*.bin")}
            names |= {f.name for f in self.dir.glob(f"{self.name}.*.tmp")}
        names -= {a["file"] for a in keep["arrays"].values()}
        for n in names:
            if isinstance(n, str) and n.startswith(self.name + "."):
                with contextlib.suppress(OSError):
                    (self.dir / n).unlink()


def _lookup(entry: _Entry, paths: dict, build: Callable[[dict], dict], note: Callable[[str], None],
            check: Callable[[dict], None] | None) -> tuple[dict, CacheInfo]:
    """The entry's meta (checked, its sources unchanged), building it when it is missing, stale or damaged."""
    meta, recheck = _read_entry(entry, paths)
    if meta is not None and not recheck:  # 1. a later run: every stat trusted; nothing read, nothing written
        if check:
            check({s: meta["sources"][s]["sha256"] for s in paths})
        return meta, CacheInfo(entry.json, False)
    # 2. read (hash, check) what may have changed before writing anything: a bad file leaves the cache as it was
    scans = {s: _rescan(paths[s], s, meta) for s in recheck}
    if check:
        check({s: (scans[s] if s in scans else meta["sources"][s])["sha256"] for s in paths})

    def fresh(split: str) -> dict:  # this split's scan, read again if the file changed since
        if split not in scans or _stat(paths[split]) != {k: scans[split][k] for k in STAT}:
            scans[split] = _rescan(paths[split], split, meta)
        return scans[split]

    # 3. under the lock: read again (another process may have built or refreshed it), then use, refresh or build
    with entry.locked():
        damaged = None
        try:
            meta, recheck = _read_entry(entry, paths, quiet=False)
        except _Damaged as exc:
            meta, damaged = None, str(exc)
        if meta is not None:
            now = {s: (fresh(s) if s in recheck else meta["sources"][s])["sha256"] for s in paths}
            if check:
                check(now)
            changed = [s for s in paths if now[s] != meta["sources"][s]["sha256"]]
            if not changed:
                if recheck:  # the same content: trust the new stat from now on
                    for split in recheck:
                        meta["sources"][split].update(scans[split], path=str(paths[split]))
                    with contextlib.suppress(OSError):
                        entry.write_json(meta)
                return meta, CacheInfo(entry.json, False)
            note(f"{', '.join(str(paths[s]) for s in changed)} changed since {'its' if len(changed) == 1 else 'their'} "
                 f"tokens were cached in {entry.dir}; tokenising again")
        elif damaged is not None:
            note(f"the token cache {entry.json} is damaged ({damaged}); rebuilding it")
        old = _old_meta(entry)
        for split in paths:
            fresh(split)
        if check:
            check({s: scans[s]["sha256"] for s in paths})
        t0 = time.monotonic()
        meta = build(scans)
        for split, p in paths.items():
            meta["sources"][split] = {"path": str(p), **scans[split]}
            if _stat(p) != {k: scans[split][k] for k in STAT}:
                raise SourceError(f"{p}: the file changed while it was being read; run again once it is written",
                                  split)
        seconds = time.monotonic() - t0
        meta["built_seconds"] = round(seconds, 3)
        entry.write_json(meta)
        entry.remove_old(old, meta)
        return entry.read(), CacheInfo(entry.json, True, seconds)


def _rescan(p: Path, split: str, meta: dict | None) -> dict:
    """``scan``, or only the sha256 when the entry has a record of this file: equal to the record's, it is the same
    content (the record's character count and UTF-8 check hold), and hashing alone is ~3x faster than decoding."""
    rec = (meta or {}).get("sources", {}).get(split) if meta else None
    if not isinstance(rec, dict) or not isinstance(rec.get("chars"), int):
        return scan(p, split)
    verified = time.time_ns()
    try:
        before = _stat(p)
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        after = _stat(p)
    except OSError:
        return scan(p, split)  # says what is wrong with the file
    if after != before or h.hexdigest() != rec.get("sha256"):
        return scan(p, split)  # another content: checked and counted anew
    return {**before, "sha256": rec["sha256"], "chars": rec["chars"], "verified_ns": verified}


def _read_entry(entry: _Entry, paths: dict, quiet: bool = True) -> tuple[dict | None, list[str]]:
    """(the entry's meta or None, the splits whose file must be hashed again: all of them without an entry).
    ``quiet``: a damaged entry reads as none; else _Damaged."""
    try:
        meta = entry.read()
        if meta is not None:
            return meta, entry.sources_state(meta, paths)
    except (_Damaged, OSError) as exc:
        if not quiet:
            raise exc if isinstance(exc, _Damaged) else _Damaged(str(exc)) from None
    return None, list(paths)


def _old_meta(entry: _Entry) -> dict | None:
    try:
        meta = json.loads(entry.json.read_text(encoding="utf-8"))
        return meta if isinstance(meta, dict) else None
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _array_writer(entry: _Entry, build_id: str, name: str):
    """(binary file, final file name): written to a temporary name, fsynced and renamed when the block ends."""
    final = f"{entry.name}.{build_id}.{name}.bin"
    tmp = entry.dir / (final + ".tmp")
    try:
        with open(tmp, "wb") as f:
            yield f, final
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, entry.dir / final)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _encode_arrays(entry: _Entry, level: str, vocab: Vocab, files: dict, cuts: dict,
                   collect: bool = False) -> tuple[dict, dict]:
    """Encode each file into an array of the entry; (arrays meta, {file: _Encoded})."""
    build_id = f"{os.getpid()}-{time.time_ns()}"
    dtype = _dtype(len(vocab))
    arrays, encoded = {}, {}
    try:
        for name, p in files.items():
            with _array_writer(entry, build_id, name) as (f, final):
                encoded[name] = _encode(level, vocab, p, cuts.get(name), f, dtype, collect)
            arrays[name] = {"file": final, "dtype": dtype.name, "length": encoded[name].length}
    except OSError as exc:  # e.g. the disk is full: no cache this time
        for a in arrays.values():
            with contextlib.suppress(OSError):
                (entry.dir / a["file"]).unlink()
        raise CacheUnavailable(f"{entry.dir}: {exc.strerror or exc}") from None
    return arrays, encoded


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise DataError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")


def _bpe_version(level: str) -> str | None:
    if level != "bpe":
        return None
    return _bpe_module().__version__


# -- what the commands call ----------------------------------------------------------------------------------------
def cached_corpus(train: str | Path, valid: str | Path | None = None, test: str | Path | None = None, *,
                  cache_dir: str | Path, level: str = "char", valid_fraction: float = 0.1, min_count: int = 1,
                  max_vocab: int | None = None, bpe_vocab: int = 1024, vocab: Vocab | None = None,
                  names: tuple[str, str, str] | None = None, note: Callable[[str], None] = say,
                  check: Callable[[dict], None] | None = None) -> tuple[Corpus, CacheInfo]:
    """``build_corpus`` on files, through the token cache in ``cache_dir``: the same vocabulary, splits and ids, as
    tensors mapped from the cache (uint8 / int16 / int32). ``check({split: sha256})`` runs once the sources'
    hashes are known, before any build (a resumed run refuses changed data there). Errors: ``SourceError`` for a
    file, ``DataError`` for the data, ``CacheUnavailable`` when the directory cannot be used."""
    _check_level(level)
    if isinstance(valid_fraction, bool) or not isinstance(valid_fraction, (int, float)) or not 0 <= valid_fraction < 1:
        raise DataError(f"valid fraction must be a number in [0, 1); got {valid_fraction!r}")
    names = names or tuple(str(p) if p is not None else "" for p in (train, valid, test))
    paths = {}
    for split, p in zip(SPLITS, (train, valid, test)):
        if p is not None:
            try:
                paths[split] = check_file(p).resolve()
            except DataError as exc:
                raise SourceError(str(exc), split) from None
    split_train = valid is None and valid_fraction > 0
    key = {"format": FORMAT, "kind": "corpus", "level": level, "files": {s: str(p) for s, p in paths.items()},
           "valid_fraction": valid_fraction if split_train else None,
           "min_count": min_count if level == "word" else None, "max_vocab": max_vocab if level == "word" else None,
           "bpe_vocab": bpe_vocab if level == "bpe" else None, "tokenizers": _bpe_version(level), "vocab": "built"}
    cache_dir = Path(cache_dir)
    entry = _Entry(cache_dir, key, paths["train"].name)
    if vocab is not None:
        if vocab.level != level:
            raise DataError(f"the vocabulary is {vocab.level}-level but level {level!r} was requested")
        reuse = False
        with contextlib.suppress(_Damaged, OSError):  # the entry the first run built, when its vocabulary is this one
            meta = entry.read()
            reuse = meta is not None and meta["vocab_obj"].to_json() == vocab.to_json()
        if not reuse:  # else an entry of the given vocabulary's own
            entry = _Entry(cache_dir, {**key, "vocab": _vocab_digest(vocab)}, paths["train"].name)

    def build(scans: dict) -> dict:
        cut = int(scans["train"]["chars"] * (1 - valid_fraction)) if split_train else None
        v = _build_vocab(level, paths, cut, names, min_count=min_count, max_vocab=max_vocab, bpe_vocab=bpe_vocab,
                         vocab=vocab)
        arrays, enc = _encode_arrays(entry, level, v, paths, {"train": cut})
        splits = {}
        for split in paths:
            if enc[split].unknown and v.unk_id is None:  # only with a given vocabulary (a resumed run)
                at = enc[split].first_unknown
                name = names[SPLITS.index(split)]
                if split == "train" and cut is not None and at >= cut:
                    name, at = f"the last {valid_fraction:g} of {names[0]}", at - cut
                c = next(iter(enc[split].unknown))
                for a in arrays.values():
                    with contextlib.suppress(OSError):
                        (cache_dir / a["file"]).unlink()
                if level != "char":
                    raise DataError(f"{name}: the word {c!r} is not in the vocabulary, which has no {UNK}; remove "
                                    "it, or train on text that contains it")
                raise DataError(f"{name}: character {c!r} (U+{ord(c):04X}) at character offset {at} is not in "
                                f"the model's vocabulary (which has no {UNK}); remove it, or train on text that "
                                "contains it")
        n = enc["train"].length
        if split_train:
            splits["train"] = ["train", 0, enc["train"].split_at]
            splits["valid"] = ["train", enc["train"].split_at, n]
        else:
            splits["train"] = ["train", 0, n]
        for split in ("valid", "test"):
            if split in paths:
                splits[split] = [split, 0, enc[split].length]
        return {"format": FORMAT, "key": entry.key, "sources": {}, "vocab": v.to_json(), "arrays": arrays,
                "splits": splits}

    try:
        meta, info = _lookup(entry, paths, build, note, check)
        try:
            tensors = entry.splits(meta)
        except FileNotFoundError:  # replaced by a build in another process between reading and mapping: once more
            meta, info = _lookup(entry, paths, build, note, check)
            tensors = entry.splits(meta)
    except CacheUnavailable:
        raise
    except OSError as exc:
        raise CacheUnavailable(f"{cache_dir}: {exc.strerror or exc}") from None
    sources = {"train": {"name": names[0], "sha256": meta["sources"]["train"]["sha256"]}}
    if split_train:
        sources["valid"] = {"name": f"last {valid_fraction:g} of {names[0]}"}
    for split in ("valid", "test"):
        if split in paths:
            sources[split] = {"name": names[SPLITS.index(split)], "sha256": meta["sources"][split]["sha256"]}
    corpus = Corpus(meta["vocab_obj"], tensors["train"], tensors.get("valid"), tensors.get("test"), sources)
    return corpus, info


@dataclass
class CachedStream:
    """A file's ids under a given vocabulary (``rnnlab eval``): ``tokens`` (None when some tokens are unknown and
    the vocabulary has no <unk>), the unknown tokens (first-seen order), the tokens read, the <unk> ids."""

    tokens: torch.Tensor | None
    unknown: Counter
    total: int
    unk_ids: int
    info: CacheInfo | None


def cached_stream(path: str | Path, vocab: Vocab, *, cache_dir: str | Path,
                  note: Callable[[str], None] = say) -> CachedStream:
    """``vocab.encode`` of the whole file, through the token cache in ``cache_dir`` (an entry per file and
    vocabulary). Errors as ``cached_corpus``'s."""
    try:
        p = check_file(path).resolve()
    except DataError as exc:
        raise SourceError(str(exc), "file") from None
    key = {"format": FORMAT, "kind": "stream", "level": vocab.level, "files": {"file": str(p)},
           "vocab": _vocab_digest(vocab)}
    entry = _Entry(Path(cache_dir), key, p.name)
    refused: list = []

    def build(scans: dict) -> dict:
        arrays, enc = _encode_arrays(entry, vocab.level, vocab, {"file": p}, {}, collect=True)
        e = enc["file"]
        if e.unknown and vocab.unk_id is None:  # not kept: the command refuses the file
            with contextlib.suppress(OSError):
                (entry.dir / arrays["file"]["file"]).unlink()
            refused.append(e)
            raise _Refused
        return {"format": FORMAT, "key": key, "sources": {}, "vocab": vocab.to_json(), "arrays": arrays,
                "splits": {"file": ["file", 0, e.length]}, "unknown": list(e.unknown.items()), "total": e.total,
                "unk_ids": e.unk_ids}

    try:
        meta, info = _lookup(entry, {"file": p}, build, note, None)
        try:
            tokens = entry.splits(meta)["file"]
        except FileNotFoundError:  # replaced by a build in another process between reading and mapping: once more
            meta, info = _lookup(entry, {"file": p}, build, note, None)
            tokens = entry.splits(meta)["file"]
    except _Refused:
        e = refused[0]
        return CachedStream(None, e.unknown, e.total, e.unk_ids, None)
    except CacheUnavailable:
        raise
    except OSError as exc:
        raise CacheUnavailable(f"{cache_dir}: {exc.strerror or exc}") from None
    return CachedStream(tokens, meta["unknown_obj"], meta["total"], meta["unk_ids"], info)


class _Refused(Exception):
    pass
