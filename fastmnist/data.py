"""The MNIST data layer: IDX (raw or gzip), CSV and npz readers, ``load_mnist`` and a validation split.

Every malformed file raises :class:`fastmnist.errors.DataError` naming the file, what was
expected and what was found.
"""
from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from . import config
from .errors import DataError, InvalidArgument

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
# IDX type codes -> big-endian numpy dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    if raw[:2] == b"\x1f\x8b":  # gzip magic: decompress whatever the file is called
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt or truncated gzip stream ({exc})") from None
    return raw


def parse_idx(raw: bytes, name: str = "<bytes>", expect_magic: int | None = None) -> np.ndarray:
    """Parse the bytes of an IDX file into an array (native byte order).

    Raises DataError when the magic, the header or the size do not match.
    """
    if len(raw) < 4:
        raise DataError(f"{name}: file is {len(raw)} bytes, too short for an IDX header (4+ bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(f"{name}: wrong magic number {magic} (0x{magic:08x}); expected an IDX file"
                        + (f" with magic {expect_magic}" if expect_magic else ""))
    if expect_magic is not None and magic != expect_magic:
        raise DataError(f"{name}: wrong magic number {magic}; expected {expect_magic}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{name}: truncated header: {ndim} dimensions need {header} bytes, file has {len(raw)}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + math.prod(dims) * dtype.itemsize  # Python ints: a forged header cannot overflow
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DataError(f"{name}: header says shape {dims} ({expected} bytes in all), "
                        f"but the file has {len(raw)} bytes ({what})")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike, expect_magic: int | None = None) -> np.ndarray:
    """Read one IDX file, raw or gzip-compressed."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path), expect_magic)


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX image file: uint8 ``(N, 28, 28)``."""
    images = read_idx(path, IMAGE_MAGIC)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{path}: expected uint8 images of shape (N, H, W), found {images.dtype} {images.shape}")
    return images


def read_idx_labels(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX label file: uint8 ``(N,)`` with values 0-9."""
    labels = read_idx(path, LABEL_MAGIC)
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{path}: expected uint8 labels of shape (N,), found {labels.dtype} {labels.shape}")
    _check_labels(labels, path)
    return labels


def _check_labels(labels: np.ndarray, where) -> None:
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        bad = int(np.flatnonzero((labels < 0) | (labels > 9))[0])
        raise DataError(f"{where}: label {labels[bad]} at index {bad} is outside 0-9")


def read_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read the CSV layout, one ``label,p0,...,p783`` row per image (an optional header line).

    Returns uint8 images ``(N, 28, 28)`` and uint8 labels ``(N,)``.
    """
    path = Path(path)
    text = _read_bytes(path).decode("ascii", errors="replace").splitlines()
    start = 1 if text and text[0][:1].isalpha() else 0  # header such as "label,pixel0,..."
    rows = []
    for lineno, line in enumerate(text[start:], start=start + 1):
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) != 785:
            raise DataError(f"{path}: line {lineno} has {len(fields)} values; expected 785 (label + 784 pixels)")
        rows.append(fields)
    if not rows:
        raise DataError(f"{path}: no data rows")
    try:
        table = np.array(rows, dtype=np.int64)
    except ValueError:
        for lineno, fields in enumerate(rows, start=start + 1):
            try:
                np.array(fields, dtype=np.int64)
            except ValueError:
                raise DataError(f"{path}: line {lineno} holds a value that is not an integer") from None
        raise
    pixels, labels = table[:, 1:], table[:, 0]
    if pixels.min() < 0 or pixels.max() > 255:
        r, c = np.argwhere((pixels < 0) | (pixels > 255))[0]
        raise DataError(f"{path}: pixel {c} on data row {r + 1} is {pixels[r, c]}; expected 0-255")
    _check_labels(labels, path)
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.uint8)


