"""The reader: the model ``fastmnist predict`` uses when it is given none.

On first use it is trained (zoo recipe ``reader``: fast-cnn's network on randomly warped digits,
two epochs) and saved in the user's cache directory — ``$XDG_CACHE_HOME/fastmnist`` or
``~/.cache/fastmnist`` — so that every later ``fastmnist predict photo.jpg`` starts at once; a
cached file that no longer loads is trained again, never used half-read.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from . import __version__, config, zoo

NAME = "reader"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "fastmnist"


def recipe_digest() -> str:
    """Eight hex digits that change whenever the reader's recipe does (its network, ranges or training)."""
    import hashlib
    import json
    recipe = zoo.recipe(NAME)
    fields = {k: v for k, v in vars(recipe).items() if not callable(v)}
    fields["layers"] = [{"type": type(layer).__name__, **layer.config()} for layer in recipe.layers()]
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]


def reader_path() -> Path:
    """Where the trained reader is kept: a new fastmnist, or a changed recipe, trains its own."""
    return cache_dir() / f"reader-{__version__}-{recipe_digest()}.npz"


def get_reader(backend=None, data=None, log=lambda line: print(line, file=sys.stderr), verbose: int = 1):
    """The cached reader, or a freshly trained one (saved to :func:`reader_path`)."""
    from .data import load_mnist
    from .errors import ModelFileError
    from .model import load
    path = reader_path()
    if path.exists():
        try:
            return load(path, backend=backend)
        except ModelFileError as exc:
            log(f"the cached reader {path} does not load ({exc}); training it again")
    (x, y), (xt, yt) = load_mnist(data)
    if config.READER_TRAIN_LIMIT:
        x, y = x[:config.READER_TRAIN_LIMIT], y[:config.READER_TRAIN_LIMIT]
    recipe = zoo.recipe(NAME)
    model = zoo.create(NAME, backend=backend, seed=0)
    log(f"no reader cached yet: training one ({recipe.description}; {recipe.epochs} epochs on {len(x)} images, "
        f"{model.backend.name}); it is saved to {path} for every later run")
    started = time.perf_counter()
    model.fit(x, y, **zoo.fit_args(NAME), verbose=verbose)
    accuracy = model.evaluate(xt, yt)["accuracy"]
    seconds = time.perf_counter() - started
    try:
        model.save(path)
    except OSError as exc:  # a read-only cache: read with it now, train again next time
        log(f"reader trained in {seconds:.0f} s: MNIST test accuracy {accuracy:.4f}; could not cache it in {path} "
            f"({exc}); set XDG_CACHE_HOME to a writable directory to keep it")
        return model
    log(f"reader trained in {seconds:.0f} s: MNIST test accuracy {accuracy:.4f}; saved {path}")
    return model
