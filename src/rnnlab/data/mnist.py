"""Sequential MNIST: the MNIST digits read from LeCun's IDX files (gzip'd or not) with numpy, served to a recurrent
model one row or one pixel per step.

    mode      steps T   features per step   the classic result
    "row"     28        28 (one image row)  an LSTM reaches ~98.5-99% test accuracy
    "pixel"   784       1 (one pixel)       Le et al. 2015's pixel MNIST: long-range memory over 784 steps
    permute=True: the 784 pixels in a fixed random order (permuted pixel MNIST, Le et al. 2015), the same order for
    every image of every split, drawn from ``permute_seed``

Files (``data_dir``; default ``$RNNLAB_DATA/mnist``, else ``<repo>/../shared/data/mnist``):
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``,
each with or without ``.gz``. IDX is big-endian: int32 magic (2051 images, 2049 labels), int32 sizes, uint8 data.
Every header is checked against the file's length; a missing, corrupt or truncated file is a ``DataError`` that
names the file and the fix.

Splits (``mnist_splits``): the validation set is the *last* ``valid_size`` (5,000) images of the 60,000 training
images, as is common; train is the rest; test is the 10,000 test images. ``limit`` keeps only the first N images of
each split, for quick runs.

Each split is a data object for ``rnnlab.train.Trainer`` (``batches(epoch, start)``, ``num_batches(epoch)``,
``batch_size``) whose batches are ``SeqBatch(x, lengths, y)`` as ``ClassificationTask`` takes them: x (B, T, F)
float32 pixels scaled to [0, 1], lengths (B,) int64 = T, y (B,) int64 digits. A shuffled split draws its order for
epoch e from ``(seed, split, e)`` alone, so every epoch has a new order, a repeated run the same one, and a resumed
run reads exactly the batches an uninterrupted one would. Images stay uint8 in memory (47 MB for the training set);
batches are converted as they are read.
"""
from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch

from .synthetic import SeqBatch
from .text import DataError

MODES = ("row", "pixel")
N_CLASSES = 10
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049  # IDX: 0x0000 0803 (uint8, 3 dims), 0x0000 0801 (uint8, 1 dim)
FILES = {  # split -> (images, labels), the names of LeCun's files without .gz
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
VALID_SIZE = 5000  # the last 5,000 training images: the common validation split (55,000 left to train on)
GET = ("put the four MNIST files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
       "t10k-labels-idx1-ubyte.gz, from http://yann.lecun.com/exdb/mnist/ or a mirror) in that folder, or point "
       "--data-dir (RNNLAB_DATA=<root>, read as <root>/mnist) at a folder that has them")


def default_data_dir() -> Path:
    """``$RNNLAB_DATA/mnist`` when RNNLAB_DATA is set, else ``<repo>/../shared/data/mnist`` (the project's shared
    data folder next to the repository)."""
    root = os.environ.get("RNNLAB_DATA")
    if root:
        return Path(root) / "mnist"
    return Path(__file__).resolve().parents[3].parent / "shared" / "data" / "mnist"


# -- reading IDX files ---------------------------------------------------------------------------------------------
def _find(data_dir: Path, name: str) -> Path:
    """The file ``name`` in ``data_dir``: ``name.gz``, ``name``, or the ``train-images.idx3-ubyte`` spelling."""
    dotted = name.replace("-idx", ".idx")
    for candidate in (name + ".gz", name, dotted + ".gz", dotted):
        if (data_dir / candidate).is_file():
            return data_dir / candidate
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such folder for MNIST (looked for {name}.gz); {GET}")
    raise DataError(f"{data_dir / (name + '.gz')}: no such file (nor {name} without .gz); {GET}")


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}); check the file's permissions") from None
    if raw[:2] == b"\x1f\x8b":  # the gzip magic: decompress whatever the file is called
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: not a valid gzip file ({' '.join(str(exc).split())}); the download is corrupt "
                            "or incomplete: download it again") from None
    return raw


