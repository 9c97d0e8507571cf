"""Your own handwriting: reading any image mode, MNIST-style preprocessing, `fastmnist predict`."""
import json
import subprocess
import sys

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image, ImageDraw  # noqa: E402

from fastmnist.photos.images import ImageError, load_grey, mnistify, predict_images  # noqa: E402


def photo_of_a_seven(size=(300, 400), ink=(30, 30, 60), paper=(235, 230, 220)):
    """Dark ink on light paper, off-centre, like a phone photo of a digit."""
    img = Image.new("RGB", size, paper)
    d = ImageDraw.Draw(img)
    d.line([(60, 80), (200, 80), (110, 330)], fill=ink, width=22)
    return img


def check_mnist_like(x):
    assert x.shape == (28, 28) and x.dtype == np.float32
    assert abs(x.max() - 1.0) < 1e-6 and x.min() >= 0
    rows, cols = np.flatnonzero(x.max(1) > 0.05), np.flatnonzero(x.max(0) > 0.05)
    assert max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) in (19, 20, 21, 22)
    cy = (x.sum(1) * np.arange(28)).sum() / x.sum()
    cx = (x.sum(0) * np.arange(28)).sum() / x.sum()
    assert abs(cy - 13.5) < 1.0 and abs(cx - 13.5) < 1.0


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "L", "I;16", "LA"])
def test_any_mode_becomes_mnist_like(tmp_path, mode):
    img = photo_of_a_seven()
    if mode == "RGBA":  # ink on a transparent sheet: transparency reads as white paper
        rgba = Image.new("RGBA", img.size, (0, 0, 0, 0))
        ImageDraw.Draw(rgba).line([(60, 80), (200, 80), (110, 330)], fill=(0, 0, 0, 255), width=22)
        img = rgba
    elif mode == "I;16":
        img = Image.fromarray(np.asarray(img.convert("L"), np.uint16) * 257)  # uint16 -> mode "I;16"
    else:
        img = img.convert(mode)
    path = tmp_path / f"seven.{ 'png' if mode != 'P' else 'bmp'}"
    img.save(path)
    check_mnist_like(mnistify(load_grey(path), str(path)))


def test_light_on_dark_is_not_inverted(tmp_path):
    img = photo_of_a_seven(ink=(250, 250, 250), paper=(10, 10, 10))
    img.save(tmp_path / "inv.jpg")
    x = mnistify(load_grey(tmp_path / "inv.jpg"))
    check_mnist_like(x)
    assert x[0, 0] == 0  # background stays black


def test_errors(tmp_path, monkeypatch):
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageError, match="text.png: cannot read image"):
        load_grey(tmp_path / "text.png")
    photo_of_a_seven().save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:300])
    with pytest.raises(ImageError, match="cut.png: cannot read image"):
        load_grey(tmp_path / "cut.png")
    Image.new("L", (50, 50), 255).save(tmp_path / "blank.png")
    with pytest.raises(ImageError, match="no digit found"):
        mnistify(load_grey(tmp_path / "blank.png"), "blank.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="too large"):
        load_grey(tmp_path / "full.png")
    with pytest.raises(ImageError, match="no such file"):
        load_grey(tmp_path / "missing.png")


@pytest.fixture(scope="module")
def trained(mnist_dir, tmp_path_factory):
    import fastmnist
    from fastmnist import zoo
    (x, y), (xt, yt) = fastmnist.load_mnist(mnist_dir, flatten=True)
    model = zoo.create("relu-mlp", backend="numpy", seed=0)
    model.fit(x[:12000], y[:12000], epochs=2, batch_size=200, optimizer="adam", lr=1e-3, verbose=0)
    path = model.save(tmp_path_factory.mktemp("m") / "mlp.npz")
    return model, path, xt, yt


def photographed_agreement(model, xt, tmp_path) -> int:
    """How many of 20 test digits, printed large as dark ink on light paper and saved as JPEG
    photos, `predict` reads as the model reads the originals (benchmarks/test_margins.py measures it)."""
    paths, direct = [], []
    for i in range(20):
        big = Image.fromarray(((1 - xt[i].reshape(28, 28)) * 220 + 20).astype(np.uint8)).resize((140, 140))
        canvas = Image.new("RGB", (260, 200), (225, 225, 225))
        canvas.paste(big.convert("RGB"), (70 + (i % 3) * 10, 20 + (i % 2) * 15))
        canvas.save(tmp_path / f"d{i}.jpg", quality=90)
        paths.append(tmp_path / f"d{i}.jpg")
        direct.append(int(np.argmax(model.predict(xt[i:i + 1]))))
    results = predict_images(model, paths)
    return sum(r["digit"] == d for r, d in zip(results, direct))


def test_photographed_mnist_digits_predict_like_the_originals(trained, tmp_path):
    """Real test digits, printed large as dark ink on light paper and saved as photos, predict as the originals."""
    model, _, xt, yt = trained
    agree = photographed_agreement(model, xt, tmp_path)
    # measured 19-20 over seeds and backends (benchmarks/results/test-margins.json)
    assert agree >= 17, agree


def test_predict_cli_json_and_show(trained, tmp_path):
    _, model_path, _, _ = trained
    photo_of_a_seven().save(tmp_path / "seven.png")
    (tmp_path / "bad.png").write_text("x")
    proc = subprocess.run([sys.executable, "-m", "fastmnist", "predict", str(model_path), str(tmp_path / "seven.png"),
                           str(tmp_path / "bad.png"), "--json", "--show"], capture_output=True, text=True, timeout=120)
    # the good picture's answer is printed; the bad one is named, and the exit status says not all worked
    assert proc.returncode == 2, proc.stderr
    assert "1 of 2 images could not be used: " in proc.stderr and "bad.png" in proc.stderr.splitlines()[-1]
    lines = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert len(lines) == 2
    assert lines[0]["digit"] in range(10) and len(lines[0]["probabilities"]) == 10
    assert abs(sum(lines[0]["probabilities"]) - 1) < 1e-4
    assert "error" in lines[1] and "bad.png" in lines[1]["error"]
    shown = Image.open(tmp_path / "seven.mnist.png")
    assert shown.size == (28, 28)
    proc = subprocess.run([sys.executable, "-m", "fastmnist", "predict", str(model_path), str(tmp_path / "seven.png")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "seven.png: " in proc.stdout


def test_image_errors_are_fastmnist_errors_importable_where_raised():
    """ImageError and NoInk live in fastmnist.errors (the CLI prints every FastMnistError as one line)
    and stay importable from the modules that raise them."""
    from fastmnist import errors
    from fastmnist.photos import images, inkmask
    assert images.ImageError is errors.ImageError and inkmask.NoInk is errors.NoInk
    for cls in (errors.ImageError, errors.NoInk):
        assert issubclass(cls, errors.FastMnistError) and issubclass(cls, ValueError)
    assert issubclass(errors.NoInk, errors.ImageError)
