"""Sequential MNIST: the IDX reader on tiny files written here (gzip'd and not), its errors, the row / pixel /
permuted sequences, the per-(seed, epoch) shuffle, the real files when /work/shared/data/mnist is there, and
``rnnlab task mnist`` end to end through ``main()``."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnlab.data.mnist import FILES, IMAGE_MAGIC, LABEL_MAGIC, SequentialMNIST, default_data_dir, mnist_splits, \
    pixel_permutation, read_idx, read_mnist_split
from rnnlab.data.text import DataError
from rnnlab.train.checkpoint import load_checkpoint

from cli_helpers import cli

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"  # <repo>/../shared/data/mnist
# Where `rnnlab task mnist` looks without --data-dir: $RNNLAB_DATA/mnist when RNNLAB_DATA is set, else SHARED.
REAL = Path(os.environ["RNNLAB_DATA"]) / "mnist" if os.environ.get("RNNLAB_DATA") else SHARED
needs_real = pytest.mark.skipif(
    not all((REAL / name).is_file() or (REAL / (name + ".gz")).is_file() for names in FILES.values() for name in names),
    reason=f"the four MNIST files are not all in {REAL} (set RNNLAB_DATA to the folder that holds mnist/)")


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, magic: int, gz: bool = True) -> Path:
    data = idx_bytes(array, magic)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 28, 28), labels (n,)): digit c is a bright vertical bar down column 3 + 2c over faint noise, so
    every row tells the digit."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    images[np.arange(n), :, 3 + 2 * labels.astype(int)] = 255
    return images, labels


def write_mnist(folder: Path, n_train: int = 400, n_test: int = 100, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        images, labels = fake_digits(n, seed)
        image_name, label_name = FILES[split]
        suffix = ".gz" if gz else ""
        write_idx(folder / (image_name + suffix), images, IMAGE_MAGIC, gz)
        write_idx(folder / (label_name + suffix), labels, LABEL_MAGIC, gz)
    return folder


# -- the reader ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    labels = np.array([3, 1, 4, 1, 5], np.uint8)
    got = read_idx(write_idx(tmp_path / "img", images, IMAGE_MAGIC, gz), IMAGE_MAGIC)
    assert got.shape == (5, 28, 28) and got.dtype == np.uint8 and np.array_equal(got, images)
    got = read_idx(write_idx(tmp_path / "lab", labels, LABEL_MAGIC, gz), LABEL_MAGIC)
    assert got.shape == (5,) and np.array_equal(got, labels)


@pytest.mark.parametrize("gz", [True, False])
def test_read_split_finds_the_files_with_or_without_gz(tmp_path, gz):
    folder = write_mnist(tmp_path / "m", n_train=30, n_test=20, gz=gz)
    images, labels = read_mnist_split(folder, "train")
    assert images.shape == (30, 28, 28) and labels.shape == (30,)
    assert np.array_equal(images, fake_digits(30, 1)[0]) and np.array_equal(labels, fake_digits(30, 1)[1])
    assert read_mnist_split(folder, "test")[0].shape == (20, 28, 28)


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNLAB_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path / "mnist"
    monkeypatch.delenv("RNNLAB_DATA")
    assert default_data_dir() == SHARED  # <repo>/../shared/data/mnist


def test_missing_files_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"no such folder .*--data-dir"):
        read_mnist_split(tmp_path / "nowhere", "train")
    folder = write_mnist(tmp_path / "m", n_train=10, n_test=10)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: no such file .*--data-dir"):
        read_mnist_split(folder, "test")


def test_bad_magic_number(tmp_path):
    images = np.zeros((3, 28, 28), np.uint8)
    path = write_idx(tmp_path / "img.gz", images, LABEL_MAGIC + 0x100)  # 0x00000901: not uint8 data
    with pytest.raises(DataError, match=r"img\.gz: not an IDX file of MNIST images: magic number .*expected 2051"):
        read_idx(path, IMAGE_MAGIC)
    labels = write_idx(tmp_path / "lab", np.zeros(3, np.uint8), LABEL_MAGIC)
    with pytest.raises(DataError, match=r"lab: not an IDX file of MNIST images: magic number 2049, expected 2051"):
        read_idx(labels, IMAGE_MAGIC)
    (tmp_path / "text").write_bytes(b"hello, this is not MNIST at all")
    with pytest.raises(DataError, match="not an IDX file.*download it again"):
        read_idx(tmp_path / "text", LABEL_MAGIC)


def test_truncated_files(tmp_path):
    data = idx_bytes(np.ones((4, 28, 28), np.uint8), IMAGE_MAGIC)
    (tmp_path / "short").write_bytes(data[:-10])
    with pytest.raises(DataError, match=r"short: 3,126 bytes of data, but its header says 4 x 28 x 28 = 3,136; the "
                                        "file is truncated"):
        read_idx(tmp_path / "short", IMAGE_MAGIC)
    (tmp_path / "header").write_bytes(data[:10])
    with pytest.raises(DataError, match="shorter than its 16-byte IDX header; the file is truncated"):
        read_idx(tmp_path / "header", IMAGE_MAGIC)
    (tmp_path / "cut.gz").write_bytes(gzip.compress(data)[:-20])  # a download that stopped early
    with pytest.raises(DataError, match=r"cut\.gz: not a valid gzip file .*download it again"):
        read_idx(tmp_path / "cut.gz", IMAGE_MAGIC)


def test_inconsistent_files(tmp_path):
    folder = write_mnist(tmp_path / "m", n_train=10, n_test=10)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(9, np.uint8), LABEL_MAGIC)
    with pytest.raises(DataError, match="holds 10 images but .* holds 9 labels"):
        read_mnist_split(folder, "train")
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.full(10, 10, np.uint8), LABEL_MAGIC)
    with pytest.raises(DataError, match="holds label 10; MNIST labels are digits 0-9"):
        read_mnist_split(folder, "train")


# -- sequences -----------------------------------------------------------------------------------------------------
def test_row_and_pixel_shapes_and_scaling(tmp_path):
    images, labels = fake_digits(10, 0)
    row = SequentialMNIST(images, labels, mode="row", batch_size=4)
    x, lengths, y = row.batch(0, 0)
    assert x.shape == (4, 28, 28) and x.dtype == torch.float32 and (row.steps, row.input_size) == (28, 28)
    assert torch.equal(x, torch.from_numpy(images[:4]).float() / 255)  # unshuffled: file order, scaled to [0, 1]
    assert torch.equal(lengths, torch.full((4,), 28)) and lengths.dtype == torch.long
    assert y.dtype == torch.long and y.tolist() == labels[:4].tolist()
    pixel = SequentialMNIST(images, labels, mode="pixel", batch_size=4)
    x, lengths, y = pixel.batch(0, 2)  # the last batch holds the remainder
    assert x.shape == (2, 784, 1) and lengths.tolist() == [784, 784] and (pixel.steps, pixel.input_size) == (784, 1)
    assert torch.equal(x[:, :, 0], torch.from_numpy(images[8:].reshape(2, 784)).float() / 255)  # row-major pixels
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert pixel.num_batches() == 3 and [len(b.y) for b in pixel.batches()] == [4, 4, 2]
    with pytest.raises(ValueError, match="mode must be one of row, pixel"):
        SequentialMNIST(images, labels, mode="column")


def test_permutation_is_a_fixed_bijection_shared_by_every_split(tmp_path):
    perm = pixel_permutation(0)
    assert perm.shape == (784,) and sorted(perm.tolist()) == list(range(784))
    assert not np.array_equal(perm, np.arange(784))
    assert np.array_equal(pixel_permutation(0), perm) and not np.array_equal(pixel_permutation(1), perm)
    folder = write_mnist(tmp_path / "m", n_train=60, n_test=20)
    train, valid, test = mnist_splits(folder, mode="pixel", permute=True, permute_seed=0, valid_size=10)
    assert np.array_equal(train.permutation, perm) and valid.permutation is train.permutation
    assert test.permutation is train.permutation
    test_images = read_mnist_split(folder, "test")[0].reshape(20, 784)
    x = torch.cat([b.x for b in test.batches()])  # (20, 784, 1)
    assert torch.equal(x[:, :, 0], torch.from_numpy(test_images[:, perm]).float() / 255)
    again = mnist_splits(folder, mode="pixel", permute=True, permute_seed=0, valid_size=10).test
    assert torch.equal(torch.cat([b.x for b in again.batches()]), x)  # the same order in a new process/run
    row = mnist_splits(folder, mode="row", permute=True, valid_size=10).test  # row mode: permuted image, 28 x 28
    assert torch.equal(torch.cat([b.x for b in row.batches()]).reshape(20, 784), x[:, :, 0])


def test_shuffle_depends_only_on_seed_and_epoch(tmp_path):
    images, labels = fake_digits(50, 0)

    def make(seed):
        return SequentialMNIST(images, labels, batch_size=8, shuffle=True, seed=seed)

    a, b = make(0), make(0)
    assert np.array_equal(a.order(3), b.order(3))  # the same (seed, epoch): the same order
    assert not np.array_equal(a.order(0), a.order(1)) and not np.array_equal(a.order(0), make(1).order(0))
    assert sorted(a.order(2).tolist()) == list(range(50))  # every image once per epoch
    full = list(a.batches(2))
    tail = list(b.batches(2, start=3))  # a resumed epoch reads exactly the rest
    assert len(full) == 7 and len(tail) == 4
    for u, v in zip(full[3:], tail):
        assert torch.equal(u.x, v.x) and torch.equal(u.y, v.y)
    assert torch.equal(a.batch(2, 5).x, full[5].x)
    ys = torch.cat([bt.y for bt in full]).sort().values
    assert torch.equal(ys, torch.from_numpy(labels.astype(np.int64)).sort().values)


def test_splits_valid_is_the_end_of_train_and_limit(tmp_path):
    folder = write_mnist(tmp_path / "m", n_train=100, n_test=40)
    images, labels = fake_digits(100, 1)
    train, valid, test = mnist_splits(folder, valid_size=30, batch_size=16, eval_batch_size=64)
    assert (len(train), len(valid), len(test)) == (70, 30, 40)
    assert train.shuffle and not valid.shuffle and not test.shuffle and train.batch_size == 16
    assert torch.equal(valid.batch(0, 0).x, torch.from_numpy(images[70:]).float() / 255)
    train, valid, test = mnist_splits(folder, valid_size=30, limit=12)
    assert (len(train), len(valid), len(test)) == (12, 12, 12)
    assert valid.batch(0, 0).y.tolist() == labels[70:82].tolist()
    assert mnist_splits(folder, valid_size=0).valid is None
    with pytest.raises(DataError, match="valid_size 100 leaves nothing to train on"):
        mnist_splits(folder, valid_size=100)


# -- the real files ------------------------------------------------------------------------------------------------
@needs_real
def test_real_mnist_files():
    images, labels = read_mnist_split(REAL, "train")
    assert images.shape == (60000, 28, 28) and labels.shape == (60000,)
    assert np.bincount(labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    test_images, test_labels = read_mnist_split(REAL, "test")
    assert test_images.shape == (10000, 28, 28) and np.bincount(test_labels, minlength=10).sum() == 10000
    assert np.bincount(test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(images.mean() / 255 - 0.1307) < 1e-3  # the well-known normalisation constant


# -- the command line ----------------------------------------------------------------------------------------------
def _test_record(out: Path) -> dict:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert records[-1]["kind"] == "test"
    return records[-1]


def test_task_mnist_learns_the_fake_digits(tmp_path, capsys):
    folder = write_mnist(tmp_path / "m", n_train=400, n_test=100)
    out = tmp_path / "run"
    rc, stdout, err = cli(capsys, "task", "mnist", "--data-dir", folder, "--valid-size", "100", "--hidden", "32",
                          "--batch-size", "32", "--epochs", "3", "--lr", "1e-2", "--threads", "1", "--quiet",
                          "--out", out)
    assert rc == 0, err
    assert "data: MNIST row by row (28 steps of 28 pixels); 300 training images in 10 batches of 32 per epoch, " \
           "100 validation and 100 test images" in stdout
    assert "model: 1 x rnnlab LSTM(32), last pooling → logits" in stdout
    assert "test (best/ weights): 100 images: accuracy" in stdout and "(chance 10%)" in stdout
    assert "digit 9: precision" in stdout and "confusion (rows: true digit 0-9" in stdout
    test = _test_record(out)
    assert test["n"] == 100 and len(test["confusion"]) == 10 and sum(test["support"]) == 100
    assert test["accuracy"] > 0.8  # chance is 0.1; every row shows the bar


def test_task_mnist_resume_is_exact(tmp_path, capsys):
    folder = write_mnist(tmp_path / "m", n_train=120, n_test=20)
    args = ["task", "mnist", "--data-dir", folder, "--mode", "pixel", "--permute", "--valid-size", "20",
            "--hidden", "8", "--batch-size", "25", "--epochs", "2", "--threads", "1", "--quiet"]
    assert cli(capsys, *args, "--out", tmp_path / "full")[0] == 0
    rc, stdout, err = cli(capsys, *args, "--out", tmp_path / "part", "--max-steps", "6")
    assert rc == 0, err
    assert "stopped: reached max_steps=6 at epoch 2, batch 2/4" in stdout
    rc, stdout, err = cli(capsys, "task", "mnist", "--resume", tmp_path / "part", "--data-dir", folder)
    assert rc == 0, err
    assert "resuming" in stdout and "permuted MNIST pixel by pixel (784 steps of 1 pixel)" in stdout
    full = load_checkpoint(tmp_path / "full" / "last")
    resumed = load_checkpoint(tmp_path / "part" / "last")
    a, b = full.model_state(), resumed.model_state()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.meta["permutation"] == pixel_permutation(0).tolist()


@needs_real
def test_task_mnist_on_the_real_files(tmp_path, capsys):
    out = tmp_path / "run"
    rc, stdout, err = cli(capsys, "task", "mnist", "--mode", "row", "--limit", "512", "--batch-size", "32",
                          "--epochs", "4", "--lr", "3e-3", "--threads", "1", "--quiet", "--out", out)
    assert rc == 0, err
    assert "512 training images in 16 batches of 32 per epoch, 512 validation and 512 test images (--limit 512)" \
        in stdout
    assert "test (best/ weights): 512 images (--limit): accuracy" in stdout
    test = _test_record(out)
    assert test["n"] == 512 and test["accuracy"] > 0.3  # chance 0.1; about 0.6 after these 64 updates


@pytest.mark.parametrize("args, must", [
    (["--data-dir", "{tmp}/empty"], ["no such folder for MNIST", "--data-dir"]),
    (["--data-dir", "{tmp}/m", "--valid-size", "400"], ["valid_size 400 leaves nothing to train on"]),
    (["--limit", "0"], ["--limit", "got 0"]),
    (["--mode", "column"], ["--mode", "column"]),
    (["--batches", "5"], ["unrecognized arguments: --batches"]),
    (["--one-hot"], ["unrecognized arguments: --one-hot"]),
])
def test_task_mnist_bad_values_are_one_line_errors(tmp_path, capsys, args, must):
    write_mnist(tmp_path / "m", n_train=400, n_test=10)
    args = [a.format(tmp=tmp_path) for a in args]
    rc, out, err = cli(capsys, "task", "mnist", *args, "--out", tmp_path / "never")
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error: "), err
    for m in must:
        assert m in lines[0], (m, lines[0])
    assert not (tmp_path / "never").exists()
