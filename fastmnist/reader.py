"""The reader: the model ``fastmnist predict`` uses when it is given none.

On first use it is trained (zoo recipe ``reader``: fast-cnn's network on randomly warped digits,
two epochs; ``config.READER_MEMBERS`` networks from seeds 0, 1, ..., read together by the mean of
their probabilities) and saved in the user's cache directory — ``$XDG_CACHE_HOME/fastmnist`` or
``~/.cache/fastmnist``, one file a network — so that every later ``fastmnist predict photo.jpg``
starts at once; a cached file that no longer loads is trained again, never used half-read.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from . import __version__, config, zoo
from .ensemble import Ensemble

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


def reader_paths() -> list[Path]:
    """Where the reader's networks are kept, one file each (seed 0, 1, ...): a new fastmnist, or a
    changed recipe, trains its own."""
    stem = f"reader-{__version__}-{recipe_digest()}"
    return [cache_dir() / f"{stem}-seed{seed}.npz" for seed in range(max(1, config.READER_MEMBERS))]


def get_reader(backend=None, data=None, log=lambda line: print(line, file=sys.stderr), verbose: int = 1) -> Ensemble:
    """The cached reader, with any network not cached (or no longer loading) freshly trained and
    saved (:func:`reader_paths`)."""
    paths = reader_paths()
    members = [_cached(path, backend, log) for path in paths]
    missing = [seed for seed, m in enumerate(members) if m is None]
    if missing:
        from .data import load_mnist
        (x, y), test = load_mnist(data)
        if config.READER_TRAIN_LIMIT:
            x, y = x[:config.READER_TRAIN_LIMIT], y[:config.READER_TRAIN_LIMIT]
        train = zoo.training_data(NAME, x, y, log=log, progress=verbose >= 1)  # once, for every network missing
        for k, seed in enumerate(missing):
            members[seed] = _train(seed, paths[seed], (train, test), backend, log, verbose, f"{k + 1} of {len(missing)}")
    return Ensemble(members)


def _cached(path: Path, backend, log):
    from .errors import ModelFileError
    from .model import load
    if not path.exists():
        return None
    try:
        return load(path, backend=backend)
    except ModelFileError as exc:
        log(f"the cached reader network {path} does not load ({exc}); training it again")
        return None


def _train(seed: int, path: Path, data_sets, backend, log, verbose: int, which: str):
    """One of the reader's networks, trained from ``seed`` and saved to ``path`` where it can be."""
    (x, y), (xt, yt) = data_sets
    recipe = zoo.recipe(NAME)
    model = zoo.create(NAME, backend=backend, seed=seed)
    log(f"no reader cached yet: training network {which} ({recipe.description}; seed {seed}, {recipe.epochs} "
        f"epochs on {len(x)} images, {model.backend.name}); it is saved to {path} for every later run")
    started = time.perf_counter()
    model.fit(x, y, **zoo.fit_args(NAME), verbose=verbose, seed=seed)
    accuracy = model.evaluate(xt, yt)["accuracy"]
    seconds = time.perf_counter() - started
    try:
        model.save(path)
    except OSError as exc:  # a read-only cache: read with it now, train again next time
        log(f"reader network trained in {seconds:.0f} s: MNIST test accuracy {accuracy:.4f}; could not cache it in "
            f"{path} ({exc}); set XDG_CACHE_HOME to a writable directory to keep it")
        return model
    log(f"reader network trained in {seconds:.0f} s: MNIST test accuracy {accuracy:.4f}; saved {path}")
    return model
