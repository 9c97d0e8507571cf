"""The model zoo: the classic MNIST networks, each with its customary training recipe."""
from __future__ import annotations

from dataclasses import dataclass, field

from . import config
from .backends import resolve_for_model
from .errors import InvalidArgument
from .layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sigmoid
from .model import Sequential

IMAGE = (1, 28, 28)
FLAT = (784,)


@dataclass(frozen=True)
class Recipe:
    """A zoo entry: how to build the network and how it is customarily trained."""

    description: str
    source: str
    flat_input: bool
    loss: str
    layers: callable
    optimizer: str
    lr: float
    batch_size: int
    epochs: int
    optimizer_args: dict = field(default_factory=dict)
    schedule: dict = field(default_factory=lambda: {"type": "constant"})
    augment: dict | None = None  # fastmnist.augment.Augment keywords, where the recipe trains on warped batches
    #: this share of the training set is also photographed and prepared as predict reads a photo,
    #: and added to it (fastmnist.photos.training; training_data)
    photo_digits: float = 0.0


def _sigmoid_mlp():
    std = 200 ** -0.5
    return [Dense(200, init=f"normal:{std}"), Sigmoid(), Dense(10, init=f"normal:{std}"), Sigmoid()]


def _relu_mlp(dropout: float = 0.0):
    layers = [Dense(256, init="he"), ReLU()]
    if dropout:
        layers.append(Dropout(dropout))
    return layers + [Dense(10, init="he")]


ZOO: dict[str, Recipe] = {
    "sigmoid-mlp": Recipe("784-200-10, sigmoid both layers, squared error", "classic NumPy MLP tutorial",
                          True, "mse", _sigmoid_mlp, "sgd", 0.1, 1, 5),
    "two-layer": Recipe("784-50-10, sigmoid hidden, softmax cross-entropy", "Saitoh, Deep Learning from Scratch (TwoLayerNet)",
                        True, "softmax_cross_entropy",
                        lambda: [Dense(50, init="normal:0.01"), Sigmoid(), Dense(10, init="normal:0.01")],
                        "sgd", 0.1, 100, 17),
    "small-mlp": Recipe("784-30-10, sigmoid, quadratic cost", "Nielsen, Neural Networks and Deep Learning (network.py)",
                        True, "mse", lambda: [Dense(30, init="nielsen"), Sigmoid(), Dense(10, init="nielsen"), Sigmoid()],
                        "sgd", 3.0, 10, 30),
    "relu-mlp": Recipe("784-256-10, ReLU, softmax cross-entropy, optional dropout", "Keras-style MLP",
                       True, "softmax_cross_entropy", _relu_mlp, "adam", 0.001, 200, 10),
    "simple-cnn": Recipe("conv 30x5x5 -> ReLU -> maxpool 2 -> dense 100 -> ReLU -> dense 10",
                         "Saitoh, Deep Learning from Scratch (SimpleConvNet), He-normal initialisation",
                         False, "softmax_cross_entropy",
                         lambda: [Conv2D(30, 5, init="he"), ReLU(), MaxPool2D(2), Flatten(), Dense(100, init="he"), ReLU(),
                                  Dense(10, init="he")],
                         "adam", 0.001, 100, 1),
    "dropout-cnn": Recipe("conv 16x5x5 same -> ReLU -> maxpool 2 -> dense 128 -> ReLU -> dropout 0.5 -> dense 10",
                          "Keras-style CNN with dropout", False, "softmax_cross_entropy",
                          lambda: [Conv2D(16, 5, pad="same", init="he"), ReLU(), MaxPool2D(2), Flatten(),
                                   Dense(128, init="he"), ReLU(), Dropout(0.5), Dense(10, init="he")],
                          "adam", 0.001, 200, 10),
    "fast-cnn": Recipe("conv 24x5x5 -> maxpool 2 -> ReLU -> conv 32x3x3 -> maxpool 2 -> ReLU -> dense 800->256 -> ReLU "
                       "-> dense 10",
                       "the public 'MNIST in under a second' PyTorch recipe", False, "softmax_cross_entropy",
                       lambda: [Conv2D(24, 5), MaxPool2D(2), ReLU(), Conv2D(32, 3), MaxPool2D(2), ReLU(), Flatten(),
                                Dense(256), ReLU(), Dense(10)],
                       "adam", 0.01, 256, 1, {"beta1": 0.7, "beta2": 0.9}, {"type": "onecycle"}),
    "book-cnn": Recipe("conv 16x5x5 same -> ReLU -> maxpool 2 -> conv 36x5x5 same -> ReLU -> maxpool 2 -> dropout 0.25 "
                       "-> dense 128 -> ReLU -> dropout 0.5 -> dense 10",
                       "the two-convolution Keras network MNIST tutorials follow (the seed's 99.16%?)", False,
                       "softmax_cross_entropy",
                       lambda: [Conv2D(16, 5, pad="same", init="glorot"), ReLU(), MaxPool2D(2),
                                Conv2D(36, 5, pad="same", init="glorot"), ReLU(), MaxPool2D(2), Dropout(0.25), Flatten(),
                                Dense(128, init="glorot"), ReLU(), Dropout(0.5), Dense(10, init="glorot")],
                       "adam", 0.001, 200, 10),
    "reader": Recipe("fast-cnn's network trained on randomly warped digits (rotation, scale, shear, shift), thicker "
                     "and thinner strokes and blur, for reading photos",
                     "fast-cnn with fastmnist.augment.Augment's default warp, turns to 15 degrees, strokes and blur",
                     False,
                     "softmax_cross_entropy",
                     lambda: [Conv2D(24, 5), MaxPool2D(2), ReLU(), Conv2D(32, 3), MaxPool2D(2), ReLU(), Flatten(),
                              Dense(256), ReLU(), Dense(10)],
                     "adam", 0.01, 256, 2, {"beta1": 0.7, "beta2": 0.9}, {"type": "onecycle"},
                     # strokes and blur: +0.75 to +2.75 points of wide photos read right (docs/photos.md)
                     augment={"rotation": 15.0, "thickness": 0.5, "blur": 1.0},
                     # a third more digits as predict prepares photos: +0.7 points of digits (docs/photos.md)
                     photo_digits=1 / 3),
}

