"""Command-line values, checked where they are parsed: a wrong one is named, never replaced.

Zero never means "the default" (``--epochs 0`` is an error, not the recipe's epochs), and every
path a run will write is checked before the first epoch, so that no finished training is lost to
an output that could never have been written.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from .errors import FastMnistError


def int_at_least(lo: int, hi: int = 2**63 - 1):
    """An argparse type: an integer in [lo, hi]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {value}" if value < lo
                                             else f"must be <= {hi}, got {value}")
        return value
    parse.__name__ = f"integer >= {lo}"
    return parse


def _number(text: str, ok, requirement: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (a learning rate)."""
    return _number(text, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def fraction(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1 (a validation split)."""
    return _number(text, lambda v: 0 < v < 1, "between 0 and 1 (exclusive)")


seed = int_at_least(0, 2**32 - 1)
count = int_at_least(1)


def _writable_ancestor(path: Path, option: str) -> None:
    """The nearest existing ancestor of ``path`` is a directory this process may write into."""
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise FastMnistError(f"{option} {path}: {parent} is a file, not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise FastMnistError(f"{option} {path}: no permission to write in {parent}")
            return


def write_output(path, write, option: str) -> Path:
    """``write(path)`` for an output the user named, its folders made first (the checks before the
    work accept a folder that does not exist yet); an OSError (a full disk, a file where a folder
    should be) is their error, named with ``option``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    except OSError as exc:
        raise FastMnistError(f"{option} {path}: could not write ({exc})") from None
    return path


def check_output_file(path, option: str) -> None:
    """``path`` can be written as a file (checked before training, so none is lost to it)."""
    path = Path(path)
    if path.is_dir():
        raise FastMnistError(f"{option} {path}: is a directory; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise FastMnistError(f"{option} {path}: the file exists and is not writable")
    _writable_ancestor(path, option)


def check_output_dir(path, option: str) -> None:
    """``path`` is, or can be made, a writable directory."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise FastMnistError(f"{option} {path}: is a file, not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise FastMnistError(f"{option} {path}: no permission to write in it")
        return
    _writable_ancestor(path, option)
