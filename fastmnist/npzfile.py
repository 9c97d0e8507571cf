"""Reading ``.npz`` model files and checkpoints as the untrusted input they are.

``np.load`` trusts a file more than a model file deserves: it allocates whatever an array's header
claims before reading a byte of data (a 400-byte file can ask for terabytes), lets ``zipfile``
raise on encrypted or oddly compressed members, and answers random bytes with advice to pass
``allow_pickle``. Here every member is checked before anything is allocated:

- the file must be a zip archive of at most :data:`MAX_MEMBERS` ``.npy`` members, each stored
  or deflated, none encrypted;
- each member's header is read alone; its dtype must be a plain number, bool or string (never an
  object: no pickle), and the bytes its shape needs must fit in what the member really holds —
  its stored size, or for a deflated member at most :data:`MAX_DEFLATE_RATIO` times its
  compressed size (deflate cannot do better), so nothing larger than the file's real content is
  ever allocated;
- only then is the array read.

Every refusal is a :class:`~fastmnist.errors.ModelFileError` that reads
``<path>: not a fastmnist model file: <reason>``.
"""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from .errors import DataError, InvalidArgument, ModelFileError

MAX_MEMBERS = 10_000
MAX_DEFLATE_RATIO = 1100  # deflate's best is about 1032:1
_HEADER_LIMIT = 10_000  # bytes of npy header, as NumPy's own default guard


def refuse(path, reason: str) -> ModelFileError:
    """The one message class for a file that is not what a model file must be."""
    return ModelFileError(f"{path}: not a fastmnist model file: {reason}")


def read_npz(path, refuse=refuse) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path``, each checked as the module docstring says;
    ``refuse(path, reason)`` makes the exception (a data file's loader passes its own)."""
    path = Path(path)
    if path.is_dir():
        raise refuse(path, "it is a directory")
    if not path.exists():
        raise refuse(path, "no such file")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > MAX_MEMBERS:
                raise refuse(path, f"{len(members)} members (at most {MAX_MEMBERS})")
            return {_key(path, m, refuse): _read_member(path, archive, m, refuse) for m in members}
    except (ModelFileError, DataError):
        raise
    except zipfile.BadZipFile as exc:
        raise refuse(path, f"not a zip (.npz) archive ({exc})") from None
    except (OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
        raise refuse(path, f"unreadable archive ({type(exc).__name__}: {exc})") from None


def _key(path, member: zipfile.ZipInfo, refuse) -> str:
    if not member.filename.endswith(".npy"):
        raise refuse(path, f"member {member.filename!r} is not a .npy array")
    return member.filename[:-4]


def _read_member(path, archive: zipfile.ZipFile, member: zipfile.ZipInfo, refuse) -> np.ndarray:
    name = member.filename
    if member.flag_bits & 0x1:
        raise refuse(path, f"member {name!r} is encrypted")
    if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise refuse(path, f"member {name!r} uses compression method {member.compress_type} "
                           "(only stored and deflated are read)")
    limit = member.compress_size * (1 if member.compress_type == zipfile.ZIP_STORED else MAX_DEFLATE_RATIO)
    with archive.open(member) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise InvalidArgument(f"npy format version {version} is not read")
            shape, _, dtype = read_header(fh, max_header_size=_HEADER_LIMIT)
        except (ValueError, SyntaxError, EOFError, TypeError) as exc:
            raise refuse(path, f"member {name!r} has no valid .npy header ({exc})") from None
        if dtype.hasobject or dtype.kind not in "biufcU":
            raise refuse(path, f"member {name!r} holds {dtype} data (only numbers and text are read; "
                               "objects would need pickle, which is never used)")
        count = math.prod(int(d) for d in shape)
        need = count * dtype.itemsize
        if need > min(limit, member.file_size) or count < 0:
            raise refuse(path, f"member {name!r} claims shape {tuple(shape)} ({need:,} bytes) but holds "
                               f"{member.file_size:,} bytes")
    with archive.open(member) as fh:  # the header is sane: now NumPy may read it
        return np.lib.format.read_array(fh, allow_pickle=False, max_header_size=_HEADER_LIMIT)