def read_npz(path: str | os.PathLike):
    """Read the npz layout (``x_train, y_train, x_test, y_test``) without unpickling anything."""
    from .npzfile import read_npz as read_checked
    path = Path(path)
    arrays = read_checked(path, refuse=lambda where, reason: DataError(f"{where}: not a readable MNIST npz "
                                                                       f"archive: {reason}"))
    out = []
    for split in ("train", "test"):
        try:
            x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        except KeyError as exc:
            raise DataError(f"{path}: missing array {exc}; expected x_train, y_train, x_test, y_test, "
                            f"found {sorted(arrays)}") from None
        if x.ndim == 2 and x.shape[1] == 784:
            x = x.reshape(-1, 28, 28)
        if x.ndim == 4 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise DataError(f"{path}: x_{split} has shape {x.shape}; expected (N, 28, 28), (N, 1, 28, 28) or (N, 784)")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(f"{path}: y_{split} has shape {y.shape}; expected ({x.shape[0]},) to match x_{split}")
        if x.dtype.kind not in "uif" or y.dtype.kind not in "ui":
            raise DataError(f"{path}: x_{split} is {x.dtype} and y_{split} is {y.dtype}; "
                            "expected numeric images and integer labels")
        if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
            raise DataError(f"{path}: x_{split} holds NaN or infinite values")
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{path}: x_{split} values span {x.min()}..{x.max()}; expected 0-255")
        _check_labels(y, f"{path}: y_{split}")
        if x.dtype.kind == "f" and x.size and x.max() <= 1.0:  # already scaled to [0, 1]
            x = x * 255.0
        out.append((x.astype(np.uint8) if x.dtype.kind != "f" else np.rint(x).astype(np.uint8), y.astype(np.uint8)))
    return tuple(out)


def find_data_root(root: str | os.PathLike | None = None) -> Path:
    """Resolve the data directory: the argument, else $FASTMNIST_DATA, else ``config.DATA_ROOTS``."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("FASTMNIST_DATA"):
        return Path(os.environ["FASTMNIST_DATA"]).expanduser()
    candidates = [Path(p).expanduser() for p in config.DATA_ROOTS]
    for cand in candidates:
        if cand.is_dir():
            return cand
    return candidates[0]


def _find_idx(root: Path, stem: str) -> Path | None:
    dotted = stem.replace("-idx", ".idx")  # the layout some mirrors use: train-images.idx3-ubyte
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def load_raw(root: str | os.PathLike | None = None):
    """Load MNIST as uint8 images ``(N, 28, 28)`` and uint8 labels, from IDX, npz or CSV files in root."""
    root = find_data_root(root)
    if root.exists() and not root.is_dir():
        raise DataError(f"MNIST data directory {root} is a file, not a directory; pass --data DIR or set "
                        "FASTMNIST_DATA to the directory that holds the MNIST files")
    if not root.is_dir():
        raise DataError(f"MNIST data directory {root} does not exist; pass --data DIR, set FASTMNIST_DATA, "
                        "or run `fastmnist download`")
    return tuple(_mnist_split(x, y, source) for (x, y), source in _load_files(root))


def _mnist_split(x, y, source):
    """MNIST's own shape: at least one 28x28 image per split, as many labels."""
    if x.shape[0] == 0:
        raise DataError(f"{source}: holds no image")
    if x.shape[1:] != (28, 28):
        raise DataError(f"{source}: images are {x.shape[1]}x{x.shape[2]} pixels; MNIST's are 28x28")
    return x, y


