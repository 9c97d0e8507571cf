"""``Ensemble``: several trained models that read together, by the mean of their probabilities.

Networks trained alike from different seeds misread different digits; averaging their class
probabilities keeps the answers they agree on and settles the rest by confidence. The reader that
``fastmnist predict`` uses is one (three fast-cnn networks, seeds 0-2: docs/photos.md).
"""
from __future__ import annotations

import numpy as np

from .errors import InvalidArgument


class Ensemble:
    """Models of one input and output shape, read together.

    Parameters
    ----------
    models : list of Sequential
        At least one; each takes inputs of the same shape and gives the same number of classes.
    names : list of str, optional
        What to call each model in an error (e.g. its file); default "ensemble model K".
    """

    def __init__(self, models: list, names: list | None = None):
        if not models:
            raise InvalidArgument("an ensemble needs at least one model")
        names = names or [f"ensemble model {k}" for k in range(len(models))]
        first = models[0]
        for name, m in zip(names[1:], models[1:]):
            if tuple(m.input_shape) != tuple(first.input_shape) or tuple(m.output_shape) != tuple(first.output_shape):
                raise InvalidArgument(f"{name} takes inputs {tuple(m.input_shape)} -> {tuple(m.output_shape)}, "
                                      f"{names[0]} {tuple(first.input_shape)} -> {tuple(first.output_shape)}: "
                                      "models read together take the same input and give the same classes")
        self.models = list(models)
        self.input_shape, self.output_shape = tuple(first.input_shape), tuple(first.output_shape)
        self.dtype, self.backend, self.name = first.dtype, first.backend, first.name

    def predict(self, x, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities ``(N, classes)``: the mean of the models' probabilities."""
        total = self.models[0].predict(x, batch_size).astype(np.float64)
        for m in self.models[1:]:
            total += m.predict(x, batch_size)
        return (total / len(self.models)).astype(self.dtype)

    def evaluate(self, x, y, batch_size: int | None = None) -> dict:
        """``{"accuracy": ...}`` of the averaged probabilities on images ``x`` with labels ``y``."""
        y = np.asarray(y)
        return {"accuracy": float(np.mean(np.argmax(self.predict(x, batch_size), axis=1) == y))}

    def __len__(self) -> int:
        return len(self.models)

    def __repr__(self) -> str:
        return f"<Ensemble of {len(self.models)}: {', '.join(repr(m) for m in self.models)}>"
