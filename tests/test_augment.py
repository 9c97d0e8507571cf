"""Augmentation: random affine maps drawn on the host, warped on the backend (affine_warp is in the
conformance suite against its loop oracle); one seed gives one warped batch on every backend."""
import json
import subprocess
import sys

import numpy as np
import pytest

import fastmnist
from fastmnist import zoo
from fastmnist.augment import Augment, warp_batch
from fastmnist.backends import backend_status


class FixedDraws:
    """A stand-in generator whose uniform() returns a given value for each of the four draws (angle and
    shear in degrees, as Augment draws them)."""

    def __init__(self, angle=0.0, shear=0.0, size=1.0, shift=(0.0, 0.0)):
        self.values = [angle, shear, size, shift]

    def uniform(self, lo, hi, shape):
        value = self.values.pop(0)
        return np.broadcast_to(np.asarray(value, float), (shape,) if isinstance(shape, int) else shape).copy()


def test_no_ranges_is_the_identity_and_a_shift_moves_the_digit():
    theta = Augment(rotation=0, scale=0, shear=0, shift=0).thetas(np.random.default_rng(0), 3)
    np.testing.assert_allclose(theta, np.tile([[1, 0, 0], [0, 1, 0]], (3, 1, 1)), atol=1e-15)
    x = np.zeros((1, 1, 9, 9), np.float32)
    x[0, 0, 4, 4] = 1.0
    theta = Augment().thetas(FixedDraws(shift=(2.0, -1.0)), 1)  # 2 px right, 1 px up
    y = fastmnist.get_backend("numpy").affine_warp(x, theta)
    assert y[0, 0, 3, 6] == pytest.approx(1.0) and y.sum() == pytest.approx(1.0)


def test_a_rotation_turns_the_picture_the_stated_way():
    x = np.zeros((1, 1, 11, 11), np.float32)
    x[0, 0, 5, 9] = 1.0  # 4 px right of the centre
    theta = Augment().thetas(FixedDraws(angle=90.0), 1)  # +90 degrees: x axis onto y axis (image down)
    y = fastmnist.get_backend("numpy").affine_warp(x, theta)
    assert y[0, 0, 9, 5] == pytest.approx(1.0, abs=1e-9)


def test_bad_ranges_and_inputs_are_named():
    with pytest.raises(ValueError, match=r"rotation must be a number in \[0, 90.0\], got -1"):
        Augment(rotation=-1)
    with pytest.raises(ValueError, match="square images"):
        warp_batch(fastmnist.get_backend("numpy"), np.zeros((2, 10), np.float32), Augment(), np.random.default_rng())
    model = zoo.create("relu-mlp", backend="numpy")
    with pytest.raises(TypeError, match="augment must be a fastmnist.augment.Augment"):
        model.fit(np.zeros((4, 784), np.float32), np.zeros(4, np.int64), augment="yes", verbose=0)


def test_strokes_and_blur_draw_nothing_unless_asked():
    """A run without thickness or blur draws from the generator exactly what it drew before those
    existed (resumed and old runs stay the same); with them, the strokes change and blur."""
    be = fastmnist.get_backend("numpy")
    x = np.zeros((3, 1, 28, 28), np.float32)
    x[:, 0, 10:18, 13:15] = 1.0  # a 2-pixel-wide bar
    plain, before = np.random.default_rng(7), np.random.default_rng(7)
    still = Augment(rotation=0, scale=0, shear=0, shift=0)
    np.testing.assert_array_equal(warp_batch(be, x, still, plain), x)
    still.thetas(before, 3)
    assert plain.random() == before.random()
    thick = warp_batch(be, x, Augment(rotation=0, scale=0, shear=0, shift=0, thickness=1.0), np.random.default_rng(1))
    assert not np.array_equal(thick, x) and np.all(thick.sum(axis=(1, 2, 3)) != x.sum(axis=(1, 2, 3)))
    blurred = warp_batch(be, x, Augment(rotation=0, scale=0, shear=0, shift=0, blur=2.0), np.random.default_rng(1))
    np.testing.assert_allclose(blurred.sum(axis=(1, 2, 3)), x.sum(axis=(1, 2, 3)), rtol=1e-5)  # blur keeps the ink
    assert blurred.max() < 1.0
    bent = warp_batch(be, x, Augment(rotation=0, scale=0, shear=0, shift=0, elastic=2.0), np.random.default_rng(1))
    assert not np.array_equal(bent, x) and bent.shape == x.shape
    with pytest.raises(ValueError, match=r"elastic must be a number in \[0, 5.0\], got 6"):
        Augment(elastic=6)
    with pytest.raises(ValueError, match=r"thickness must be a number in \[0, 1.0\], got 1.5"):
        Augment(thickness=1.5)
    with pytest.raises(ValueError, match=r"blur must be a number in \[0, 2.0\], got 3"):
        Augment(blur=3)


@pytest.mark.parametrize("backend", ["numba", "cupy-sim"])
def test_one_seed_one_augmented_batch_on_every_backend(backend):
    if not backend_status(backend)[0]:
        pytest.skip(f"{backend} unavailable")
    x = np.random.default_rng(2).random((5, 784))
    augment = Augment(thickness=0.8, blur=1.5, elastic=2.0)
    want = warp_batch(fastmnist.get_backend("numpy"), x, augment, np.random.default_rng(4))
    be = fastmnist.get_backend(backend)
    got = be.to_numpy(warp_batch(be, be.asarray(x), augment, np.random.default_rng(4)))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["simple-cnn", "relu-mlp"])
def test_one_seed_one_warped_run_on_every_backend(name):
    """float64, three steps with augmentation: numba's weights are numpy's to rounding (the maps are
    drawn on the host from the run's generator; both warp through the same contract)."""
    if not backend_status("numba")[0]:
        pytest.skip("numba unavailable")
    rng = np.random.default_rng(1)
    flat = zoo.recipe(name).flat_input
    x = rng.random((96, 784) if flat else (96, 1, 28, 28))
    y = rng.integers(0, 10, 96)
    weights = []
    for backend in ("numpy", "numba"):
        model = zoo.create(name, backend=backend, seed=0, dtype="float64")
        model.fit(x, y, **zoo.fit_args(name, batch_size=32, epochs=1, augment=True), verbose=0, seed=3)
        weights.append([model.backend.to_numpy(p) for p in model.parameters()])
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    plain = zoo.create(name, backend="numpy", seed=0, dtype="float64")
    plain.fit(x, y, **zoo.fit_args(name, batch_size=32, epochs=1), verbose=0, seed=3)
    assert not np.allclose(plain.backend.to_numpy(plain.parameters()[0]), weights[0][0])  # the warp did something


def test_train_augment_cli(mnist_dir):
    proc = subprocess.run([sys.executable, "-m", "fastmnist", "train", "--backend", "numpy", "--model", "two-layer",
                           "--data", str(mnist_dir), "--limit-train", "600", "--limit-test", "200", "--epochs", "1",
                           "--augment", "--quiet", "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["augment"] == Augment().config()
