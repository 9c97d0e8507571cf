"""Training digits photographed and prepared as `fastmnist predict` reads a photo
(fastmnist.photos.training, the zoo recipe's photo_digits)."""
import re

import numpy as np
import pytest

pytest.importorskip("PIL")
pytest.importorskip("skimage")

import fastmnist  # noqa: E402
from fastmnist import config, zoo  # noqa: E402
from fastmnist.errors import InvalidArgument  # noqa: E402
from fastmnist.photos.training import photo_digits  # noqa: E402


@pytest.fixture(scope="module")
def train_set(mnist_dir):
    (x, y), _ = fastmnist.load_mnist(mnist_dir)
    return x[:400], y[:400]


def test_one_seed_gives_the_same_photos_whatever_the_workers(monkeypatch, train_set):
    """The k-th digit's photo is drawn from its own generator: one process or two, chunks of 5 or
    of 500, the same inputs bit for bit; another seed draws other digits and photos."""
    x, y = train_set
    monkeypatch.setattr(config, "PHOTO_DIGIT_CHUNK", 5)
    one = photo_digits(x, y, 12, seed=3, workers=1)
    two = photo_digits(x, y, 12, seed=3, workers=2)
    monkeypatch.setattr(config, "PHOTO_DIGIT_CHUNK", 500)
    whole = photo_digits(x, y, 12, seed=3, workers=1)
    for other in (two, whole):
        assert np.array_equal(one[0], other[0]) and np.array_equal(one[1], other[1])
    assert not np.array_equal(photo_digits(x, y, 12, seed=4, workers=1)[0][:5], one[0][:5])


def test_the_photographed_digits_keep_their_labels(train_set, photo_model):
    """A fast-cnn trained on plain MNIST (no photo ever seen) reads most of the prepared photos as
    their labels say: the inputs are the digits drawn, in the order of their labels, shaped and
    typed as the training images. (Measured: fast-cnn of seeds 0 and 1 read 59 of these 60, and
    53-57 of 60 with photo seeds 1-3; labels out of order would match about one in ten.)"""
    x, y = train_set
    model = photo_model[0]
    inputs, labels = photo_digits(x, y, 60, seed=0)
    assert inputs.shape[1:] == x.shape[1:] and inputs.dtype == x.dtype and len(inputs) == len(labels) >= 55
    assert 0.0 <= inputs.min() and inputs.max() <= 1.0
    assert np.mean(np.argmax(model.predict(inputs), axis=1) == labels) >= 0.8


def test_training_data_adds_photos_only_where_the_recipe_asks(monkeypatch, train_set):
    x, y = train_set[0][:30], train_set[1][:30]
    same = zoo.training_data("fast-cnn", x, y)
    assert same[0] is x and same[1] is y
    lines = []
    more_x, more_y = zoo.training_data("reader", x, y, log=lines.append)
    extra = len(more_x) - len(x)
    assert 8 <= extra <= round(zoo.recipe("reader").photo_digits * len(x)) and len(more_y) == len(more_x)
    assert np.array_equal(more_x[:30], x) and np.array_equal(more_y[:30], y) and more_x.dtype == x.dtype
    assert any("photographed" in line for line in lines)


def test_labels_that_do_not_match_the_images_are_refused(train_set):
    x, y = train_set
    with pytest.raises(InvalidArgument, match="400 images but y has 399 labels"):
        photo_digits(x, y[:399], 10)


def test_training_the_reader_shows_the_photos_being_made(mnist_dir):
    """`fastmnist train --model reader` at a terminal: a bar counts the photographed digits (with
    the time left) before the epochs' bars, and a line says how many were made."""
    from test_progress import run_in_terminal
    text = run_in_terminal(["train", "--backend", "numpy", "--model", "reader", "--data", str(mnist_dir),
                            "--limit-train", "300", "--limit-test", "100", "--epochs", "1"])
    assert "photographing training digits" in text and re.search(r"\d+/100 \[", text), text[-2000:]
    assert re.search(r"\d+ training digits photographed and prepared as predict reads a photo", text), text[-2000:]
