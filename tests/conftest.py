"""Shared fixtures: ``be`` runs a test once per backend (skipped, with the reason, where unavailable)."""
import os
from pathlib import Path

import numpy as np
import pytest

from fastmnist.backends import NAMES, backend_status, get_backend

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("FASTMNIST_DATA", REPO.parent / "shared" / "data" / "mnist")).resolve()
# Absolute from here on: tests that change directory (the docs examples) and the processes they
# start must find the data that a relative FASTMNIST_DATA (as in the README's command) pointed at.
if "FASTMNIST_DATA" in os.environ:
    os.environ["FASTMNIST_DATA"] = str(MNIST_DIR)


def backend_params():
    params = []
    for name in NAMES:
        ok, why = backend_status(name)
        marks = [] if ok else [pytest.mark.skip(reason=f"{name} backend unavailable here: {why}")]
        if name == "cupy":
            marks.append(pytest.mark.gpu)
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.fixture(params=backend_params())
def be(request):
    return get_backend(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def mnist_dir():
    if not (MNIST_DIR / "t10k-labels-idx1-ubyte.gz").exists() and not (MNIST_DIR / "t10k-labels-idx1-ubyte").exists():
        pytest.skip(f"MNIST not found at {MNIST_DIR} (set FASTMNIST_DATA)")
    return MNIST_DIR


@pytest.fixture
def backward_calls(monkeypatch):
    """Each call of numba_conv.conv_pool_backward_kernel, as a dict of its arguments by name (which
    paths the numba backend's fused backward pass took)."""
    import inspect

    from fastmnist.backends import numba_conv
    kernel, calls = numba_conv.conv_pool_backward_kernel, []
    names = list(inspect.signature(kernel.py_func).parameters)

    def spied(*args):
        calls.append(dict(zip(names, args)))
        return kernel(*args)

    monkeypatch.setattr(numba_conv, "conv_pool_backward_kernel", spied)
    return calls


def assert_close(actual, expected, dtype, what=""):
    """Norm-wise relative error: float64 within 1e-10; float32 within 3e-5.

    float32 carries 24 bits (eps 6e-8); sums of a few hundred terms in a different order than the
    float64 oracle lose up to ~sqrt(K)*eps relative each, far below 3e-5 for K <= 10^4, while any
    indexing mistake moves whole elements and gives errors of order 1.
    """
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values"
    tol = 1e-10 if np.dtype(dtype) == np.float64 else 3e-5
    scale = max(np.linalg.norm(expected), 1e-30)
    err = np.linalg.norm(actual - expected) / scale
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


@pytest.fixture(scope="session")
def photo_model(mnist_dir, tmp_path_factory):
    """fast-cnn trained one epoch by its recipe (99.07% on MNIST when measured): the "model that
    scores 98-99% on MNIST" that the photo tests read with. Returns (model, saved path, test set)."""
    import fastmnist
    from fastmnist import zoo
    (x, y), (xt, yt) = fastmnist.load_mnist(mnist_dir)
    model = zoo.create("fast-cnn", seed=0)
    model.fit(x, y, **zoo.fit_args("fast-cnn", epochs=1), verbose=0, seed=0)
    accuracy = model.evaluate(xt, yt)["accuracy"]
    # measured 0.9894-0.9912 over seeds and CPUs (benchmarks/results/test-margins.json)
    assert 0.98 <= accuracy <= 0.995, accuracy
    path = model.save(tmp_path_factory.mktemp("photo-model") / "fast-cnn.npz")
    return model, path, xt[:, 0], yt