def read_idx(path: str | Path, magic: int | None = None) -> np.ndarray:
    """The uint8 array an IDX file holds (gzip'd or not), shaped as its header says: (N,) for labels (magic 2049),
    (N, rows, cols) for images (magic 2051). ``magic`` (optional) is the number the file must start with. Raises
    ``DataError`` for a missing file, a wrong magic number, or a length that does not match the header."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the path ({GET})")
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: only {len(data)} bytes, too short for an IDX header; the file is truncated: "
                        "download it again")
    found = int.from_bytes(data[:4], "big")
    dtype_code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or dtype_code != 0x08 or ndim == 0 or (magic is not None and found != magic):
        kind = {IMAGE_MAGIC: "MNIST images", LABEL_MAGIC: "MNIST labels"}.get(magic, "uint8 data")
        want = f"{magic}" if magic is not None else "0x000008NN (uint8 data in NN dimensions)"
        raise DataError(f"{path}: not an IDX file of {kind}: magic number {found}, expected {want}; the file is "
                        "corrupt or another file under this name: download it again")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: {len(data)} bytes, shorter than its {header}-byte IDX header; the file is "
                        "truncated: download it again")
    shape = tuple(int(v) for v in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = math.prod(shape)
    if len(data) - header != expected:
        dims = " x ".join(map(str, shape))
        raise DataError(f"{path}: {len(data) - header:,} bytes of data, but its header says {dims} = {expected:,}; the "
                        f"file is {'truncated' if len(data) - header < expected else 'corrupt'}: download it again")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def read_mnist_split(data_dir: str | Path | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, rows, cols) uint8, labels (N,) uint8) of ``split`` ("train" or "test") from ``data_dir``
    (None: ``default_data_dir()``), with the image and label files checked against each other."""
    if split not in FILES:
        raise ValueError(f"split must be one of {', '.join(FILES)}; got {split!r}")
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    image_path, label_path = (_find(data_dir, name) for name in FILES[split])
    images = read_idx(image_path, IMAGE_MAGIC)
    labels = read_idx(label_path, LABEL_MAGIC)
    if images.ndim != 3:
        raise DataError(f"{image_path}: holds a {images.ndim}-D array {images.shape}; MNIST images are (N, 28, 28)")
    if labels.ndim != 1:
        raise DataError(f"{label_path}: holds a {labels.ndim}-D array {labels.shape}; MNIST labels are (N,)")
    if len(images) != len(labels):
        raise DataError(f"{image_path} holds {len(images):,} images but {label_path} holds {len(labels):,} labels; "
                        "the two files are from different sets: download both again")
    if len(images) == 0:
        raise DataError(f"{image_path}: holds no images; download it again")
    if int(labels.max()) >= N_CLASSES:
        raise DataError(f"{label_path}: holds label {int(labels.max())}; MNIST labels are digits 0-9: the file is "
                        "corrupt or not MNIST")
    return images, labels


