"""The data layer: IDX/CSV/npz readers, their errors, load_mnist, the validation split."""
import gzip
import struct

import numpy as np
import pytest

from fastmnist.data import load_mnist, read_csv, read_idx, read_idx_images, read_idx_labels, read_npz, validation_split
from fastmnist.errors import DataError


def idx_bytes(arr, magic_type=0x08):
    head = bytes([0, 0, magic_type, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return head + arr.astype(">u1" if magic_type == 0x08 else ">i4").tobytes()


def write_mnist(root, n_train=20, n_test=10, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    data = {}
    for stem, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            raw = idx_bytes(arr)
            name = f"{stem}-{kind}-ubyte"
            (root / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)
        data[stem] = (x, y)
    return data


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_roundtrip(tmp_path, gz):
    data = write_mnist(tmp_path, gz=gz)
    (x, y), (xt, yt) = load_mnist(tmp_path)
    assert x.shape == (20, 1, 28, 28) and x.dtype == np.float32 and xt.shape == (10, 1, 28, 28)
    np.testing.assert_allclose(x[:, 0] * 255, data["train"][0], atol=1e-4)
    np.testing.assert_array_equal(y, data["train"][1])
    (x, y), _ = load_mnist(tmp_path, flatten=True, one_hot=True, normalize=False, dtype="float64")
    assert x.shape == (20, 784) and x.dtype == np.float64 and x.max() > 1
    np.testing.assert_array_equal(y.argmax(1), data["train"][1])


def test_env_root(tmp_path, monkeypatch):
    write_mnist(tmp_path)
    monkeypatch.setenv("FASTMNIST_DATA", str(tmp_path))
    (x, _), _ = load_mnist()
    assert len(x) == 20


def test_real_mnist(mnist_dir):
    (x, y), (xt, yt) = load_mnist(mnist_dir)
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    np.testing.assert_array_equal(np.bincount(yt), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_wrong_magic(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(DataError, match=r"f: wrong magic number 2049; expected 2051"):
        read_idx_images(p)
    p.write_bytes(b"\x12\x34\x56\x78" + b"\0" * 20)
    with pytest.raises(DataError, match="wrong magic"):
        read_idx(p)


def test_truncated_and_oversized(tmp_path):
    raw = idx_bytes(np.zeros((4, 28, 28), np.uint8))
    p = tmp_path / "imgs"
    p.write_bytes(raw[:-5])
    with pytest.raises(DataError, match=r"imgs: header says shape \(4, 28, 28\).*truncated"):
        read_idx_images(p)
    p.write_bytes(raw + b"\0")
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx_images(p)
    p.write_bytes(raw[:6])
    with pytest.raises(DataError, match="truncated header"):
        read_idx_images(p)
    p.write_bytes(gzip.compress(raw)[:40])
    with pytest.raises(DataError, match="gzip"):
        read_idx_images(p)


def test_labels_out_of_range(tmp_path):
    p = tmp_path / "labels"
    p.write_bytes(idx_bytes(np.array([1, 2, 12, 3], np.uint8)))
    with pytest.raises(DataError, match=r"labels: label 12 at index 2 is outside 0-9"):
        read_idx_labels(p)


def test_count_mismatch(tmp_path):
    write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(7, np.uint8)))
    with pytest.raises(DataError, match="10 images but .* has 7 labels"):
        load_mnist(tmp_path)


def test_missing_dir_and_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(tmp_path / "nope")
    with pytest.raises(DataError, match="MNIST files not found"):
        load_mnist(tmp_path)


def test_csv(tmp_path):
    rows = ["label," + ",".join(f"p{i}" for i in range(784)), "3," + ",".join(["0"] * 783 + ["255"]),
            "7," + ",".join(["12"] * 784)]
    p = tmp_path / "m.csv"
    p.write_text("\n".join(rows) + "\n")
    x, y = read_csv(p)
    assert x.shape == (2, 28, 28) and list(y) == [3, 7] and x[0, 27, 27] == 255
    p.write_text("3," + ",".join(["0"] * 700) + "\n")
    with pytest.raises(DataError, match=r"m.csv: line 1 has 701 values; expected 785"):
        read_csv(p)
    p.write_text("3," + ",".join(["0"] * 783 + ["300"]) + "\n")
    with pytest.raises(DataError, match="pixel 783 on data row 1 is 300; expected 0-255"):
        read_csv(p)
    p.write_text("11," + ",".join(["0"] * 784) + "\n")
    with pytest.raises(DataError, match="label 11"):
        read_csv(p)
    p.write_text("3," + ",".join(["x"] * 784) + "\n")
    with pytest.raises(DataError, match="line 1 holds a value that is not an integer"):
        read_csv(p)


def test_csv_and_npz_layouts_in_load_mnist(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 5, dtype=np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    (a, b), (c, d) = load_mnist(tmp_path, normalize=False)
    np.testing.assert_array_equal(a[:, 0], x)
    assert len(c) == 2
    other = tmp_path / "csv"
    other.mkdir()
    for name, n in (("mnist_train.csv", 5), ("mnist_test.csv", 2)):
        (other / name).write_text("\n".join(f"{y[i]}," + ",".join(map(str, x[i].ravel())) for i in range(n)))
    (a2, b2), _ = load_mnist(other, normalize=False)
    np.testing.assert_array_equal(a2, a)
    np.testing.assert_array_equal(b2, b)


def test_npz_errors(tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, x_train=np.zeros((2, 28, 28)), y_train=np.zeros(2, int))
    with pytest.raises(DataError, match="missing array 'x_test'"):
        read_npz(p)
    np.savez(p, x_train=np.zeros((2, 28, 28)), y_train=np.zeros(3, int), x_test=np.zeros((1, 784)), y_test=np.zeros(1, int))
    with pytest.raises(DataError, match=r"y_train has shape \(3,\)"):
        read_npz(p)
    np.savez(p, x_train=np.array([object()] * 2), y_train=np.zeros(2, int), x_test=np.zeros((1, 784)),
             y_test=np.zeros(1, int))
    with pytest.raises(DataError, match="not a readable npz|pickle"):
        read_npz(p)
    p.write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(DataError, match="bad.npz"):
        read_npz(p)


def test_validation_split():
    x, y = np.arange(100).reshape(100, 1), np.arange(100) % 10
    (a, b), (c, d) = validation_split(x, y, fraction=0.2, seed=3)
    assert len(a) == 80 and len(c) == 20
    assert sorted(np.concatenate([a[:, 0], c[:, 0]])) == list(range(100))
    (_, _), (c2, _) = validation_split(x, y, count=20, seed=3)
    np.testing.assert_array_equal(c, c2)
    (_, _), (c3, _) = validation_split(x, y, count=20, seed=4)
    assert not np.array_equal(c, c3)
    with pytest.raises(ValueError, match="exactly one"):
        validation_split(x, y)
    with pytest.raises(ValueError, match="fraction"):
        validation_split(x, y, fraction=1.5)
