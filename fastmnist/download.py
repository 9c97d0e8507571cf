"""``fastmnist download``: fetch the four MNIST files from a mirror list, verified by SHA-256.

The sums are of the *decompressed* bytes, because mirrors re-compress the files and the
``.gz`` wrappers differ while the IDX content is the original.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from . import config
from .data import FILES, find_data_root
from .errors import DataError

SHA256_UNCOMPRESSED = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=config.DOWNLOAD_TIMEOUT) as resp:
        return resp.read()


def download_mnist(root: str | os.PathLike | None = None, mirrors: list[str] | None = None,
                   force: bool = False, log=print) -> Path:
    """Download the four MNIST ``.gz`` files into root, trying each mirror in turn.

    A file is kept only if its decompressed SHA-256 matches; a file already present and valid is
    not fetched again unless ``force``. Files are written atomically (temporary name, rename).

    Returns
    -------
    Path
        The directory holding the verified files.
    """
    root = find_data_root(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file where a directory should be, no permission
        raise DataError(f"MNIST data directory {root}: cannot create it ({exc})") from None
    mirrors = list(mirrors or config.MNIST_MIRRORS)
    for stem in FILES.values():
        target = root / (stem + ".gz")
        want = SHA256_UNCOMPRESSED[stem]
        if target.is_file() and not force and _sha_of_gz(_read(target)) == want:
            log(f"{target}: present and verified")
            continue
        problems = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + stem + ".gz"
            try:
                blob = _fetch(url)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                problems.append(f"{url}: {getattr(exc, 'reason', exc)}")
                continue
            got = _sha_of_gz(blob)
            if got != want:
                problems.append(f"{url}: SHA-256 of the decompressed file is {got or 'unreadable gzip'}, expected {want}")
                continue
            _write_atomically(target, blob)
            log(f"{target}: downloaded from {mirror} and verified")
            break
        else:
            raise DataError(f"could not download {stem}.gz from any mirror: " + "; ".join(problems))
    return root


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from None


def _write_atomically(target: Path, blob: bytes) -> None:
    """A temporary name, then a rename: an interrupted download never leaves a half file as ``target``."""
    tmp = target.with_name(target.name + ".part")
    try:
        tmp.write_bytes(blob)
        os.replace(tmp, target)
    except OSError as exc:
        raise DataError(f"{target}: cannot write the downloaded file ({exc})") from None


def _sha_of_gz(blob: bytes) -> str | None:
    try:
        return hashlib.sha256(gzip.decompress(blob)).hexdigest()
    except (OSError, EOFError, zlib.error):
        return None