# -- sequences -----------------------------------------------------------------------------------------------------
def pixel_permutation(seed: int, n_pixels: int = 784) -> np.ndarray:
    """The fixed pixel order of permuted MNIST: a permutation of range(n_pixels) drawn from ``seed`` alone."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"permute_seed must be an integer >= 0; got {seed!r}")
    return np.random.default_rng(np.random.SeedSequence([seed, n_pixels])).permutation(n_pixels)


def _check_int(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}; got {value!r}")
    return value


class SequentialMNIST:
    """One split of MNIST as sequences: ``images`` (N, rows, cols) uint8 and ``labels`` (N,) → batches
    ``SeqBatch(x (B, T, F) float32 in [0, 1], lengths (B,) = T, y (B,) int64)``.

    ``mode="row"``: T = rows, F = cols; ``mode="pixel"``: T = rows * cols, F = 1. ``permutation`` (optional, a
    permutation of the rows * cols pixels, e.g. ``pixel_permutation(seed)``) reorders every image's pixels before
    they are cut into steps; give the same one to every split (``mnist_splits`` does). ``shuffle=True`` (training):
    each epoch reads the images in an order drawn from (seed, split, epoch); ``shuffle=False``: in file order. The
    last batch of an epoch holds the remainder (smaller than ``batch_size``).
    """

    n_classes = N_CLASSES

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, mode: str = "row", batch_size: int = 128,
                 permutation: np.ndarray | None = None, shuffle: bool = False, seed: int = 0,
                 split: str = "train") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be an (N, rows, cols) uint8 array; got {images.dtype} {images.shape}")
        if labels.shape != (len(images),):
            raise ValueError(f"labels must be an (N,) = ({len(images)},) array; got shape {labels.shape}")
        if len(images) == 0:
            raise ValueError("the split holds no images")
        self.mode = mode
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.seed = _check_int("seed", seed, 0)
        self.shuffle = bool(shuffle)
        self.split = str(split)
        n, rows, cols = images.shape
        self.image_shape = (rows, cols)
        flat = images.reshape(n, rows * cols)  # (N, P), a view
        if permutation is not None:
            permutation = np.asarray(permutation)
            if permutation.shape != (rows * cols,) or not np.array_equal(np.sort(permutation), np.arange(rows * cols)):
                raise ValueError(f"permutation must be a permutation of range({rows * cols}) (one index per pixel); "
                                 f"got an array of shape {permutation.shape}")
            flat = flat[:, permutation]  # (N, P): permuted once here, a copy, still uint8
        self.permutation = permutation
        self.steps, self.input_size = (rows, cols) if mode == "row" else (rows * cols, 1)
        self._pixels = np.ascontiguousarray(flat)  # (N, P) uint8
        self._labels = labels.astype(np.int64)  # (N,)

    def __len__(self) -> int:
        return len(self._labels)

    def num_batches(self, epoch: int = 0) -> int:
        return math.ceil(len(self) / self.batch_size)

    def order(self, epoch: int = 0) -> np.ndarray:
        """The image indices in the order ``epoch`` reads them (a function of seed, split and epoch)."""
        if not self.shuffle:
            return np.arange(len(self))
        entropy = [self.seed, zlib.crc32(self.split.encode("utf-8")), int(epoch)]
        return np.random.default_rng(np.random.SeedSequence(entropy)).permutation(len(self))

    def _batch(self, idx: np.ndarray) -> SeqBatch:
        B = len(idx)
        x = torch.from_numpy(self._pixels[idx]).view(B, self.steps, self.input_size)  # (B, T, F) uint8
        x = x.to(torch.float32).div_(255.0)  # (B, T, F) in [0, 1]
        return SeqBatch(x, torch.full((B,), self.steps, dtype=torch.long), torch.from_numpy(self._labels[idx]))

    def batch(self, epoch: int = 0, index: int = 0) -> SeqBatch:
        """Batch ``index`` of ``epoch``: the same tensors on every call."""
        if not 0 <= index < self.num_batches(epoch):
            raise IndexError(f"batch index must be in [0, {self.num_batches(epoch)}); got {index}")
        order = self.order(epoch)
        return self._batch(order[index * self.batch_size:(index + 1) * self.batch_size])

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[SeqBatch]:
        order = self.order(epoch)
        for i in range(start, self.num_batches(epoch)):
            yield self._batch(order[i * self.batch_size:(i + 1) * self.batch_size])

    def label_counts(self) -> list[int]:
        """Images per digit 0-9."""
        return np.bincount(self._labels, minlength=N_CLASSES).tolist()

    def describe(self) -> str:
        rows, cols = self.image_shape
        how = (f"row by row ({self.steps} steps of {self.input_size} pixels)" if self.mode == "row"
               else f"pixel by pixel ({self.steps} steps of 1 pixel)")
        return f"{'permuted ' if self.permutation is not None else ''}MNIST {how}"

    def __repr__(self) -> str:
        return (f"SequentialMNIST({self.describe()}; {len(self)} images, split={self.split!r}, batch_size="
                f"{self.batch_size}, shuffle={self.shuffle}, seed={self.seed})")


class MNISTSplits(NamedTuple):
    train: SequentialMNIST
    valid: SequentialMNIST | None  # None with valid_size=0
    test: SequentialMNIST


def mnist_splits(data_dir: str | Path | None = None, *, mode: str = "row", permute: bool = False,
                 permute_seed: int = 0, valid_size: int = VALID_SIZE, limit: int | None = None,
                 batch_size: int = 128, eval_batch_size: int = 256, seed: int = 0) -> MNISTSplits:
    """(train, valid, test) ``SequentialMNIST`` from the IDX files in ``data_dir`` (None: ``default_data_dir()``).

    valid = the last ``valid_size`` training images (0: no validation split), train = the images before them
    (shuffled per epoch from ``seed``), test = the test file; ``limit`` keeps the first N images of each split.
    With ``permute`` every split reads the pixels in the same order, ``pixel_permutation(permute_seed)``.
    """
    _check_int("valid_size", valid_size, 0)
    if limit is not None:
        _check_int("limit", limit, 1)
    train_images, train_labels = read_mnist_split(data_dir, "train")
    test_images, test_labels = read_mnist_split(data_dir, "test")
    if test_images.shape[1:] != train_images.shape[1:]:
        raise DataError(f"the training images are {train_images.shape[1:]} but the test images are "
                        f"{test_images.shape[1:]}; the files are from different sets")
    if valid_size >= len(train_images):
        raise DataError(f"valid_size {valid_size} leaves nothing to train on: the training file holds "
                        f"{len(train_images):,} images; give a smaller validation split")
    cut = len(train_images) - valid_size
    rows, cols = train_images.shape[1:]
    perm = pixel_permutation(permute_seed, rows * cols) if permute else None
    keep = slice(None, limit)
    common = {"mode": mode, "permutation": perm}
    train = SequentialMNIST(train_images[:cut][keep], train_labels[:cut][keep], batch_size=batch_size, shuffle=True,
                            seed=seed, split="train", **common)
    valid = None
    if valid_size:
        valid = SequentialMNIST(train_images[cut:][keep], train_labels[cut:][keep], batch_size=eval_batch_size,
                                split="valid", **common)
    test = SequentialMNIST(test_images[keep], test_labels[keep], batch_size=eval_batch_size, split="test", **common)
    return MNISTSplits(train, valid, test)
