"""Layers: each holds its parameters on the backend it was given and calls only that backend's kernels.

A layer never names a backend; ``build`` receives the backend object and a NumPy random
generator (weights are drawn on the host, so a seed gives the same weights on every backend).
"""
from __future__ import annotations

import contextlib
import contextvars
import math

import numpy as np

from .errors import InvalidArgument

_PARAMETER_BUDGET: contextvars.ContextVar = contextvars.ContextVar("fastmnist_parameter_budget", default=None)
_LAYER_INDEX: contextvars.ContextVar = contextvars.ContextVar("fastmnist_layer_index", default=None)


@contextlib.contextmanager
def parameter_budget(per_layer: dict):
    """Layer ``i`` built inside may create at most ``per_layer.get(i, 0)`` parameters: a model
    file's architecture is held to the arrays the file really holds before anything is allocated."""
    token = _PARAMETER_BUDGET.set(dict(per_layer))
    try:
        yield
    finally:
        _PARAMETER_BUDGET.reset(token)


@contextlib.contextmanager
def building(index: int):
    """Sequential builds layer ``index`` inside: the budget above is per layer."""
    token = _LAYER_INDEX.set(index)
    try:
        yield
    finally:
        _LAYER_INDEX.reset(token)


def _spend_budget(shape, bias_shape) -> None:
    budget = _PARAMETER_BUDGET.get()
    if budget is None:
        return
    index = _LAYER_INDEX.get()
    need = math.prod(int(d) for d in shape) + math.prod(int(d) for d in bias_shape)
    have = budget.get(index, 0)
    if need > have:
        raise InvalidArgument(f"layer {index} (weights {tuple(shape)}) needs {need:,} parameters; the file's "
                              f"param/{index}/ arrays hold {have:,}")
    budget[index] = have - need


def init_weights(rng: np.random.Generator, init: str, shape, fan_in: int):
    """Draw (weight, bias) on the host in float64.

    ``torch``: uniform(+-1/sqrt(fan_in)) for both, as PyTorch's Linear/Conv2d; ``he``: normal with
    std sqrt(2/fan_in), bias 0; ``glorot``: Keras's default, uniform with bound
    sqrt(6 / (fan_in + fan_out)), bias 0; ``normal:STD``: normal(0, STD^2), bias 0; ``nielsen``:
    standard normal weights and biases, as Nielsen's network.py.
    """
    bias_shape = (shape[0],) if len(shape) == 4 else (shape[1],)
    _spend_budget(shape, bias_shape)
    if init == "torch":
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape), rng.uniform(-bound, bound, bias_shape)
    if init == "he":
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape), np.zeros(bias_shape)
    if init == "glorot":  # Keras's default: uniform(+-sqrt(6 / (fan_in + fan_out))), bias 0
        fan_out = shape[0] * int(np.prod(shape[2:])) if len(shape) == 4 else shape[1]
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-bound, bound, shape), np.zeros(bias_shape)
    if init == "nielsen":
        return rng.standard_normal(shape), rng.standard_normal(bias_shape)
    if init.startswith("normal:"):
        return rng.normal(0.0, float(init.split(":", 1)[1]), shape), np.zeros(bias_shape)
    raise InvalidArgument(f"unknown init {init!r}; expected torch, he, glorot, nielsen or normal:STD")


class Layer:
    """Base class. ``params``/``grads`` map names to backend arrays of the same shapes."""

    need_dx = True  # Sequential turns it off for the first layer: its input gradient is never used

    def __init__(self):
        self.params: dict = {}
        self.grads: dict = {}
        self.be = None

    def build(self, input_shape: tuple, rng, be, dtype) -> tuple:
        """Create parameters for per-sample ``input_shape``; return the per-sample output shape."""
        self.be = be
        return input_shape

    def forward(self, x, train: bool):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def config(self) -> dict:
        return {}


class Conv2D(Layer):
    """2-D convolution, NCHW: ``(N, C, H, W) -> (N, filters, OH, OW)``."""

    def __init__(self, filters: int, kernel_size: int, stride: int = 1, pad: int | str = 0, init: str = "torch"):
        super().__init__()
        self.filters, self.kernel_size, self.stride, self.pad, self.init = filters, kernel_size, stride, pad, init

    def build(self, input_shape, rng, be, dtype):
        self.be = be
        c, h, w = input_shape
        k = self.kernel_size
        self.padding = (k - 1) // 2 if self.pad == "same" else int(self.pad)  # pixels per side; pad as given
        wt, b = init_weights(rng, self.init, (self.filters, c, k, k), c * k * k)
        self.params = {"w": be.asarray(wt, dtype), "b": be.asarray(b, dtype)}
        return (self.filters, *self.output_hw(h, w))

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        """The output's (OH, OW) for an (H, W) input (after :meth:`build`, which sets the padding)."""
        k = self.kernel_size
        return (h + 2 * self.padding - k) // self.stride + 1, (w + 2 * self.padding - k) // self.stride + 1

    def forward(self, x, train):
        y, self.cache = self.be.conv2d_forward_cached(x, self.params["w"], self.params["b"], self.stride, self.padding)
        return y

    def backward(self, dy):
        dx, self.grads["w"], self.grads["b"] = self.be.conv2d_backward_cached(
            dy, self.cache, self.params["w"], self.need_dx)
        self.cache = None
        return dx

    def config(self):
        return {"filters": self.filters, "kernel_size": self.kernel_size, "stride": self.stride,
                "pad": self.pad, "init": self.init}


