"""Pictures: each plot is a valid PNG of sensible size; the CLI draws them too."""
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from fastmnist import plots  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def check_png(path, min_bytes=5000):
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > min_bytes
    from PIL import Image
    w, h = Image.open(path).size
    assert 300 <= w <= 3000 and 200 <= h <= 3000


def test_all_plots(tmp_path):
    rng = np.random.default_rng(0)
    hist = {"loss": [0.5, 0.3, 0.2], "accuracy": [0.8, 0.9, 0.95], "val_loss": [0.4, 0.3, 0.25],
            "val_accuracy": [0.85, 0.9, 0.93]}
    check_png(plots.training_curves(hist, tmp_path / "c.png"))
    x, y = rng.random((50, 784)), rng.integers(0, 10, 50)
    check_png(plots.sample_grid(x, y, tmp_path / "s.png"))
    pred = np.where(rng.random(50) < 0.8, y, (y + 1) % 10)
    check_png(plots.confusion(y, pred, tmp_path / "m.png"))
    probs = rng.dirichlet(np.ones(10), 50)
    check_png(plots.worst_errors(x, y, probs, tmp_path / "e.png"))
    m = plots.confusion_matrix([0, 1, 1], [0, 1, 2])
    assert m[1, 1] == 1 and m[1, 2] == 1 and m.sum() == 3


def test_plot_cli(mnist_dir, tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "fastmnist", *a, "--data", str(mnist_dir)],
                                    capture_output=True, text=True, timeout=300)
    proc = run("train", "--backend", "numpy", "--model", "two-layer", "--epochs", "2", "--limit-train", "2000",
               "--limit-test", "500", "--quiet", "--out", str(tmp_path / "m.npz"), "--plot", str(tmp_path / "t.png"))
    assert proc.returncode == 0, proc.stderr
    check_png(tmp_path / "t.png")
    for kind in ("curves", "confusion", "errors"):
        proc = run("plot", kind, str(tmp_path / "m.npz"), "--out", str(tmp_path / f"{kind}.png"), "--limit-test", "500")
        assert proc.returncode == 0, proc.stderr
        check_png(tmp_path / f"{kind}.png")
    proc = run("plot", "samples", "--out", str(tmp_path / "samples.png"))
    assert proc.returncode == 0, proc.stderr
    check_png(tmp_path / "samples.png")


@pytest.mark.parametrize("name, backend, n", [("simple-cnn", "numpy", 1500), ("relu-mlp", "numba", 12000)])
def test_one_epoch_history_has_a_curve_within_the_epoch(name, backend, n, tmp_path):
    """A one-epoch run draws a curve, not one dot: points every ~config.CURVE_STEPS steps (per-layer
    path, and numba's compiled MLP steps, which return each step's loss and count), each window's
    loss and batch accuracy."""
    from fastmnist import zoo
    from fastmnist.backends import backend_status
    if not backend_status(backend)[0]:
        pytest.skip(f"{backend} unavailable")
    flat = zoo.recipe(name).flat_input
    rng = np.random.default_rng(0)
    x = rng.random((n, 784) if flat else (n, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, n)
    model = zoo.create(name, backend=backend, seed=0)
    h = model.fit(x, y, epochs=1, batch_size=50, verbose=0)
    at = h["curve_epoch"]
    assert len(at) >= 3 and at == sorted(at) and 0 < at[0] and at[-1] == 1.0
    assert len(h["curve_loss"]) == len(h["curve_accuracy"]) == len(at)
    assert all(0 <= a <= 1 for a in h["curve_accuracy"]) and all(v > 0 for v in h["curve_loss"])
    # the windows add up to the epoch: their sample-weighted mean is the epoch's loss
    edges = np.diff([0.0] + at)
    assert np.average(h["curve_loss"], weights=edges) == pytest.approx(h["loss"][0], rel=1e-4)
    check_png(plots.training_curves(h, tmp_path / "c.png", name))


def test_photo_preparation_draws_the_stages_mnistify_goes_through(tmp_path):
    pytest.importorskip("skimage", reason="photo preparation needs scikit-image (the [image] extra)")
    from conftest import REPO

    from fastmnist.photos.images import as_grey, mnistify, prepare
    photo = REPO / "docs" / "img" / "photo-example.jpg"
    check_png(plots.photo_preparation(photo, tmp_path / "p.png"))
    grey = as_grey(photo, "p")
    stages = prepare(grey, "p")
    np.testing.assert_array_equal(stages.input, mnistify(grey, "p"))
    assert stages.grey is grey and stages.pieces_image.shape == stages.inks.ink.shape
    assert set(np.unique(stages.pieces_image)) <= {0.0, 0.35, 1.0} and stages.pieces_image.max() == 1.0
