"""Training digits that look like what ``fastmnist predict`` makes of a photo.

A network trained on MNIST, even on warped, thickened and blurred MNIST, reads a photo's digit
after the photo has been through the ink mask and MNIST's recipe (:func:`images.prepare`): a thin
pen's strokes broken where the mask lost them, a blurred stroke made solid by the grey-level
scaling, a box cropped to what the mask kept. :func:`photo_digits` renders training digits as
phone photos (:mod:`photosynth`, the wide conditions on most of them) and prepares each exactly as
``predict`` prepares a photo, so that the reader also learns from the inputs it will be given.
Measured: docs/photos.md ("Trained on its own preparation").
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import time

import numpy as np

from .. import config
from ..errors import InvalidArgument

#: The generator stream of the photos' draws (apart from the training loop's and the init's).
PHOTO_STREAM = 22


def _prepared(digit: np.ndarray, label: int, rng: np.random.Generator) -> np.ndarray | None:
    """One MNIST digit (28, 28) -> a random photo of it -> the 28x28 input ``predict`` reads, or
    None where the mask finds no digit in the photo (a thin pen blurred into the paper)."""
    from PIL import Image

    from ..errors import ImageError
    from . import photosynth
    from .images import as_grey, prepare
    lo, hi = config.PHOTO_DIGIT_SIDES
    wide = bool(rng.random() < config.PHOTO_DIGIT_WIDE)
    photo = photosynth.render([digit], [label], rng, long_side=int(rng.integers(lo, hi + 1)), wide=wide)
    try:
        return prepare(as_grey(Image.open(io.BytesIO(photo.data)), "photo digit")).input
    except ImageError:
        return None


def _chunk(args) -> tuple[np.ndarray, np.ndarray]:
    """Photos of digits ``images`` (n, 28, 28) labelled ``labels``, the k-th drawn from the
    generator ``[seed, PHOTO_STREAM, first + k]``: the same photos whatever the chunking."""
    images, labels, seed, first = args
    inputs, kept = [], []
    for k, (digit, label) in enumerate(zip(images, labels)):
        rng = np.random.default_rng([seed, PHOTO_STREAM, first + k])
        prepared = _prepared(digit, int(label), rng)
        if prepared is not None:
            inputs.append(prepared)
            kept.append(label)
    return np.asarray(inputs, np.float32).reshape(-1, 28, 28), np.asarray(kept, labels.dtype)


def photo_digits(x: np.ndarray, y: np.ndarray, count: int, seed: int = 0, workers: int | None = None,
                 log=None, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``count`` of the training digits, each rendered as a phone photo and prepared as
    ``fastmnist predict`` prepares one.

    Parameters
    ----------
    x : ndarray
        Training images, (N, 1, 28, 28), (N, 28, 28) or flat (N, 784), values in [0, 1].
    y : ndarray
        Their labels, (N,).
    count : int
        How many digits to draw (without replacement, at most N).
    seed : int
        Which digits and which photos: one seed gives the same inputs on any machine and with any
        number of ``workers``.
    workers : int, optional
        Processes to spread the work over (default: every core); 1 works in this process.
    log : callable, optional
        Called with one line saying how many photos were made and how long it took.
    progress : bool
        A bar on the terminal with the time left (minutes for the reader's 20000 photos).

    Returns
    -------
    (ndarray, ndarray)
        The prepared inputs, shaped and typed as ``x`` (a few fewer than ``count``: a photo the
        mask finds no digit in is left out), and their labels.
    """
    n = len(x)
    if n != len(y):
        raise InvalidArgument(f"photo_digits: x has {n} images but y has {len(y)} labels")
    count = min(int(count), n)
    started = time.perf_counter()
    pick = np.sort(np.random.default_rng([seed, PHOTO_STREAM]).choice(n, count, replace=False))
    images = np.asarray(x[pick], np.float32).reshape(count, 28, 28)
    labels = np.asarray(y[pick])
    size = config.PHOTO_DIGIT_CHUNK
    jobs = [(images[i:i + size], labels[i:i + size], seed, i) for i in range(0, count, size)]
    import multiprocessing
    workers = min(len(jobs), workers or os.cpu_count() or 1)
    if multiprocessing.current_process().daemon:  # a pool's worker (a sweep's) may not start processes
        workers = 1
    from ..trainer import _progress
    bar = _progress(count, "photographing training digits", progress and sys.stderr.isatty(), unit="photo")
    parts = []
    with contextlib.ExitStack() as stack:
        if workers > 1:
            from concurrent.futures import ProcessPoolExecutor
            # spawn, not fork: the parent may hold numba's or BLAS's threads, which a fork does not copy
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")))
            done = pool.map(_chunk, jobs)
        else:
            done = map(_chunk, jobs)
        for job, part in zip(jobs, done):  # in order, as each chunk is finished
            parts.append(part)
            if bar is not None:
                bar.update(len(job[0]))
    if bar is not None:
        bar.close()
    inputs = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, 28, 28), np.float32)
    kept = np.concatenate([p[1] for p in parts]) if parts else labels[:0]
    if log is not None:
        log(f"{len(inputs)} training digits photographed and prepared as predict reads a photo "
            f"({count - len(inputs)} left out: no digit found) in {time.perf_counter() - started:.0f} s "
            f"on {workers} process(es)")
    return inputs.reshape((len(inputs),) + x.shape[1:]).astype(x.dtype, copy=False), kept