class MaxPool2D(Layer):
    def __init__(self, size: int = 2, stride: int | None = None):
        super().__init__()
        self.size, self.stride = size, stride or size

    def build(self, input_shape, rng, be, dtype):
        self.be = be
        c, h, w = input_shape
        return (c, (h - self.size) // self.stride + 1, (w - self.size) // self.stride + 1)

    def forward(self, x, train):
        y, self.argmax = self.be.maxpool2d_forward(x, self.size, self.stride)
        self.x_shape = x.shape
        return y

    def backward(self, dy):
        return self.be.maxpool2d_backward(dy, self.argmax, self.x_shape, self.size, self.stride, check=False)

    def config(self):
        return {"size": self.size, "stride": self.stride}


class Flatten(Layer):
    def build(self, input_shape, rng, be, dtype):
        self.be = be
        return (int(np.prod(input_shape)),)

    def forward(self, x, train):
        self.x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self.x_shape)


class Dense(Layer):
    """Affine layer ``(N, D) -> (N, units)``, weight ``(D, units)``."""

    def __init__(self, units: int, init: str = "torch"):
        super().__init__()
        self.units, self.init = units, init

    def build(self, input_shape, rng, be, dtype):
        self.be = be
        if len(input_shape) != 1:
            raise InvalidArgument(f"Dense expects flat inputs (D,), got per-sample shape {input_shape}; add Flatten()")
        wt, b = init_weights(rng, self.init, (input_shape[0], self.units), input_shape[0])
        self.params = {"w": be.asarray(wt, dtype), "b": be.asarray(b, dtype)}
        return (self.units,)

    def forward(self, x, train):
        self.x = x
        return self.be.affine_forward(x, self.params["w"], self.params["b"])

    def backward(self, dy):
        dx, self.grads["w"], self.grads["b"] = self.be.affine_backward(dy, self.x, self.params["w"], self.need_dx)
        self.x = None
        return dx

    def config(self):
        return {"units": self.units, "init": self.init}


class ReLU(Layer):
    def forward(self, x, train):
        self.y = self.be.relu_forward(x)
        return self.y

    def backward(self, dy):
        return self.be.relu_backward(dy, self.y)


class Sigmoid(Layer):
    def forward(self, x, train):
        self.y = self.be.sigmoid_forward(x)
        return self.y

    def backward(self, dy):
        return self.be.sigmoid_backward(dy, self.y)


class Dropout(Layer):
    """Inverted dropout; the trainer sets ``seed`` before each training step."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise InvalidArgument(f"Dropout: p must be in [0, 1), got {p}")
        self.rate = p  # the probability of dropping a unit; saved as "p", Dropout's argument
        self.seed = 0

    def forward(self, x, train):
        if not train or self.rate == 0.0:
            self.mask = None
            return x
        y, self.mask = self.be.dropout_forward(x, self.rate, self.seed)
        return y

    def backward(self, dy):
        return dy if self.mask is None else self.be.dropout_backward(dy, self.mask)

    def config(self):
        return {"p": self.rate}


class ConvReLUPool:
    """Execution-plan node: Conv2D, ReLU and MaxPool2D (either order of the last two) run as one
    fused backend call. It owns no parameters: it reads and writes the Conv2D layer's, so saved
    files and the public layer list are unchanged."""

    def __init__(self, conv: Conv2D, pool: MaxPool2D, channels_last: bool = False):
        self.conv, self.pool = conv, pool
        self.channels_last = channels_last  # the next node is one of these: the backend may keep that layout

    def forward(self, x, train):
        conv = self.conv
        y, self.cache = conv.be.conv2d_relu_maxpool_forward(x, conv.params["w"], conv.params["b"], conv.stride,
                                                            conv.padding, self.pool.size, self.pool.stride,
                                                            self.channels_last)
        return y

    def backward(self, dy):
        conv = self.conv
        dx, conv.grads["w"], conv.grads["b"] = conv.be.conv2d_relu_maxpool_backward(
            dy, self.cache, conv.params["w"], conv.need_dx)
        self.cache = None
        return dx


def fuse(layers: list, be) -> list:
    """The execution plan: layers, with Conv2D+ReLU+MaxPool2D runs replaced by fused nodes (every
    backend has ``conv2d_relu_maxpool_forward``: contract.REQUIRED_OPS); a node followed by another
    asks for its output channels last."""
    plan, i = [], 0
    while i < len(layers):
        a, b, c = (layers[i:i + 3] + [None, None])[:3]
        if isinstance(a, Conv2D) and {type(b), type(c)} == {ReLU, MaxPool2D}:
            plan.append(ConvReLUPool(a, b if isinstance(b, MaxPool2D) else c))
            i += 3
        else:
            plan.append(a)
            i += 1
    for node, after in zip(plan, plan[1:]):  # two convolutions in a row may skip the layout changes between
        if isinstance(node, ConvReLUPool) and isinstance(after, ConvReLUPool):
            node.channels_last = True
    return plan


LAYER_TYPES = {cls.__name__: cls for cls in (Conv2D, MaxPool2D, Flatten, Dense, ReLU, Sigmoid, Dropout)}
