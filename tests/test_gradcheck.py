"""Numerical gradient checks (float64, central differences) of every backward kernel and of whole
small networks, on every available backend."""
import numpy as np
import pytest

from fastmnist.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sigmoid
from fastmnist.model import Sequential

H = 1e-6


def numeric_grad(f, x):
    """d f / d x by central differences; f maps a float64 array to a scalar."""
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + H
        fp = f(x)
        x[idx] = old - H
        fm = f(x)
        x[idx] = old
        g[idx] = (fp - fm) / (2 * H)
    return g


def check(analytic, numeric, what):
    err = np.linalg.norm(analytic - numeric) / max(np.linalg.norm(numeric), 1e-12)
    assert err < 1e-6, f"{what}: relative gradient error {err:.2e}"


def projected(be, fn, dy):
    """Scalar <fn(x), dy> so that its gradient is the kernel's backward applied to dy."""
    return lambda *args: float(np.sum(be.to_numpy(fn(*[be.asarray(a) for a in args])) * dy))


@pytest.mark.parametrize("stride,pad", [(1, 0), (2, 1), (1, 2)])
def test_conv2d_backward(be, rng, stride, pad):
    x, w, b = rng.standard_normal((2, 2, 6, 5)), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    y = be.to_numpy(be.conv2d_forward(be.asarray(x), be.asarray(w), be.asarray(b), stride, pad))
    dy = rng.standard_normal(y.shape)
    dx, dw, db = (be.to_numpy(a) for a in be.conv2d_backward(be.asarray(dy), be.asarray(x), be.asarray(w), stride, pad))
    f = lambda xx, ww, bb: float(np.sum(be.to_numpy(be.conv2d_forward(be.asarray(xx), be.asarray(ww), be.asarray(bb),
                                                                      stride, pad)) * dy))
    check(dx, numeric_grad(lambda a: f(a, w, b), x), "conv dx")
    check(dw, numeric_grad(lambda a: f(x, a, b), w), "conv dw")
    check(db, numeric_grad(lambda a: f(x, w, a), b), "conv db")


@pytest.mark.parametrize("size,stride", [(2, 2), (3, 2)])
def test_maxpool2d_backward(be, rng, size, stride):
    x = rng.permutation(2 * 2 * 7 * 7).reshape(2, 2, 7, 7) * 0.01  # distinct values: no ties to perturb
    y, arg = be.maxpool2d_forward(be.asarray(x), size, stride)
    dy = rng.standard_normal(y.shape)
    dx = be.to_numpy(be.maxpool2d_backward(be.asarray(dy), arg, x.shape, size, stride))
    f = lambda a: float(np.sum(be.to_numpy(be.maxpool2d_forward(be.asarray(a), size, stride)[0]) * dy))
    check(dx, numeric_grad(f, x), "maxpool dx")


def test_affine_backward(be, rng):
    x, w, b = rng.standard_normal((4, 6)), rng.standard_normal((6, 3)), rng.standard_normal(3)
    dy = rng.standard_normal((4, 3))
    dx, dw, db = (be.to_numpy(a) for a in be.affine_backward(be.asarray(dy), be.asarray(x), be.asarray(w)))
    f = projected(be, be.affine_forward, dy)
    check(dx, numeric_grad(lambda a: f(a, w, b), x), "affine dx")
    check(dw, numeric_grad(lambda a: f(x, a, b), w), "affine dw")
    check(db, numeric_grad(lambda a: f(x, w, a), b), "affine db")


def test_activation_backward(be, rng):
    x = rng.standard_normal((3, 5))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the ReLU kink
    dy = rng.standard_normal(x.shape)
    check(be.to_numpy(be.relu_backward(be.asarray(dy), be.asarray(x))),
          numeric_grad(projected(be, be.relu_forward, dy), x), "relu")
    y = be.sigmoid_forward(be.asarray(x))
    check(be.to_numpy(be.sigmoid_backward(be.asarray(dy), y)),
          numeric_grad(projected(be, be.sigmoid_forward, dy), x), "sigmoid")


def test_dropout_backward(be, rng):
    x, dy = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    _, mask = be.dropout_forward(be.asarray(x), 0.4, 77)
    f = lambda a: float(np.sum(be.to_numpy(be.dropout_forward(be.asarray(a), 0.4, 77)[0]) * dy))
    check(be.to_numpy(be.dropout_backward(be.asarray(dy), mask)), numeric_grad(f, x), "dropout")


def test_loss_gradients(be, rng):
    logits, labels = rng.standard_normal((5, 4)), rng.integers(0, 4, 5)
    _, d = be.softmax_cross_entropy(be.asarray(logits), be.asarray(labels))
    f = lambda a: float(be.softmax_cross_entropy(be.asarray(a), be.asarray(labels))[0])
    check(be.to_numpy(d), numeric_grad(f, logits), "softmax_cross_entropy")
    t = rng.standard_normal((5, 4))
    _, d = be.mse_loss(be.asarray(logits), be.asarray(t))
    f = lambda a: float(be.mse_loss(be.asarray(a), be.asarray(t))[0])
    check(be.to_numpy(d), numeric_grad(f, logits), "mse")


NETWORKS = {
    "cnn": (lambda: [Conv2D(3, 3, pad=1), ReLU(), MaxPool2D(2), Conv2D(2, 3, stride=2, pad=1), Sigmoid(), Flatten(),
                     Dense(5), ReLU(), Dense(4)], (2, 8, 8), "softmax_cross_entropy"),
    "mlp-mse": (lambda: [Dense(6), Sigmoid(), Dense(4), Sigmoid()], (7,), "mse"),
    "dropout": (lambda: [Flatten(), Dense(8), ReLU(), Dropout(0.3), Dense(4)], (1, 3, 3), "softmax_cross_entropy"),
}


@pytest.mark.parametrize("net", NETWORKS)
def test_whole_network(be, rng, net):
    make, in_shape, loss = NETWORKS[net]
    model = Sequential(make(), in_shape, loss, backend=be, dtype="float64", seed=3)
    model.layers[0].need_dx = True  # check the input gradient too
    x = rng.standard_normal((3, *in_shape))
    labels = rng.integers(0, 4, 3)
    targets = np.eye(4)[labels] if loss == "mse" else labels
    for layer in model.layers:
        if isinstance(layer, Dropout):
            layer.seed = 5

    def loss_of(xx):
        out = model.forward(be.asarray(xx), train=True)
        return float(model.loss_and_grad(out, be.asarray(targets))[0])

    out = model.forward(be.asarray(x), train=True)
    _, dout = model.loss_and_grad(out, be.asarray(targets))
    model.backward(dout)
    for layer in model.layers:
        for k, p in layer.params.items():
            host = be.to_numpy(p).copy()

            def f(a, layer=layer, k=k):
                layer.params[k] = be.asarray(a)
                return loss_of(x)

            numeric = numeric_grad(f, host)
            layer.params[k] = be.asarray(host)
            check(be.to_numpy(layer.grads[k]), numeric, f"{net} {type(layer).__name__}.{k}")