def _load_files(root: Path):
    """[((images, labels), source name)] for the training and test splits, from whichever layout is there."""
    paths = {key: _find_idx(root, stem) for key, stem in FILES.items()}
    if all(paths.values()):
        splits = []
        for split in ("train", "test"):
            x = read_idx_images(paths[f"{split}_images"])
            y = read_idx_labels(paths[f"{split}_labels"])
            if len(x) != len(y):
                raise DataError(f"{paths[f'{split}_images']}: {len(x)} images but "
                                f"{paths[f'{split}_labels']} has {len(y)} labels")
            splits.append(((x, y), str(paths[f"{split}_images"])))
        return splits
    if (root / "mnist.npz").is_file():
        train, test = read_npz(root / "mnist.npz")
        return [(train, f"{root / 'mnist.npz'}: x_train"), (test, f"{root / 'mnist.npz'}: x_test")]
    if (root / "mnist_train.csv").is_file() and (root / "mnist_test.csv").is_file():
        return [(read_csv(root / name), str(root / name)) for name in ("mnist_train.csv", "mnist_test.csv")]
    missing = [FILES[k] + "[.gz]" for k, p in paths.items() if p is None]
    raise DataError(f"{root}: MNIST files not found (missing {', '.join(missing)}; "
                    "nor mnist.npz, nor mnist_train.csv + mnist_test.csv)")


def prepare(images: np.ndarray, labels: np.ndarray, *, normalize: bool = True, flatten: bool = False,
            one_hot: bool = False, dtype: str = config.DEFAULT_DTYPE):
    """Turn uint8 images/labels into model inputs: ``(N, 1, 28, 28)`` or ``(N, 784)``, scaled to [0, 1]."""
    dtype = np.dtype(dtype)
    x = images.astype(dtype)
    if normalize:
        x /= dtype.type(255.0) if dtype.kind == "f" else 1
    x = x.reshape(len(x), -1) if flatten else x.reshape(len(x), 1, *images.shape[1:])
    y = labels.astype(np.int64)
    if one_hot:
        y = np.eye(10, dtype=dtype)[y]
    return x, y


def load_mnist(root: str | os.PathLike | None = None, *, normalize: bool = True, flatten: bool = False,
               one_hot: bool = False, dtype: str = config.DEFAULT_DTYPE):
    """Load MNIST.

    Parameters
    ----------
    root : path, optional
        Directory holding the four IDX files (raw or ``.gz``), or ``mnist.npz``, or
        ``mnist_train.csv`` + ``mnist_test.csv``. Default: ``$FASTMNIST_DATA``, else
        ``./data/mnist``, else ``~/.cache/fastmnist/mnist``.
    normalize : bool
        Scale pixels to [0, 1] (else keep 0-255 in ``dtype``).
    flatten : bool
        Images as ``(N, 784)`` instead of ``(N, 1, 28, 28)``.
    one_hot : bool
        Labels as ``(N, 10)`` one-hot rows in ``dtype`` instead of int64 ``(N,)``.
    dtype : str
        Image dtype, float32 by default.

    Returns
    -------
    ((x_train, y_train), (x_test, y_test))
    """
    (xtr, ytr), (xte, yte) = load_raw(root)
    kw = dict(normalize=normalize, flatten=flatten, one_hot=one_hot, dtype=dtype)
    return prepare(xtr, ytr, **kw), prepare(xte, yte, **kw)


def validation_split(x, y, fraction: float | None = None, count: int | None = None, seed: int = 0):
    """Split off a seeded random validation set, given as a fraction of N or a count.

    Returns ``(x_train, y_train), (x_val, y_val)``.
    """
    n = len(x)
    if len(y) != n:
        raise InvalidArgument(f"validation_split: x has {n} rows but y has {len(y)}")
    if (fraction is None) == (count is None):
        raise InvalidArgument("validation_split: give exactly one of fraction or count")
    if fraction is not None:
        if not 0.0 < fraction < 1.0:
            raise InvalidArgument(f"validation_split: fraction must be in (0, 1), got {fraction}")
        count = int(round(n * fraction))
    if not 0 < count < n:
        raise InvalidArgument(f"validation_split: count must be in 1..{n - 1} for {n} samples, got {count}")
    perm = np.random.default_rng(seed).permutation(n)
    val, train = perm[:count], perm[count:]
    return (x[train], y[train]), (x[val], y[val])
