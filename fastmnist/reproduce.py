"""``fastmnist reproduce NAME``: each zoo model's classic schedule, and the accuracy its source reports."""
from __future__ import annotations

import time

from . import zoo
from .data import load_mnist
from .errors import FastMnistError, InvalidArgument

# name -> (epochs, validation fraction, what the source reports, the schedule in words)
CLASSIC = {
    "sigmoid-mlp": (5, None, "~97%", "5 epochs of per-sample SGD, lr 0.1"),
    "two-layer": (17, None, "94-95%", "17 epochs of batch-100 SGD, lr 0.1 (10200 steps; the source runs 10000)"),
    "small-mlp": (30, None, "~95%", "30 epochs of batch-10 SGD, lr 3.0"),
    "relu-mlp": (10, 0.2, "~97.8%", "10 epochs of batch-200 Adam, lr 0.001, 20% held out for validation"),
    "simple-cnn": (20, None, "~99%", "20 epochs of batch-100 Adam, lr 0.001"),
    "dropout-cnn": (10, None, "~99.2%", "10 epochs of batch-200 Adam, lr 0.001"),
    "fast-cnn": (1, None, "99.0%", "1 epoch of batch-256 Adam, lr 0.01, betas (0.7, 0.9), one-cycle"),
    "book-cnn": (10, 0.2, "99.16%", "10 epochs of batch-200 Adam, lr 0.001, 20% held out (the seed tutorial's figure)"),
    "reader": (2, None, "99.23% (no outside source: fastmnist's own run, seed 0, numba)",
               "fast-cnn's schedule over 2 epochs, every batch randomly warped, with a third more digits "
               "photographed and prepared as predict reads a photo"),
}


def reproduce(name: str, backend=None, data=None, seed: int = 0, out=None, verbose: int = 2) -> dict:
    """Train zoo model ``name`` on its classic schedule; returns what docs/models.md tabulates."""
    if name not in CLASSIC:
        raise InvalidArgument(f"no classic schedule for {name!r}; known: {', '.join(CLASSIC)}")
    epochs, val_fraction, reported, schedule = CLASSIC[name]
    r = zoo.recipe(name)
    (x, y), (xt, yt) = load_mnist(data, flatten=r.flat_input)
    x, y = zoo.training_data(name, x, y, log=print if verbose else None)
    model = zoo.create(name, backend=backend, seed=seed)
    args = zoo.fit_args(name, epochs=epochs)
    optimizer = args["optimizer"]
    t0 = time.perf_counter()
    history = model.fit(x, y, **args, validation_split=val_fraction, verbose=verbose, seed=seed)
    seconds = time.perf_counter() - t0
    result = model.evaluate(xt, yt)
    if out:
        try:
            model.save(out, optimizer=optimizer, extra={"history": history})
        except OSError as exc:
            raise FastMnistError(f"{out}: could not save the trained model ({exc})") from None
    return {"model": name, "schedule": schedule, "reported": reported, "test_accuracy": result["accuracy"],
            "test_loss": result["loss"], "val_accuracy": history["val_accuracy"][-1] if history["val_accuracy"] else None,
            "seconds": seconds, "backend": model.backend.name, "seed": seed,
            "command": f"fastmnist reproduce {name} --backend {model.backend.name} --seed {seed}"}