DEFAULT_MODEL = "simple-cnn"

# Named variants of a zoo entry: (entry, create() keywords). Benchmarks time them beside the entries.
VARIANTS = {"relu-mlp-dropout": ("relu-mlp", {"dropout": 0.2})}  # Keras's MNIST MLP drops 20%


def recipe(name: str) -> Recipe:
    try:
        return ZOO[VARIANTS[name][0] if name in VARIANTS else name]
    except KeyError:
        raise InvalidArgument(f"unknown model {name!r}; the zoo has: {', '.join(ZOO)} "
                              f"(and the variants {', '.join(VARIANTS)})") from None


def fit_args(name: str, *, optimizer: str | None = None, lr: float | None = None, batch_size: int | None = None,
             epochs: int | None = None, augment: bool | None = None) -> dict:
    """The :meth:`Sequential.fit` keywords of zoo model ``name``'s recipe, each overridable:
    ``optimizer`` (a fresh one; the recipe's hyper-parameters, such as fast-cnn's Adam betas, go
    with the recipe's optimizer only — another optimizer named here gets its own defaults),
    ``schedule``, ``batch_size``, ``epochs`` and ``augment`` (True: warp the batches, with the
    recipe's ranges or :class:`~fastmnist.augment.Augment`'s defaults; None: as the recipe says).
    The one path from a recipe to a training run:
    the CLI, reproduce, sweep, bench and the tests all train through it."""
    from .optim import make_optimizer
    r = recipe(name)
    opt_name = optimizer if optimizer is not None else r.optimizer
    hyper = r.optimizer_args if opt_name == r.optimizer else {}
    from .augment import Augment
    if augment is None:  # the recipe's own choice
        augment = r.augment is not None
    warp = Augment(**(r.augment or {})) if augment else None
    return {"optimizer": make_optimizer(opt_name, lr if lr is not None else r.lr, **hyper), "schedule": r.schedule,
            "batch_size": batch_size if batch_size is not None else r.batch_size,
            "epochs": epochs if epochs is not None else r.epochs, "augment": warp}


def training_data(name: str, x, y, log=None, progress: bool = False):
    """The training set of zoo model ``name``'s recipe: ``(x, y)`` as given, and where the recipe
    has ``photo_digits``, that share of them once more, photographed and prepared as ``fastmnist
    predict`` prepares a photo (:func:`fastmnist.photos.training.photo_digits`, seed 0: the same
    photos for every seed of the model), appended. ``log`` gets one line on the photos made;
    ``progress`` draws a bar on the terminal while they are made.
    The one path from a recipe to its data: the CLI, reproduce, sweep and the reader train on it."""
    r = recipe(name)
    if not r.photo_digits:
        return x, y
    import numpy as np

    from .photos.training import photo_digits
    if log is not None:
        log(f"{name}: photographing {round(r.photo_digits * len(x))} training digits and preparing them as "
            "predict reads a photo")
    px, py = photo_digits(x, y, round(r.photo_digits * len(x)), seed=0, log=log, progress=progress)
    return np.concatenate([x, px]), np.concatenate([y, py.astype(y.dtype, copy=False)])


def create(name: str = DEFAULT_MODEL, backend=None, seed: int = 0, dtype: str = config.DEFAULT_DTYPE,
           dropout: float | None = None, batch_size: int | None = None) -> Sequential:
    """Build zoo model ``name`` on ``backend`` with seeded initial weights.

    ``dropout`` applies to ``relu-mlp`` only (its optional dropout after the hidden layer).
    ``backend`` None or ``"auto"`` picks per model (:func:`fastmnist.backends.resolve_for_model`):
    the GPU where one works, except for the MLPs trained in small batches (``batch_size``, default
    the recipe's), which numba runs faster.
    """
    r = recipe(name)
    if backend is None or isinstance(backend, str):
        backend = resolve_for_model(backend, r.flat_input, batch_size or r.batch_size)
    if name in VARIANTS:
        name, keywords = VARIANTS[name]
        dropout = keywords.get("dropout", dropout)
    layers = r.layers(dropout) if (name == "relu-mlp" and dropout) else r.layers()
    return Sequential(layers, FLAT if r.flat_input else IMAGE, r.loss, backend=backend, dtype=dtype,
                      seed=seed, name=name)
