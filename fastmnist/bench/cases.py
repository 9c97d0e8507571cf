"""What is timed: a kernel at a zoo model's shapes (kernel_cases.py), one training step, one epoch.

Each case knows its FLOPs and the bytes it must move at least, so a time can be set against the
floor that the machine's ceilings give (machine.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import zoo
from ..errors import InvalidArgument
from .kernel_cases import F32, KERNELS, kernel_spec
from .targets import Target, Timed, target

DEFAULT_MODELS = ("simple-cnn", "dropout-cnn", "relu-mlp")  # an MLP too: there numpy is a close second


@dataclass
class Case:
    """One thing to time.

    ``build(target)`` returns the timed call on that target, or None where the case does not apply
    there; :meth:`make` wraps it with the target's device synchronisation.
    """

    name: str
    group: str  # kernel | step | epoch
    model: str
    batch_size: int
    flops: float
    bytes: float
    build: Callable[[Target], Timed | None] = field(repr=False)
    repeat: int = 20

    def make(self, backend: str | Target) -> tuple[Timed, Callable[[], None]] | None:
        """``(fn, sync)`` on ``backend`` (a name as ``--backends`` spells it, or a target): the timed call
        and a function that waits for the device (a no-op on the CPU); None where the case does not apply."""
        t = target(backend)
        fn = self.build(t) if t.supports(self) else None
        return None if fn is None else (fn, t.sync)


def _batch_size(model_name: str, batch_sizes: dict | None) -> int:
    return (batch_sizes or {}).get(model_name) or zoo.recipe(model_name).batch_size


def kernel_cases(models=DEFAULT_MODELS, kernels=KERNELS, batch_sizes=None, repeat=20) -> list[Case]:
    """A case per kernel and model, at the model's batch size; kernels a model has no layer for are left out."""
    cases = []
    for model_name in models:
        batch = _batch_size(model_name, batch_sizes)
        for kernel in kernels:
            spec = kernel_spec(kernel, model_name, batch)
            if spec is not None:
                cases.append(Case(spec.tag, "kernel", model_name, batch, spec.flops, spec.bytes,
                                  lambda t, spec=spec: t.kernel(spec), repeat))
    return cases


def model_flops_per_sample(model_name: str) -> float:
    """Forward + backward FLOPs of one sample (matrix products and convolutions only; the first
    layer's input gradient is not computed)."""
    from ..layers import Conv2D, Dense
    m = zoo.create(model_name, backend="numpy")
    shape, total, first = m.input_shape, 0.0, True
    for layer in m.layers:
        out = layer.out_shape
        if isinstance(layer, Conv2D):
            mac = out[0] * out[1] * out[2] * shape[0] * layer.kernel_size ** 2
            total += 2 * mac * (2 if first else 3)
            first = False
        elif isinstance(layer, Dense):
            total += 2 * shape[0] * layer.units * (2 if first else 3)
            first = False
        shape = out
    return total


def training_data_source() -> str:
    """Where the timed images come from: MNIST's directory, or random stand-ins where it is not found.
    It matters: an MNIST image is ~19% ink, and the dense layers of the numba backend skip zero inputs."""
    from ..data import find_data_root, load_raw
    try:
        load_raw()
        return f"MNIST ({find_data_root(None)})"
    except Exception as exc:  # no MNIST here: random data times the same arithmetic, but none of it is zero
        return f"random uniform images, no zeros (MNIST not found: {exc})"


def _training_data(n, flat, seed=0):
    from ..data import load_mnist
    try:
        (x, y), _ = load_mnist(flatten=flat)
        return x[:n], y[:n]
    except Exception:  # no MNIST here: random data times the same work (training_data_source says so)
        rng = np.random.default_rng(seed)
        x = rng.random((n, 784) if flat else (n, 1, 28, 28), dtype=np.float32)
        return x, rng.integers(0, 10, n)


def step_case(model_name: str, batch: int, repeat: int = 20) -> Case:
    """One training step (forward, backward, optimizer) of ``model_name`` on a batch of ``batch`` images."""
    flat = zoo.recipe(model_name).flat_input

    def build(t: Target):
        return t.train_step(model_name, *_training_data(batch, flat))

    flops = model_flops_per_sample(model_name) * batch
    return Case(f"train_step[{model_name},b{batch}]", "step", model_name, batch, flops, F32 * batch * 784, build, repeat)


def epoch_case(model_name: str, batch: int, samples: int = 60000, repeat: int = 3) -> Case:
    """One epoch of ``model_name``'s recipe over ``samples`` images in batches of ``batch``."""
    flat = zoo.recipe(model_name).flat_input

    def build(t: Target):
        return t.train_epoch(model_name, batch, *_training_data(samples, flat))

    flops = model_flops_per_sample(model_name) * samples
    return Case(f"epoch[{model_name},b{batch},n{samples}]", "epoch", model_name, batch, flops, F32 * samples * 784,
                build, repeat)


def all_cases(models=DEFAULT_MODELS, kernels=KERNELS, batch_sizes=None, kernels_only=False, epochs_only=False,
              quick=False, repeats=None) -> list[Case]:
    """Every case of a run: kernels at each model's shapes, a training step, and an epoch; each
    timed ``repeats`` times (default: 20 a kernel or step, 3 an epoch; with ``quick`` 5 and 1)."""
    cases = []
    rep = repeats if repeats is not None else (5 if quick else 20)
    if not epochs_only:
        cases += kernel_cases(models[:1] if quick else models, kernels, batch_sizes, rep)
    if not kernels_only:
        for model_name in models:
            batch = _batch_size(model_name, batch_sizes)
            if not epochs_only:
                cases.append(step_case(model_name, batch, rep))
            cases.append(epoch_case(model_name, batch, 2000 if quick else 60000,
                                    repeats if repeats is not None else (1 if quick else 3)))
    return cases


def spec_cases(spec: dict) -> list[Case]:
    """:func:`all_cases` of a run's spec (``bench.run``'s arguments as a dict, as its workers get them)."""
    return all_cases(spec["models"], spec["kernels"], spec["batch_sizes"], spec["kernels_only"], spec["epochs_only"],
                     spec["quick"], spec.get("repeats"))


def parse_batch_sizes(text: str | None, models) -> dict:
    """``--batch-sizes 64,128`` applies to every model; ``simple-cnn=64,dropout-cnn=128`` per model.
    A size below 1, a non-integer or a model not being timed is an error, never ignored."""
    if not text:
        return {}

    def size(value, where):
        try:
            n = int(value)
        except ValueError:
            raise InvalidArgument(f"--batch-sizes: {where} is not an integer: {value!r}") from None
        if n < 1:
            raise InvalidArgument(f"--batch-sizes: {where} must be >= 1, got {n}")
        return n

    out = {}
    for part in text.split(","):
        if "=" in part:
            k, v = (t.strip() for t in part.split("=", 1))
            if k not in models:
                raise InvalidArgument(f"--batch-sizes: {k!r} is not among the models timed ({', '.join(models)})")
            out[k] = size(v, k)
        else:
            out = {m: size(part.strip(), "a batch size") for m in models}
    return out
