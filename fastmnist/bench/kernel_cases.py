"""Kernel cases: one backend kernel at the shapes a zoo model gives it at its batch size, with the
FLOPs it does and the bytes it must move at least, and the same work written for PyTorch."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import zoo
from ..errors import InvalidArgument

F32 = 4
KERNELS = ("conv2d_forward", "conv2d_backward", "maxpool2d_forward", "maxpool2d_backward", "affine_forward",
           "affine_backward", "relu_forward", "softmax_cross_entropy", "dropout_forward", "adam_update")


@dataclass
class KernelSpec:
    """One kernel at one model's shapes.

    ``inputs`` are NumPy arrays, moved to the target once before timing. ``fastmnist(be, **moved)``
    and ``torch(torch, **moved)`` return the timed call (any setup it needs, such as an argmax for the
    pooling backward, done there, outside the timed calls).
    """

    tag: str
    flops: float
    bytes: float
    inputs: dict = field(repr=False)
    fastmnist: Callable = field(repr=False)
    torch: Callable = field(repr=False)


def _each_call(op: Callable) -> Callable:
    """A spec call with no setup: the timed call is ``op`` itself on the moved inputs."""
    return lambda lib, **arrays: (lambda: op(lib, **arrays))


def _rand(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def layer_shapes(model_name: str, batch: int) -> dict:
    """Shapes of the first conv, pool, dense and dropout layers of a zoo model, at ``batch``."""
    from ..layers import Conv2D, Dense, Dropout, MaxPool2D
    model = zoo.create(model_name, backend="numpy")
    shape, info = model.input_shape, {}
    for layer in model.layers:
        if isinstance(layer, Conv2D) and "conv" not in info:
            info["conv"] = ((batch, *shape), (layer.filters, shape[0], layer.kernel_size, layer.kernel_size),
                            layer.stride, layer.padding)
        if isinstance(layer, MaxPool2D) and "pool" not in info:
            info["pool"] = ((batch, *shape), layer.size, layer.stride)
        if isinstance(layer, Dense) and "dense" not in info:
            info["dense"] = (batch, shape[0], layer.units)
        if isinstance(layer, Dropout) and "dropout" not in info:
            info["dropout"] = (batch, *shape)
        shape = layer.out_shape
    return info


# ---- one spec builder per kernel family: (kernel, tag, layer shapes, batch) -> KernelSpec | None ----

def _conv(kernel, tag, info, batch):
    if "conv" not in info:
        return None  # the model has no convolution (an MLP)
    xs, ws, stride, pad = info["conv"]
    n, c, h, w = xs
    f, _, k, _ = ws
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    mac = n * f * oh * ow * c * k * k
    inp = {"x": _rand(xs), "w": _rand(ws, 1) * 0.1, "b": _rand((f,), 2), "dy": _rand((n, f, oh, ow), 3)}
    nbytes = F32 * (inp["x"].size + inp["w"].size + inp["dy"].size)
    if kernel == "conv2d_forward":
        return KernelSpec(tag, 2 * mac, nbytes, inp,
                          _each_call(lambda be, x, w, b, dy: be.conv2d_forward(x, w, b, stride, pad)),
                          _each_call(lambda t, x, w, b, dy: t.nn.functional.conv2d(x, w, b, stride, pad)))
    return KernelSpec(tag, 4 * mac, 2 * nbytes, inp,
                      _each_call(lambda be, x, w, b, dy: be.conv2d_backward(dy, x, w, stride, pad)),
                      _each_call(lambda t, x, w, b, dy: (t.nn.grad.conv2d_input(x.shape, w, dy, stride, pad),
                                                         t.nn.grad.conv2d_weight(x, w.shape, dy, stride, pad),
                                                         dy.sum((0, 2, 3)))))


def _pool(kernel, tag, info, batch):
    if "pool" not in info:
        return None  # the model has no pooling (an MLP)
    xs, size, stride = info["pool"]
    n, c, h, w = xs
    oh, ow = (h - size) // stride + 1, (w - size) // stride + 1
    inp = {"x": _rand(xs), "dy": _rand((n, c, oh, ow), 1)}
    nbytes = F32 * (inp["x"].size + 3 * inp["dy"].size)
    if kernel == "maxpool2d_forward":
        return KernelSpec(tag, n * c * oh * ow * size * size, nbytes, inp,
                          _each_call(lambda be, x, dy: be.maxpool2d_forward(x, size, stride)),
                          _each_call(lambda t, x, dy: t.nn.functional.max_pool2d(x, size, stride, return_indices=True)))

    def fastmnist(be, x, dy):
        argmax = be.maxpool2d_forward(x, size, stride)[1]
        return lambda: be.maxpool2d_backward(dy, argmax, x.shape, size, stride)

    def torch(t, x, dy):
        idx = t.nn.functional.max_pool2d(x, size, stride, return_indices=True)[1]
        return lambda: t.ops.aten.max_pool2d_with_indices_backward(dy, x, [size, size], [stride, stride], [0, 0],
                                                                   [1, 1], False, idx)
    return KernelSpec(tag, inp["dy"].size, nbytes, inp, fastmnist, torch)


def _affine(kernel, tag, info, batch):
    n, d, m = info["dense"]
    inp = {"x": _rand((n, d)), "w": _rand((d, m), 1) * 0.05, "b": _rand((m,), 2), "dy": _rand((n, m), 3)}
    nbytes = F32 * (n * d + d * m + n * m)
    if kernel == "affine_forward":
        return KernelSpec(tag, 2 * n * d * m, nbytes, inp, _each_call(lambda be, x, w, b, dy: be.affine_forward(x, w, b)),
                          _each_call(lambda t, x, w, b, dy: t.addmm(b, x, w)))
    return KernelSpec(tag, 4 * n * d * m, 2 * nbytes, inp, _each_call(lambda be, x, w, b, dy: be.affine_backward(dy, x, w)),
                      _each_call(lambda t, x, w, b, dy: (dy @ w.T, x.T @ dy, dy.sum(0))))


def _relu(kernel, tag, info, batch):
    # after the first convolution, or else the first dense layer
    inp = {"x": _rand(info["pool"][0] if "pool" in info else (info["dense"][0], info["dense"][2]))}
    return KernelSpec(tag, inp["x"].size, 2 * F32 * inp["x"].size, inp, _each_call(lambda be, x: be.relu_forward(x)),
                      _each_call(lambda t, x: t.relu(x)))


def _softmax_cross_entropy(kernel, tag, info, batch):
    def torch(t, logits, labels):
        p = t.softmax(logits, 1)
        loss = t.nn.functional.cross_entropy(logits, labels)
        p[t.arange(logits.shape[0], device=logits.device), labels] -= 1
        return loss, p / logits.shape[0]

    inp = {"logits": _rand((batch, 10)), "labels": np.random.default_rng(0).integers(0, 10, batch)}
    return KernelSpec(tag, 5 * batch * 10, F32 * 20 * batch + 8 * batch, inp,
                      _each_call(lambda be, logits, labels: be.softmax_cross_entropy(logits, labels)), _each_call(torch))


def _dropout(kernel, tag, info, batch):
    if "dropout" not in info:
        return None  # the model has no dropout layer
    inp = {"x": _rand(info["dropout"])}
    return KernelSpec(tag, inp["x"].size, 3 * F32 * inp["x"].size, inp,
                      _each_call(lambda be, x: be.dropout_forward(x, 0.5, 1)),
                      _each_call(lambda t, x: t.nn.functional.dropout(x, 0.5, True)))


def _adam(kernel, tag, info, batch):
    def torch(t, p, g, m, v):  # torch's own step for one parameter, the optimizer built outside the timing
        param = t.nn.Parameter(p)
        param.grad = g
        return t.optim.Adam([param], lr=1e-3).step

    n, d, m = info["dense"]
    inp = {"p": _rand((d, m)), "g": _rand((d, m), 1) * 1e-3, "m": np.zeros((d, m), np.float32),
           "v": np.zeros((d, m), np.float32)}
    return KernelSpec(tag, 12 * d * m, 7 * F32 * d * m, inp,
                      _each_call(lambda be, p, g, m, v: be.adam_update(p, g, m, v, 1, 1e-3)), torch)


_FAMILIES = {"conv2d_forward": _conv, "conv2d_backward": _conv, "maxpool2d_forward": _pool,
             "maxpool2d_backward": _pool, "affine_forward": _affine, "affine_backward": _affine, "relu_forward": _relu,
             "softmax_cross_entropy": _softmax_cross_entropy, "dropout_forward": _dropout, "adam_update": _adam}
assert set(_FAMILIES) == set(KERNELS)


def kernel_spec(kernel: str, model_name: str, batch: int) -> KernelSpec | None:
    """``kernel`` at ``model_name``'s shapes and ``batch``; None where the model has no such layer."""
    if kernel not in _FAMILIES:
        raise InvalidArgument(f"unknown kernel {kernel!r}; valid: {', '.join(KERNELS)}")
    return _FAMILIES[kernel](kernel, f"{kernel}[{model_name},b{batch}]", layer_shapes(model_name, batch), batch)
